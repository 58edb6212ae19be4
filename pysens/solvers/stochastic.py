"""Fixed-step SDE methods of the torch backend.

Euler–Maruyama, for Itô SDEs dx = f(t, x) dt + g(t, x) dW with additive or diagonal noise:

    x_{n+1} = x_n + f(t_n, x_n) h + g(t_n, x_n) ΔW_n,     ΔW_n ~ N(0, |h|),

with h signed (reverse-time samplers run with h < 0). Increments come from the problem's
:class:`~pysens.solvers.noise.BrownianGrid` when it has one (summed to the solver's coarser step), or
are drawn from ``generator``.
"""

from __future__ import annotations

import math
import time

import torch

from .driver import bcast as _bcast
from .methods import MethodInfo
from .options import SolveOptions, fixed_grid
from .problem import SDEProblem
from .solution import SUCCESS, UNSTABLE, Solution, Stats


def solve_em(problem: SDEProblem, method: MethodInfo, opts: SolveOptions) -> Solution:
    start = time.perf_counter()
    x0 = problem.x0
    dtype, device = x0.dtype, x0.device
    B = x0.shape[0]
    grid = fixed_grid(problem.tspan, opts.dt, opts.timesteps, opts.saveat)
    saveat = opts.saveat
    save_rows = {float(s): i for i, s in enumerate(saveat.tolist())}
    out = torch.full((saveat.numel(), *x0.shape), math.nan, dtype=dtype, device=device)
    span = abs(problem.tspan[1] - problem.tspan[0])

    def save(t: float, x):
        row = next((i for s, i in save_rows.items() if abs(s - t) <= 1e-12 * max(span, 1.0)), None)
        if row is not None:
            out[row] = x

    x = x0.clone()
    alive = torch.ones(B, dtype=torch.bool, device=device)
    save(float(grid[0]), x)
    nf = 0
    for n in range(grid.numel() - 1):
        ta, tb = float(grid[n]), float(grid[n + 1])
        h = tb - ta
        tt = torch.full((B,), ta, dtype=dtype, device=device)
        if problem.brownian is not None:
            dw = problem.brownian.increment(ta, tb).to(dtype=dtype, device=device)
        else:
            dw = torch.randn(x.shape, generator=opts.generator, dtype=dtype, device=device) * abs(h) ** 0.5
        drift, diffusion = problem.f(tt, x), problem.g(tt, x)
        nf += 1
        x_new = x + drift * h + diffusion * dw
        ok = torch.isfinite(x_new).flatten(1).all(1) & alive
        x = torch.where(_bcast(ok, x), x_new, torch.full_like(x, math.nan))
        alive = ok
        save(tb, x)
        if not bool(alive.any()):
            break
    codes = [SUCCESS if a else UNSTABLE for a in alive.tolist()]
    retcode = SUCCESS if all(c == SUCCESS for c in codes) else UNSTABLE
    steps = grid.numel() - 1
    return Solution(
        t=saveat.to(dtype=dtype, device=device),
        x=out,
        retcode=retcode,
        stats=Stats(
            nf=nf,
            naccept=steps * B,
            wall_time=time.perf_counter() - start,
            sample_naccept=torch.full((B,), steps, dtype=torch.long),
            sample_nreject=torch.zeros(B, dtype=torch.long),
        ),
        method="EM",
        backend="torch",
        sample_retcodes=codes,
    )


SDE_SOLVERS = {"EM": solve_em}
