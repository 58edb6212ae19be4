"""The high-level verbs over N trajectories in fixed shards, on every rank of a process group.

Each function mirrors its one-process counterpart (:func:`pysens.sample_pf_ode`, :func:`pysens.sample_sde`,
:func:`pysens.log_likelihood`, :func:`pysens.sample_sensitivity`) and calls it once per shard of ``batch_size``
trajectories, with the shard's random numbers drawn per trajectory from ``(seed, index)``
(:mod:`pysens.ensemble.seeding`). Run it in one process, or in every process of a ``torchrun`` job (the same call
on every rank): the shards are split across the ranks, and rank 0 returns the same :class:`ShardedResult`, to the
last bit, whatever the number of ranks (same device, dtype and threads per process). Other ranks return None.

Memory per rank: the model, one shard's solve (the batched state of ``batch_size`` trajectories, its stages and,
for the SDE, the shard's Brownian increments ``[n_steps, batch_size, *event]``) and, for the likelihood, the
input points (every rank holds ``x``; slice it yourself for inputs larger than a process). Rank 0 additionally
holds the gathered result (all N rows, on the CPU); pass ``out`` and ``gather=False`` to keep only the shard files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pysens.diffusion.likelihood import log_likelihood
from pysens.diffusion.processes import ForwardProcess, resolve_process
from pysens.diffusion.sampling import check_cutoff, sample_pf_ode, sample_sde
from pysens.ensemble.distributed import Group, join_process_group, run_shards
from pysens.ensemble.seeding import brownian_paths, prior_noise, probe_vectors
from pysens.ensemble.shards import ShardPlan, stable_repr
from pysens.solvers.solution import SUCCESS

ITERATED_METHODS = ("SRA1", "SOSRA")  # SDE methods that read the iterated integrals of the Brownian path


@dataclass
class ShardedResult:
    """Per-trajectory results gathered in trajectory order (CPU tensors).

    ``values``: named tensors, batch axis first (``"sensitivity"`` is ``[P, N, *event]`` like
    :class:`~pysens.sensitivity.SensitivityResult`'s); ``retcodes``: one return code per trajectory;
    ``stats``: work summed over the shards (``wall_time`` is the sum of the shards' times, not the job's);
    ``shards``: which rank computed each shard and whether it was resumed from ``out``.
    """

    values: dict[str, Tensor]
    retcodes: list[str]
    stats: dict[str, float]
    shards: list[dict] = field(default_factory=list)
    out: Path | None = None

    def __getitem__(self, name: str) -> Tensor:
        return self.values[name]

    @property
    def retcode(self) -> str:
        return next((c for c in self.retcodes if c != SUCCESS), SUCCESS)

    @property
    def resumed(self) -> list[int]:
        return [s["index"] for s in self.shards if s["resumed"]]


def model_digest(model: Any) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes, bytes), or its type name otherwise:
    part of a run's fingerprint, so that shards of another model are never resumed into this run."""
    if not isinstance(model, nn.Module):
        return getattr(model, "__qualname__", type(model).__qualname__)
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _stats_of(stats) -> dict[str, float]:
    return {k: getattr(stats, k) or 0 for k in ("nf", "njvp", "naccept", "nreject", "wall_time")}


def _retcodes(solution, rows: int) -> list[str]:
    codes = getattr(solution, "sample_retcodes", None)
    return list(codes) if codes is not None else [solution.retcode] * rows


def _cpu(values: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in values.items()}


def _run(
    kind: str,
    n: int,
    batch_size: int,
    compute: Callable[[range], tuple[dict[str, Tensor], list[str], dict]],
    group: Group,
    out,
    gather: bool,
    fingerprint: dict,
    batch_dims: dict[str, int] | None = None,
) -> ShardedResult | None:
    """Run ``compute`` per shard and concatenate its values along their batch axes (0 unless ``batch_dims``)."""

    def work(indices: range) -> dict:
        values, codes, stats = compute(indices)
        return {"values": _cpu(values), "retcodes": codes, "stats": stats}

    plan = ShardPlan(n, batch_size)
    fingerprint = {"n": n, "batch_size": batch_size, **fingerprint}
    run = run_shards(plan, work, group=group, out=out, kind=kind, fingerprint=fingerprint, gather=gather)
    if run is None:
        return None
    if run.payloads is None:
        return ShardedResult({}, [], {}, run.shards, run.out)
    dims = batch_dims or {}
    names = run.payloads[0]["values"].keys()
    values = {k: torch.cat([p["values"][k] for p in run.payloads], dim=dims.get(k, 0)) for k in names}
    codes = [c for p in run.payloads for c in p["retcodes"]]
    stats = {k: sum(p["stats"][k] for p in run.payloads) for k in run.payloads[0]["stats"]}
    return ShardedResult(values, codes, stats, run.shards, run.out)


def _event_shape(score, event_shape) -> tuple[int, ...]:
    if event_shape is None:
        event_shape = getattr(score, "event_shape", None)
        if event_shape is None:
            raise ValueError("event_shape is required when the score model does not carry one")
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    if not shape or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"event_shape must be positive integers, got {event_shape!r}")
    return shape


def _prepare(score, process, n, x_T, event_shape, dtype, group):
    """(process, N, event shape, dtype, group) of a sampling verb, checked; x_T, when given, fixes N, event, dtype."""
    process = resolve_process(process)
    n = _check_x_T(x_T, n)
    event = tuple(x_T.shape[1:]) if x_T is not None else _event_shape(score, event_shape)
    dtype = x_T.dtype if x_T is not None else dtype
    return process, n, event, dtype, group or join_process_group()


def _settings(score, process, seed: int, dtype, event, x_T, extra: dict) -> dict:
    """A verb's fingerprint: what makes two runs' shards interchangeable (model and input hashes, settings)."""
    return {
        "seed": seed,
        "dtype": str(dtype),
        "event": list(event),
        "model": model_digest(score),
        "process": repr(process),
        "x_T": None if x_T is None else model_digest_tensor(x_T),
        **{k: v if isinstance(v, (int, float, str)) else stable_repr(v) for k, v in sorted(extra.items())},
    }


def _noise(process, seed, indices, event, dtype, device, x_T):
    if x_T is None:
        return prior_noise(process, seed, indices, event, dtype=dtype, device=device)
    return x_T[indices.start : indices.stop].to(device)


def _check_x_T(x_T: Tensor | None, n: int | None) -> int:
    if x_T is None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive integer (or pass x_T), got {n!r}")
        return n
    if not isinstance(x_T, Tensor) or x_T.dim() < 2:
        raise TypeError("x_T must be a tensor [N, *event] (the same on every rank)")
    if n is not None and n != x_T.shape[0]:
        raise ValueError(f"n = {n} but x_T holds {x_T.shape[0]} rows")
    return x_T.shape[0]


def sharded_sample_pf_ode(
    score,
    process: ForwardProcess | str,
    n: int | None = None,
    *,
    batch_size: int,
    seed: int = 0,
    x_T: Tensor | None = None,
    event_shape=None,
    dtype: torch.dtype = torch.float32,
    out: str | Path | None = None,
    gather: bool = True,
    group: Group | None = None,
    fingerprint: dict | None = None,
    **kwargs,
) -> ShardedResult | None:
    """:func:`pysens.sample_pf_ode` for N trajectories (values ``x``, ``x_T``); x_T row i from ``(seed, i)`` unless
    ``x_T`` ``[N, *event]`` is given. ``kwargs`` (t1, method, backend, rtol, atol, solve options) go to every shard's
    call. ``out``: shard folder (resumable); ``group``: default :func:`join_process_group`."""
    process, n, event, dtype, group = _prepare(score, process, n, x_T, event_shape, dtype, group)

    def compute(indices: range):
        noise = _noise(process, seed, indices, event, dtype, group.device, x_T)
        res = sample_pf_ode(score, process, noise, **kwargs)
        return {"x": res.x, "x_T": noise}, _retcodes(res.solution, len(indices)), _stats_of(res.stats)

    settings = _settings(score, process, seed, dtype, event, x_T, kwargs)
    return _run("sample_pf_ode", n, batch_size, compute, group, out, gather, fingerprint or settings)


def sharded_sample_sde(
    score,
    process: ForwardProcess | str,
    n: int | None = None,
    *,
    batch_size: int,
    seed: int = 0,
    n_steps: int = 1000,
    method: str = "EM",
    t1: float | None = None,
    x_T: Tensor | None = None,
    event_shape=None,
    dtype: torch.dtype = torch.float32,
    out: str | Path | None = None,
    gather: bool = True,
    group: Group | None = None,
    fingerprint: dict | None = None,
) -> ShardedResult | None:
    """:func:`pysens.sample_sde` for N trajectories on ``n_steps`` equal steps: trajectory i's x_T and Brownian path
    come from ``(seed, i)`` (values ``x``, ``x_T``)."""
    process, n, event, dtype, group = _prepare(score, process, n, x_T, event_shape, dtype, group)
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    t1 = check_cutoff(process, t1)

    def compute(indices: range):
        noise = _noise(process, seed, indices, event, dtype, group.device, x_T)
        path = brownian_paths(
            seed,
            indices,
            (process.T, t1),
            n_steps,
            event,
            dtype=dtype,
            device=group.device,
            iterated=method in ITERATED_METHODS,
        )
        res = sample_sde(score, process, noise, t1=t1, n_steps=n_steps, method=method, brownian=path)
        return {"x": res.x, "x_T": noise}, _retcodes(res.solution, len(indices)), _stats_of(res.stats)

    settings = _settings(score, process, seed, dtype, event, x_T, {"n_steps": n_steps, "method": method, "t1": t1})
    return _run("sample_sde", n, batch_size, compute, group, out, gather, fingerprint or settings)


def sharded_log_likelihood(
    score,
    process: ForwardProcess | str,
    x: Tensor,
    *,
    batch_size: int,
    seed: int = 0,
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    out: str | Path | None = None,
    gather: bool = True,
    group: Group | None = None,
    fingerprint: dict | None = None,
    **kwargs,
) -> ShardedResult | None:
    """:func:`pysens.log_likelihood` of the N points ``x`` ``[N, *event]`` (the same tensor on every rank); Hutchinson
    probes of trajectory i from ``(seed, i)``. Values ``log_density``, ``delta``, ``terminal_log_density``,
    ``latent``."""
    process = resolve_process(process)
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise TypeError("x must be a tensor [N, *event] (the same on every rank)")
    group = group or join_process_group()
    event = tuple(x.shape[1:])

    def compute(indices: range):
        rows = x[indices.start : indices.stop].to(group.device)
        probes = None
        if divergence == "hutchinson":
            probes = probe_vectors(seed, indices, n_probes, event, kind=probe, dtype=x.dtype, device=group.device)
        res = log_likelihood(score, process, rows, divergence=divergence, probes=probes, **kwargs)
        values = {
            "log_density": res.log_density,
            "delta": res.delta,
            "terminal_log_density": res.terminal_log_density,
            "latent": res.latent,
        }
        return values, _retcodes(res.solution, len(indices)), _stats_of(res.stats)

    extra = {"x": model_digest_tensor(x), "divergence": divergence, "n_probes": n_probes, "probe": probe, **kwargs}
    settings = _settings(score, process, seed, x.dtype, event, None, extra)
    return _run("log_likelihood", x.shape[0], batch_size, compute, group, out, gather, fingerprint or settings)


def sharded_sample_sensitivity(
    score,
    process: ForwardProcess | str,
    n: int | None = None,
    perturbations=None,
    *,
    batch_size: int,
    seed: int = 0,
    x_T: Tensor | None = None,
    event_shape=None,
    dtype: torch.dtype = torch.float32,
    out: str | Path | None = None,
    gather: bool = True,
    group: Group | None = None,
    fingerprint: dict | None = None,
    **kwargs,
) -> ShardedResult | None:
    """:func:`pysens.sensitivity.sample_sensitivity` for N trajectories (x_T row i from ``(seed, i)`` unless given).
    Values ``x``, ``x_T``, ``log_density`` and ``sensitivity`` ``[P, N, *event]``. The ODE mode with an exact
    divergence or a closed-form ``log_density``: Hutchinson probes are drawn for the whole batch inside
    ``sample_sensitivity``, so they would depend on the batching, and are refused here."""
    from pysens.sensitivity.ode import sample_sensitivity

    if kwargs.get("divergence", "exact") != "exact" and kwargs.get("log_density") is None:
        raise ValueError("sharded_sample_sensitivity takes divergence='exact' (or a closed-form log_density) only")
    process, n, event, dtype, group = _prepare(score, process, n, x_T, event_shape, dtype, group)

    def compute(indices: range):
        noise = _noise(process, seed, indices, event, dtype, group.device, x_T)
        res = sample_sensitivity(score, process, noise, perturbations, **kwargs)
        values = {"x": res.x, "x_T": noise, "log_density": res.log_density, "sensitivity": res.sensitivity}
        codes = _retcodes(res.solution, len(indices)) if res.solution is not None else [res.retcode] * len(indices)
        return values, codes, _stats_of(res.stats)

    settings = _settings(score, process, seed, dtype, event, x_T, {"perturbations": perturbations, **kwargs})
    return _run(
        "sample_sensitivity",
        n,
        batch_size,
        compute,
        group,
        out,
        gather,
        fingerprint or settings,
        batch_dims={"sensitivity": 1},
    )


def model_digest_tensor(x: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (fingerprints of inputs such as the points of a likelihood)."""
    digest = hashlib.sha256(f"{x.dtype}:{tuple(x.shape)}".encode())
    digest.update(x.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


__all__ = [
    "ShardedResult",
    "model_digest",
    "sharded_log_likelihood",
    "sharded_sample_pf_ode",
    "sharded_sample_sde",
    "sharded_sample_sensitivity",
]
