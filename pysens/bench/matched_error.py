"""Speed at matched error: work-precision fronts, time interpolated at common error levels, and the interleaved
sweep that measures them (the diffusion and likelihood-speed suites share it).

A point's time is the minimum of ``runs`` runs after one warm-up per case; cases are interleaved round by round, so
load from other processes falls on all of them alike. Ratios at matched error interpolate each path's front in
log-log (:func:`time_at_error`) at levels common to both.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from pysens.bench.work_precision import PeakRSS

__all__ = [
    "Case",
    "Measured",
    "Outcome",
    "TimedScore",
    "compare",
    "matched_error_ratios",
    "measure",
    "pareto_front",
    "sweep",
    "time_at_error",
]


def pareto_front(errors: Sequence[float], times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The work-precision front: the finite points no other point beats in both error and time, sorted by error
    (ascending; times then descend). Reaching error e costs the time of the cheapest point with error <= e."""
    pts = sorted((e, t) for e, t in zip(errors, times, strict=True) if _finite(e) and _finite(t) and e > 0 and t > 0)
    front: list[tuple[float, float]] = []
    for e, t in pts:
        if not front or t < front[-1][1]:  # cheaper than every more accurate point (ties in e: the faster one)
            front.append((e, t))
    return np.array([e for e, _ in front]), np.array([t for _, t in front])


def time_at_error(errors: Sequence[float], times: Sequence[float], levels: Sequence[float]) -> np.ndarray:
    """Time to reach each error level, interpolated linearly in log-log along the :func:`pareto_front`
    (exact on a power law t = c e^-p); NaN outside the front's error range."""
    e, t = pareto_front(errors, times)
    levels = np.asarray(levels, dtype=float)
    out = np.full(levels.shape, np.nan)
    if e.size == 0:
        return out
    inside = (levels >= e[0] * (1 - 1e-12)) & (levels <= e[-1] * (1 + 1e-12))
    out[inside] = np.exp(np.interp(np.log(levels[inside]), np.log(e), np.log(t)))
    return out


def matched_error_ratios(
    peer: tuple[Sequence[float], Sequence[float]], ours: tuple[Sequence[float], Sequence[float]], n_levels: int = 5
) -> dict:
    """peer time / our time at ``n_levels`` error levels log-spaced over the error range both fronts cover.

    ``peer`` and ``ours`` are ``(errors, times)``. Returns the levels, both interpolated times, the per-level ratios
    and their geometric mean (``None`` entries and a ``note`` when the fronts do not overlap).
    """
    pe, _ = pareto_front(*peer)
    oe, _ = pareto_front(*ours)
    if pe.size == 0 or oe.size == 0:
        return {"levels": [], "ratios": [], "geomean": None, "note": "a path has no successful point"}
    lo, hi = max(pe[0], oe[0]), min(pe[-1], oe[-1])
    if not lo <= hi:
        return {
            "levels": [],
            "ratios": [],
            "geomean": None,
            "note": f"no common error range (peer {pe[0]:.2e}..{pe[-1]:.2e}, pysens {oe[0]:.2e}..{oe[-1]:.2e})",
        }
    levels = np.geomspace(lo, hi, n_levels) if hi > lo else np.array([lo])
    t_peer, t_ours = time_at_error(*peer, levels), time_at_error(*ours, levels)
    ratios = t_peer / t_ours
    return {
        "levels": levels.tolist(),
        "peer_time": t_peer.tolist(),
        "pysens_time": t_ours.tolist(),
        "ratios": ratios.tolist(),
        "geomean": float(np.exp(np.mean(np.log(ratios)))),
        "min": float(ratios.min()),
        "max": float(ratios.max()),
    }


# ---------------------------------------------------------------------------------------------------------------------
# measuring


@dataclass
class Outcome:
    """What one solve of a case returns: ``value`` (the quantity whose error is measured), RHS calls, retcode."""

    value: Tensor
    nf: int
    retcode: str = "Success"
    extra: dict = field(default_factory=dict)
    rows: int | None = None  # batch rows the RHS evaluated (pysens compaction); None: nf × batch

    @property
    def row_evaluations(self) -> int:
        return self.rows if self.rows is not None else self.nf * self.value.shape[0]


@dataclass
class Case:
    """One setup of a sweep: ``run(knob)`` solves once at a tolerance or step count; ``knobs`` are the values swept."""

    name: str
    run: Callable[[float], Outcome]
    knobs: Sequence[float]
    meta: dict = field(default_factory=dict)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Measured(NamedTuple):
    """One timed call: wall ``seconds``; ``peak_mb`` the peak RSS above the call's start (CPU; memory the allocator
    already holds from earlier calls does not show) or ``torch.cuda.max_memory_allocated`` (CUDA); ``rss_mb`` the
    process's peak resident set during the call (CPU); the call's ``result``."""

    seconds: float
    peak_mb: float
    rss_mb: float
    result: object


def measure(fn: Callable[[], object], device: torch.device) -> Measured:
    """Time one call of ``fn`` (synchronised on CUDA) and record its peak memory."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    _synchronize(device)
    with PeakRSS() as mem:
        start = time.perf_counter()
        result = fn()
        _synchronize(device)
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else mem.megabytes
    return Measured(seconds, peak, mem.peak / 2**20, result)


class TimedScore:
    """A score model whose calls are timed (synchronised on CUDA): ``seconds`` and ``calls`` accumulate.

    When the model has a closed-form ``score_and_divergence(x, t)`` the wrapper has it too, timed the same way, so a
    likelihood solve through the wrapper takes the path it takes on the model itself (without it, the solve would
    fall back to an autodiff divergence whose reverse passes run outside the timed calls)."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model, self.device = model, device
        self.seconds, self.calls = 0.0, 0
        closed_form = getattr(model, "score_and_divergence", None)
        if closed_form is not None:
            self.score_and_divergence = lambda x, t: self._timed(closed_form, x, t)

    def __call__(self, x: Tensor, t) -> Tensor:
        return self._timed(self.model, x, t)

    def _timed(self, fn: Callable, x: Tensor, t):
        _synchronize(self.device)
        start = time.perf_counter()
        out = fn(x, t)
        _synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def sweep(
    cases: Sequence[Case],
    error: Callable[[Outcome], float],
    *,
    runs: int,
    device: torch.device,
    knob: str = "tol",
    bar: Callable[[str], None] | None = None,
) -> list[dict]:
    """Run every case at each of its knobs ``runs`` times (after one warm-up solve per case), interleaving the cases
    round by round. One point per (case, knob): the error of the first run, time min/median, nf, peak memory.
    An exception or a failed retcode gives a NaN point and does not stop the sweep."""
    points: dict[tuple[str, float], dict] = {}
    for case in cases:
        try:
            case.run(case.knobs[0])  # warm-up: first-call allocations, dispatch caches, vmap tracing
        except Exception:  # recorded at the first measured run
            pass
    knobs = sorted({k for c in cases for k in c.knobs}, reverse=knob == "tol")
    for value in knobs:
        active = [c for c in cases if value in c.knobs]
        for c in active:
            points[(c.name, value)] = {
                "setup": c.name,
                **c.meta,
                knob: value,
                "error": math.nan,
                "time_min": math.nan,
                "time_median": math.nan,
                "nf": None,
                "peak_mb": math.nan,
                "retcode": "",
                "_times": [],
            }
        for r in range(runs):
            for c in active:
                p = points[(c.name, value)]
                if p["retcode"] and p["retcode"] != "Success":
                    continue
                if bar:
                    bar(f"{c.name} {knob}={value:g} run {r + 1}/{runs}")
                try:
                    seconds, peak, rss, out = measure(lambda c=c, value=value: c.run(value), device)
                except Exception as exc:
                    p["retcode"] = f"error: {type(exc).__name__}: {exc}"
                    continue
                p["retcode"] = out.retcode
                if out.retcode != "Success":
                    continue
                p["_times"].append(seconds)
                p["peak_mb"] = peak if not _finite(p["peak_mb"]) else max(p["peak_mb"], peak)
                p["rss_mb"] = max(p.get("rss_mb", 0.0), rss)
                if r == 0:
                    p["error"] = error(out)
                    p["nf"] = out.nf
                    p["rows"] = out.row_evaluations
                    p.update(out.extra)
    result = []
    for p in points.values():
        times = p.pop("_times")
        if times and p["retcode"] == "Success":
            p["time_min"], p["time_median"] = min(times), statistics.median(times)
            p["runs"] = len(times)
        else:
            p["error"] = math.nan
        result.append(p)
    order = {c.name: i for i, c in enumerate(cases)}
    return sorted(result, key=lambda p: (order[p["setup"]], -p[knob] if knob == "tol" else p[knob]))


def _curve(points: list[dict], setup: str, work: str = "time_min") -> tuple[list[float], list[float]]:
    sel = [p for p in points if p["setup"] == setup and p["retcode"] == "Success"]
    return [p["error"] for p in sel], [float(p[work]) for p in sel]


def compare(points: list[dict], peer: str, ours: str, peer_points: list[dict] | None = None) -> dict:
    """:func:`matched_error_ratios` of two setups' sweeps (``peer_points`` when the peer's live elsewhere), with the
    same ratio for right-hand-side calls (``nf_geomean``) and for the batch rows those calls evaluated
    (``rows_geomean``; pysens evaluates only unfinished samples): time ≈ rows × cost per row, so the ratios tell fewer
    steps from cheaper steps."""
    peer_points = points if peer_points is None else peer_points
    r = matched_error_ratios(_curve(peer_points, peer), _curve(points, ours))
    r["nf_geomean"] = matched_error_ratios(_curve(peer_points, peer, "nf"), _curve(points, ours, "nf"))["geomean"]
    if all("rows" in p for p in peer_points + points if p["retcode"] == "Success"):
        rows = matched_error_ratios(_curve(peer_points, peer, "rows"), _curve(points, ours, "rows"))
        r["rows_geomean"] = rows["geomean"]
    return r
