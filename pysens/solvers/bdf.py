"""QNDF: variable-order (1–5), quasi-constant-step numerical differentiation formulas, batched with per-sample clocks.

The scheme of Shampine & Reichelt's ode15s (The MATLAB ODE Suite, SIAM J. Sci. Comput. 18, 1997), as in scipy's
``BDF`` and SciML's ``QNDF``. The solution history of sample b is held as its backward differences
``D_0 = y_n, D_j = ∇^j y_n`` (``j ≤ k+2``) on an equally spaced grid of step ``h``. A step of order k predicts
``y⁰ = Σ_{j≤k} D_j`` and solves the NDF corrector (Klopfenstein–Shampine κ_k, γ_k = Σ_{i≤k} 1/i, α_k = (1 − κ_k) γ_k)

    (1 − κ_k) γ_k (y − y⁰) + Σ_{j=1..k} γ_j D_j = h f(t + h, y)       ⇔       d = c f(t+h, y⁰ + d) − ψ,
    c = h / α_k,   ψ = Σ_{j=1..k} γ_j D_j / α_k,

by simplified Newton with ``W = I − c J`` (one scaled dense LU per sample, :class:`~pysens.solvers.linalg.DenseSolver`,
turned into W⁻¹ once per factorisation so that every Newton solve is one batched mat-vec).
The error estimate is ``(κ_k γ_k + 1/(k+1)) d``. After an accepted step the differences are updated
(``D_{k+2} = d − D_{k+1}``, ``D_{k+1} = d``, ``D_i += D_{i+1}`` for i = k..0); a change of step by ρ re-expresses
them on the new grid (``D ← (R(ρ) U)ᵀ D`` with ``R(ρ)_ij = Π_{m=1..i} (m − 1 − ρj)/m`` and ``U = R(1)``, as in
Shampine & Reichelt's quasi-constant step size formulation).

Work reuse, per sample: J is evaluated at the start and then only when Newton fails with a Jacobian that is not fresh;
W is refactored only when c = h/α_k changes (a step or order change, at most once every k+1 steps) or J changes. Step
and order (scipy/ode15s): a rejected step shrinks by ``max(0.2, s·err^{-1/(k+1)})``, a Newton failure with a fresh
J halves h; after k+1 equal accepted steps, the error estimates of orders k−1, k, k+1 pick the next order and
``h ← h · min(10, s · max_q err_q^{-1/(q+1)})`` with ``s = 0.9 (2·4+1)/(2·4 + Newton iterations)``.

Newton (at most 4 iterations, scipy's test): with ``r = ‖Δ_m‖/‖Δ_{m−1}‖`` the iteration fails when ``r ≥ 1`` or
``r^{4−m}/(1−r) ‖Δ_m‖ > τ_k`` and has converged when ``r/(1−r) ‖Δ_m‖ < τ_k``, norms in the error norm's scale at y⁰.
The tolerance is in the error test's units, as CVODE's ``nlscoef / tq[2]``: the error estimate of order k is
``C_k ‖d‖`` (``C_k`` = :data:`_ERROR_CONST`, 0.10–0.32), so ``τ_k = κ / C_k`` bounds the iteration error left in
the corrector by κ of the error the step is allowed, whatever the order (``κ = max(10 eps/rtol, 0.01)``: SciML
NLNewton's κ; CVODE takes 0.1). The rate is measured afresh on every step, as scipy's BDF does: a first correction is
accepted only when it is exactly zero. Carrying the last rate into the next step (CVODE's crate, SciML's θ) let one
tiny first correction pass on a rate measured with the same W at an earlier step; on VDPOL a Jacobian taken in the
middle of a relaxation jump was kept onto the slow branch and two steps of 0.5 ended off the manifold with
``Success`` (0.6 correct digits for 2.5 required), and on E5/E5s it gave wrong answers at loose tolerances
(benchmarks/README.md, "Finer rtol grid"); measuring anew costs 4–18% more right-hand-side calls there.

Every decision is the sample's own (its clock, order, Jacobian age, Newton history); the batch only shares the
right-hand-side calls and the batched LU, so a sample takes the same steps alone and in any batch. With
``batch="coupled"`` (:mod:`pysens.solvers.bdf_coupled`) the batch is one system instead: one clock, order and Newton
history for all samples (the largest per-sample norm decides), per-sample LUs, the step control on Python floats.
``saveat`` times are filled from the interpolating polynomial of the accepted step (the differences, order k).
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from .driver import _CODES, Counter, ErrorNorm, WorkCounts, _initial_step, finished_solution, rms, step_floor
from .linalg import DenseSolver
from .options import SolveOptions, time_slack
from .problem import ODEProblem
from .solution import CONVERGENCE_FAILURE, DT_LESS_THAN_MIN, MAX_ITERS, UNSTABLE, Solution

MAX_ORDER = 5
NEWTON_MAXITER = 4
# Newton tolerance κ in the error test's units (τ_k = κ / C_k on the correction, as CVODE's nlscoef / tq[2]): SciML
# NLNewton's κ = 0.01 (CVODE uses 0.1). Applied to the correction itself (τ = κ, before) it was 3-10x stricter than the
# error test asks: 2.4 RHS calls a step on ROBER at rtol 1e-6 (CVODE: 1.3). In these units most of the stiff test set's
# QNDF points take 3-28% fewer RHS calls (ROBER 1e-6: 2555 against 2999, 6.37 digits against 6.07; HIRES 1e-4/1e-6 and
# E5 1e-6/1e-8 1-11% more), none a wrong Success; E5s at rtol 1e-4 reads 2.63 digits (2.5 required, 4.12 before).
NEWTON_KAPPA = 0.01
MIN_FACTOR, MAX_FACTOR = 0.2, 10.0
_KAPPA = (0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0)  # Klopfenstein–Shampine NDF coefficients (ode15s)
_GAMMA = tuple(sum(1.0 / i for i in range(1, k + 1)) for k in range(MAX_ORDER + 1))
_ALPHA = tuple((1.0 - kap) * g for kap, g in zip(_KAPPA, _GAMMA, strict=True))
_ERROR_CONST = tuple(kap * g + 1.0 / (k + 1) for k, (kap, g) in enumerate(zip(_KAPPA, _GAMMA, strict=True)))
BATCH_MODES = ("independent", "coupled")  # per-sample clocks (default) | the batch as one system (bdf_coupled.py)


class _Tables:
    """Per-order coefficient rows, indexed by a ``[B]`` order tensor (row k for order k; row 0 unused)."""

    def __init__(self, dtype: torch.dtype, device):
        n = MAX_ORDER + 1
        kw = {"dtype": dtype, "device": device}
        j = torch.arange(n, device=device)
        order = torch.arange(n, device=device)[:, None]
        self.pred = (j <= order).to(dtype)  # [6, 6]: y⁰ = Σ_{j≤k} D_j
        gam = torch.tensor(_GAMMA, **kw)
        alpha = torch.tensor(_ALPHA, dtype=torch.float64, device=device)
        self.alpha = alpha  # float64: c = h/α_k enters the clock's arithmetic
        self.psi = torch.where((j >= 1) & (j <= order), gam[None, :], torch.zeros((), **kw))
        self.psi = self.psi / torch.tensor(_ALPHA, **kw).clamp_min(1e-300)[:, None]
        err = torch.tensor(_ERROR_CONST + (math.inf,), dtype=torch.float64, device=device)
        self.err_cur = err[:n]
        self.err_lower = torch.cat([err.new_tensor([math.inf]), err[: n - 1]])  # order k−1 (none below 1)
        self.err_upper = torch.cat([err[1:n], err.new_tensor([math.inf])])  # order k+1 (none above 5)
        # change of step by ρ (Shampine & Reichelt): R(ρ)_ij = Π_{m=1..i} (m − 1 − ρ j)/m (i, j ≥ 1), row 0 ones
        i = torch.arange(n, dtype=dtype, device=device)[:, None].clamp_min(1.0)
        jj = torch.arange(n, dtype=dtype, device=device)[None, :]
        self.r_const = torch.where(torch.arange(n, device=device)[:, None] == 0, 1.0, (i - 1.0) / i)
        self.r_const = torch.where((torch.arange(n, device=device)[:, None] > 0) & (j[None, :] == 0), 0.0, self.r_const)
        self.r_slope = torch.where((torch.arange(n, device=device)[:, None] > 0) & (j[None, :] > 0), jj / i, 0.0)
        block = (j[None, :, None] <= order[:, :, None]) & (j[None, None, :] <= order[:, :, None])  # [6, 6, 6]
        self.block = block
        U = self._R(torch.ones(1, **kw))[0]
        self.U = torch.where(block, U, 0.0)  # [6 orders, 6, 6]
        self.outside = torch.where(block, 0.0, torch.eye(n, **kw))  # identity on the untouched differences
        self.j = j
        self.pred_psi = torch.stack([self.pred, self.psi], 1)  # [6 orders, 2, 6]: rows y⁰ and ψ
        # the update after an accepted step of order k, D' = A_k D + v_k ⊗ d:
        # D'_i = Σ_{i≤j≤k} D_j + d (i ≤ k), D'_{k+1} = d, D'_{k+2} = d − D_{k+1}, the rest unchanged
        A = torch.zeros(n, MAX_ORDER + 3, MAX_ORDER + 3, **kw)
        v = torch.zeros(n, MAX_ORDER + 3, **kw)
        for k in range(1, n):
            for i in range(k + 1):
                A[k, i, i : k + 1] = 1.0
            A[k, k + 2, k + 1] = -1.0
            for i in range(k + 3, MAX_ORDER + 3):
                A[k, i, i] = 1.0
            v[k, : k + 3] = 1.0
        self.update, self.update_corr = A, v

    def _R(self, rho: Tensor) -> Tensor:
        M = self.r_const - rho[:, None, None] * self.r_slope
        return torch.cumprod(M, dim=1)

    def rescale_matrix(self, order: Tensor, rho: Tensor) -> Tensor:
        """``[B, 6, 6]``: (R(ρ) U) of each sample's order on its leading block, identity elsewhere."""
        R = torch.where(self.block[order], self._R(rho), 0.0)
        return _bmm(R, self.U[order]) + self.outside[order]


def _bmm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for stacks of tiny matrices (``[B, m, n] @ [B, n, d]``) as a broadcast product and a sum: one
    vectorised kernel, where ``bmm`` loops over B small GEMMs."""
    return (a[:, :, :, None] * b[:, None, :, :]).sum(2)


class QNDFSolver:
    """One batched QNDF solve (see the module docstring). Internal state is flat: ``[B, d]`` rows."""

    name = "QNDF"

    def __init__(self, problem: ODEProblem, opts: SolveOptions):
        extra = dict(opts.extra)
        max_order = extra.pop("max_order", MAX_ORDER)
        if isinstance(max_order, bool) or not isinstance(max_order, int) or not 1 <= max_order <= MAX_ORDER:
            raise ValueError(f"max_order must be an integer in 1..{MAX_ORDER}, got {max_order!r}")
        batch = extra.pop("batch", "independent")
        if batch not in BATCH_MODES:
            raise ValueError(f"batch must be one of {BATCH_MODES} (QNDF's batch layout), got {batch!r}")
        linsolve = extra.get("linsolve", "dense")
        if linsolve not in ("auto", "dense"):
            raise ValueError(f"QNDF keeps a dense LU per sample: linsolve must be 'dense' or 'auto', got {linsolve!r}")
        for name in ("precond", "jvp_engine", "krylov_dim", "krylov_restarts", "krylov_tol"):
            if name in extra:
                raise ValueError(f"{name} applies to linsolve='gmres', which QNDF does not use")
        if not opts.adaptive:
            raise ValueError("QNDF always adapts its step and order; leave timesteps unset (dt is the first step)")
        self.problem, self.opts, self.max_order = problem, opts, max_order
        x0 = problem.x0
        self.shape, self.dtype, self.device = x0.shape, x0.dtype, x0.device
        self.B, self.d = x0.shape[0], problem.dim
        self.norm = ErrorNorm(opts.rtol, opts.atol, x0)
        atol = self.norm.atol
        if isinstance(atol, Tensor):  # per-component tolerances: flattened like the state
            atol = torch.broadcast_to(atol, self.shape).reshape(self.B, self.d)
        self.flat_norm = ErrorNorm(self.norm.rtol, atol, x0.reshape(self.B, self.d))
        self.f = Counter(problem.f, self.dtype)
        self.work = WorkCounts()
        self.linear = DenseSolver(problem.rhs_jacobian, self.work, self.norm)
        self.tab = _Tables(self.dtype, self.device)
        eps = torch.finfo(self.dtype).eps
        self.newton_tol = max(10 * eps / self.norm.rtol, NEWTON_KAPPA)
        self._f64 = (lambda v: v) if self.dtype == torch.float64 else (lambda v: v.to(torch.float64))
        # the Stepper-like surface _initial_step uses
        self.order, self.error_order = 1, 1

    def rhs(self, t: Tensor, y: Tensor) -> Tensor:
        return self.f(t, y.reshape(self.shape)).reshape(self.B, self.d)

    def _rescale(self, D: Tensor, order: Tensor, rho: Tensor, rows: Tensor) -> Tensor:
        """D re-expressed on the grid of step ``ρ h`` for the samples in ``rows`` (the others untouched)."""
        RU = self.tab.rescale_matrix(order, torch.where(rows, rho, torch.ones_like(rho)).to(self.dtype))
        head = _bmm(RU.transpose(1, 2), D[:, : MAX_ORDER + 1])
        new = torch.cat([head, D[:, MAX_ORDER + 1 :]], 1)
        return torch.where(rows[:, None, None], new, D)

    def _invert(self) -> None:
        """W⁻¹ of every sample from its fresh LU, the solver's scale S folded in (``S (S⁻¹ W S)⁻¹ S⁻¹``), so that each
        Newton solve is one batched mat-vec: a broadcast product and a sum, where a batched triangular solve loops over
        the samples."""
        lin = self.linear
        eye = torch.eye(self.d, dtype=self.dtype, device=self.device).expand(self.B, self.d, self.d)
        self._winv = torch.linalg.lu_solve(lin.lu, lin.piv, eye)
        self._wscale = lin.D[:, :, 0] if lin.D is not None else None

    def _solve(self, r: Tensor) -> Tensor:
        """W⁻¹ r per sample (``r [B, d]``); with the solver's scale S: S (S⁻¹ W S)⁻¹ S⁻¹ r."""
        self.work.nlinsolve += 1
        if self._wscale is None:
            return (self._winv * r[:, None, :]).sum(-1)
        return self._wscale * (self._winv * (r / self._wscale)[:, None, :]).sum(-1)

    def _pick(self, D: Tensor, j: Tensor) -> Tensor:
        """``D_{j_b}`` of every sample, ``[B, d]``."""
        return D.gather(1, j[:, None, None].expand(self.B, 1, self.d))[:, 0]

    def run(self) -> Solution:  # noqa: C901 -- one loop over the batched step, kept together for readability
        start = time.perf_counter()
        problem, opts, tab = self.problem, self.opts, self.tab
        B, d, dtype, device = self.B, self.d, self.dtype, self.device
        t0, t1 = problem.tspan
        direction = 1.0 if t1 > t0 else -1.0
        span = abs(t1 - t0)
        f64 = {"dtype": torch.float64, "device": device}

        saveat = opts.saveat.to(device)
        n_save = saveat.numel()
        out = torch.full((n_save, B, d), math.nan, dtype=dtype, device=device)
        idx = torch.zeros(B, dtype=torch.long, device=device)
        arange = torch.arange(B, device=device)
        t = torch.full((B,), t0, **f64)
        t_end = torch.full((B,), t1, **f64)
        y = problem.x0.reshape(B, d).clone()
        if bool((saveat[0] - t0).abs() <= time_slack(saveat[0], t0)):
            out[0] = y
            idx += 1
        self._save_front = -math.inf  # unknown: the first accepted step looks (see _save)

        code = torch.zeros(B, dtype=torch.long, device=device)
        f0 = self.rhs(t, y)
        done = ~torch.isfinite(f0).all(1)
        code[done] = _CODES.index(UNSTABLE)
        if opts.dt is None:
            f0_safe = torch.where(done[:, None], torch.zeros_like(f0), f0)
            h = _initial_step(self, t, problem.x0, f0_safe.reshape(self.shape), direction, span, self.norm)
        else:
            h = torch.full((B,), float(opts.dt), **f64)
        if opts.dtmax is not None:
            h = h.clamp(max=opts.dtmax)
        h = direction * h

        D = torch.zeros(B, MAX_ORDER + 3, d, dtype=dtype, device=device)
        D[:, 0] = y
        D[:, 1] = f0 * h.to(dtype)[:, None]
        order = torch.ones(B, dtype=torch.long, device=device)
        n_equal = torch.zeros(B, dtype=torch.long, device=device)
        self.linear.set_jacobian(t, problem.x0)
        jac_fresh = torch.ones(B, dtype=torch.bool, device=device)  # J evaluated at this step's start
        c_lu = torch.full((B,), math.nan, **f64)  # the c each sample's LU was factored with (nan: none yet)
        lu_stale = torch.ones(B, dtype=torch.bool, device=device)
        singular = torch.zeros(B, dtype=torch.bool, device=device)
        naccept = torch.zeros(B, dtype=torch.long, device=device)
        nreject = torch.zeros(B, dtype=torch.long, device=device)
        last_failure = torch.zeros(B, dtype=torch.long, device=device)  # 0 error, 1 non-finite, 2 Newton
        user_dtmin = opts.dtmin
        newton_tol = self.newton_tol / tab.err_cur  # [6 orders]: τ_k = κ / C_k, the error test's units
        err_const = tab.err_cur.to(dtype)  # [6 orders]: C_k in the state's dtype

        iteration = 0
        while not bool(done.all()):
            if iteration >= opts.maxiters:
                code[~done] = _CODES.index(MAX_ITERS)
                break
            iteration += 1
            active = ~done

            # land on the end of the span (and respect dtmax): the differences follow the step
            remaining = t_end - t
            cap = remaining.abs() if opts.dtmax is None else remaining.abs().clamp(max=opts.dtmax)
            clip = active & (h.abs() > cap)
            if bool(clip.any()):
                h_cap = direction * cap
                D = self._rescale(D, order, h_cap / h, clip)
                h = torch.where(clip, h_cap, h)
                n_equal = torch.where(clip, 0, n_equal)
            t_new = torch.where(h == remaining, t_end, t + h)

            c = h / tab.alpha[order]
            need = active & (lu_stale | (c != c_lu))
            if bool(need.any()):
                c_lu = torch.where(need, c, c_lu)
                singular = torch.where(need, self.linear.factor(c_lu.nan_to_num(0.0)), singular)
                self._invert()
                lu_stale = lu_stale & ~need

            pp = _bmm(tab.pred_psi[order], D[:, : MAX_ORDER + 1])
            y_pred, psi = pp[:, 0], pp[:, 1]
            w = 1.0 / self.flat_norm.scale(y_pred)
            cb = c.to(dtype)[:, None]

            # simplified Newton on d, per sample (a sample's rows freeze once it has converged or failed)
            live = active & ~singular
            n_iter = torch.zeros_like(order)
            corr = torch.zeros_like(y_pred)
            y_new = y_pred
            tol = newton_tol[order]
            converged = nonfinite = dn_old = None  # set by the first correction
            for m in range(NEWTON_MAXITER):
                dy = self._solve(cb * self.rhs(t_new, y_new) - psi - corr)
                dn = self._f64((dy * w).square().mean(1)).sqrt()
                if m > 0:
                    rate = dn / dn_old
                    below, gap = rate < 1, 1 - rate
                    # fails when r ≥ 1, when the remaining iterations cannot reach τ, or on NaN (comparisons false)
                    fail_now = live & ~(below & (rate ** (NEWTON_MAXITER - m) / gap * dn <= tol))
                    nonfinite |= fail_now & ~torch.isfinite(dn)
                    step = live & ~fail_now
                    conv_now = step & ((dn == 0) | (below & (rate / gap * dn < tol)))
                    converged |= conv_now
                else:  # no rate before the second correction (scipy's rule): only a non-finite first one fails
                    fail_now = nonfinite = live & ~torch.isfinite(dn)
                    step = live & ~fail_now
                    conv_now = converged = step & (dn == 0)  # and only an exactly zero one converges
                corr = torch.where(step[:, None], corr + dy, corr)
                y_new = y_pred + corr
                n_iter += live
                dn_old = dn
                live = step & ~conv_now
                if not bool(live.any()):
                    break
            newton_failed = active & ~converged

            # error estimate and acceptance
            scale_new = self.flat_norm.scale(y_new)
            err = self._f64(rms((err_const[order][:, None] * corr) / scale_new))
            finite = torch.isfinite(y_new).all(1) & torch.isfinite(err)
            nonfinite |= active & ~finite & ~newton_failed
            accept = active & converged & finite & (err <= 1.0)
            reject_err = active & converged & ~accept
            naccept += accept.long()
            nreject += (active & ~accept).long()
            safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + n_iter.to(torch.float64))

            # a failed Newton with a stale Jacobian: fresh J at the predictor, same step (scipy, ode15s)
            halve = newton_failed
            if bool(newton_failed.any()):
                refresh = newton_failed & ~jac_fresh & ~nonfinite
                if bool(refresh.any()):
                    self.linear.set_jacobian(t_new, y_pred.reshape(self.shape), refresh)
                    jac_fresh = jac_fresh | refresh
                    lu_stale = lu_stale | refresh
                halve = newton_failed & ~refresh
            rejected = reject_err | halve

            # accepted: update the differences, fill save points, then maybe change step and order
            if bool(accept.any()):
                updated = _bmm(tab.update[order], D) + tab.update_corr[order][:, :, None] * corr[:, None]
                D = torch.where(accept[:, None, None], updated, D)
                idx = self._save(out, saveat, idx, arange, accept, t, t_new, h, order, D, y_new, direction)
                t = torch.where(accept, t_new, t)
                n_equal = n_equal + accept.long()
                jac_fresh = jac_fresh & ~accept
                done = done | (accept & (t == t_end))

                # order and step selection after k+1 equal steps (errors of orders k−1, k, k+1)
                ready = accept & (n_equal >= order + 1) & ~done
                if bool(ready.any()):
                    sc = scale_new
                    e_lo = rms(tab.err_lower[order].to(dtype)[:, None] * self._pick(D, order) / sc).to(torch.float64)
                    e_hi = rms(tab.err_upper[order].to(dtype)[:, None] * self._pick(D, order + 2) / sc).to(
                        torch.float64
                    )
                    e_lo = torch.where(order > 1, e_lo, math.inf)
                    e_hi = torch.where(order < self.max_order, e_hi, math.inf)
                    kf = order.to(torch.float64)
                    factors = torch.stack([e_lo ** (-1.0 / kf), err ** (-1.0 / (kf + 1)), e_hi ** (-1.0 / (kf + 2))], 1)
                    factors = factors.nan_to_num(nan=0.0)
                    best, delta = factors.max(1)
                    new_order = torch.where(ready, order + delta - 1, order)
                    grow = torch.clamp(safety * best, max=MAX_FACTOR)
                    D = self._rescale(D, new_order, grow, ready)
                    h = torch.where(ready, h * grow, h)
                    order = new_order
                    n_equal = torch.where(ready, 0, n_equal)

            if bool(rejected.any()):  # (a ready sample's new order is not a rejected one's: shrink by the step's)
                shrink = torch.where(
                    halve,
                    0.5,
                    (safety * err ** (-1.0 / (order.to(torch.float64) + 1)))
                    .nan_to_num(nan=MIN_FACTOR)
                    .clamp(MIN_FACTOR, 1.0),
                )
                why = torch.where(nonfinite, 1, torch.where(newton_failed, 2, 0))
                last_failure = torch.where(rejected, why, last_failure)
                D = self._rescale(D, order, shrink, rejected)
                h = torch.where(rejected, h * shrink, h)
                n_equal = torch.where(rejected, 0, n_equal)

            floor = step_floor(t, span) if user_dtmin is None else user_dtmin
            tiny = ~done & (h.abs() < floor)
            if bool(tiny.any()):
                code[tiny & (last_failure == 0)] = _CODES.index(DT_LESS_THAN_MIN)
                code[tiny & (last_failure == 1)] = _CODES.index(UNSTABLE)
                code[tiny & (last_failure == 2)] = _CODES.index(CONVERGENCE_FAILURE)
                done = done | tiny

        codes = [_CODES[c] for c in code.tolist()]
        return finished_solution(
            self, codes, naccept, nreject, start, saveat, out.reshape(n_save, *self.shape), t, dtype
        )

    def _save(self, out, saveat, idx, arange, accept, t, t_new, h, order, D, y_new, direction) -> Tensor:
        """Fill the save times in (t, t_new] of the accepted samples from the step's interpolating polynomial
        ``y(t_new + s h) = D_0 + Σ_{j=1..k} D_j Π_{m<j} (s + m)/(m + 1)``; returns the advanced save index.
        A step that reaches no sample's next save time costs one host read (``self._save_front``: the earliest pending
        save time over the samples, in the direction of integration)."""
        n_save = saveat.numel()
        reach = float((direction * t_new).max())
        front = self._save_front
        if front == math.inf or front - reach > time_slack(front, reach):
            return idx
        while True:
            target = saveat[idx.clamp(max=n_save - 1)]
            slack = time_slack(target, t_new)
            pend = accept & (idx < n_save) & (direction * (target - t_new) <= slack)
            if not bool(pend.any()):
                left = idx < n_save
                self._save_front = float((direction * target)[left].min()) if bool(left.any()) else math.inf
                return idx
            at_end = (target - t_new).abs() <= slack
            s = ((target - t_new) / torch.where(h != 0, h, 1.0)).to(self.dtype)
            m = torch.arange(MAX_ORDER, dtype=self.dtype, device=self.device)
            factors = (s[:, None] + m) / (m + 1)
            coef = torch.cat([torch.ones_like(s)[:, None], factors.cumprod(1)], 1)
            coef = torch.where(self.tab.j[None, :] <= order[:, None], coef, 0.0)
            val = (coef[:, :, None] * D[:, : MAX_ORDER + 1]).sum(1)
            val = torch.where(at_end[:, None], y_new, val)
            out[idx[pend], arange[pend]] = val[pend]
            idx = idx + pend.long()


def solve_qndf(problem: ODEProblem, opts: SolveOptions) -> Solution:
    """Solve ``problem`` with the batched QNDF (see the module docstring). Option ``batch``: ``"independent"``
    (default: per-sample step, order, Jacobian and LU; a sample's answer does not depend on its batch) or
    ``"coupled"`` (the batch as one system with one step size and order, :mod:`pysens.solvers.bdf_coupled`).

    A single problem (B = 1) is not routed to the coupled code, although it runs 3-5x faster there: the two layouts are
    the same algorithm but not the same arithmetic (W⁻¹ with the scale folded in and ``vector_norm`` norms there; the
    LU's inverse with the scale applied around it and mean-square norms here; the coupled step skips the right-hand side
    on a singular W), so their answers differ by rounding, and wherever a rounding-level difference flips an accept or
    order decision the step sequences part: on the stiff test set at rtol 1e-4, 1e-6 and 1e-8, no point was bit
    identical and 11 of 24 took different step counts (OREGO 1e-6: 2622 against 2625 accepted steps; E5s 1e-4: 3.73
    against 4.70 correct digits), float32 parted on a harmonic oscillator. Routing B = 1 there would make a sample
    alone differ from the same sample in a batch (``test_sample_alone_equals_sample_in_batch``). A caller who wants
    the faster single solve passes ``batch="coupled"``."""
    if opts.extra.get("batch", "independent") == "coupled":
        from .bdf_coupled import CoupledQNDFSolver

        return CoupledQNDFSolver(problem, opts).run()
    return QNDFSolver(problem, opts).run()
