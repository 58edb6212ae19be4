"""QNDF with the whole batch as one system (``batch="coupled"``): one step size, order, Jacobian age and Newton history.

The scheme is :mod:`pysens.solvers.bdf`'s (the NDF corrector, the error estimate, the order and step selection, the
Newton test with its rate measured afresh each step, the Jacobian refresh and the refactorisation when ``c = h/α_k``
changes), with every decision taken once for the batch: the error and Newton norms are the largest per-sample weighted
RMS norm (``max_b ‖·‖_b``, so each sample is held to its tolerance exactly as when it is solved alone; B copies of one
state take the steps of that state alone), the step size and order are shared, and the Jacobian is block diagonal: one
inverse per sample of the scaled ``S⁻¹ W S`` (S the error scale at the Jacobian's point, as
:class:`~pysens.solvers.linalg.DenseSolver` scales its LU), never one ``(B·d)²`` factorisation.

It is the layout of scipy's or CVODE's solve of a batch flattened into one ``B·d`` system, and it pays off when the
per-step cost is Python overhead rather than arithmetic (small systems, small batches, B = 1): the step control runs on
Python floats (one host read per norm), and a step is ~45 tensor operations of its own around its right-hand sides
(ROBER, B = 64): the differences are one ``[B, d, K+3]`` tensor kept in place (each row's ``D_0..D_{K+2}`` contiguous,
column views taken once) and updated elementwise, W⁻¹ carries the scale folded in so that a Newton solve is one
``bmm``. No sample's arithmetic depends on the batch's size (elementwise operations, sums over a contiguous trailing
axis, ``bmm``'s per-matrix loop; tested). The price is that every sample takes the smallest step any sample needs, and
a sample's result depends on its batch (the default ``batch="independent"`` keeps per-sample clocks and answers that
do not). Where the samples' fast transients fall at different times the shared step resolves every one of them: 64
perturbed copies of OREGO took 5.1× the batched right-hand-side calls of per-sample Rodas5P, of VDPOL 32× (22× its
time; benchmarks/README.md, "Stiff speed on OREGO, VDPOL and POLLU").
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from .bdf import _ALPHA, _ERROR_CONST, _GAMMA, MAX_FACTOR, MAX_ORDER, MIN_FACTOR, NEWTON_MAXITER, QNDFSolver
from .driver import _initial_step, finished_solution, step_floor
from .options import time_slack
from .solution import CONVERGENCE_FAILURE, DT_LESS_THAN_MIN, MAX_ITERS, SUCCESS, UNSTABLE, Solution

_FAILURE_CODES = (DT_LESS_THAN_MIN, UNSTABLE, CONVERGENCE_FAILURE)  # by the last failure: error, non-finite, Newton


def _rescale_rows(rho: float, k: int) -> list[list[float]]:
    """``R(ρ)`` of order ``k`` (Shampine & Reichelt): ``R_ij = Π_{m=1..i} (m − 1 − ρ j)/m``, ``R_0j = 1``, ``R_i0 = 0``
    for i ≥ 1 (``(k+1)×(k+1)``)."""
    rows = [[1.0] * (k + 1)]
    for i in range(1, k + 1):
        prev = rows[-1]
        rows.append([0.0] + [prev[j] * ((i - 1 - rho * j) / i) for j in range(1, k + 1)])
    return rows


def _neg_power(x: float, p: float) -> float:
    """``x^(−p)`` as torch computes it for x ≥ 0 (``0 → inf``; NaN stays NaN)."""
    return math.inf if x == 0.0 else x ** (-p)


def _combine(D: Tensor, C: Tensor) -> Tensor:
    """``D Cᵀ`` for the differences ``D [..., n]`` (each row's n differences contiguous) and a tiny ``C [m, n]``:
    ``[..., m]``, a broadcast product and a sum over the contiguous n, so that every row sums in the same order whatever
    the batch is (a BLAS GEMM's blocking, and a strided reduction's vectorisation, depend on the number of rows: a
    sample's answer would depend on the batch's size; tested)."""
    return (D.unsqueeze(-2) * C).sum(-1)


class CoupledQNDFSolver(QNDFSolver):
    """QNDF on the batch as one system (see the module docstring); state rows ``[B, d]`` flattened to ``B·d``."""

    def _setup_coupled(self) -> None:
        kw = {"dtype": self.dtype, "device": self.device}
        self._psi = [None]  # per order k: the ψ weights over D_0..D_k, [k+1] (0 for D_0)
        self._U = [None]  # per order k: U = R(1), [k+1, k+1]
        for k in range(1, MAX_ORDER + 1):
            self._psi.append(torch.tensor([0.0] + [_GAMMA[j] / _ALPHA[k] for j in range(1, k + 1)], **kw))
            self._U.append(torch.tensor(_rescale_rows(1.0, k), **kw))
        # W⁻¹ r as one batched mat-vec: torch's bmm takes its plain per-matrix loop (each sample's sum in the same
        # order, whatever B) below d·d = 400; above it BLAS kernels whose blocking depends on B (tested)
        self._bmm_solve = self.d * self.d < 400

    def _alloc_differences(self) -> Tensor:
        """The differences ``D [B, d, K+3]`` (``D[b, i, j]``: D_j of sample b, component i; each row's differences
        contiguous), zero, kept in place for the whole solve, with ``[B, d]`` views of each D_j (``_cols``; and
        ``[B, d, 1]``, ``_cols_last``) and of D_0..D_k per order (``_heads``)."""
        D = torch.zeros(self.B, self.d, MAX_ORDER + 3, dtype=self.dtype, device=self.device)
        self._cols = D.unbind(2)
        self._heads = [D[..., : k + 1] for k in range(MAX_ORDER + 1)]
        self._cols_last = [c.unsqueeze(-1) for c in self._cols]  # [B, d, 1]: D_j against a row of coefficients
        return D

    def _predict(self, k: int) -> tuple[Tensor, Tensor]:
        """``(y⁰, ψ)`` of a step of order k, ``[B, d]`` each: sums over each row's contiguous D_0..D_k."""
        head = self._heads[k]
        return head.sum(2), (head * self._psi[k]).sum(2)

    def _norm(self, v: Tensor) -> float:
        """``max_b`` of the per-sample RMS of ``v [B, d]`` (already divided by the error scale), as a float."""
        if self.B == 1:
            return float(torch.linalg.vector_norm(v)) * self._inv_sqrt_d
        return float(torch.linalg.vector_norm(v, dim=1).amax()) * self._inv_sqrt_d

    def _set_jacobian(self, t: float, x: Tensor) -> None:
        """J at ``(t, x)`` (:class:`~pysens.solvers.linalg.DenseSolver`, with its scale S), and what every
        factorisation until the next J reuses: the scaled ``S⁻¹ J S`` and the ratios ``S_i / S_j``."""
        lin = self.linear
        lin.set_jacobian(torch.full((self.B,), t, dtype=torch.float64, device=self.device), x)
        if lin.D is None:
            self._jac_scaled, self._ratio = lin.J, None
        else:
            self._jac_scaled = lin.J * (lin.D.transpose(1, 2) / lin.D)  # (S⁻¹ J S)_ij = J_ij S_j / S_i
            self._ratio = lin.D / lin.D.transpose(1, 2)

    def _factor(self, c: float) -> bool:
        """W⁻¹ of every sample for ``W = I − c J``, from one batched inversion of the scaled ``S⁻¹ W S`` (LU with
        partial pivoting, as :meth:`DenseSolver.factor`; pivots relative to each component's own scale), S folded
        back in once (entry ij: ``S_i (S⁻¹ W S)⁻¹_ij / S_j``), so that each Newton solve is a single batched mat-vec.
        Returns whether some sample's W is singular (an exactly zero pivot or a non-finite inverse)."""
        self.work.nfactor += 1
        if self._eye is None:
            self._eye = torch.eye(self.d, dtype=self.dtype, device=self.device)
        inv, info = torch.linalg.inv_ex(self._eye - c * self._jac_scaled)
        self._winv = inv if self._ratio is None else inv * self._ratio
        return bool((info != 0).any() | ~torch.isfinite(inv).all())

    def _solve(self, r: Tensor) -> Tensor:
        """W⁻¹ r per sample (``r [B, d]``), W⁻¹ with the scale folded in (:meth:`_factor`)."""
        self.work.nlinsolve += 1
        if self._bmm_solve:
            return torch.bmm(self._winv, r.unsqueeze(-1)).view(self.B, self.d)
        return (self._winv * r[:, None, :]).sum(-1)

    def _rescale(self, k: int, rho: float) -> None:  # type: ignore[override]
        """The differences re-expressed, in place, on the grid of step ``ρ h`` (order ``k``:
        ``D_{0..k} ← (R(ρ) U)ᵀ D_{0..k}``)."""
        RU = torch.tensor(_rescale_rows(rho, k), dtype=self.dtype, device=self.device) @ self._U[k]
        # new D_i = Σ_j (RU)_ji D_j for all i at once, accumulated over j elementwise (j = 0, 1, …, k in order): a
        # sample's sums do not depend on the batch, and no [B, d, k+1, k+1] product is formed
        cols = self._cols_last
        acc = cols[0] * RU[0]
        for j in range(1, k + 1):
            acc += cols[j] * RU[j]
        self._heads[k].copy_(acc)

    def _update(self, k: int, corr: Tensor) -> None:
        """The differences after an accepted step of order k, in place (scipy's recursion): ``D_{k+2} = d − D_{k+1}``,
        ``D_{k+1} = d``, ``D_i += D_{i+1}`` for i = k..0 (so ``D_i = Σ_{i≤j≤k} D_j + d``); elementwise, on views of
        the columns taken once."""
        cols = self._cols
        torch.sub(corr, cols[k + 1], out=cols[k + 2])
        cols[k + 1].copy_(corr)
        for i in range(k, -1, -1):
            cols[i].add_(cols[i + 1])

    def run(self) -> Solution:  # noqa: C901 -- the step loop, as in QNDFSolver.run
        start = time.perf_counter()
        self._setup_coupled()
        problem, opts = self.problem, self.opts
        B, d, dtype, device = self.B, self.d, self.dtype, self.device
        self._inv_sqrt_d = 1.0 / math.sqrt(d)
        t0, t1 = (float(v) for v in problem.tspan)
        direction = 1.0 if t1 > t0 else -1.0
        span = abs(t1 - t0)
        f64 = {"dtype": torch.float64, "device": device}
        clock = lambda s: torch.full((B,), s, **f64)  # noqa: E731 -- the per-sample time the right-hand side sees

        saveat = opts.saveat.to(device)
        save_times = [float(s) for s in saveat.tolist()]
        n_save = len(save_times)
        out = torch.full((n_save, B, d), math.nan, dtype=dtype, device=device)
        idx = 0
        y = problem.x0.reshape(B, d).clone()
        if abs(save_times[0] - t0) <= time_slack(save_times[0], t0):
            out[0] = y
            idx = 1

        t = t0
        f0 = self.rhs(clock(t), y)
        if not bool(torch.isfinite(f0).all()):
            return self._finish(UNSTABLE, 0, 0, start, saveat, out, t)
        if opts.dt is None:
            h0 = _initial_step(self, clock(t), problem.x0, f0.reshape(self.shape), direction, span, self.norm)
            h = float(h0.min())
        else:
            h = float(opts.dt)
        if opts.dtmax is not None:
            h = min(h, opts.dtmax)
        h = direction * h

        self._alloc_differences()
        self._cols[0].copy_(y)
        torch.mul(f0, h, out=self._cols[1])
        order, n_equal = 1, 0
        self._eye = None
        self._set_jacobian(t, problem.x0)
        jac_fresh, lu_stale, c_lu, singular = True, True, math.nan, False
        naccept = nreject = 0
        last_failure = 0  # 0 error, 1 non-finite, 2 Newton
        atol, rtol = self.flat_norm.atol, self.flat_norm.rtol
        # the right-hand side called directly (counted here as Counter counts), its time in the state's dtype
        counter, f_user, shape = self.f, problem.f, self.shape
        flat_rows = len(shape) == 2

        def rhs(t_state: Tensor, x: Tensor) -> Tensor:
            counter.n += 1
            counter.rows += B
            return f_user(t_state, x) if flat_rows else f_user(t_state, x.reshape(shape)).reshape(B, d)

        iteration = 0
        while True:
            if iteration >= opts.maxiters:
                return self._finish(MAX_ITERS, naccept, nreject, start, saveat, out, t)
            iteration += 1

            remaining = t1 - t
            h_cap = abs(remaining) if opts.dtmax is None else min(abs(remaining), opts.dtmax)
            if abs(h) > h_cap:
                self._rescale(order, h_cap / abs(h))
                h, n_equal = direction * h_cap, 0
            t_new = t1 if h == remaining else t + h

            c = h / _ALPHA[order]
            if lu_stale or c != c_lu:
                c_lu, lu_stale = c, False
                singular = self._factor(c)

            y_pred, psi = self._predict(order)
            scale_pred = (y_pred.abs() * rtol).add_(atol)

            # simplified Newton on d for the whole batch
            converged = nonfinite = False
            n_iter = 0
            corr = None
            y_new = y_pred
            t_state = torch.full((B,), t_new, dtype=dtype, device=device)
            dn_old = rate = math.inf  # no rate before the second correction (scipy's rule; bdf.py)
            tol = self.newton_tol / _ERROR_CONST[order]  # τ_k = κ / C_k, the error test's units
            for m in range(NEWTON_MAXITER if not singular else 0):
                r = rhs(t_state, y_new).mul_(c).sub_(psi)
                if corr is not None:
                    r = r.sub_(corr)
                dy = self._solve(r)
                dn = self._norm(dy / scale_pred)
                if m > 0:
                    rate = dn / dn_old
                    if not (rate < 1 and rate ** (NEWTON_MAXITER - m) / (1 - rate) * dn <= tol):
                        nonfinite = not math.isfinite(dn)
                        break
                elif not math.isfinite(dn):
                    nonfinite = True
                    break
                corr = dy if corr is None else corr.add_(dy)
                y_new = y_pred + corr
                n_iter += 1
                if dn == 0 or (rate < 1 and rate / (1 - rate) * dn < tol):
                    converged = True
                    break
                dn_old = dn

            err = math.nan
            if converged:
                scale = (y_new.abs() * rtol).add_(atol)
                err = self._norm(corr / scale) * _ERROR_CONST[order]
                nonfinite = not math.isfinite(err)
            safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + n_iter)

            if converged and err <= 1.0:
                self._update(order, corr)
                idx = self._save_coupled(out, save_times, idx, t_new, h, order, y_new, direction)
                y, t = y_new, t_new
                naccept += 1
                n_equal += 1
                jac_fresh = False
                if t == t1:
                    return self._finish(SUCCESS, naccept, nreject, start, saveat, out, t)
                if n_equal >= order + 1:  # order and step selection (errors of orders k−1, k, k+1)
                    k = order
                    e_lo = math.inf if k == 1 else self._norm(self._cols[k] / scale) * _ERROR_CONST[k - 1]
                    e_hi = math.inf
                    if k < self.max_order:
                        e_hi = self._norm(self._cols[k + 2] / scale) * _ERROR_CONST[k + 1]
                    factors = [_neg_power(e, 1.0 / (k + i)) for i, e in enumerate((e_lo, err, e_hi))]
                    factors = [0.0 if math.isnan(f) else f for f in factors]
                    best = max(factors)
                    order = k + factors.index(best) - 1
                    grow = min(safety * best, MAX_FACTOR)
                    self._rescale(order, grow)
                    h, n_equal = h * grow, 0
            else:
                nreject += 1
                newton_failed = not converged
                if newton_failed and not jac_fresh and not nonfinite:
                    # a failed Newton with a stale Jacobian: fresh J at the predictor, same step (scipy, ode15s)
                    self._set_jacobian(t_new, y_pred.reshape(self.shape))
                    jac_fresh, lu_stale = True, True
                else:
                    if newton_failed:
                        shrink = 0.5
                    else:
                        shrink = safety * _neg_power(err, 1.0 / (order + 1))
                        shrink = MIN_FACTOR if math.isnan(shrink) else min(max(shrink, MIN_FACTOR), 1.0)
                    last_failure = 1 if nonfinite else (2 if newton_failed else 0)
                    self._rescale(order, shrink)
                    h, n_equal = h * shrink, 0

            floor = step_floor(t, span) if opts.dtmin is None else opts.dtmin
            if abs(h) < floor:
                return self._finish(_FAILURE_CODES[last_failure], naccept, nreject, start, saveat, out, t)

    def _finish(self, code: str, naccept: int, nreject: int, start: float, saveat, out, t: float) -> Solution:
        B, f64 = self.B, {"dtype": torch.float64, "device": self.device}
        counts = {"dtype": torch.long, "device": self.device}
        return finished_solution(
            self,
            [code] * B,
            torch.full((B,), naccept, **counts),
            torch.full((B,), nreject, **counts),
            start,
            saveat,
            out.reshape(saveat.numel(), *self.shape),
            torch.full((B,), t, **f64),
            self.dtype,
        )

    def _save_coupled(self, out, save_times, idx, t_new, h, order, y_new, direction) -> int:
        """Fill the save times in (t, t_new] from the step's interpolating polynomial (as :meth:`QNDFSolver._save`)."""
        while idx < len(save_times):
            target = save_times[idx]
            slack = time_slack(target, t_new)
            if direction * (target - t_new) > slack:
                return idx
            if abs(target - t_new) <= slack:
                out[idx] = y_new
            else:
                s = (target - t_new) / h
                coef, prod = [1.0], 1.0
                for m in range(order):
                    prod *= (s + m) / (m + 1)
                    coef.append(prod)
                weights = torch.tensor([coef], dtype=self.dtype, device=self.device)
                out[idx] = _combine(self._heads[order], weights)[..., 0]
            idx += 1
        return idx
