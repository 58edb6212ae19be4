"""The julia backend: DifferentialEquations.jl through juliacall (optional).

What it does: a problem's torch right-hand sides become Python callbacks that Julia calls in place; the Julia
package ``PySensSolvers`` (shipped in ``pysens/julia/PySensSolvers``, declared with its dependencies in
``pysens/juliapkg.json``) builds the SciML problem, solves it with the solver of the same SciML name, and returns
the saved times and states, the return code and ``sol.stats``; results come back as torch tensors on the caller's
device and dtype.

State layout: Julia integrates one float64 vector ``u`` of length ``N = B * d`` (``d = prod(event_shape)``) in
the order of ``x0.reshape(-1)``: sample ``b`` occupies ``u[b*d : (b+1)*d]``. All samples therefore share the
solver's steps and error norm (as on the scipy backend). Every callback reads its Julia buffers as numpy views
(``np.asarray`` of a ``juliacall.ArrayValue`` is zero-copy), in Julia's linear (column-major) index order, runs
the torch function on the problem's device and dtype, and writes the result into the output buffer in place.

Time: ODEs run in the direction of ``tspan`` (OrdinaryDiffEq and Sundials integrate backwards natively). SDEs
that run backwards (reverse-time samplers) are handed to Julia in the forward time ``s = -t``:
``dy = -f(-s, y) ds + g(-s, y) dW(s)`` with ``W(s)`` the problem's path read at ``t = -s``; this is exact for
Itô equations with additive or diagonal noise and keeps StochasticDiffEq on its most used path.

Noise: a problem's :class:`~pysens.solvers.noise.BrownianGrid` is replayed through ``NoiseGrid`` (linear
interpolation between grid points), so Julia integrates the same path as the torch backend. Methods that also
read the iterated integral I_(1,0) (SRA1, SOSRA, SKenCarp) get a second path Z, drawn from ``generator`` on
the same grid. Without a grid, Julia draws its own Wiener process from a seed taken from ``generator``
(reproducible on this backend, different numbers from the torch backend).

Jacobians: a Python right-hand side cannot carry ForwardDiff dual numbers, so implicit methods use
``AutoFiniteDiff()``. ``linsolve="dense"`` factorises a finite-difference Jacobian of the whole ``N``-vector;
``linsolve="gmres"`` solves matrix-free with ``KrylovJL_GMRES`` and the problem's exact ``torch.func`` JVP;
``"auto"`` (default) is dense up to ``N = 64``.

Pitfalls handled here (research notes, anchors_solvers.md §0, §2): ``import juliacall`` starts Julia and raises a
bare ``Exception`` when Julia is missing, so it is imported lazily and every exception is caught; juliapkg
downloads Julia unless offline, so the probe sets ``PYTHON_JULIAPKG_OFFLINE=yes`` unless
``PYSENS_JULIA_INSTALL=1``; juliacall reads its signal and thread settings at first import, so they are set
before it (one Julia thread: Python callbacks must run on the thread holding the GIL); torch imported before
juliacall has crashed on some systems, which is warned about.

Not verified anywhere this project runs (no Julia there): the Julia numerics, precompilation, GIL and signal
behaviour. Everything that runs without Julia (these callbacks, the call plan, the result mapping, the Julia
sources' syntax and structure, the dependency manifest) is tested in ``tests/julia``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from ..methods import MethodInfo
from ..options import SolveOptions, fixed_grid
from ..problem import ODEProblem, SDEProblem, SplitODEProblem, SplitSDEProblem
from ..solution import (
    CONVERGENCE_FAILURE,
    DT_LESS_THAN_MIN,
    FAILURE,
    MAX_ITERS,
    SUCCESS,
    UNSTABLE,
    Solution,
    Stats,
)
from .julia_callbacks import StateBridge, jvp_callback, noise_callback, rhs_callback

NAME = "julia"

INSTALL_HINT = (
    'to install: `pip install "pysens[julia]"`, then run once with PYSENS_JULIA_INSTALL=1 so that juliapkg '
    "installs Julia (if `julia` >= 1.10 is not on PATH) and the Julia packages; later runs work offline"
)

# IMEX methods of PySensSolvers (IMEX_ODE ∪ IMEX_SDE there): a split problem goes to solve_split_* with them.
# ImplicitEM is IMEX on the torch backend only: StochasticDiffEq's ImplicitEM treats all of f1 + f2 implicitly.
JULIA_IMEX = frozenset({"KenCarp4", "SKenCarp"})
# Methods reading a second Brownian process Z (PySensSolvers.NEEDS_EXTRA_NOISE; StochasticDiffEq's
# `alg_needs_extra_process`).
NEEDS_EXTRA_NOISE = frozenset({"SRA1", "SOSRA", "SKenCarp"})
# PySensSolvers.DENSE_ONLY: matrix-free solves are not used for these.
DENSE_ONLY = frozenset({"RadauIIA5"})
# linsolve="auto" factorises a dense finite-difference Jacobian up to this many unknowns (it costs N RHS calls).
AUTO_DENSE_MAX = 64
LINSOLVES = ("auto", "dense", "gmres")
# torch-backend linear-solver options with no faithful counterpart in OrdinaryDiffEq's solver interface
UNSUPPORTED_OPTIONS = ("krylov_restarts", "krylov_tol", "precond", "jvp_engine")

# SciML ReturnCode names -> ours; anything else (Default, InitialFailure, ...) is a Failure whose message names the
# Julia code. Terminated comes only from a terminating callback, which pysens never passes; it ends the solve
# where the callback asked, so it is no failure.
RETCODES = {
    "Success": SUCCESS,
    "Terminated": SUCCESS,
    "MaxIters": MAX_ITERS,
    "MaxNumSub": MAX_ITERS,
    "DtLessThanMin": DT_LESS_THAN_MIN,
    "DtNaN": UNSTABLE,
    "Unstable": UNSTABLE,
    "ConvergenceFailure": CONVERGENCE_FAILURE,
    "InternalLinearSolveFailed": CONVERGENCE_FAILURE,
}

# ---------------------------------------------------------------------------------------------------------
# Availability
# ---------------------------------------------------------------------------------------------------------

_status: tuple[bool, str] | None = None
_session_cache: JuliaSession | None = None


def _prepare_environment() -> None:
    """Settings juliacall and juliapkg read once, at the first ``import juliacall``; the user's own values win."""
    if os.environ.get("PYSENS_JULIA_INSTALL", "") != "1":
        os.environ.setdefault("PYTHON_JULIAPKG_OFFLINE", "yes")  # never download Julia or packages unasked
    os.environ.setdefault("PYTHON_JULIACALL_HANDLE_SIGNALS", "yes")
    os.environ.setdefault("PYTHON_JULIACALL_THREADS", "1")


def available() -> tuple[bool, str]:
    """``(True, "Julia <version>, PySensSolvers loaded")`` when the backend can run, else ``(False, why)``.

    Never raises; the answer is cached for the process. Without the juliacall package it answers at once; with
    it, ``import juliacall`` looks for Julia in offline mode (a fraction of a second when Julia is absent).
    """
    global _status
    if _status is not None:
        return _status
    if importlib.util.find_spec("juliacall") is None:
        _status = (False, f"Julia is not installed: the juliacall package is missing; {INSTALL_HINT}")
        return _status
    first_import = "juliacall" not in sys.modules
    if first_import:
        _prepare_environment()
    try:
        with warnings.catch_warnings():
            # juliacall warns about torch itself; ours below says what to do about it in a pysens program
            warnings.filterwarnings("ignore", message="torch was imported before juliacall")
            juliacall = importlib.import_module("juliacall")  # starts Julia
        if first_import and "torch" in sys.modules:
            warnings.warn(
                "torch was imported before juliacall; PythonCall.jl reports crashes with this order on some "
                "systems (PythonCall.jl#215, pytorch#78829). If Julia crashes, `import juliacall` before "
                "`import torch` or `import pysens` in your program.",
                RuntimeWarning,
                stacklevel=2,
            )
        version = str(juliacall.Main.seval("string(VERSION)"))
    except Exception as exc:  # juliacall raises a bare Exception when Julia is missing
        _status = (False, f"Julia is not installed or did not start ({exc}); {INSTALL_HINT}")
        return _status
    try:
        juliacall.Main.seval("using PySensSolvers")
    except Exception as exc:
        _status = (False, f"Julia {version} runs but the package PySensSolvers did not load ({exc}); {INSTALL_HINT}")
        return _status
    _status = (True, f"Julia {version}, PySensSolvers loaded")
    return _status


# ---------------------------------------------------------------------------------------------------------
# The Julia session: the only place that touches juliacall
# ---------------------------------------------------------------------------------------------------------


class JuliaSession(Protocol):
    """What the backend needs from Julia: evaluate code, and call a ``PySensSolvers`` entry point."""

    def seval(self, code: str) -> Any: ...

    def call(self, function: str, *args: Any, **kwargs: Any) -> Any: ...


class JuliacallSession:
    """The real session: ``PySensSolvers`` loaded into juliacall's Julia (after :func:`available` succeeded).

    Python arguments convert as juliacall documents: floats/ints/str/None/bool to Float64/Int/String/nothing/Bool,
    tuples to Tuples, numpy arrays to no-copy ``PyArray`` views (``PySensSolvers`` copies them into Julia
    arrays), callables to ``Py`` objects that Julia calls. The result ``NamedTuple`` comes back as a
    ``juliacall.AnyValue`` with attribute access.
    """

    def __init__(self) -> None:
        from juliacall import Main  # Julia was started by available()

        Main.seval("using PySensSolvers")
        self._main = Main
        self._module = Main.PySensSolvers

    def seval(self, code: str) -> Any:
        return self._main.seval(code)

    def call(self, function: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._module, function)(*args, **kwargs)


def _default_session() -> JuliaSession:
    global _session_cache
    ok, reason = available()
    if not ok:
        from . import BackendNotAvailable

        raise BackendNotAvailable(f"backend 'julia' is not available: {reason}")
    if _session_cache is None:
        _session_cache = JuliacallSession()
    return _session_cache


# ---------------------------------------------------------------------------------------------------------
# The call plan: which entry point, with which arguments
# ---------------------------------------------------------------------------------------------------------


@dataclass
class JuliaCall:
    """One call of a ``PySensSolvers`` entry point, built before Julia is touched (inspectable in tests)."""

    function: str
    args: tuple
    kwargs: dict
    bridge: StateBridge
    sign: float  # +1, or -1 when Julia integrates in s = -t
    jacobian: str | None = None
    notes: dict = field(default_factory=dict)


def _flat64(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy())


def _jvp_of(f: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``(t, x, v) -> J_f(t, x) v`` by ``torch.func.jvp`` (SDE problems carry no jvp hook)."""

    def jvp(t: Tensor, x: Tensor, v: Tensor) -> Tensor:
        return torch.func.jvp(lambda y: f(t, y), (x,), (v,))[1]

    return jvp


def _jacobian_mode(method: MethodInfo, n: int, extra: Mapping[str, Any]) -> str | None:
    """PySensSolvers' ``jac`` ("finitediff" or "krylov") for an implicit method, from ``linsolve``."""
    if not method.stiff:
        return None
    bad = [k for k in UNSUPPORTED_OPTIONS if k in extra]
    if bad:
        raise ValueError(
            f"option(s) {', '.join(bad)} are not supported on the julia backend (OrdinaryDiffEq sets the Krylov "
            "tolerances itself, and a torch preconditioner cannot be passed to it); use backend='torch' for them"
        )
    linsolve = extra.get("linsolve", "auto")
    if linsolve not in LINSOLVES:
        raise ValueError(f"linsolve must be one of {LINSOLVES}, got {linsolve!r}")
    if method.name in DENSE_ONLY:
        if linsolve == "gmres":
            raise ValueError(f"{method.name} factorises a dense Jacobian on the julia backend; use linsolve='dense'")
        return "finitediff"
    if linsolve == "auto":
        linsolve = "dense" if n <= AUTO_DENSE_MAX else "gmres"
    return "finitediff" if linsolve == "dense" else "krylov"


def _rng_device(opts: SolveOptions) -> torch.device:
    """Draw on the generator's own device (a CUDA generator cannot fill CPU tensors)."""
    return opts.generator.device if opts.generator is not None else torch.device("cpu")


def _brownian_grids(
    problem: SDEProblem, method: MethodInfo, opts: SolveOptions, sign: float
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(t_grid, W_grid, Z_grid)`` for ``NoiseGrid``: one row per grid time, ``W(t_0) = 0``."""
    grid = problem.brownian
    if grid is None:
        return None, None, None
    times = grid.times.clone()
    times[0], times[-1] = problem.tspan  # exact ends: StochasticDiffEq starts the noise at tspan[0]
    n = grid.path.shape[0]
    W = grid.path.detach().to(device="cpu", dtype=torch.float64).reshape(n, -1).numpy()
    Z = None
    if method.name in NEEDS_EXTRA_NOISE:
        steps = (grid.times[1:] - grid.times[:-1]).abs()
        z = torch.randn((n - 1, W.shape[1]), generator=opts.generator, dtype=torch.float64, device=_rng_device(opts))
        z = z.cpu() * steps.sqrt()[:, None]
        Z = torch.cat([torch.zeros(1, W.shape[1], dtype=torch.float64), z.cumsum(0)]).numpy()
    return (sign * times).numpy(), np.ascontiguousarray(W), Z


def plan_call(problem: ODEProblem | SDEProblem, method: MethodInfo, opts: SolveOptions) -> JuliaCall:
    """Map ``problem`` solved by ``method`` under ``opts`` to one ``PySensSolvers`` call."""
    x0 = problem.x0
    bridge = StateBridge(x0.shape, x0.dtype, x0.device)
    n = bridge.numel
    sde = isinstance(problem, SDEProblem)
    t0, t1 = problem.tspan
    sign = -1.0 if sde and t1 < t0 else 1.0
    extra = dict(opts.extra)

    atol = opts.atol
    kwargs: dict[str, Any] = {
        "saveat": sign * opts.saveat.numpy(),
        "reltol": float(opts.rtol),
        "abstol": _flat64(torch.broadcast_to(atol, x0.shape)) if isinstance(atol, Tensor) else float(atol),
        "maxiters": int(opts.maxiters),
    }
    if opts.dtmin is not None:
        kwargs["dtmin"] = float(opts.dtmin)
    if opts.dtmax is not None:
        kwargs["dtmax"] = float(opts.dtmax)
    if opts.adaptive:
        if opts.dt is not None:
            kwargs["dt"] = float(opts.dt)  # first step
        if sde:
            kwargs["tstops"] = kwargs["saveat"]  # step onto save times instead of interpolating the SDE there
    else:
        if method.name == "CVODE_BDF":
            raise ValueError("CVODE_BDF always adapts its step; leave dt/timesteps unset (or pass adaptive=True)")
        grid = fixed_grid(problem.tspan, opts.dt, opts.timesteps, opts.saveat)
        kwargs.update(adaptive=False, dt=float((grid[1:] - grid[:-1]).abs().max()), tstops=(sign * grid).numpy())

    jac = _jacobian_mode(method, n, extra)
    if jac is not None:
        kwargs["jac"] = jac
    if "krylov_dim" in extra:
        kwargs["krylov_dim"] = int(extra["krylov_dim"])
    if "theta" in extra:
        kwargs["theta"] = float(extra["theta"])

    u0 = _flat64(x0)
    tspan = (sign * t0, sign * t1)
    split = isinstance(problem, (SplitODEProblem, SplitSDEProblem)) and method.name in JULIA_IMEX
    notes = {"split": split, "time_flipped": sign < 0, "n": n}
    if not sde:
        if split:
            f1, f2 = rhs_callback(problem.f1, bridge), rhs_callback(problem.f2, bridge, counter="nf2")
            if jac == "krylov":
                kwargs["jvp1"] = jvp_callback(problem.implicit_jvp, bridge)
            args = (f1, f2, u0, tspan, method.name)
            return JuliaCall("solve_split_ode", args, kwargs, bridge, sign, jac, notes)
        if jac == "krylov":
            kwargs["jvp"] = jvp_callback(problem.rhs_jvp, bridge)
        args = (rhs_callback(problem.f, bridge), u0, tspan, method.name)
        return JuliaCall("solve_ode", args, kwargs, bridge, sign, jac, notes)

    t_grid, W_grid, Z_grid = _brownian_grids(problem, method, opts, sign)
    if Z_grid is not None:
        kwargs["Z_grid"] = Z_grid
    if t_grid is None:
        # Julia's own Wiener process, seeded from the generator (StochasticDiffEq reads seed 0 as "random")
        kwargs["seed"] = int(torch.randint(1, 2**62, (1,), generator=opts.generator, device=_rng_device(opts)))
    g = noise_callback(problem.g, bridge, sign)
    if split:
        f1 = rhs_callback(problem.f1, bridge, sign)
        f2 = rhs_callback(problem.f2, bridge, sign, counter="nf2")
        if jac == "krylov":
            kwargs["jvp1"] = jvp_callback(_jvp_of(problem.f1), bridge, sign)
        args = (f1, f2, g, u0, tspan, method.name, t_grid, W_grid)
        return JuliaCall("solve_split_sde", args, kwargs, bridge, sign, jac, notes)
    if jac == "krylov":
        kwargs["jvp"] = jvp_callback(_jvp_of(problem.f), bridge, sign)
    args = (rhs_callback(problem.f, bridge, sign), g, u0, tspan, method.name, t_grid, W_grid)
    return JuliaCall("solve_sde", args, kwargs, bridge, sign, jac, notes)


# ---------------------------------------------------------------------------------------------------------
# Solve and map the result back
# ---------------------------------------------------------------------------------------------------------


def solve(
    problem: ODEProblem | SDEProblem,
    method: MethodInfo,
    opts: SolveOptions,
    *,
    session: JuliaSession | None = None,
) -> Solution:
    """Solve on Julia; ``session`` defaults to the process's juliacall session (tests pass a fake one)."""
    start = time.perf_counter()
    call = plan_call(problem, method, opts)
    if session is None:
        session = _default_session()
    try:
        result = session.call(call.function, *call.args, **call.kwargs)
    except Exception as exc:
        if call.bridge.error is not None:  # the torch function failed inside a callback: raise that, not Julia's
            raise call.bridge.error from exc
        raise
    return to_solution(result, problem, method, opts, call, time.perf_counter() - start)


def map_retcode(julia_retcode: str) -> str:
    return RETCODES.get(julia_retcode, FAILURE)


def to_solution(
    result: Any, problem: ODEProblem | SDEProblem, method: MethodInfo, opts: SolveOptions, call: JuliaCall, wall: float
) -> Solution:
    """The ``Solution`` for a ``PySensSolvers`` result (``t [m]``, ``u [N, m]``, ``retcode``, ``stats``).

    Saved times are matched to ``opts.saveat``; rows the solve never reached stay NaN.
    """
    x0 = problem.x0
    B = x0.shape[0]
    times = call.sign * np.array(result.t, dtype=np.float64).reshape(-1)
    u = np.array(result.u, dtype=np.float64)  # copies out of Julia memory
    if u.shape != (call.bridge.numel, times.size):
        raise RuntimeError(f"PySensSolvers returned u shaped {u.shape}, expected ({call.bridge.numel}, {times.size})")
    saveat = opts.saveat.numpy()
    t0, t1 = problem.tspan
    tol = 1e-10 * max(1.0, abs(t0), abs(t1))
    out = np.full((saveat.size, call.bridge.numel), np.nan)
    for j, tj in enumerate(times):
        k = int(np.argmin(np.abs(saveat - tj)))
        if abs(saveat[k] - tj) <= tol:
            out[k] = u[:, j]
    julia_code = str(result.retcode)
    retcode = map_retcode(julia_code)
    stats_jl = {str(k): int(v) for k, v in dict(result.stats).items()}
    counts = call.bridge.counts
    stats = Stats(
        nf=counts["nf"],
        njvp=counts["njvp"],
        njac=stats_jl.get("njacs"),
        nlinsolve=stats_jl.get("nsolve"),
        nfactor=stats_jl.get("nw"),
        nkrylov=None,
        naccept=stats_jl.get("naccept"),
        nreject=stats_jl.get("nreject"),
        wall_time=wall,
    )
    reached = t1 if retcode == SUCCESS else (float(times[-1]) if times.size else t0)
    dtype, device = x0.dtype, x0.device
    return Solution(
        t=opts.saveat.to(dtype=dtype, device=device),
        x=torch.from_numpy(out).reshape(saveat.size, *x0.shape).to(device=device, dtype=dtype),
        retcode=retcode,
        stats=stats,
        method=method.name,
        backend=NAME,
        sample_retcodes=[retcode] * B,
        t_final=torch.full((B,), reached, dtype=dtype, device=device),
        message="" if retcode == SUCCESS else f"Julia returned ReturnCode.{julia_code}",
        extra={
            "julia_retcode": julia_code,
            "julia_stats": stats_jl,
            "julia_call": call.function,
            "jacobian": call.jacobian,
            "nf2": counts["nf2"],
            "ng": counts["ng"],
            **call.notes,
        },
    )


# ---------------------------------------------------------------------------------------------------------
# Self-check: `python -m pysens.solvers.backends.julia_backend --selfcheck [--out report.json]`
# ---------------------------------------------------------------------------------------------------------


def _row_failed(row: Mapping[str, Any]) -> bool:
    return row.get("status") in ("failed", "error") or row.get("passed") is False


def selfcheck(out: str | None = None) -> int:
    """Run the conformance table (:mod:`pysens.solvers.conformance`) on the julia backend and write a JSON report
    to ``out``; 0 when every row passes. Where Julia is absent it says so, writes a report saying nothing ran, and
    returns 1."""
    ok, reason = available()
    report: dict[str, Any] = {"backend": NAME, "available": ok, "probe": reason, "rows": []}
    if not ok:
        print(f"julia self-check: Julia is absent here, so nothing was run.\n  {reason}", file=sys.stderr)
        report["status"] = "julia-unavailable"
    else:
        conformance = importlib.import_module("pysens.solvers.conformance")
        report["suite"], rows = "pysens.solvers.conformance", conformance.run_conformance(backend=NAME)
        report["rows"] = rows
        failed = [r for r in rows if _row_failed(r)]
        report["status"] = "failed" if failed or not rows else "passed"
        print(f"julia self-check ({reason}): {len(rows) - len(failed)} of {len(rows)} rows passed ({report['suite']})")
        for r in failed:
            print(f"  FAILED {r}", file=sys.stderr)
    if out is not None:
        from pysens.artifacts import write_json

        write_json(out, report)
        print(f"wrote {out}")
    return 0 if report["status"] == "passed" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pysens.solvers.backends.julia_backend", description="the julia backend's self-check"
    )
    parser.add_argument("--selfcheck", action="store_true", help="solve closed-form problems on Julia and report")
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    if not args.selfcheck:
        ok, reason = available()
        print(f"julia backend: {'available' if ok else 'unavailable'}: {reason}")
        return 0 if ok else 1
    return selfcheck(args.out)


if __name__ == "__main__":
    sys.exit(main())
