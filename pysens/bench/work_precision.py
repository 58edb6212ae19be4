"""Work-precision diagrams with DiffEqDevTools semantics (SciML's ``WorkPrecisionSet``), for any backend.

* A **reference** is solved once, at tight tolerance, by a named setup (or given as a tensor / callable of t).
* Each **setup** (a method on a backend with its options) is run over **paired** tolerances
  ``(abstol_i, reltol_i)``.
* **Errors are measured against the reference**, never from the solver's own estimate:
  ``"final"``: mean |x(T) − ref(T)|; ``"l2"``/``"linf"``: RMS / max over the requested ``saveat`` times and
  all components; ``"L2"``/``"Linf"``: the same on 100 equispaced times (dense output or stepping to them).
* **Time** is the minimum (and the median) over ``runs`` timed runs after ``warmup`` untimed ones.
* A failed retcode, or an exception inside a setup, gives NaN error and NaN time and does not stop the sweep.
* **Memory**: the peak resident set size above the run's starting RSS (sampled from ``/proc/self/statm`` on a
  helper thread), or ``torch.cuda.max_memory_allocated`` for CUDA states.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pysens.artifacts import save_figure, write_json
from pysens.solvers import ODEProblem, SDEProblem, solve

ERRORS = ("final", "l2", "linf", "L2", "Linf")


@dataclass
class Setup:
    """One solver configuration: SciML method name, backend and extra ``solve`` keyword arguments."""

    name: str
    method: str
    backend: str = "torch"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkPrecision:
    """The points of a sweep: one dict per (setup, tolerance pair)."""

    problem: str
    error: str
    points: list[dict]
    reference: dict

    def table(self) -> str:
        head = (
            f"{'setup':<24} {'abstol':>8} {'reltol':>8} {'error':>10} {'time min':>10} {'time med':>10} "
            f"{'nf':>8} {'steps':>8} {'peak MB':>8} retcode"
        )
        lines = [f"work-precision: {self.problem} (error: {self.error})", head, "-" * len(head)]
        for p in self.points:
            lines.append(
                f"{p['setup']:<24} {p['abstol']:>8.0e} {p['reltol']:>8.0e} {_fmt(p['error'])} {_fmt(p['time_min'])} "
                f"{_fmt(p['time_median'])} {p.get('nf', 0):>8} {p.get('naccept') or 0:>8} "
                f"{_fmt(p.get('peak_mb'), '8.1f')} {p['retcode']}"
            )
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"problem": self.problem, "error": self.error, "reference": self.reference, "points": self.points}

    def to_json(self, path) -> None:
        write_json(path, self.as_dict())

    def plot(self, path, title: str | None = None) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for name in dict.fromkeys(p["setup"] for p in self.points):
            pts = [p for p in self.points if p["setup"] == name and _finite(p["error"]) and _finite(p["time_min"])]
            if pts:
                ax.loglog([p["error"] for p in pts], [p["time_min"] for p in pts], "o-", label=name)
        ax.set_xlabel(f"error ({self.error}) vs reference")
        ax.set_ylabel("time [s] (min of runs)")
        ax.set_title(title or self.problem)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        save_figure(fig, path)
        plt.close(fig)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _fmt(v, spec: str = "10.2e") -> str:
    return format(v, spec) if _finite(v) else format("nan", ">" + spec.split(".")[0])


class _PeakRSS:
    """Peak resident set size during a block, sampled every millisecond from /proc/self/statm."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.peak = 0

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self.page
        except OSError:
            return 0

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def megabytes(self) -> float:
        return (self.peak - self.base) / 2**20


def _times(problem, n: int) -> Tensor:
    t0, t1 = problem.tspan
    return torch.linspace(t0, t1, n, dtype=torch.float64)


def _error(x: Tensor, ref: Tensor, kind: str) -> float:
    if kind == "final":
        return float((x[-1] - ref[-1]).abs().mean())
    diff = (x - ref).double()
    if kind in ("l2", "L2"):
        return float(diff.pow(2).mean().sqrt())
    return float(diff.abs().max())


def _run(problem, setup: Setup, tol: tuple[float, float], saveat, extra: dict):
    return solve(
        problem, setup.method, setup.backend, atol=tol[0], rtol=tol[1], saveat=saveat, **setup.options, **extra
    )


def work_precision(
    problem: ODEProblem | SDEProblem,
    setups: Sequence[Setup],
    abstols: Sequence[float],
    reltols: Sequence[float],
    *,
    reference: Setup | Tensor | Callable[[Tensor], Tensor],
    reference_tol: tuple[float, float] = (1e-13, 1e-13),
    error: str = "final",
    saveat=None,
    runs: int = 5,
    warmup: int = 1,
    name: str | None = None,
    solve_kwargs: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> WorkPrecision:
    """Sweep every setup over the paired tolerances and measure error against the reference.

    ``reference`` is a :class:`Setup` solved once at ``reference_tol`` (abstol, reltol), a tensor of states at
    the error times ``[n, B, *event]``, or a callable ``ref(t) -> [n, B, *event]`` (an exact solution).
    """
    if error not in ERRORS:
        raise ValueError(f"error must be one of {ERRORS}, got {error!r}")
    if len(abstols) != len(reltols) or not abstols:
        raise ValueError("abstols and reltols must be non-empty and paired (same length)")
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    extra = dict(solve_kwargs or {})
    t_err = _times(problem, 100) if error in ("L2", "Linf") else None
    if t_err is None and saveat is not None:
        t_err = torch.as_tensor(saveat, dtype=torch.float64)
    if t_err is None:
        t_err = torch.tensor(problem.tspan, dtype=torch.float64)

    ref_info: dict = {}
    if isinstance(reference, Setup):
        start = time.perf_counter()
        ref_sol = solve(
            problem,
            reference.method,
            reference.backend,
            atol=reference_tol[0],
            rtol=reference_tol[1],
            saveat=t_err,
            **reference.options,
            **extra,
        )
        if ref_sol.retcode != "Success":
            raise RuntimeError(f"the reference setup {reference.name} failed: {ref_sol.retcode}")
        ref = ref_sol.x
        ref_info = {
            "setup": reference.name,
            "method": reference.method,
            "backend": reference.backend,
            "abstol": reference_tol[0],
            "reltol": reference_tol[1],
            "time": time.perf_counter() - start,
        }
    elif callable(reference):
        ref, ref_info = reference(t_err), {"setup": "exact"}
    else:
        ref, ref_info = reference, {"setup": "given"}

    points = []
    for setup in setups:
        for atol, rtol in zip(abstols, reltols, strict=True):
            point = {
                "setup": setup.name,
                "method": setup.method,
                "backend": setup.backend,
                "abstol": atol,
                "reltol": rtol,
                "error": math.nan,
                "time_min": math.nan,
                "time_median": math.nan,
                "retcode": "",
                "runs": 0,
            }
            if progress:
                progress(f"{setup.name} abstol={atol:.0e}")
            try:
                for _ in range(warmup):
                    _run(problem, setup, (atol, rtol), t_err, extra)
                timings = []
                cuda = problem.x0.is_cuda
                for _ in range(runs):
                    if cuda:
                        torch.cuda.reset_peak_memory_stats(problem.x0.device)
                        torch.cuda.synchronize(problem.x0.device)
                    with _PeakRSS() as mem:
                        start = time.perf_counter()
                        sol = _run(problem, setup, (atol, rtol), t_err, extra)
                        if cuda:
                            torch.cuda.synchronize(problem.x0.device)
                        timings.append(time.perf_counter() - start)
                    point["runs"] += 1
                point["peak_mb"] = torch.cuda.max_memory_allocated(problem.x0.device) / 2**20 if cuda else mem.megabytes
                point["retcode"] = sol.retcode
                point.update({k: v for k, v in sol.stats.as_dict().items() if not k.startswith("sample_")})
                if sol.retcode == "Success":
                    point["error"] = _error(sol.x.cpu(), ref.cpu(), error)
                    point["time_min"] = min(timings)
                    point["time_median"] = statistics.median(timings)
            except Exception as exc:  # a failing setup is a NaN point, not the end of the sweep
                point["retcode"] = f"error: {type(exc).__name__}: {exc}"
            points.append(point)
    return WorkPrecision(problem=name or problem.name or "problem", error=error, points=points, reference=ref_info)
