"""What a work-precision sweep measures against: the solver configuration (:class:`Setup`), the reference target of an
ODE or SDE problem (a reference setup, exact solution or given states; the shared Brownian grid of an SDE ensemble) and
the strong and weak error measures. The sweep itself is :func:`pysens.bench.work_precision.work_precision`, whose
docstring defines the semantics.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from pysens.solvers import BrownianGrid, ODEProblem, SDEProblem, Solution, solve
from pysens.solvers.options import fixed_grid
from pysens.validation import check_output

ERRORS = ("final", "l2", "linf", "L2", "Linf")
SDE_ERRORS = ("final", "l2", "linf")  # SDE solutions have no dense output
REFERENCE_REFINEMENT = 64  # default fine-grid step of an SDE reference setup: this many times the finest setup step
DEFAULT_PATHS = 100
MAX_BROWNIAN_STEPS = 2**22


def _identity(x: Tensor) -> Tensor:
    return x


def _square(x: Tensor) -> Tensor:
    return x * x


DEFAULT_PHI = {"x": _identity, "x^2": _square}


@dataclass
class Setup:
    """One solver configuration.

    Attributes:
        name: the label in tables and plots.
        method: a SciML method name for :func:`pysens.solve`; for a runner setup, the peer's own method name.
        backend: a pysens backend; for a runner setup, the peer's name (a label).
        options: extra keyword arguments of ``solve`` (or of the runner).
        runner: when set, the harness calls ``runner(problem, atol=..., rtol=..., saveat=<float64 tensor of the error
            times>, [dt=...,] **options)`` instead of ``solve``; it must return a :class:`Solution` with time-major
            ``x [n, B, *event]`` at those times, a ``retcode`` and ``stats`` (at least ``nf``). ``atol``/``rtol`` are
            None when the sweep has no tolerances; ``dt`` is passed only when the point has a step size.
        dts: this setup's own fixed steps, one per sweep point (SciML's per-setup ``:dts``).
    """

    name: str
    method: str
    backend: str = "torch"
    options: dict[str, Any] = field(default_factory=dict)
    runner: Callable[..., Solution] | None = None
    dts: Sequence[float] | None = None

    def step_size(self, i: int, dts: Sequence[float] | None) -> float | None:
        """The fixed step of sweep point ``i``: the setup's own, else the sweep's unless the setup is adaptive."""
        if self.dts is not None:
            return float(self.dts[i])
        if dts is not None and self.options.get("adaptive") is not True:
            return float(dts[i])
        return None

    def solve(
        self,
        problem,
        *,
        atol=None,
        rtol=None,
        dt: float | None = None,
        saveat: Tensor,
        solve_kwargs: dict | None = None,
    ) -> Solution:
        """One solve of ``problem`` saving at ``saveat``; ``solve_kwargs`` go to :func:`pysens.solve` only."""
        step = {} if dt is None else {"dt": dt}
        if self.runner is not None:
            return self.runner(problem, atol=atol, rtol=rtol, saveat=saveat, **step, **self.options)
        tols = {k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None}
        return solve(
            problem, self.method, self.backend, saveat=saveat, **tols, **step, **self.options, **(solve_kwargs or {})
        )


def error_times(problem, n: int) -> Tensor:
    t0, t1 = problem.tspan
    return torch.linspace(t0, t1, n, dtype=torch.float64)


def _error(x: Tensor, ref: Tensor, kind: str) -> float:
    if kind == "final":
        return float((x[-1] - ref[-1]).abs().mean())
    diff = (x - ref).double()
    if kind in ("l2", "L2"):
        return float(diff.pow(2).mean().sqrt())
    return float(diff.abs().max())


def _aggregate(values: Tensor, kind: str) -> float:
    """A non-negative ``[n, K]`` table (times × elements) reduced as the error ``kind`` reduces differences."""
    if kind == "final":
        return float(values[-1].mean())
    if kind == "l2":
        return float(values.pow(2).mean().sqrt())
    return float(values.max())


def _strong_error(x: Tensor, ref: Tensor, kind: str, paths: int) -> dict:
    """Per path, the ``kind`` norm of x − ref over times and the path's samples; mean and standard error over paths."""
    diff = (x - ref).double().reshape(x.shape[0], paths, -1)  # path-major rows: [n, M, B·d]
    if kind == "final":
        per_path = diff[-1].abs().mean(-1)
    elif kind == "l2":
        per_path = diff.pow(2).mean(dim=(0, 2)).sqrt()
    else:
        per_path = diff.abs().amax(dim=(0, 2))
    stderr = float(per_path.std() / math.sqrt(paths)) if paths > 1 else math.nan
    return {"error": float(per_path.mean()), "stderr": stderr}


def _ensemble_values(phi: Callable[[Tensor], Tensor], x: Tensor, paths: int) -> Tensor:
    """phi of the ensemble states, float64, as ``[n, M, B, *phi_shape]``."""
    v = phi(x)
    if v.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"phi must map the ensemble states [n, M·B, *event] {tuple(x.shape)} sample by sample to "
            f"[n, M·B, ...], got {tuple(v.shape)}"
        )
    return v.double().reshape(x.shape[0], paths, x.shape[1] // paths, *v.shape[2:])


def _weak_error(
    x: Tensor,
    phis: dict[str, Callable],
    exact: dict[str, Any] | None,
    ref_x: Tensor | None,
    t: Tensor,
    kind: str,
    paths: int,
) -> dict:
    """|E_M[phi(X)] − E_ref[phi]| and its Monte-Carlo standard error, for each phi; the largest error is the point's."""
    per_phi = {}
    for name, fn in phis.items():
        v = _ensemble_values(fn, x, paths)
        if ref_x is not None:  # paired with a reference ensemble on the same paths
            samples = v - _ensemble_values(fn, ref_x, paths)
            diff = samples.mean(1)
        else:
            samples = v
            target = _expectation(exact[name], t).to(v.device)
            diff = v.mean(1) - torch.broadcast_to(target, v.mean(1).shape)
        se = samples.std(1) / math.sqrt(paths) if paths > 1 else torch.full_like(diff, math.nan)
        n = x.shape[0]
        per_phi[name] = {
            "error": _aggregate(diff.abs().reshape(n, -1), kind),
            "stderr": _aggregate(se.reshape(n, -1), kind),
        }
    worst = max(per_phi, key=lambda k: per_phi[k]["error"] if math.isfinite(per_phi[k]["error"]) else math.inf)
    return {"error": per_phi[worst]["error"], "stderr": per_phi[worst]["stderr"], "weak": per_phi}


def _expectation(value, t: Tensor) -> Tensor:
    if callable(value):
        value = value(t)
    return torch.as_tensor(value, dtype=torch.float64)


@dataclass
class Target:
    """What the sweep solves and how it scores a solution's states at the error times."""

    problem: ODEProblem | SDEProblem
    score: Callable[[Tensor], dict]
    info: dict
    mode: str = "ode"
    paths: int | None = None
    brownian: BrownianGrid | None = None


def metric_name(metric: Callable) -> str:
    return getattr(metric, "__name__", type(metric).__name__)


def _solve_reference(reference: Setup, problem, reference_tol, dt, t_err, extra) -> tuple[Tensor, dict]:
    start = time.perf_counter()
    sol = reference.solve(
        problem, atol=reference_tol[0], rtol=reference_tol[1], dt=dt, saveat=t_err, solve_kwargs=extra
    )
    if sol.retcode != "Success":
        raise RuntimeError(f"the reference setup {reference.name} failed: {sol.retcode} {sol.message}")
    info = {
        "setup": reference.name,
        "method": reference.method,
        "backend": reference.backend,
        "abstol": reference_tol[0],
        "reltol": reference_tol[1],
        "time": time.perf_counter() - start,
    }
    if dt is not None:
        info["dt"] = dt
    return sol.x, info


def ode_target(
    problem: ODEProblem, reference, reference_tol, reference_dt, metric, error: str, t_err: Tensor, extra
) -> Target:
    if metric is not None:
        return Target(problem, lambda x: {"error": float(metric(x))}, {"setup": None, "metric": metric_name(metric)})
    if isinstance(reference, Setup):
        ref, info = _solve_reference(reference, problem, reference_tol, reference_dt, t_err, extra)
    elif callable(reference):
        ref, info = reference(t_err), {"setup": "exact"}
        check_output(ref, "reference", "reference(t)", (t_err.numel(), *problem.x0.shape), None, None)
    else:
        ref, info = torch.as_tensor(reference), {"setup": "given"}
        check_output(ref, "reference", "the given states", (t_err.numel(), *problem.x0.shape), None, None)
    ref = ref.detach().cpu()
    return Target(problem, lambda x: {"error": _error(x.detach().cpu(), ref, error)}, info)


def _steps(tspan, dt: float) -> int:
    """Number of steps of the fixed grid ``solve(..., dt=dt)`` walks (see :func:`fixed_grid`)."""
    return fixed_grid(tspan, dt, None, None).numel() - 1


def _brownian_grid(
    problem: SDEProblem,
    setups,
    n_points,
    dts,
    reference,
    reference_dt,
    paths,
    brownian,
    brownian_steps,
    iterated,
    generator,
) -> tuple[BrownianGrid, int, float | None]:
    """The fine grid all setups share, its number of paths, and the reference setup's step."""
    x0, tspan = problem.x0, problem.tspan
    b = x0.shape[0]
    if brownian is None and paths is None and problem.brownian is not None:
        brownian = problem.brownian
    if brownian is not None:
        if not isinstance(brownian, BrownianGrid):
            raise TypeError(f"brownian must be a BrownianGrid, got {type(brownian).__name__}")
        rows = brownian.shape[0] if len(brownian.shape) else 0
        if rows % b or (paths is not None and rows != paths * b):
            raise ValueError(
                f"brownian holds {rows} rows per step; it must hold paths·B = {paths or 'M'}·{b} (path-major)"
            )
        grid, m = brownian, rows // b
        ref_dt = reference_dt
        if isinstance(reference, Setup) and ref_dt is None:
            ref_dt = abs(tspan[1] - tspan[0]) / (grid.times.numel() - 1)
        return grid, m, ref_dt
    m = DEFAULT_PATHS if paths is None else paths
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ValueError(f"paths must be a positive integer, got {paths!r}")
    counts = [_steps(tspan, s.step_size(i, dts)) for s in setups for i in range(n_points) if s.step_size(i, dts)]
    if reference_dt is not None:
        counts.append(_steps(tspan, reference_dt))
    if brownian_steps is None:
        if not counts:
            raise ValueError("no setup has a fixed step: give brownian_steps (the fine Brownian grid's step count)")
        brownian_steps = math.lcm(*counts)
        if isinstance(reference, Setup) and reference_dt is None:
            brownian_steps *= REFERENCE_REFINEMENT
        if brownian_steps > MAX_BROWNIAN_STEPS:
            raise ValueError(
                f"the step counts {sorted(set(counts))} need a fine grid of {brownian_steps} steps; choose dts that "
                "divide each other (e.g. halvings) or give brownian_steps"
            )
    ref_dt = reference_dt
    if isinstance(reference, Setup) and ref_dt is None:
        ref_dt = abs(tspan[1] - tspan[0]) / brownian_steps
    if generator is None:
        generator = torch.Generator(device=x0.device).manual_seed(0)
    grid = BrownianGrid.sample(
        tspan,
        brownian_steps,
        (m * b, *x0.shape[1:]),
        generator=generator,
        dtype=x0.dtype,
        device=x0.device,
        iterated=iterated,
    )
    return grid, m, ref_dt


def sde_target(
    problem: SDEProblem,
    setups,
    n_points,
    dts,
    *,
    reference,
    reference_tol,
    reference_dt,
    metric,
    error,
    weak,
    phi,
    paths,
    brownian,
    brownian_steps,
    iterated,
    generator,
    t_err,
    extra,
) -> Target:
    grid, m, ref_dt = _brownian_grid(
        problem, setups, n_points, dts, reference, reference_dt, paths, brownian, brownian_steps, iterated, generator
    )
    x0 = problem.x0
    ens = copy.copy(problem)  # a shallow copy keeps split problems' f1/f2
    ens.x0 = x0.repeat(m, *([1] * (x0.dim() - 1)))  # path-major: row m·B + b
    ens.brownian = grid
    grid.check_covers(ens.tspan, ens.x0)
    grid.indices(t_err)  # the error times must be points of the path
    for s in setups:  # misuse (a step that does not divide the grid) stops the sweep before any work
        for i in range(n_points):
            dt = s.step_size(i, dts)
            if dt is not None:
                grid.indices(fixed_grid(ens.tspan, dt, None, t_err))
    mode = "weak" if weak else "strong"
    base = {"paths": m, "brownian_steps": grid.times.numel() - 1}
    if metric is not None:
        return Target(
            ens, lambda x: {"error": float(metric(x))}, {**base, "metric": metric_name(metric)}, mode, m, grid
        )
    ref_x = None
    if isinstance(reference, Setup):
        ref_x, info = _solve_reference(reference, ens, reference_tol, ref_dt, t_err, extra)
        ref_x = ref_x.detach()
    elif weak:
        info = {"setup": "exact"}
    elif callable(reference):
        w = grid.path[grid.indices(t_err)]
        ref_x, info = reference(t_err, w), {"setup": "exact"}
        check_output(ref_x, "reference", "reference(t, W)", (t_err.numel(), *ens.x0.shape), None, None)
        ref_x = ref_x.detach()
    else:
        if brownian is None:
            raise ValueError("a tensor reference of an SDE needs its Brownian path: pass brownian= as well")
        ref_x, info = torch.as_tensor(reference), {"setup": "given"}
        check_output(ref_x, "reference", "the given states", (t_err.numel(), *ens.x0.shape), None, None)
    info.update(base)
    if not weak:
        return Target(ens, lambda x: _strong_error(x, ref_x.to(x.device), error, m), info, mode, m, grid)
    phis = _test_functions(phi)
    for fn in phis.values():  # misuse shows here, not as NaN points
        _ensemble_values(fn, ens.x0[None], m)
    info["phi"] = list(phis)
    exact = None if ref_x is not None else _exact_expectations(reference, phis)
    return Target(ens, lambda x: _weak_error(x, phis, exact, ref_x, t_err, error, m), info, mode, m, grid)


def _test_functions(phi) -> dict[str, Callable]:
    if phi is None:
        return dict(DEFAULT_PHI)
    if callable(phi):
        return {metric_name(phi): phi}
    if isinstance(phi, Mapping) and phi and all(callable(v) for v in phi.values()):
        return dict(phi)
    raise TypeError("phi must be a callable phi(x) or a non-empty dict {name: phi}")


def _exact_expectations(reference, phis: dict) -> dict:
    if reference is None:
        raise ValueError("a weak error needs a reference: a Setup, or the exact E[phi] (number, tensor or callable)")
    if isinstance(reference, Mapping):
        if set(reference) != set(phis):
            raise ValueError(
                f"the weak reference must give E[phi] for each phi {sorted(phis)}, got {sorted(reference)}"
            )
        return dict(reference)
    if len(phis) != 1:
        raise ValueError(
            f"with several test functions {sorted(phis)} the weak reference must be a dict {{name: E[phi]}}"
        )
    return {next(iter(phis)): reference}
