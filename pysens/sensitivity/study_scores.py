"""Scores of the retraining study with bootstrap intervals: how well predicted sample changes match observed ones.

Units are (training seed, noise seed) pairs: one generated sample each. For a predictor (ε·y under one reference
reading, or the entropic-OT displacement at one regularisation) with prediction p_u and observed changes o_{u,k}
from S fine-tune streams k (common random numbers, different streams of batches and noise), ō_u their mean:

* ``single_run``: mean over units of the mean over k of cos(p_u, o_{u,k}) (what one fine-tune run lets you see);
* ``vs_stream_mean``: mean over units of cos(p_u, ō_u) (the edit's reproducible effect);
* ``pooled``: Σ_u p_u·ō_u / √(Σ_u |p_u|² Σ_u |ō_u|²), one cosine over all samples (large changes weigh more);
* ``near_edit``: ``vs_stream_mean`` over the units whose base sample is at most the median distance (per seed) from
  the nearest edited image, where the true score change lives (digest §2.4);
* ``calibration``: the least-squares slope Σ p·ō / Σ |p|² (1: the magnitude is right; > 1: under-predicted);
* ``in_range`` / ``off_range``: ``vs_stream_mean`` over units whose base sample stays inside / leaves the data's
  range (:class:`~pysens.sensitivity.reference.ReferenceDiagnostics`).

The ceiling is the cross-stream cosine: mean over units and stream pairs j < k of cos(o_{u,j}, o_{u,k}); a
single run cannot be predicted better than it agrees with a repeat of itself.

Intervals are percentile bootstraps over units (resampled with replacement, ``n_boot`` times, fixed seed);
comparisons between two predictors bootstrap the paired difference on the same resamples.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["METRICS", "ceiling", "compare", "score_predictor"]

METRICS = ("single_run", "vs_stream_mean", "pooled", "near_edit", "calibration", "in_range", "off_range")
_LEVEL = 0.95


def _cos(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine of ``[..., n, d]`` arrays; NaN where a row is zero."""
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(norms > 0, (a * b).sum(-1) / norms.clamp_min(1e-300), torch.full_like(norms, float("nan")))


def _interval(draws: Tensor) -> list[float]:
    draws = draws[torch.isfinite(draws)]
    if draws.numel() == 0:
        return [float("nan"), float("nan")]
    q = torch.tensor([(1 - _LEVEL) / 2, (1 + _LEVEL) / 2], dtype=draws.dtype)
    return [float(v) for v in torch.quantile(draws, q)]


class _Units:
    """Per-unit sums from which every metric of one predictor is a ratio of (resampled) sums."""

    def __init__(self, predicted: Tensor, observed: Tensor, near: Tensor, off: Tensor) -> None:
        p = predicted.reshape(predicted.shape[0], -1).double()  # [U, d]
        o = observed.reshape(observed.shape[0], observed.shape[1], -1).double()  # [U, S, d]
        mean = o.mean(1)
        single = _cos(p[:, None, :].expand_as(o), o)
        self.values = {
            "single_run": single.nanmean(1),
            "vs_stream_mean": _cos(p, mean),
        }
        self.dot, self.pp, self.oo = (p * mean).sum(1), (p * p).sum(1), (mean * mean).sum(1)
        self.near, self.off = near, off
        self.n = p.shape[0]

    def metrics(self, index: Tensor) -> dict[str, Tensor]:
        """Every metric on the resamples ``index`` ``[R, U]`` (rows of unit indices), each ``[R]``."""

        def masked_mean(v: Tensor, mask: Tensor) -> Tensor:
            w = mask[index].double()
            return (torch.nan_to_num(v[index]) * w).sum(1) / w.sum(1)

        out = {k: v[index].nanmean(1) for k, v in self.values.items()}
        dot, pp, oo = self.dot[index].sum(1), self.pp[index].sum(1), self.oo[index].sum(1)
        out["pooled"] = dot / (pp * oo).sqrt()
        out["calibration"] = dot / pp
        per_sample = self.values["vs_stream_mean"]
        out["near_edit"] = masked_mean(per_sample, self.near)
        out["in_range"] = masked_mean(per_sample, ~self.off)
        out["off_range"] = masked_mean(per_sample, self.off)
        return out


def _resamples(n: int, n_boot: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n_boot, n), generator=g)


def score_predictor(
    predicted: Tensor, observed: Tensor, near: Tensor, off: Tensor, *, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Every metric of one predictor (module docstring) with its 95% bootstrap interval.

    Args:
        predicted: ``[U, *event]`` predicted changes.
        observed: ``[U, S, *event]`` observed changes of S streams.
        near, off: ``[U]`` bool, near the edit / off the data's range.
    Returns:
        ``{metric: {"value": v, "ci": [lo, hi]}}`` plus ``off_range_share`` (fraction of Σ|p|² on off-range units).
    """
    units = _Units(predicted, observed, near, off)
    point = units.metrics(torch.arange(units.n)[None])
    draws = units.metrics(_resamples(units.n, n_boot, seed))
    out = {k: {"value": float(point[k][0]), "ci": _interval(draws[k])} for k in METRICS}
    total = float(units.pp.sum())
    out["off_range_share"] = float(units.pp[off].sum()) / total if total > 0 else float("nan")
    return out


def compare(
    first: Tensor,
    second: Tensor,
    observed: Tensor,
    near: Tensor,
    off: Tensor,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Paired comparison of two predictors ``[U, *event]`` on the same units: per metric the difference
    first − second, its bootstrap interval, ``beats`` (difference > 0) and ``beats_ci`` (the interval's lower
    end > 0)."""
    a = _Units(first, observed, near, off)
    b = _Units(second, observed, near, off)
    index = _resamples(a.n, n_boot, seed)
    full = torch.arange(a.n)[None]
    pa, pb, da, db = a.metrics(full), b.metrics(full), a.metrics(index), b.metrics(index)
    out = {}
    for k in ("single_run", "vs_stream_mean", "pooled", "near_edit"):
        diff = float(pa[k][0] - pb[k][0])
        ci = _interval(da[k] - db[k])
        out[k] = {"difference": diff, "ci": ci, "beats": diff > 0, "beats_ci": ci[0] > 0}
    return out


def ceiling(observed: Tensor, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Cross-stream cosine of the observed changes ``[U, S, *event]`` (mean over units and stream pairs) with its
    bootstrap interval; NaN when S < 2."""
    o = observed.reshape(observed.shape[0], observed.shape[1], -1).double()
    S = o.shape[1]
    if S < 2:
        return {"value": float("nan"), "ci": [float("nan"), float("nan")], "streams": S}
    pairs = [_cos(o[:, j], o[:, k]) for j in range(S) for k in range(j + 1, S)]
    per_unit = torch.stack(pairs, 1).nanmean(1)
    index = _resamples(o.shape[0], n_boot, seed)
    return {"value": float(per_unit.nanmean()), "ci": _interval(per_unit[index].nanmean(1)), "streams": S}
