"""The time-stepping driver every torch one-step method runs under: batched, per-sample clocks.

Every sample of the batch runs on its own clock: its own time ``t[b]``, step ``h[b]``, error history and
step-size controller. A hard sample takes many small steps without forcing them on the others; the
others finish and idle (their step is zero) while it goes on. Right-hand sides are always called on the
full batch with per-sample times ``t`` shaped ``[B]``.

A method is a :class:`Stepper`: it attempts one step per sample and reports the new state, a
per-sample error norm and, for implicit methods, which samples' Newton iterations failed. The driver
does the rest, identically for explicit, Rosenbrock and ESDIRK methods:

Error norm (Hairer's): for sample b with the embedded error estimate e and scale
``sc = atol + rtol * max(|x|, |x_new|)`` componentwise, ``err_b = sqrt(mean_i (e_i / sc_i)^2)``, the RMS over
the sample's components; a step is accepted when ``err_b <= 1``.

Step control (PI): after an accepted step ``h_new = h * clamp(safety * err^-β1 * err_prev^β2, qmin, qmax)``
with ``β1 = 0.7/k``, ``β2 = 0.4/k`` and ``k`` the order of the error estimate plus one; a rejected step
shrinks by ``clamp(safety * err^(-1/k), qmin, 1)``, a failed Newton iteration by ``qmin``, and the step
after a rejection may not grow. Defaults: safety 0.9, qmin 0.2, qmax 10. The first step is chosen per
sample by Hairer's algorithm (one extra right-hand-side call).

Step floor: a sample whose next step falls below ``dtmin`` (default 16 ulp of its own current time) stops with
``DtLessThanMin`` (``Unstable`` / ``ConvergenceFailure`` when its last rejection was a non-finite state / a failed
Newton iteration).

Saving: a save time is reached when it lies within a few ulp of the step's end (relative to the times themselves,
never to the span); ``saveat`` times are filled by the method's continuous extension where it has one; otherwise
steps are shortened to land on them. Fixed-step mode walks a grid shared by all samples.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .options import SolveOptions, fixed_grid, time_slack
from .problem import ODEProblem
from .solution import CONVERGENCE_FAILURE, DT_LESS_THAN_MIN, MAX_ITERS, SUCCESS, UNSTABLE, Solution, Stats

SAFETY, QMIN, QMAX = 0.9, 0.2, 10.0
_CODES = (SUCCESS, MAX_ITERS, DT_LESS_THAN_MIN, UNSTABLE, CONVERGENCE_FAILURE)


def bcast(v: Tensor, x: Tensor) -> Tensor:
    """A ``[B]`` tensor reshaped to broadcast against ``[B, *event]``."""
    return v.reshape(v.shape + (1,) * (x.dim() - 1))


def rms(v: Tensor) -> Tensor:
    """Per-sample root mean square over all non-batch axes, ``[B]``."""
    return v.pow(2).flatten(1).mean(1).sqrt()


class Counter:
    """Wraps a right-hand side: casts per-sample times to the state's dtype, counts calls and the rows evaluated."""

    def __init__(self, f, dtype: torch.dtype):
        self.f, self.dtype, self.n, self.rows = f, dtype, 0, 0

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        self.n += 1
        self.rows += x.shape[0]
        return self.f(t.to(self.dtype), x)


class ErrorNorm:
    """The componentwise scale ``atol + rtol * max(|x|, |y|)`` and the per-sample weighted RMS norm."""

    def __init__(self, rtol: float, atol: float | Tensor, like: Tensor, floor_ulps: int = 10):
        floor = floor_ulps * torch.finfo(like.dtype).eps
        if rtol < floor:
            # below ~10 ulp no step size can meet the tolerance: the solve would grind to MaxIters
            warnings.warn(f"rtol={rtol:g} is below what {like.dtype} can resolve; using rtol={floor:.1e}", stacklevel=4)
            rtol = floor
        self.rtol = rtol
        self.atol = atol.to(dtype=like.dtype, device=like.device) if isinstance(atol, Tensor) else atol

    def scale(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        mag = x.abs() if y is None else torch.maximum(x.abs(), y.abs())
        return self.atol + self.rtol * mag

    def __call__(self, e: Tensor, x: Tensor, y: Tensor | None = None) -> Tensor:
        return rms(e / self.scale(x, y)).to(torch.float64)


@dataclass
class Attempt:
    """One attempted step for every sample.

    ``err``: per-sample error norm ``[B]`` (float64; None in fixed-step mode if the method has no estimate);
    ``failed``: samples whose implicit solve did not converge (their step is rejected and shrunk);
    ``interpolate(theta)``: the continuous extension on the step for per-sample ``theta`` ``[B]``, or None.
    """

    x_new: Tensor
    err: Tensor | None
    failed: Tensor | None = None
    interpolate: Callable[[Tensor], Tensor] | None = None


@dataclass
class WorkCounts:
    njvp: int = 0
    njac: int = 0
    nlinsolve: int = 0
    nfactor: int = 0
    nkrylov: int = 0
    extra: dict = field(default_factory=dict)


class Stepper:
    """What a one-step method provides to the driver (see the module docstring)."""

    name: str
    order: int
    error_order: int | None
    dense: bool = False
    f: Counter
    work: WorkCounts

    def start(self, t: Tensor, x: Tensor) -> Tensor:
        """Prepare at the initial point; return f(t, x) (used for the first step size)."""
        raise NotImplementedError

    def attempt(self, t: Tensor, x: Tensor, h: Tensor, adaptive: bool) -> Attempt:
        raise NotImplementedError

    def commit(self, accept: Tensor, t_new: Tensor, x_new: Tensor, attempt: Attempt) -> None:
        """Called after every attempt with the accepted-sample mask."""


def _initial_step(
    stepper: Stepper, t0: Tensor, x0: Tensor, f0: Tensor, direction: float, span: float, norm: ErrorNorm
) -> Tensor:
    """Hairer's starting step (Solving ODEs I, II.4), per sample."""
    sc = norm.scale(x0)
    d0 = rms(x0 / sc).to(torch.float64)
    d1 = rms(f0 / sc).to(torch.float64)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
    h0 = h0.clamp(max=span)
    x1 = x0 + bcast((direction * h0).to(x0.dtype), x0) * f0
    f1 = stepper.f(t0 + direction * h0, x1)
    d2 = (rms((f1 - f0) / sc).to(torch.float64) / h0).nan_to_num(nan=0.0, posinf=0.0)
    big = torch.maximum(d1, d2)
    k = (stepper.error_order or stepper.order) + 1
    h1 = torch.where(
        big <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3), (0.01 / big.clamp_min(1e-300)) ** (1.0 / k)
    )
    return torch.minimum(torch.minimum(100 * h0, h1), torch.full_like(h0, span))


FLOOR_ULPS = 16


def _identity(v: Tensor) -> Tensor:
    return v


def step_floor(t: Tensor | float, span: float) -> Tensor | float:
    """The default smallest step per sample, ``[B]`` (or for one clock given as a float): ``FLOOR_ULPS`` ulp of the
    current time.

    It follows the clock as SciML's does (a step below a few ulp of ``t`` no longer moves ``t``), never the span: a
    transient at t ~ 1e-6 of a solve to 1e11 still gets steps of 1e-12. At t = 0 the ulp of ``eps · span`` stands in
    for that of t (a step of 1e-300 at the origin is no step anyone needs)."""
    eps = torch.finfo(torch.float64).eps
    if isinstance(t, float):  # a whole-batch clock (QNDF's coupled layout keeps its step control on Python floats)
        return FLOOR_ULPS * eps * max(abs(t), eps * span)
    return FLOOR_ULPS * eps * t.abs().clamp_min(eps * span)


def integrate(problem: ODEProblem, stepper: Stepper, opts: SolveOptions, norm: ErrorNorm) -> Solution:
    start = time.perf_counter()
    x0 = problem.x0
    dtype, device = x0.dtype, x0.device
    t0, t1 = problem.tspan
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    B = x0.shape[0]

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
    if bool((saveat[0] - t0).abs() <= time_slack(saveat[0], t0)):
        out[0] = x
        idx += 1

    f0 = stepper.start(t, x)
    bad = ~torch.isfinite(f0).flatten(1).all(1)
    code[bad], done[bad] = _CODES.index(UNSTABLE), True

    dense = stepper.dense
    if opts.adaptive:
        grid = None
        if opts.dt is None:
            h = _initial_step(
                stepper, t, x, torch.where(bcast(bad, x), torch.zeros_like(f0), f0), direction, span, norm
            )
        else:
            h = torch.full((B,), opts.dt, dtype=torch.float64, device=device)
        if opts.dtmax is not None:
            h = h.clamp(max=opts.dtmax)
        h = direction * h
        k_err = (stepper.error_order or stepper.order) + 1
        beta1, beta2 = 0.7 / k_err, 0.4 / k_err
        err_prev = torch.ones(B, dtype=torch.float64, device=device)
        after_reject = torch.zeros(B, dtype=torch.bool, device=device)
        last_failure = torch.zeros(B, dtype=torch.long, device=device)  # 0 error, 1 non-finite, 2 Newton
        user_dtmin = opts.dtmin
    else:
        grid = fixed_grid(problem.tspan, opts.dt, opts.timesteps, None if dense else opts.saveat).to(device)

    t_end = torch.full((B,), t1, dtype=torch.float64, device=device)
    ahead = _identity if direction > 0 else torch.neg  # a time difference measured along the direction of travel
    target, unsaved = saveat[idx.clamp(max=n_save - 1)], idx < n_save  # each sample's next save time (cached)
    any_after_reject = False
    iteration = 0
    while not bool(done.all()):
        if iteration >= (opts.maxiters if opts.adaptive else grid.numel() - 1):
            if opts.adaptive:
                code[~done] = _CODES.index(MAX_ITERS)
            done[:] = True
            break
        active = ~done
        if opts.adaptive:
            remaining = t_end - t
            hs = torch.where(ahead(h - remaining) >= 0, remaining, h)
            if not dense:
                nxt = target - t
                hs = torch.where(unsaved & (ahead(hs - nxt) > 0), nxt, hs)
            hs = torch.where(active, hs, 0.0)
            t_new = torch.where(hs == remaining, t_end, t + hs)
        else:
            t_new = torch.where(active, grid[iteration + 1], t)
            hs = t_new - t

        att = stepper.attempt(t, x, hs, opts.adaptive)
        finite = torch.isfinite(att.x_new).flatten(1).all(1)
        newton_failed = att.failed if att.failed is not None else torch.zeros_like(finite)
        if opts.adaptive:
            err = att.err
            finite &= torch.isfinite(err)
            accept = active & finite & ~newton_failed & (err <= 1.0)
        else:
            accept = active & finite & ~newton_failed
            failed = active & ~accept
            code[failed & ~finite] = _CODES.index(UNSTABLE)
            code[failed & finite] = _CODES.index(CONVERGENCE_FAILURE)
            done |= failed
        reject = active & ~accept

        # fill the save points that fall inside accepted steps
        while True:
            slack = time_slack(target, t_new)
            pend = accept & unsaved & (ahead(target - t_new) <= slack)
            if not bool(pend.any()):
                break
            at_end = (target - t_new).abs() <= slack
            if dense and not bool(at_end[pend].all()):
                theta = torch.where(hs != 0, (target - t) / torch.where(hs != 0, hs, 1.0), torch.ones_like(hs))
                val = torch.where(bcast(at_end, x), att.x_new, att.interpolate(theta))
            else:
                val = att.x_new
            out[idx[pend], arange[pend]] = val[pend]
            idx += pend.long()
            target, unsaved = saveat[idx.clamp(max=n_save - 1)], idx < n_save

        stepper.commit(accept, t_new, att.x_new, att)
        x = torch.where(bcast(accept, x), att.x_new, x)
        t = torch.where(accept, t_new, t)
        naccept += accept
        nreject += reject
        done |= accept & (t == t_end)

        if opts.adaptive:
            # with no rejection in this attempt (the common case) the rejection bookkeeping is skipped: every accepted
            # sample's error is finite, the shrink factor and failure reason are unused
            any_reject = bool(reject.any())
            safe_err = torch.where(finite & ~newton_failed, err, math.inf) if any_reject else err
            grow = SAFETY * safe_err.clamp_min(1e-10) ** (-beta1) * err_prev**beta2
            grow = grow.clamp(QMIN, QMAX)
            if any_after_reject:
                grow = torch.where(after_reject, grow.clamp(max=1.0), grow)
            h_used = torch.where(hs != 0, hs, h)
            if any_reject:
                shrink = (SAFETY * safe_err ** (-1.0 / k_err)).nan_to_num(nan=QMIN).clamp(QMIN, 1.0)
                h = torch.where(accept, h_used * grow, torch.where(reject, h_used * shrink, h))
            else:
                h = torch.where(accept, h_used * grow, h)
            if opts.dtmax is not None:
                h = h.clamp(-opts.dtmax, opts.dtmax)
            err_prev = torch.where(accept, err.clamp_min(1e-4), err_prev)
            if any_reject or any_after_reject:
                after_reject = torch.where(active, reject, after_reject)
                any_after_reject = bool(after_reject.any())
            if any_reject:
                # a non-finite state or error outranks a failed Newton solve (a NaN right-hand side fails both)
                why = torch.where(~finite, 1, torch.where(newton_failed, 2, 0))
                last_failure = torch.where(reject, why, last_failure)
            tiny = ~done & (h.abs() < (step_floor(t, span) if user_dtmin is None else user_dtmin))
            if bool(tiny.any()):
                code[tiny & (last_failure == 0)] = _CODES.index(DT_LESS_THAN_MIN)
                code[tiny & (last_failure == 1)] = _CODES.index(UNSTABLE)
                code[tiny & (last_failure == 2)] = _CODES.index(CONVERGENCE_FAILURE)
                done |= tiny
        iteration += 1

    codes = [_CODES[c] for c in code.tolist()]
    return finished_solution(stepper, codes, naccept, nreject, start, saveat, out, t, dtype)


def finished_solution(stepper, codes, naccept, nreject, start, saveat, out, t, dtype) -> Solution:
    """The :class:`Solution` of a finished per-sample solve: per-sample return codes ``codes`` (the first failure is the
    solve's), the work the ``stepper`` counted (its ``f``: a :class:`Counter`, ``work``: :class:`WorkCounts`, ``name``),
    accepted/rejected steps per sample, save times ``saveat``, saved states ``out`` and final times ``t``."""
    w = stepper.work
    stats = Stats(
        nf=stepper.f.n,
        njvp=w.njvp,
        njac=w.njac,
        nlinsolve=w.nlinsolve,
        nfactor=w.nfactor,
        nkrylov=w.nkrylov,
        naccept=int(naccept.sum()),
        nreject=int(nreject.sum()),
        wall_time=time.perf_counter() - start,
        sample_naccept=naccept.cpu(),
        sample_nreject=nreject.cpu(),
    )
    return Solution(
        t=saveat.to(dtype),
        x=out,
        retcode=next((c for c in codes if c != SUCCESS), SUCCESS),
        stats=stats,
        method=stepper.name,
        backend="torch",
        sample_retcodes=codes,
        t_final=t.to(dtype),
        extra={"f_rows": stepper.f.rows, **w.extra},
    )
