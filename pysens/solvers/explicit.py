"""Explicit Runge–Kutta methods: one stepper for every tableau in :mod:`pysens.solvers.tableaus`.

Stages are evaluated for the whole batch at once with per-sample step sizes (with ``compact=True``, only on the
unfinished samples once 5% of the batch has finished; a sample's steps are the same either way); the driver
(:mod:`pysens.solvers.driver`) supplies per-sample step control, saving and return codes. FSAL tableaus reuse
their last stage as the next step's first; tableaus with a continuous extension (DP5, Tsit5) fill ``saveat``
by interpolation.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from .driver import Attempt, Counter, ErrorNorm, Stepper, WorkCounts, bcast, integrate
from .options import SolveOptions
from .problem import ODEProblem
from .solution import Solution
from .tableaus import ExplicitTableau

# evaluate the stages on the unfinished rows only when at most this fraction of the batch is still moving
COMPACT_FRACTION = 0.95


def stage_sum(coefs, ks: list[Tensor]) -> Tensor | None:
    """Σ_j coefs[j] k_j, skipping zero coefficients (None when all are zero)."""
    acc = None
    for a, k in zip(coefs, ks, strict=True):
        if a != 0.0:
            acc = a * k if acc is None else acc.add(k, alpha=a)
    return acc


class ExplicitStepper(Stepper):
    def __init__(self, problem: ODEProblem, tab: ExplicitTableau, norm: ErrorNorm, compact: bool = False):
        self.tab, self.norm, self.compact = tab, norm, compact
        self.name, self.order, self.error_order = tab.name, tab.order, tab.error_order
        self.dense = tab.dense is not None
        self.f = Counter(problem.f, problem.x0.dtype)
        self.work = WorkCounts()
        self.k1: Tensor | None = None

    def start(self, t: Tensor, x: Tensor) -> Tensor:
        self.k1 = self.f(t, x)
        return self.k1

    def attempt(self, t: Tensor, x: Tensor, h: Tensor, adaptive: bool) -> Attempt:
        if self.k1 is None:
            self.k1 = self.f(t, x)
        # rows with h = 0 (finished samples) take no step: with ``compact``, once enough of the batch has finished,
        # the stages are evaluated on the unfinished rows only, so the cost follows Σ_i steps_i, not B · max_i steps_i
        moving = h != 0
        n_moving = int(moving.sum())
        if not self.compact or n_moving == h.numel() or n_moving > COMPACT_FRACTION * h.numel():
            return self._attempt(t, x, h, self.k1, adaptive, self.norm)
        rows = moving.nonzero().squeeze(1)
        norm = self.norm
        if isinstance(norm.atol, Tensor) and norm.atol.dim() == x.dim() and norm.atol.shape[0] == x.shape[0] > 1:
            norm = copy.copy(norm)  # per-sample tolerances follow their rows
            norm.atol = norm.atol[rows]
        sub = self._attempt(t[rows], x[rows], h[rows], self.k1[rows], adaptive, norm)
        x_new = x.clone()
        x_new[rows] = sub.x_new
        last = self.k1.clone()
        last[rows] = self._last
        self._last = last
        err = None
        if adaptive:
            err = torch.zeros_like(h)
            err[rows] = sub.err
        interp = None
        if sub.interpolate is not None:
            sub_interp = sub.interpolate

            def interp(theta: Tensor) -> Tensor:
                out = x.clone()
                out[rows] = sub_interp(theta[rows])
                return out

        return Attempt(x_new=x_new, err=err, interpolate=interp, failed=None)

    def _attempt(self, t: Tensor, x: Tensor, h: Tensor, k1: Tensor, adaptive: bool, norm: ErrorNorm) -> Attempt:
        tab = self.tab
        hb = bcast(h.to(x.dtype), x)
        ks = [k1]
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
        err = self._error(ks, h, x, x_new, norm) if adaptive else None
        interp = (lambda theta: self._interpolate(theta, x, ks, h)) if self.dense else None
        return Attempt(x_new=x_new, err=err, interpolate=interp, failed=None)

    def commit(self, accept: Tensor, t_new: Tensor, x_new: Tensor, attempt: Attempt) -> None:
        # FSAL: the last stage is f at the new point; otherwise the next attempt evaluates k1 afresh
        self.k1 = torch.where(bcast(accept, x_new), self._last, self.k1) if self.tab.fsal else None

    def _error(self, ks, h: Tensor, x: Tensor, x_new: Tensor, norm: ErrorNorm) -> Tensor:
        tab = self.tab
        e = stage_sum(tab.b_error, ks)
        if tab.b_error3 is None:
            return norm(bcast(h.to(x.dtype), x) * e, x, x_new)
        # DOP853: blend the 5th- and 3rd-order estimates (Hairer, Nørsett & Wanner I, II.10)
        sc = norm.scale(x, x_new)
        n = x[0].numel()
        e5 = (e / sc).pow(2).flatten(1).sum(1).to(torch.float64)
        e3 = (stage_sum(tab.b_error3, ks) / sc).pow(2).flatten(1).sum(1).to(torch.float64)
        denom = e5 + 0.01 * e3
        return torch.where(denom > 0, h.abs() * e5 / torch.sqrt(denom.clamp_min(1e-300) * n), torch.zeros_like(e5))

    def _interpolate(self, theta: Tensor, x: Tensor, ks, h: Tensor) -> Tensor:
        dense = torch.tensor(self.tab.dense, dtype=torch.float64, device=theta.device)  # [s, deg+1]
        # Horner, elementwise: each sample's weights do not depend on which other samples share the batch
        th = theta.unsqueeze(-1)  # [B, 1]
        w = dense[:, -1].expand(theta.shape[0], -1)
        for k in range(dense.shape[1] - 2, -1, -1):
            w = w * th + dense[:, k]
        w = w.to(x.dtype)  # [B, s]
        acc = sum(bcast(w[:, i], x) * k for i, k in enumerate(ks) if i < dense.shape[0])
        return x + bcast(h.to(x.dtype), x) * acc


def solve_explicit(problem: ODEProblem, tab: ExplicitTableau, opts: SolveOptions) -> Solution:
    norm = ErrorNorm(opts.rtol, opts.atol, problem.x0)
    compact = opts.extra.get("compact", False)
    if not isinstance(compact, bool):
        raise TypeError(f"compact must be True or False, got {compact!r}")
    return integrate(problem, ExplicitStepper(problem, tab, norm, compact), opts, norm)
