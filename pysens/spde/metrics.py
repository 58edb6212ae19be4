"""Sample-quality targets for the SIEM correlation study, and correlation tables with bootstrap intervals.

Digest seed002 §5.3, §8 item 8. What is computed here, and in which space (say it wherever a number is reported):

* :func:`w2_distance`: the exact W2 between two empirical measures by optimal transport (POT's network simplex
  ``ot.emd2`` on squared Euclidean costs), in whatever space the samples are given (the study uses the 64-pixel
  space of 8×8 digits: low-dimensional already).
* :func:`sliced_w2`: the sliced W2 (POT's ``ot.sliced_wasserstein_distance``, random projections).
* :func:`frechet_distance`: ‖m1 − m2‖² + tr(C1 + C2 − 2(C1^{½} C2 C1^{½})^{½}), the Fréchet distance between Gaussian
  fits. On the penultimate-layer features of :class:`FeatureClassifier` (a small MLP digit classifier trained
  in-project on the data set's labels) it is an **FID-style** distance; it is *not* FID: there is no Inception
  network and the numbers are not comparable with published FIDs.
* :func:`correlate`: Spearman, Pearson and Kendall coefficients (scipy.stats) with percentile bootstrap intervals
  over the configurations.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.stats
import torch
from torch import Tensor, nn

__all__ = [
    "CORRELATIONS",
    "FeatureClassifier",
    "correlate",
    "frechet_distance",
    "sliced_w2",
    "w2_distance",
]

CORRELATIONS = ("spearman", "pearson", "kendall")


def _import_ot():
    try:
        import ot
    except ImportError as err:
        raise ImportError("W2 distances need POT: pip install pot (or pip install 'pysens[ot]')") from err
    return ot


def _flat(x: Tensor | np.ndarray) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    return arr.reshape(arr.shape[0], -1)


def w2_distance(x: Tensor, y: Tensor) -> float:
    """Exact W2 between the uniform empirical measures of ``x`` ``[n, *event]`` and ``y`` ``[m, *event]``."""
    ot = _import_ot()
    a, b = _flat(x), _flat(y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"samples live in different spaces: d = {a.shape[1]} and {b.shape[1]}")
    cost = ot.dist(a, b)  # squared Euclidean
    value = ot.emd2(
        np.full(a.shape[0], 1.0 / a.shape[0]), np.full(b.shape[0], 1.0 / b.shape[0]), cost, numItermax=10_000_000
    )
    return math.sqrt(max(float(value), 0.0))


def sliced_w2(x: Tensor, y: Tensor, n_projections: int = 200, seed: int = 0) -> float:
    """Sliced W2 with ``n_projections`` random directions (POT)."""
    ot = _import_ot()
    a, b = _flat(x), _flat(y)
    return float(ot.sliced_wasserstein_distance(a, b, n_projections=n_projections, p=2, seed=seed))


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """Fréchet distance between Gaussian fits of ``x`` and ``y`` (features ``[n, k]``)."""
    a, b = _flat(x), _flat(y)
    m1, m2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root1 = scipy.linalg.sqrtm(c1)
    cross = scipy.linalg.sqrtm(root1 @ c2 @ root1)
    value = float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2.0 * np.real(cross)))
    return max(value, 0.0)


class FeatureClassifier(nn.Module):
    """A small MLP classifier of the data set's labels whose penultimate layer is the feature space of the
    FID-style distance (not Inception).

    Args:
        d: input dimension; n_classes: labels; hidden: width; feature_dim: the penultimate width.
    """

    def __init__(self, d: int, n_classes: int = 10, hidden: int = 128, feature_dim: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.reshape(x.shape[0], -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def fit(
        self, x: Tensor, labels: Tensor, *, steps: int = 600, lr: float = 3e-3, batch_size: int = 256, seed: int = 0
    ) -> float:
        """Train by Adam on cross-entropy; returns the training accuracy."""
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(steps):
            idx = torch.randint(x.shape[0], (batch_size,), generator=gen)
            opt.zero_grad()
            loss_fn(self(x[idx]), labels[idx]).backward()
            opt.step()
        with torch.no_grad():
            return float((self(x).argmax(1) == labels).double().mean())


def correlate(
    metric, target, methods: tuple[str, ...] = CORRELATIONS, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Correlation of ``metric`` with ``target`` (one value per configuration) per method, with a percentile
    bootstrap interval over configurations: ``{method: {"r", "p", "lo", "hi"}}`` (NaN where undefined)."""
    a = np.asarray(metric, dtype=np.float64).reshape(-1)
    b = np.asarray(target, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"metric and target must have one value per configuration each, got {a.shape} and {b.shape}")
    unknown = [m for m in methods if m not in CORRELATIONS]
    if unknown:
        raise ValueError(f"unknown correlation methods {unknown}; known: {CORRELATIONS}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    funcs = {"spearman": scipy.stats.spearmanr, "pearson": scipy.stats.pearsonr, "kendall": scipy.stats.kendalltau}
    rng = np.random.default_rng(seed)
    out = {}
    for m in methods:
        if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            out[m] = {"r": math.nan, "p": math.nan, "lo": math.nan, "hi": math.nan, "n": int(a.size)}
            continue
        res = funcs[m](a, b)
        boots = []
        for _ in range(n_boot):
            idx = rng.integers(0, a.size, a.size)
            if np.ptp(a[idx]) == 0 or np.ptp(b[idx]) == 0:
                continue
            boots.append(float(funcs[m](a[idx], b[idx])[0]))
        lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]) if boots else (math.nan, math.nan)
        out[m] = {"r": float(res[0]), "p": float(res[1]), "lo": float(lo), "hi": float(hi), "n": int(a.size)}
    return out
