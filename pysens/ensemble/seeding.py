"""Random numbers tied to the trajectory, not to the process that draws them.

Trajectory ``i`` of a run seeded ``seed`` draws from its own generator, seeded by a hash of ``(seed, i, stream)``
(numpy's ``SeedSequence``, whose outputs for distinct inputs are distinct and well mixed). Whichever rank, shard or
batch solves trajectory i, it sees the same numbers, so a sharded run reproduces a one-process run bit for bit.
Draws are made on the CPU in the requested dtype and then moved to the device, so the numbers do not depend on
the device either.

Streams keep the draws of one trajectory apart: ``PRIOR`` (the noise x_T), ``BROWNIAN`` (SDE increments),
``PROBES`` (Hutchinson probes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pysens.diffusion.divergence import hutchinson_probes
from pysens.diffusion.processes import ForwardProcess
from pysens.solvers.noise import BrownianGrid

PRIOR, BROWNIAN, PROBES = 0, 1, 2


def trajectory_seed(seed: int, index: int, stream: int = PRIOR) -> int:
    """A 63-bit seed for trajectory ``index`` of a run seeded ``seed`` (distinct streams give unrelated seeds)."""
    for name, value in (("seed", seed), ("index", index), ("stream", stream)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    state = np.random.SeedSequence([int(seed), int(index), int(stream)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


def trajectory_generator(seed: int, index: int, stream: int = PRIOR) -> torch.Generator:
    """A CPU generator for trajectory ``index`` (see :func:`trajectory_seed`)."""
    return torch.Generator().manual_seed(trajectory_seed(seed, index, stream))


def prior_noise(
    process: ForwardProcess, seed: int, indices: range, event_shape, *, dtype: torch.dtype, device
) -> Tensor:
    """x_T ``[len(indices), *event]``: row k from trajectory ``indices[k]``'s own generator."""
    rows = [
        process.prior_sample((1, *event_shape), generator=trajectory_generator(seed, i, PRIOR), dtype=dtype)
        for i in indices
    ]
    return torch.cat(rows).to(device)


def brownian_paths(
    seed: int, indices: range, tspan, n_steps: int, event_shape, *, dtype: torch.dtype, device, iterated: bool
) -> BrownianGrid:
    """One Brownian path per trajectory on ``n_steps`` equal steps of ``tspan``, stacked along the batch axis."""
    paths = [
        BrownianGrid.sample(
            tspan,
            n_steps,
            (1, *event_shape),
            generator=trajectory_generator(seed, i, BROWNIAN),
            dtype=dtype,
            iterated=iterated,
        )
        for i in indices
    ]
    integrals = torch.cat([p.time_integrals for p in paths], dim=1).to(device) if iterated else None
    return BrownianGrid(paths[0].times, torch.cat([p.increments for p in paths], dim=1).to(device), integrals)


def probe_vectors(
    seed: int, indices: range, n_probes: int, event_shape, *, kind: str, dtype: torch.dtype, device
) -> Tensor:
    """Hutchinson probes ``[n_probes, len(indices), *event]``, column k from trajectory ``indices[k]``'s generator."""
    cols = [
        hutchinson_probes(
            n_probes, (1, *event_shape), kind=kind, generator=trajectory_generator(seed, i, PROBES), dtype=dtype
        )
        for i in indices
    ]
    return torch.cat(cols, dim=1).to(device)
