"""Explicit Runge–Kutta methods: one stepper for every tableau in :mod:`pysens.solvers.tableaus`.

Stages are evaluated for the whole batch at once with per-sample step sizes; the driver
(:mod:`pysens.solvers.driver`) supplies per-sample step control, saving and return codes. FSAL tableaus reuse
their last stage as the next step's first; tableaus with a continuous extension (DP5, Tsit5) fill ``saveat``
by interpolation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .driver import Attempt, Counter, ErrorNorm, Stepper, WorkCounts, bcast, integrate
from .options import SolveOptions
from .problem import ODEProblem
from .solution import Solution
from .tableaus import ExplicitTableau


def stage_sum(coefs, ks: list[Tensor]) -> Tensor | None:
    """Σ_j coefs[j] k_j, skipping zero coefficients (None when all are zero)."""
    acc = None
    for a, k in zip(coefs, ks, strict=True):
        if a != 0.0:
            acc = a * k if acc is None else acc.add(k, alpha=a)
    return acc


class ExplicitStepper(Stepper):
    def __init__(self, problem: ODEProblem, tab: ExplicitTableau, norm: ErrorNorm):
        self.tab, self.norm = tab, norm
        self.name, self.order, self.error_order = tab.name, tab.order, tab.error_order
        self.dense = tab.dense is not None
        self.f = Counter(problem.f, problem.x0.dtype)
        self.work = WorkCounts()
        self.k1: Tensor | None = None

    def start(self, t: Tensor, x: Tensor) -> Tensor:
        self.k1 = self.f(t, x)
        return self.k1

    def attempt(self, t: Tensor, x: Tensor, h: Tensor, adaptive: bool) -> Attempt:
        tab = self.tab
        if self.k1 is None:
            self.k1 = self.f(t, x)
        hb = bcast(h.to(x.dtype), x)
        ks = [self.k1]
        x_new = None
        for i in range(1, tab.stages):
            incr = stage_sum(tab.a[i - 1], ks)
            xi = x if incr is None else x + hb * incr
            if tab.fsal and i == tab.stages - 1:
                x_new = xi
            ks.append(self.f(t + tab.c[i] * h, xi))
        if x_new is None:
            x_new = x + hb * stage_sum(tab.b, ks)
        self._last = ks[-1]
        err = self._error(ks, h, x, x_new) if adaptive else None
        interp = (lambda theta: self._interpolate(theta, x, ks, h)) if self.dense else None
        return Attempt(x_new=x_new, err=err, interpolate=interp, failed=None)

    def commit(self, accept: Tensor, t_new: Tensor, x_new: Tensor, attempt: Attempt) -> None:
        # FSAL: the last stage is f at the new point; otherwise the next attempt evaluates k1 afresh
        self.k1 = torch.where(bcast(accept, x_new), self._last, self.k1) if self.tab.fsal else None

    def _error(self, ks, h: Tensor, x: Tensor, x_new: Tensor) -> Tensor:
        tab = self.tab
        e = stage_sum(tab.b_error, ks)
        if tab.b_error3 is None:
            return self.norm(bcast(h.to(x.dtype), x) * e, x, x_new)
        # DOP853: blend the 5th- and 3rd-order estimates (Hairer, Nørsett & Wanner I, II.10)
        sc = self.norm.scale(x, x_new)
        n = x[0].numel()
        e5 = (e / sc).pow(2).flatten(1).sum(1).to(torch.float64)
        e3 = (stage_sum(tab.b_error3, ks) / sc).pow(2).flatten(1).sum(1).to(torch.float64)
        denom = e5 + 0.01 * e3
        return torch.where(denom > 0, h.abs() * e5 / torch.sqrt(denom.clamp_min(1e-300) * n), torch.zeros_like(e5))

    def _interpolate(self, theta: Tensor, x: Tensor, ks, h: Tensor) -> Tensor:
        dense = torch.tensor(self.tab.dense, dtype=torch.float64, device=theta.device)  # [s, deg+1]
        powers = theta.unsqueeze(-1) ** torch.arange(dense.shape[1], device=theta.device, dtype=torch.float64)
        w = (powers @ dense.T).to(x.dtype)  # [B, s]
        acc = sum(bcast(w[:, i], x) * k for i, k in enumerate(ks) if i < dense.shape[0])
        return x + bcast(h.to(x.dtype), x) * acc


def solve_explicit(problem: ODEProblem, tab: ExplicitTableau, opts: SolveOptions) -> Solution:
    norm = ErrorNorm(opts.rtol, opts.atol, problem.x0)
    return integrate(problem, ExplicitStepper(problem, tab, norm), opts, norm)
