"""The explicit Runge–Kutta engine of the torch backend: any tableau, batched, per-sample steps.

Every sample of the batch runs on its own clock: its own time ``t[b]``, step ``h[b]``, error history
and step-size controller. A hard sample takes many small steps without forcing them on the others;
the others finish and idle (their step is zero) while it goes on. The right-hand side is always called
on the full batch with per-sample times ``t`` shaped ``[B]``.

Error norm (Hairer's): for sample b with the embedded error estimate e and scale
``sc = atol + rtol * max(|x|, |x_new|)`` componentwise,

    err_b = sqrt( mean_i (e_i / sc_i)^2 ),

the RMS over the sample's components; a step is accepted when err_b <= 1.

Step control (PI): after an accepted step ``h_new = h * clamp(safety * err^-β1 * err_prev^β2, qmin, qmax)``
with ``β1 = 0.7/k``, ``β2 = 0.4/k`` and ``k`` the order of the error estimate plus one; a rejected
step shrinks by ``clamp(safety * err^(-1/k), qmin, 1)``, and the step after a rejection may not grow.
Defaults: safety 0.9, qmin 0.2, qmax 10. The first step is chosen per sample by Hairer's algorithm
(one extra right-hand-side call).

Saving: ``saveat`` times are filled by the tableau's continuous extension where it has one (DP5, Tsit5);
otherwise steps are shortened to land on them.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from .options import SolveOptions, fixed_grid
from .problem import ODEProblem
from .solution import DT_LESS_THAN_MIN, MAX_ITERS, SUCCESS, UNSTABLE, Solution, Stats
from .tableaus import ExplicitTableau

SAFETY, QMIN, QMAX = 0.9, 0.2, 10.0
_CODES = (SUCCESS, MAX_ITERS, DT_LESS_THAN_MIN, UNSTABLE)


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """A ``[B]`` tensor reshaped to broadcast against ``[B, *event]``."""
    return v.reshape(v.shape + (1,) * (x.dim() - 1))


def _rms(v: Tensor) -> Tensor:
    return v.pow(2).flatten(1).mean(1).sqrt()


class _Counter:
    """Wraps the right-hand side: casts per-sample times to the state's dtype and counts calls."""

    def __init__(self, f, dtype: torch.dtype):
        self.f, self.dtype, self.n = f, dtype, 0

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        self.n += 1
        return self.f(t.to(self.dtype), x)


def _stage_sum(coefs, ks: list[Tensor]) -> Tensor | None:
    acc = None
    for a, k in zip(coefs, ks, strict=True):
        if a != 0.0:
            acc = a * k if acc is None else acc.add(k, alpha=a)
    return acc


def _attempt(f, tab: ExplicitTableau, t: Tensor, x: Tensor, h: Tensor, k1: Tensor):
    """One RK step for every sample: returns (x_new, stages)."""
    hb = _bcast(h.to(x.dtype), x)
    ks = [k1]
    x_new = None
    for i in range(1, tab.stages):
        incr = _stage_sum(tab.a[i - 1], ks)
        xi = x if incr is None else x + hb * incr
        if tab.fsal and i == tab.stages - 1:
            x_new = xi
        ks.append(f(t + tab.c[i] * h, xi))
    if x_new is None:
        x_new = x + hb * _stage_sum(tab.b, ks)
    return x_new, ks


def _error(tab: ExplicitTableau, ks, h: Tensor, x: Tensor, x_new: Tensor, rtol: float, atol) -> Tensor:
    sc = atol + rtol * torch.maximum(x.abs(), x_new.abs())
    e = _stage_sum(tab.b_error, ks)
    if tab.b_error3 is None:
        return _rms(_bcast(h.to(x.dtype), x) * e / sc).to(torch.float64)
    # DOP853: blend the 5th- and 3rd-order estimates (Hairer, Nørsett & Wanner I, II.10).
    n = x[0].numel()
    e5 = (e / sc).pow(2).flatten(1).sum(1).to(torch.float64)
    e3 = (_stage_sum(tab.b_error3, ks) / sc).pow(2).flatten(1).sum(1).to(torch.float64)
    denom = e5 + 0.01 * e3
    return torch.where(denom > 0, h.abs() * e5 / torch.sqrt(denom.clamp_min(1e-300) * n), torch.zeros_like(e5))


def _interpolate(tab: ExplicitTableau, theta: Tensor, x: Tensor, ks, h: Tensor) -> Tensor:
    dense = torch.tensor(tab.dense, dtype=torch.float64, device=theta.device)  # [s, deg+1]
    powers = theta.unsqueeze(-1) ** torch.arange(dense.shape[1], device=theta.device, dtype=torch.float64)
    w = (powers @ dense.T).to(x.dtype)  # [B, s]
    acc = sum(_bcast(w[:, i], x) * k for i, k in enumerate(ks) if i < dense.shape[0])
    return x + _bcast(h.to(x.dtype), x) * acc


def _initial_step(
    f, tab: ExplicitTableau, t0: Tensor, x0: Tensor, f0: Tensor, direction: float, span: float, rtol: float, atol
) -> Tensor:
    """Hairer's starting step (Solving ODEs I, II.4), per sample."""
    sc = atol + rtol * x0.abs()
    d0 = _rms(x0 / sc).to(torch.float64)
    d1 = _rms(f0 / sc).to(torch.float64)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
    h0 = h0.clamp(max=span)
    x1 = x0 + _bcast((direction * h0).to(x0.dtype), x0) * f0
    f1 = f(t0 + direction * h0, x1)
    d2 = (_rms((f1 - f0) / sc).to(torch.float64) / h0).nan_to_num(nan=0.0, posinf=0.0)
    big = torch.maximum(d1, d2)
    k = (tab.error_order or tab.order) + 1
    h1 = torch.where(
        big <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3), (0.01 / big.clamp_min(1e-300)) ** (1.0 / k)
    )
    return torch.minimum(torch.minimum(100 * h0, h1), torch.full_like(h0, span))


def solve_explicit(problem: ODEProblem, tab: ExplicitTableau, opts: SolveOptions) -> Solution:
    start = time.perf_counter()
    x0 = problem.x0
    dtype, device = x0.dtype, x0.device
    t0, t1 = problem.tspan
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    B = x0.shape[0]
    f = _Counter(problem.f, dtype)
    atol = opts.atol.to(dtype=dtype, device=device) if isinstance(opts.atol, Tensor) else opts.atol

    saveat = opts.saveat.to(device)
    n_save = saveat.numel()
    out = torch.full((n_save, *x0.shape), math.nan, dtype=dtype, device=device)
    idx = torch.zeros(B, dtype=torch.long, device=device)
    arange = torch.arange(B, device=device)

    t = torch.full((B,), t0, dtype=torch.float64, device=device)
    x = x0.clone()
    code = torch.zeros(B, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    naccept = torch.zeros(B, dtype=torch.long, device=device)
    nreject = torch.zeros(B, dtype=torch.long, device=device)
    slack = 1e-13 * max(span, abs(t0), abs(t1), 1.0)

    # save x0 where saveat starts at t0
    at_start = (saveat[0] - t0).abs() <= slack
    if bool(at_start):
        out[0] = x
        idx += 1

    k1 = f(t, x)
    bad = ~torch.isfinite(k1).flatten(1).all(1)
    code[bad], done[bad] = _CODES.index(UNSTABLE), True

    dense = tab.dense is not None
    if opts.adaptive:
        grid = None
        h = (
            _initial_step(
                f, tab, t, x, torch.where(_bcast(bad, x), torch.zeros_like(k1), k1), direction, span, opts.rtol, atol
            )
            if opts.dt is None
            else torch.full((B,), opts.dt, dtype=torch.float64, device=device)
        )
        if opts.dtmax is not None:
            h = h.clamp(max=opts.dtmax)
        h = direction * h
        k_err = (tab.error_order or tab.order) + 1
        beta1, beta2 = 0.7 / k_err, 0.4 / k_err
        err_prev = torch.ones(B, dtype=torch.float64, device=device)
        after_reject = torch.zeros(B, dtype=torch.bool, device=device)
        nonfinite_last = torch.zeros(B, dtype=torch.bool, device=device)
        dtmin = (
            opts.dtmin if opts.dtmin is not None else 64 * torch.finfo(torch.float64).eps * max(span, abs(t0), abs(t1))
        )
    else:
        grid = fixed_grid(problem.tspan, opts.dt, opts.timesteps, None if dense else opts.saveat).to(device)

    t_end = torch.full((B,), t1, dtype=torch.float64, device=device)
    iteration = 0
    need_k1 = False
    while not bool(done.all()):
        if iteration >= (opts.maxiters if opts.adaptive else grid.numel() - 1):
            if opts.adaptive:
                code[~done] = _CODES.index(MAX_ITERS)
            done[:] = True
            break
        if need_k1:
            k1 = f(t, x)
        active = ~done
        if opts.adaptive:
            remaining = t_end - t
            hs = torch.where(direction * (h - remaining) >= 0, remaining, h)
            if not dense:
                nxt = saveat[idx.clamp(max=n_save - 1)] - t
                clip = (idx < n_save) & (direction * (hs - nxt) > 0)
                hs = torch.where(clip, nxt, hs)
            hs = torch.where(active, hs, torch.zeros_like(hs))
            t_new = torch.where(hs == remaining, t_end, t + hs)
        else:
            t_new = torch.where(active, grid[iteration + 1], t)
            hs = t_new - t

        x_new, ks = _attempt(f, tab, t, x, hs, k1)
        finite = torch.isfinite(x_new).flatten(1).all(1)
        if opts.adaptive:
            err = _error(tab, ks, hs, x, x_new, opts.rtol, atol)
            finite &= torch.isfinite(err)
            accept = active & finite & (err <= 1.0)
        else:
            accept = active & finite
            failed = active & ~finite
            code[failed], done[failed] = _CODES.index(UNSTABLE), True
        reject = active & ~accept

        # fill the save points that fall inside accepted steps
        while True:
            target = saveat[idx.clamp(max=n_save - 1)]
            pend = accept & (idx < n_save) & (direction * (target - t_new) <= slack)
            if not bool(pend.any()):
                break
            if dense:
                theta = torch.where(hs != 0, (target - t) / torch.where(hs != 0, hs, 1.0), torch.ones_like(hs))
                at_end = (target - t_new).abs() <= slack
                val = torch.where(_bcast(at_end, x), x_new, _interpolate(tab, theta, x, ks, hs))
            else:
                val = x_new
            out[idx[pend], arange[pend]] = val[pend]
            idx += pend.long()

        accb = _bcast(accept, x)
        x = torch.where(accb, x_new, x)
        t = torch.where(accept, t_new, t)
        if tab.fsal:
            k1 = torch.where(accb, ks[-1], k1)
        else:
            need_k1 = True
        naccept += accept.long()
        nreject += reject.long()
        done |= accept & (t == t_end)

        if opts.adaptive:
            safe_err = torch.where(finite, err, torch.full_like(err, math.inf))
            grow = SAFETY * safe_err.clamp_min(1e-10) ** (-beta1) * err_prev**beta2
            grow = grow.clamp(QMIN, QMAX)
            grow = torch.where(after_reject, grow.clamp(max=1.0), grow)
            shrink = (SAFETY * safe_err ** (-1.0 / k_err)).nan_to_num(nan=QMIN).clamp(QMIN, 1.0)
            h_used = torch.where(hs != 0, hs, h)
            h = torch.where(accept, h_used * grow, torch.where(reject, h_used * shrink, h))
            if opts.dtmax is not None:
                h = h.clamp(-opts.dtmax, opts.dtmax)
            err_prev = torch.where(accept, err.clamp_min(1e-4), err_prev)
            after_reject = torch.where(active, reject, after_reject)
            nonfinite_last = torch.where(active, ~finite, nonfinite_last)
            tiny = ~done & (h.abs() < dtmin)
            if bool(tiny.any()):
                code[tiny & nonfinite_last] = _CODES.index(UNSTABLE)
                code[tiny & ~nonfinite_last] = _CODES.index(DT_LESS_THAN_MIN)
                done |= tiny
        iteration += 1

    codes = [_CODES[c] for c in code.tolist()]
    retcode = next((c for c in codes if c != SUCCESS), SUCCESS)
    stats = Stats(
        nf=f.n,
        naccept=int(naccept.sum()),
        nreject=int(nreject.sum()),
        wall_time=time.perf_counter() - start,
        sample_naccept=naccept.cpu(),
        sample_nreject=nreject.cpu(),
    )
    return Solution(
        t=saveat.to(dtype),
        x=out,
        retcode=retcode,
        stats=stats,
        method=tab.name,
        backend="torch",
        sample_retcodes=codes,
        t_final=t.to(dtype),
    )
