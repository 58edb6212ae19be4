"""The scipy backend: ``scipy.integrate`` solvers over the flattened float64 state (the CPU reference).

The whole batch is one vector ``[B * d]`` (as score_sde's likelihood does), so every sample shares the
solver's steps and its RMS error norm. The right-hand side is evaluated by the problem's own torch
function on the problem's device and dtype; the solver's state and arithmetic are float64. Implicit
methods (RadauIIA5, BDF, LSODA) get the exact Jacobian from ``torch.func``: block-diagonal, one
``d × d`` block per sample (batch independence), passed as a sparse matrix to Radau/BDF and dense to
LSODA.

Stats: ``nf`` counts right-hand-side calls, ``njac`` Jacobian evaluations, ``nfactor`` LU
decompositions, ``naccept`` accepted steps; scipy does not expose rejected steps (``nreject`` None).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.integrate as si
import scipy.sparse as sp
import torch

from ..methods import MethodInfo
from ..options import SolveOptions
from ..problem import ODEProblem
from ..solution import DT_LESS_THAN_MIN, MAX_ITERS, SUCCESS, UNSTABLE, Solution, Stats

NAME = "scipy"

_SOLVERS = {"DP5": si.RK45, "DP8": si.DOP853, "RadauIIA5": si.Radau, "BDF": si.BDF, "LSODA": si.LSODA}


def available() -> tuple[bool, str]:
    return True, f"scipy {__import__('scipy').__version__}"


def solve(problem: ODEProblem, method: MethodInfo, opts: SolveOptions) -> Solution:
    if not opts.adaptive:
        raise ValueError(f"the scipy backend runs adaptive methods only; {method.name} was asked for fixed steps")
    start = time.perf_counter()
    x0 = problem.x0
    dtype, device, shape = x0.dtype, x0.device, x0.shape
    B = shape[0]
    counts = {"nf": 0, "njac": 0}

    def to_torch(y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.float64).reshape(shape).to(device=device, dtype=dtype)

    def times(t: float) -> torch.Tensor:
        return torch.full((B,), t, dtype=dtype, device=device)

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        counts["nf"] += 1
        with torch.no_grad():
            dy = problem.f(times(t), to_torch(y))
        return dy.detach().to(torch.float64).cpu().numpy().reshape(-1)

    def jac(t: float, y: np.ndarray):
        counts["njac"] += 1
        blocks = problem.rhs_jacobian(times(t), to_torch(y)).detach().to(torch.float64).cpu().numpy()
        if method.name == "LSODA":
            return sp.block_diag(list(blocks)).toarray()
        return sp.block_diag(list(blocks), format="csc")

    atol = opts.atol
    if isinstance(atol, torch.Tensor):
        atol = np.broadcast_to(atol.detach().to(torch.float64).cpu().numpy(), shape).reshape(-1).copy()
    kwargs = {"rtol": max(opts.rtol, 100 * np.finfo(float).eps), "atol": atol}
    if opts.dt is not None:
        kwargs["first_step"] = opts.dt
    if opts.dtmax is not None:
        kwargs["max_step"] = opts.dtmax
    if method.stiff:
        kwargs["jac"] = jac

    t0, t1 = problem.tspan
    y0 = x0.detach().to(torch.float64).cpu().numpy().reshape(-1)
    solver = _SOLVERS[method.name](fun, t0, y0, t1, **kwargs)
    saveat = opts.saveat.numpy()
    direction = 1.0 if t1 > t0 else -1.0
    out = np.full((saveat.size, y0.size), np.nan)
    k = 0
    span_tol = 1e-13 * max(abs(t0), abs(t1), 1.0)
    while k < saveat.size and abs(saveat[k] - t0) <= span_tol:
        out[k] = y0
        k += 1

    retcode, message, naccept = SUCCESS, "", 0
    while solver.status == "running":
        if naccept >= opts.maxiters:
            retcode, message = MAX_ITERS, f"maxiters={opts.maxiters} reached at t={solver.t}"
            break
        msg = solver.step()
        if solver.status == "failed":
            retcode, message = DT_LESS_THAN_MIN, str(msg)
            break
        if not np.all(np.isfinite(solver.y)):
            retcode, message = UNSTABLE, f"non-finite state at t={solver.t}"
            break
        naccept += 1
        reach = [j for j in range(k, saveat.size) if direction * (saveat[j] - solver.t) <= span_tol]
        if reach:
            dense = solver.dense_output()
            for j in reach:
                out[j] = solver.y if abs(saveat[j] - solver.t) <= span_tol else dense(saveat[j])
            k = reach[-1] + 1

    sample_codes = [retcode] * B
    x = torch.as_tensor(out).reshape(saveat.size, *shape).to(device=device, dtype=dtype)
    stats = Stats(
        nf=counts["nf"],
        njvp=0,
        njac=max(counts["njac"], getattr(solver, "njev", 0)),
        nlinsolve=None,
        nfactor=getattr(solver, "nlu", 0),
        nkrylov=0,
        naccept=naccept,
        nreject=None,
        wall_time=time.perf_counter() - start,
    )
    return Solution(
        t=opts.saveat.to(dtype=dtype, device=device),
        x=x,
        retcode=retcode,
        stats=stats,
        method=method.name,
        backend=NAME,
        sample_retcodes=sample_codes,
        t_final=torch.full((B,), float(solver.t), dtype=dtype, device=device),
        message=message,
    )
