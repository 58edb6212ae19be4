"""The authors' 2-D training distributions (seed001 §5.1; their ``data_dists.py``), seeded and batched.

* ``blob``: nine equal-weight Gaussians at (±2, ±2), (0, 0), (±4, 0), (0, ±4) with covariance 0.2 I, all scaled by
  0.65 (means 0.65×, covariance 0.0845 I). A Gaussian mixture, so its noised score is exact
  (:func:`blob_mixture`).
* ``circles2``: two rings of equal mass, radius ~ N(0.65, 0.1²) and N(1.4, 0.1²), angle U[0, 2π], all × 2.
* ``checker``: eight uniform 1.5 × 1.5 squares inside [−3, 3]² (the base square [−0.5, −0.25]² shifted by the
  authors' eight offsets, all × 6).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pysens.diffusion.processes import OU, ForwardProcess
from pysens.diffusion.scores import GaussianMixtureScore

__all__ = ["TOY_DATASETS", "blob_mixture", "sample_toy"]

TOY_DATASETS = ("blob", "circles2", "checker")
_BLOB_CENTRES = [
    (2.0, -2.0),
    (-2.0, 2.0),
    (2.0, 2.0),
    (-2.0, -2.0),
    (0.0, 0.0),
    (4.0, 0.0),
    (-4.0, 0.0),
    (0.0, 4.0),
    (0.0, -4.0),
]
_BLOB_SCALE, _BLOB_VARIANCE = 0.65, 0.2
_CHECKER_SHIFTS = [
    (0.0, 0.0),
    (0.5, 0.0),
    (0.25, 0.25),
    (0.75, 0.25),
    (0.0, 0.5),
    (0.5, 0.5),
    (0.25, 0.75),
    (0.75, 0.75),
]


def blob_mixture(process: ForwardProcess | None = None, dtype: torch.dtype = torch.float64) -> GaussianMixtureScore:
    """The exact noised ``blob`` law under ``process`` (default the authors' OU) as a ``GaussianMixtureScore``."""
    means = _BLOB_SCALE * torch.tensor(_BLOB_CENTRES, dtype=dtype)
    variances = torch.full((len(_BLOB_CENTRES),), _BLOB_SCALE**2 * _BLOB_VARIANCE, dtype=dtype)
    return GaussianMixtureScore(means, variances, process=OU() if process is None else process)


def sample_toy(
    name: str,
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` samples ``[n, 2]`` of the authors' dataset ``name`` (one of ``TOY_DATASETS``), drawn with ``generator``."""
    if name not in TOY_DATASETS:
        raise ValueError(f"dataset must be one of {TOY_DATASETS}; got {name!r}")
    if n < 0:
        raise ValueError(f"n must be non-negative; got {n}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)

    if name == "blob":
        centres = _BLOB_SCALE * torch.tensor(_BLOB_CENTRES, dtype=torch.float64, device=device)
        k = torch.randint(len(_BLOB_CENTRES), (n,), generator=generator, device=device)
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64, device=device)
        x = centres[k] + _BLOB_SCALE * math.sqrt(_BLOB_VARIANCE) * z
    elif name == "circles2":
        ring = torch.randint(2, (n,), generator=generator, device=device)
        centre = torch.where(ring == 0, 0.65, 1.4).to(torch.float64)
        r = centre + 0.1 * torch.randn(n, generator=generator, dtype=torch.float64, device=device)
        theta = 2.0 * math.pi * uniform(n)
        x = 2.0 * torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    else:
        shifts = torch.tensor(_CHECKER_SHIFTS, dtype=torch.float64, device=device)
        k = torch.randint(len(_CHECKER_SHIFTS), (n,), generator=generator, device=device)
        x = 6.0 * (-0.5 + 0.25 * uniform(n, 2) + shifts[k])
    return x.to(dtype)
