"""The scipy backend: ``scipy.integrate`` solvers and SUNDIALS CVODE over the flattened float64 state (the CPU
reference).

The whole batch is one vector ``[B * d]`` (as score_sde's likelihood does), so every sample shares the
solver's steps and its RMS error norm. The right-hand side is evaluated by the problem's own torch
function on the problem's device and dtype; the solver's state and arithmetic are float64. Implicit
methods (RadauIIA5, BDF, LSODA) get the exact Jacobian from ``torch.func``: block-diagonal, one
``d × d`` block per sample (batch independence), passed as a sparse matrix to Radau/BDF and dense to
LSODA.

``CVODE_BDF`` runs SUNDIALS CVODE (variable-order BDF, Newton iteration) through scikit-sundae, imported only
when asked for (``pip install scikit-sundae`` or ``pysens[sundials]``). Options (``solve(..., **options)``):
``linsolve="gmres"`` (default) solves the Newton systems matrix-free by GMRES, so no ``N × N`` matrix is formed;
its Jacobian-times-vector is the problem's ``jvp`` hook when it has one, else a one-sided difference with the JFNK
step around f(x) kept per Newton point (``jvp_engine="auto"`` = ``"fd"``, :func:`pysens.derivatives.jvp`: one
right-hand side per product, where forward mode, ``"forward"``, costs tens of them on small kinetics systems);
``"fd-central"``, ``"double-vjp"`` and ``"cvode"`` (SUNDIALS' own quotient, no torch work beyond the right-hand
side: 1.2 s against 4.1 s for ``"fd"`` on the 8-species HIRES problem at rtol 1e-6) are the alternatives;
``krylov_dim`` sets the
Krylov subspace size (default min(N, 30)) and ``precond(t, x, gamma, v) ≈ (I − γJ)⁻¹ v`` (torch tensors shaped like
the state, ``t`` and ``gamma`` ``[B]``) is applied as a left preconditioner. ``linsolve="dense"`` gives CVODE the
dense Jacobian of the flattened system built from ``problem.rhs_jacobian`` (small systems only: N² memory), and
``"auto"`` picks dense for N = B·d ≤ 64. A non-finite right-hand side stops CVODE (scikit-sundae has no recoverable
RHS errors) with retcode ``Unstable``.

Stats: ``nf`` counts right-hand-side calls, ``njac`` Jacobian evaluations, ``njvp`` Jacobian-vector products,
``nfactor`` LU decompositions, ``naccept`` accepted steps; scipy does not expose rejected steps and scikit-sundae
exposes neither rejected steps nor linear-solver iterations (``nreject``, ``nlinsolve``, ``nkrylov`` None there).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.integrate as si
import scipy.sparse as sp
import torch

from ..methods import MethodInfo
from ..options import SolveOptions, time_slack
from ..problem import ODEProblem
from ..solution import CONVERGENCE_FAILURE, DT_LESS_THAN_MIN, FAILURE, MAX_ITERS, SUCCESS, UNSTABLE, Solution, Stats
from . import BackendNotAvailable

NAME = "scipy"

_SOLVERS = {"DP5": si.RK45, "DP8": si.DOP853, "RadauIIA5": si.Radau, "BDF": si.BDF, "LSODA": si.LSODA}


def available() -> tuple[bool, str]:
    return True, f"scipy {__import__('scipy').__version__}"


class _TorchSystem:
    """The problem's torch functions seen from a float64 numpy solver: flattened ``[B * d]`` vectors in and out."""

    def __init__(self, problem: ODEProblem):
        x0 = problem.x0
        self.problem = problem
        self.shape, self.dtype, self.device = x0.shape, x0.dtype, x0.device
        self.nf = self.njac = self.njvp = 0
        self.nonfinite = False  # sticky: a right-hand side or Jacobian held NaN/inf at some point of the solve

    def state(self, y: np.ndarray) -> torch.Tensor:
        # copy: solvers may hand read-only views of their own memory
        return torch.tensor(np.asarray(y), dtype=torch.float64).reshape(self.shape).to(self.device, self.dtype)

    def times(self, t: float) -> torch.Tensor:
        return torch.full((self.shape[0],), t, dtype=self.dtype, device=self.device)

    @staticmethod
    def flat(v: torch.Tensor) -> np.ndarray:
        return v.detach().to(torch.float64).cpu().numpy().reshape(-1)

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        self.nf += 1
        with torch.no_grad():
            out = self.flat(self.problem.f(self.times(t), self.state(y)))
        self.nonfinite |= not np.all(np.isfinite(out))
        return out

    def jacobian_blocks(self, t: float, y: np.ndarray) -> np.ndarray:
        """Per-sample Jacobians ``[B, d, d]`` (float64)."""
        self.njac += 1
        out = self.problem.rhs_jacobian(self.times(t), self.state(y)).detach().to(torch.float64).cpu().numpy()
        self.nonfinite |= not np.all(np.isfinite(out))
        return out

    def jvp(self, t: float, y: np.ndarray, v: np.ndarray, product=None) -> np.ndarray:
        """J v of the flattened system by ``product(t, x, v)`` (default ``problem.rhs_jvp``)."""
        self.njvp += 1
        return self.flat((product or self.problem.rhs_jvp)(self.times(t), self.state(y), self.state(v)))

    def atol(self, atol):
        if isinstance(atol, torch.Tensor):
            return np.broadcast_to(atol.detach().to(torch.float64).cpu().numpy(), self.shape).reshape(-1).copy()
        return atol


class _SaveRows:
    """The ``[n_save, B * d]`` output, filled as the solver passes the save times (NaN where it never got)."""

    def __init__(self, saveat: np.ndarray, t0: float, t1: float, y0: np.ndarray):
        self.saveat, self.direction = saveat, 1.0 if t1 > t0 else -1.0
        self.out = np.full((saveat.size, y0.size), np.nan)
        self.k = 0
        while self.k < saveat.size and abs(saveat[self.k] - t0) <= time_slack(saveat[self.k], t0):
            self.out[self.k] = y0
            self.k += 1

    def pending(self, t: float) -> bool:
        """Whether the next save time is at or before ``t`` (the same time within a few ulp of either)."""
        if self.k >= self.saveat.size:
            return False
        s = float(self.saveat[self.k])
        return self.direction * (s - t) <= time_slack(s, t)

    def fill(self, t: float, y: np.ndarray, interpolate) -> None:
        """Save every pending time up to ``t``: ``y`` at ``t`` itself, ``interpolate(s)`` before it."""
        while self.pending(t):
            s = float(self.saveat[self.k])
            self.out[self.k] = y if abs(s - t) <= time_slack(s, t) else interpolate(s)
            self.k += 1


def _solution(
    system: _TorchSystem,
    method: MethodInfo,
    opts: SolveOptions,
    rows: _SaveRows,
    t_final: float,
    retcode: str,
    message: str,
    stats: Stats,
    extra: dict | None = None,
) -> Solution:
    B = system.shape[0]
    x = torch.as_tensor(rows.out).reshape(rows.saveat.size, *system.shape).to(device=system.device, dtype=system.dtype)
    return Solution(
        t=opts.saveat.to(dtype=system.dtype, device=system.device),
        x=x,
        retcode=retcode,
        stats=stats,
        method=method.name,
        backend=NAME,
        sample_retcodes=[retcode] * B,
        t_final=torch.full((B,), t_final, dtype=system.dtype, device=system.device),
        message=message,
        extra=extra or {},
    )


def solve(problem: ODEProblem, method: MethodInfo, opts: SolveOptions) -> Solution:
    if not opts.adaptive:
        raise ValueError(f"the scipy backend runs adaptive methods only; {method.name} was asked for fixed steps")
    if method.name == "CVODE_BDF":
        return _solve_cvode(problem, method, opts)
    if opts.extra:
        # scipy's Radau/BDF/LSODA take the exact sparse Jacobian and no linear-solver choices: refuse, never ignore
        raise TypeError(
            f"scipy's {method.name} takes no method options (got {', '.join(sorted(opts.extra))}); "
            "linear-solver options apply to the torch and julia backends and to scipy's CVODE_BDF"
        )
    start = time.perf_counter()
    system = _TorchSystem(problem)

    def jac(t: float, y: np.ndarray):
        blocks = list(system.jacobian_blocks(t, y))
        if method.name == "LSODA":
            return sp.block_diag(blocks).toarray()
        return sp.block_diag(blocks, format="csc")

    kwargs = {"rtol": max(opts.rtol, 100 * np.finfo(float).eps), "atol": system.atol(opts.atol)}
    if opts.dt is not None:
        kwargs["first_step"] = opts.dt
    if opts.dtmax is not None:
        kwargs["max_step"] = opts.dtmax
    if method.stiff:
        kwargs["jac"] = jac

    t0, t1 = problem.tspan
    y0 = system.flat(problem.x0)
    solver = _SOLVERS[method.name](system.rhs, t0, y0, t1, **kwargs)
    rows = _SaveRows(opts.saveat.numpy(), t0, t1, y0)

    # A non-finite right-hand side is Unstable on every backend (SciML's NaN semantics: DtNaN / unstable_check). scipy
    # would loop forever on a NaN first step size (RK45 from a NaN f(t0, x0)), and Radau/BDF raise on a NaN Jacobian.
    retcode, message, naccept = SUCCESS, "", 0
    if system.nonfinite:
        retcode, message = UNSTABLE, f"non-finite right-hand side or Jacobian at t={t0}"
    while solver.status == "running" and retcode == SUCCESS:
        if naccept >= opts.maxiters:
            retcode, message = MAX_ITERS, f"maxiters={opts.maxiters} reached at t={solver.t}"
            break
        try:
            msg = solver.step()
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:  # e.g. "Factor is exactly singular"
            retcode = UNSTABLE if system.nonfinite else CONVERGENCE_FAILURE
            message = f"{method.name} stopped at t={solver.t}: {err}"
            break
        if solver.status == "failed":
            retcode, message = (UNSTABLE if system.nonfinite else DT_LESS_THAN_MIN), str(msg)
            break
        if not np.all(np.isfinite(solver.y)):
            retcode, message = UNSTABLE, f"non-finite state at t={solver.t}"
            break
        naccept += 1
        if rows.pending(solver.t):
            rows.fill(solver.t, solver.y, solver.dense_output())

    stats = Stats(
        nf=system.nf,
        njvp=0,
        njac=max(system.njac, getattr(solver, "njev", 0)),
        nlinsolve=None,
        nfactor=getattr(solver, "nlu", 0),
        nkrylov=0,
        naccept=naccept,
        nreject=None,
        wall_time=time.perf_counter() - start,
    )
    return _solution(system, method, opts, rows, float(solver.t), retcode, message, stats)


# ---------------------------------------------------------------------------------------------------------------
# CVODE_BDF through scikit-sundae

CVODE_LINSOLVES = ("gmres", "dense", "auto")
_CVODE_OPTIONS = ("linsolve", "krylov_dim", "precond", "jvp_engine")
# jvp_engine for CVODE's GMRES: "auto" = the problem's jvp hook when it has one, else "fd"; a pysens.derivatives
# engine; or "cvode" (SUNDIALS' own difference quotient: no torch call beyond the right-hand side, not in njvp)
CVODE_JVP_ENGINES = ("auto", "cvode", "forward", "double-vjp", "fd", "fd-central")

# CVODE's negative return flags (SUNDIALS cvode.h) as return codes
_CVODE_RETCODES = {
    -1: MAX_ITERS,  # CV_TOO_MUCH_WORK
    -2: DT_LESS_THAN_MIN,  # CV_TOO_MUCH_ACC
    -3: DT_LESS_THAN_MIN,  # CV_ERR_FAILURE: error test failed repeatedly or |h| = hmin
    -4: CONVERGENCE_FAILURE,  # CV_CONV_FAILURE: Newton failed repeatedly or |h| = hmin
    -5: CONVERGENCE_FAILURE,  # CV_LINIT_FAIL
    -6: CONVERGENCE_FAILURE,  # CV_LSETUP_FAIL
    -7: CONVERGENCE_FAILURE,  # CV_LSOLVE_FAIL
    -8: UNSTABLE,  # CV_RHSFUNC_FAIL
    -9: UNSTABLE,  # CV_FIRST_RHSFUNC_ERR
    -10: UNSTABLE,  # CV_REPTD_RHSFUNC_ERR
    -11: UNSTABLE,  # CV_UNREC_RHSFUNC_ERR
    -16: CONVERGENCE_FAILURE,  # CV_NLS_FAIL
}


class _NonFinite(ArithmeticError):
    """Raised from inside CVODE's callbacks to stop it: scikit-sundae ignores their return values, and CVODE
    otherwise keeps halving its step on NaN without ever failing."""


def _import_cvode():
    try:
        from sksundae import cvode
    except ImportError as err:
        raise BackendNotAvailable(
            "CVODE_BDF on backend 'scipy' needs scikit-sundae (SUNDIALS CVODE): pip install scikit-sundae "
            "(or pip install 'pysens[sundials]')"
        ) from err
    return cvode


def _cvode_options(extra: dict, n: int) -> tuple[str, int, object]:
    unknown = sorted(set(extra) - set(_CVODE_OPTIONS))
    if unknown:
        raise TypeError(
            f"CVODE_BDF on backend 'scipy' does not take {', '.join(unknown)} "
            f"(scikit-sundae exposes: {', '.join(_CVODE_OPTIONS)})"
        )
    linsolve = extra.get("linsolve", "gmres")
    if linsolve not in CVODE_LINSOLVES:
        raise ValueError(f"linsolve must be one of {CVODE_LINSOLVES} for CVODE_BDF, got {linsolve!r}")
    if linsolve == "auto":
        linsolve = "dense" if n <= 64 else "gmres"
    krylov_dim = extra.get("krylov_dim", min(n, 30))
    if isinstance(krylov_dim, bool) or not isinstance(krylov_dim, int) or krylov_dim < 1:
        raise ValueError(f"krylov_dim must be a positive integer, got {krylov_dim!r}")
    precond = extra.get("precond")
    if precond is not None and not callable(precond):
        raise TypeError("precond must be callable as precond(t, x, gamma, v) -> approx (I - gamma J)^-1 v")
    if linsolve == "dense" and ("krylov_dim" in extra or precond is not None):
        raise ValueError("krylov_dim and precond apply to linsolve='gmres' only")
    return linsolve, krylov_dim, precond


def _engine_jvp(f, engine: str):
    """``(t, x, v) -> J v`` by a :mod:`pysens.derivatives` engine; f(t, x) is kept while CVODE's Newton iteration
    stays at one point (the "fd" engine then costs one right-hand side per product)."""
    from pysens.derivatives import jvp as directional_derivative

    last: list = [None, None, None]  # t, x, f(t, x)

    def product(t, x, v):
        if engine == "fd" and not (last[0] is not None and torch.equal(last[0], t) and torch.equal(last[1], x)):
            last[:] = [t, x, f(t, x)]
        fx = last[2] if engine == "fd" else None
        return directional_derivative(lambda y: f(t, y), x, v, engine=engine, fx=fx)[1]

    return product


def _solve_cvode(problem: ODEProblem, method: MethodInfo, opts: SolveOptions) -> Solution:
    cvode = _import_cvode()
    start = time.perf_counter()
    system = _TorchSystem(problem)
    t0, t1 = problem.tspan
    y0 = system.flat(problem.x0)
    linsolve, krylov_dim, precond = _cvode_options(opts.extra, y0.size)
    counts = {"nprecond": 0}

    def checked(v: np.ndarray, what: str, t: float) -> np.ndarray:
        if not np.all(np.isfinite(v)):
            raise _NonFinite(f"non-finite {what} at t={t}")
        return v

    def rhsfn(t: float, y: np.ndarray, yp: np.ndarray) -> None:
        yp[:] = checked(system.rhs(t, y), "right-hand side", t)

    kwargs = {
        "method": "BDF",
        "rtol": max(opts.rtol, 100 * np.finfo(float).eps),
        "atol": system.atol(opts.atol),
        "max_num_steps": opts.maxiters,
    }
    if opts.dt is not None:
        kwargs["first_step"] = opts.dt
    if opts.dtmax is not None:
        kwargs["max_step"] = opts.dtmax
    if opts.dtmin is not None:
        kwargs["min_step"] = opts.dtmin
    if linsolve == "dense":

        def jacfn(t: float, y: np.ndarray, yp: np.ndarray, JJ: np.ndarray) -> None:
            blocks = checked(system.jacobian_blocks(t, y), "Jacobian", t)
            JJ[:, :] = sp.block_diag(list(blocks)).toarray()

        kwargs.update(linsolver="dense", jacfn=jacfn)
    else:
        engine = opts.extra.get("jvp_engine", "auto")
        if engine not in CVODE_JVP_ENGINES:
            raise ValueError(f"jvp_engine must be one of {CVODE_JVP_ENGINES}, got {engine!r}")
        kwargs.update(linsolver="gmres", krylov_dim=krylov_dim)
        if engine != "cvode":
            product = problem.rhs_jvp if engine == "auto" and problem.jvp is not None else None
            product = product or _engine_jvp(problem.f, "fd" if engine == "auto" else engine)

            def jvp(t: float, y: np.ndarray, yp: np.ndarray, v: np.ndarray, Jv: np.ndarray) -> None:
                Jv[:] = checked(system.jvp(t, y, v, product), "Jacobian-vector product", t)

            kwargs["jactimes"] = cvode.CVODEJacTimes(None, jvp)
        if precond is not None:

            def psolve(t, y, yp, rvec, zvec, gamma, delta, lr) -> None:
                counts["nprecond"] += 1
                z = precond(system.times(t), system.state(y), system.times(gamma), system.state(rvec))
                zvec[:] = checked(system.flat(z), "preconditioner output", t)

            kwargs["precond"] = cvode.CVODEPrecond(None, psolve, side="left")

    solver = cvode.CVODE(rhsfn, **kwargs)
    rows = _SaveRows(opts.saveat.numpy(), t0, t1, y0)

    def interpolate(s: float) -> np.ndarray:
        back = solver.step(float(s), method="normal")
        if back.status < 0:  # cannot happen for s inside the last step; never save a wrong row silently
            raise RuntimeError(f"CVODE could not interpolate at t={s}: {back.message}")
        return back.y

    retcode, message, naccept = SUCCESS, "", 0
    t, result = t0, None
    try:
        solver.init_step(t0, y0)
        while True:
            if naccept >= opts.maxiters:
                retcode, message = MAX_ITERS, f"maxiters={opts.maxiters} reached at t={t}"
                break
            # one internal step, never past t1; save times it passed are interpolated by CVODE's own
            # Nordsieck history ('normal' mode with a time inside the last step does not integrate)
            result = solver.step(t1, method="onestep", tstop=t1)
            if result.status < 0:
                retcode = _CVODE_RETCODES.get(result.status, FAILURE)
                message = f"CVODE: {result.message} (flag {result.status}) at t={result.t}"
                break
            naccept += 1
            t = float(result.t)
            rows.fill(t, result.y, interpolate)
            if result.status == 1 or t == t1:  # CV_TSTOP_RETURN: reached t1
                break
    except _NonFinite as err:
        retcode, message = UNSTABLE, str(err)

    stats = Stats(
        nf=system.nf,
        njvp=system.njvp,
        njac=system.njac,
        nlinsolve=None,
        nfactor=None,
        nkrylov=None,
        naccept=naccept,
        nreject=None,
        wall_time=time.perf_counter() - start,
    )
    extra = {"linsolve": linsolve}
    if linsolve == "gmres":
        extra.update(krylov_dim=krylov_dim, nprecond=counts["nprecond"])
    if result is not None:
        extra.update(cvode_nfev=int(result.nfev), cvode_njev=int(result.njev))
    return _solution(system, method, opts, rows, t, retcode, message, stats, extra)
