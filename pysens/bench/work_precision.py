"""Work-precision diagrams with DiffEqDevTools semantics (SciML's ``WorkPrecisionSet``), for any backend or peer.

**The sweep.** Each **setup** (a method on a backend with its options, or a peer library's runner, see
:mod:`pysens.bench.peers`) is run at every point ``i`` of the sweep. A point pairs the tolerances
``(abstols[i], reltols[i])`` with a fixed step ``dts[i]`` (or the setup's own ``Setup.dts[i]``, SciML's per-setup
``:dts``): a setup with a step size steps with it; a setup whose options say ``adaptive=True`` ignores the global
``dts`` and uses the tolerances. Whatever is given (abstols/reltols, dts, Setup.dts) must have the same length.

**ODE mode** (an :class:`ODEProblem`). Errors are measured against a **reference**, never from the solver's own
estimate: a :class:`Setup` solved once at ``reference_tol``, a tensor of states at the error times, or an exact
solution ``ref(t)``. ``error="final"``: mean |x(T) − ref(T)|; ``"l2"``/``"linf"``: RMS / max over the requested
``saveat`` times and all components; ``"L2"``/``"Linf"``: the same on 100 equispaced times (dense output or stepping
to them). ``error`` may also be a callable ``metric(x) -> float`` of the states at the error times
``x [n, B, *event]`` (e.g. the log-likelihood error of an augmented state against a closed form); it needs no
reference, and its name is recorded as the error's name.

**SDE mode** (an :class:`SDEProblem`). Setups step with fixed ``dts`` (adaptive ones may be swept over tolerances).
``paths=M`` Brownian paths are stacked on the batch axis: the ensemble state is ``[M·B, *event]``, row ``m·B + b``
being sample ``b`` on path ``m``, so the problem's ``f`` and ``g`` must accept any batch size. Every setup and the
reference run on the **same** fine Brownian grid (a :class:`BrownianGrid`, the analogue of Julia's ``NoiseGrid``); a
coarse step uses the sum of the fine increments it spans, so the comparison is pathwise.

* **Strong error** (default): per path, the chosen norm of X − X_ref over the error times and the path's samples
  (``"final"``: mean |X(T) − X_ref(T)|), then the mean over the M paths (DiffEqDevTools' ``numruns_error``); its
  standard error over paths is ``stderr``. The reference is a :class:`Setup` on a much finer step (``reference_dt``;
  by default the fine grid's step, ``REFERENCE_REFINEMENT`` times finer than the finest setup step), an exact
  solution ``ref(t, W) -> [n, M·B, *event]`` given the path's values ``W(t) − W(t0)`` at the error times (GBM, OU),
  or a tensor of states (with ``brownian=`` given, so that the path is known).
* **Weak error** (``weak=True``): for each test function ``phi`` (default ``{"x": x, "x^2": x²}``),
  |E_M[phi(X)] − E_ref[phi(X)]| per sample, time and component, aggregated with the chosen norm (``"final"``: mean
  over samples and components at T). The reference expectation is exact (a number, a tensor broadcastable to
  ``[n, B, *phi_shape]``, or a callable of the error times ``t [n]`` giving one; a dict by phi name when there are
  several phi), or a :class:`Setup` whose ensemble on the same paths estimates it (then the paired differences
  phi(X) − phi(X_ref) give the estimate and its standard error). ``stderr`` is the Monte-Carlo standard error of each
  element's estimate, aggregated like the error (a scale to read the error against: a weak error below about 2–3
  stderr is not resolved). The point's ``error`` is the largest over the test functions; ``weak`` holds each one.

**Time** is the minimum (and the median) over ``runs`` timed solves after ``warmup`` untimed ones (SDE mode: one solve
of the whole M-path ensemble); the error comes from the last timed solve. A failed retcode, or an exception inside a
setup, gives NaN error and NaN time and does not stop the sweep. **Memory**: the peak resident set size above the
run's starting RSS (sampled from ``/proc/self/statm`` on a helper thread), or ``torch.cuda.max_memory_allocated`` for
CUDA states.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pysens.artifacts import save_figure, write_json
from pysens.bench.sweep_targets import (
    ERRORS,
    SDE_ERRORS,
    Setup,
    Target,
    error_times,
    metric_name,
    ode_target,
    sde_target,
)
from pysens.solvers import BrownianGrid, ODEProblem, SDEProblem
from pysens.validation import check_int, check_number


@dataclass
class WorkPrecision:
    """The points of a sweep: one dict per (setup, sweep point).

    ``mode`` is ``"ode"``, ``"strong"`` or ``"weak"``; ``paths`` the number of Brownian paths (SDE modes);
    ``brownian`` the fine grid every setup ran on (not written to JSON).
    """

    problem: str
    error: str
    points: list[dict]
    reference: dict
    mode: str = "ode"
    paths: int | None = None
    brownian: BrownianGrid | None = field(default=None, repr=False)

    def table(self) -> str:
        sde = self.mode != "ode"
        head = (
            f"{'setup':<24} {'abstol':>8} {'reltol':>8} {'dt':>9} {'error':>10} "
            + (f"{'stderr':>10} " if sde else "")
            + f"{'time min':>10} {'time med':>10} {'nf':>8} {'steps':>8} {'peak MB':>8} retcode"
        )
        title = f"work-precision: {self.problem} (error: {self.error}" + (
            f", {self.mode}, {self.paths} paths)" if sde else ")"
        )
        lines = [title, head, "-" * len(head)]
        for p in self.points:
            lines.append(
                f"{p['setup']:<24} {_fmt(p['abstol'], '8.0e', '-')} {_fmt(p['reltol'], '8.0e', '-')} "
                f"{_fmt(p.get('dt'), '9.2e', '-')} {_fmt(p['error'])} "
                + (f"{_fmt(p.get('stderr'))} " if sde else "")
                + f"{_fmt(p['time_min'])} {_fmt(p['time_median'])} {p.get('nf') or 0:>8} {p.get('naccept') or 0:>8} "
                f"{_fmt(p.get('peak_mb'), '8.1f')} {p['retcode']}"
            )
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "problem": self.problem,
            "error": self.error,
            "mode": self.mode,
            "paths": self.paths,
            "reference": self.reference,
            "points": self.points,
        }

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
        what = self.error if self.mode == "ode" else f"{self.mode} {self.error}, {self.paths} paths"
        ax.set_xlabel(f"error ({what})")
        ax.set_ylabel("time [s] (min of runs)")
        ax.set_title(title or self.problem)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        save_figure(fig, path)
        plt.close(fig)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _fmt(v, spec: str = "10.2e", missing: str = "nan") -> str:
    width = spec.split(".")[0]
    if v is None and missing != "nan":
        return format(missing, ">" + width)
    return format(v, spec) if _finite(v) else format("nan", ">" + width)


class PeakRSS:
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


def _check_sweep(setups, abstols, reltols, dts) -> None:
    """Setups: a non-empty sequence of :class:`Setup`; tolerances and steps: positive finite numbers."""
    if isinstance(setups, (Setup, str)) or not isinstance(setups, Sequence):
        raise TypeError(f"setups must be a list of Setup, got {type(setups).__name__}")
    if not setups:
        raise ValueError("setups must hold at least one Setup (an empty sweep measures nothing)")
    for i, s in enumerate(setups):
        if not isinstance(s, Setup):
            raise TypeError(f"setups[{i}] must be a Setup, got {type(s).__name__}")
    for label, values in (("abstols", abstols), ("reltols", reltols), ("dts", dts)):
        if values is None:
            continue
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | Tensor):
            raise TypeError(f"{label} must be a sequence of numbers, got {type(values).__name__}")
        for i, v in enumerate(values):
            check_number(v, f"{label}[{i}]", positive=label == "dts", nonnegative=True)


def _sweep_length(abstols, reltols, dts, setups: Sequence[Setup]) -> int:
    lengths = {}
    if (abstols is None) != (reltols is None):
        raise ValueError("abstols and reltols go together: give both (paired) or neither")
    if abstols is not None:
        lengths["abstols"], lengths["reltols"] = len(abstols), len(reltols)
    if dts is not None:
        lengths["dts"] = len(dts)
    for s in setups:
        if s.dts is not None:
            lengths[f"{s.name}.dts"] = len(s.dts)
    if not lengths:
        raise ValueError("give the sweep: abstols and reltols (paired), dts, or Setup.dts")
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"the sweep's tolerances and step sizes must be non-empty and paired (same length): {lengths}")
    return next(iter(lengths.values()))


def work_precision(
    problem: ODEProblem | SDEProblem,
    setups: Sequence[Setup],
    abstols: Sequence[float] | None = None,
    reltols: Sequence[float] | None = None,
    *,
    dts: Sequence[float] | None = None,
    reference: Setup | Tensor | Callable | Mapping | float | None = None,
    reference_tol: tuple[float, float] = (1e-13, 1e-13),
    reference_dt: float | None = None,
    error: str | Callable[[Tensor], float] = "final",
    weak: bool = False,
    phi: Callable[[Tensor], Tensor] | Mapping[str, Callable[[Tensor], Tensor]] | None = None,
    paths: int | None = None,
    brownian: BrownianGrid | None = None,
    brownian_steps: int | None = None,
    iterated: bool = True,
    generator: torch.Generator | None = None,
    saveat=None,
    runs: int = 5,
    warmup: int = 1,
    name: str | None = None,
    solve_kwargs: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> WorkPrecision:
    """Sweep every setup over the paired tolerances / step sizes and measure error against the reference.

    See the module docstring for the semantics.

    ODE mode: ``reference`` is a :class:`Setup` (solved once at ``reference_tol``, with the fixed step
    ``reference_dt`` when given), a tensor ``[n, B, *event]`` at the error times, a callable
    ``ref(t) -> [n, B, *event]``, or None with a callable ``error``.

    SDE mode: ``reference`` is a :class:`Setup` (run at ``reference_dt``, default the fine grid's step, with
    ``reference_tol`` if adaptive), an exact ``ref(t, W)`` (strong), or the exact expectations (weak). The paths:
    ``paths`` (default 100) Brownian paths on a fine grid of ``brownian_steps`` steps (default: the least common
    multiple of the setups' step counts, times ``REFERENCE_REFINEMENT`` for a Setup reference) drawn from
    ``generator`` (default: seeded 0, so repeated sweeps share paths), with the per-interval time integrals when
    ``iterated`` (exact ΔZ for SRA1/SOSRA and torchsde's srk); or the ``brownian`` grid given (``[N, M·B, *event]``
    increments, path-major); or, when neither ``brownian`` nor ``paths`` is given, the grid the problem carries.

    The error times are ``saveat`` (default both ends of tspan; 100 equispaced times for ``"L2"``/``"Linf"``).
    ``solve_kwargs`` go to every :func:`pysens.solve` call (not to runners).
    """
    metric = error if callable(error) else None
    sde = isinstance(problem, SDEProblem)
    if not sde and not isinstance(problem, ODEProblem):
        raise TypeError(f"problem must be an ODEProblem or SDEProblem, got {type(problem).__name__}")
    allowed = SDE_ERRORS if sde else ERRORS
    if metric is None and error not in allowed:
        extra_note = " (SDE solutions have no dense output: use 'l2'/'linf' over saveat)" if sde else ""
        raise ValueError(f"error must be one of {allowed} or a callable metric(x) -> float, got {error!r}{extra_note}")
    if metric is not None and reference is not None:
        raise ValueError("a callable error measures the error by itself: leave reference=None")
    if metric is None and reference is None:
        raise ValueError("reference is required (a Setup, an exact solution or given states) unless error is callable")
    if weak and (not sde or metric is not None):
        raise ValueError("weak=True applies to SDEProblems with a named error ('final', 'l2', 'linf')")
    if not sde and (paths is not None or brownian is not None or phi is not None or brownian_steps is not None):
        raise ValueError("paths, brownian, brownian_steps and phi apply to SDEProblems only")
    runs, warmup = check_int(runs, "runs"), check_int(warmup, "warmup", minimum=0)
    _check_sweep(setups, abstols, reltols, dts)
    n_points = _sweep_length(abstols, reltols, dts, setups)
    extra = dict(solve_kwargs or {})
    t_err = error_times(problem, 100) if error in ("L2", "Linf") else None
    if t_err is None and saveat is not None:
        t_err = torch.as_tensor(saveat, dtype=torch.float64)
    if t_err is None:
        t_err = torch.tensor(problem.tspan, dtype=torch.float64)

    if sde:
        target = sde_target(
            problem,
            setups,
            n_points,
            dts,
            reference=reference,
            reference_tol=reference_tol,
            reference_dt=reference_dt,
            metric=metric,
            error=error,
            weak=weak,
            phi=phi,
            paths=paths,
            brownian=brownian,
            brownian_steps=brownian_steps,
            iterated=iterated,
            generator=generator,
            t_err=t_err,
            extra=extra,
        )
    else:
        target = ode_target(problem, reference, reference_tol, reference_dt, metric, error, t_err, extra)

    points = []
    for setup in setups:
        for i in range(n_points):
            atol = None if abstols is None else abstols[i]
            rtol = None if reltols is None else reltols[i]
            dt = setup.step_size(i, dts)
            points.append(_point(target, setup, atol, rtol, dt, t_err, extra, runs, warmup, progress))
    return WorkPrecision(
        problem=name or problem.name or "problem",
        error=metric_name(metric) if metric is not None else error,
        points=points,
        reference=target.info,
        mode=target.mode,
        paths=target.paths,
        brownian=target.brownian,
    )


def _point(target: Target, setup: Setup, atol, rtol, dt, t_err, extra, runs: int, warmup: int, progress) -> dict:
    """Warm-up solves, then ``runs`` timed ones; the error of the last."""
    problem = target.problem
    point = {
        "setup": setup.name,
        "method": setup.method,
        "backend": setup.backend,
        "abstol": atol,
        "reltol": rtol,
        "dt": dt,
        "error": math.nan,
        "time_min": math.nan,
        "time_median": math.nan,
        "retcode": "",
        "runs": 0,
    }
    if target.mode != "ode":
        point["stderr"] = math.nan
    if progress:
        where = f"dt={dt:.3g}" if dt is not None else f"abstol={atol:.0e}" if atol is not None else "default tolerances"
        progress(f"{setup.name} {where}")
    kwargs = {"atol": atol, "rtol": rtol, "dt": dt, "saveat": t_err, "solve_kwargs": extra}
    try:
        for _ in range(warmup):
            setup.solve(problem, **kwargs)
        timings = []
        device = problem.x0.device
        cuda = problem.x0.is_cuda
        for _ in range(runs):
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
                torch.cuda.synchronize(device)
            with PeakRSS() as mem:
                start = time.perf_counter()
                sol = setup.solve(problem, **kwargs)
                if cuda:
                    torch.cuda.synchronize(device)
                timings.append(time.perf_counter() - start)
            point["runs"] += 1
        point["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else mem.megabytes
        point["retcode"] = sol.retcode
        point.update({k: v for k, v in sol.stats.as_dict().items() if not k.startswith("sample_")})
        if sol.retcode == "Success":
            point.update(target.score(sol.x))
            point["time_min"] = min(timings)
            point["time_median"] = statistics.median(timings)
    except Exception as exc:  # a failing setup is a NaN point, not the end of the sweep
        point["retcode"] = f"error: {type(exc).__name__}: {exc}"
    return point
