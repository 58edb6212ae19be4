"""ESDIRK and additive (IMEX) ESDIRK methods for stiff ODEs on the torch backend.

An ESDIRK stage solves, for i = 2..s (stage 1 is explicit, z_1 = x),

    z_i = ψ_i + hγ F(t + c_i h, z_i),     ψ_i = x + h Σ_{j<i} a_ij F_j,

by simplified Newton iterations with the matrix M = I − hγ J, J the Jacobian at the start of the step (kept
across steps while Newton converges quickly: the Jacobian reuse the method allows). The stage derivative is
recovered as F_i = (z_i − ψ_i)/(hγ), without another evaluation. Then x_new = x + h Σ b_i F_i and the error
estimate h Σ (b_i − b̂_i) F_i is smoothed by M⁻¹ (Shampine's filter, as SciML does for TRBDF2/KenCarp).

IMEX (additive) methods on a :class:`~pysens.solvers.problem.SplitODEProblem`: F = f1 is implicit with the
coefficients a_ij and f2 explicit with â_ij (KenCarp4, Kennedy & Carpenter 2003, ARK4(3)6L[2]SA); ψ_i then
collects both, and only f1's Jacobian enters M. On a plain ODEProblem everything is implicit.

Newton convergence (Hairer & Wanner II, IV.8): with θ = ‖Δ_k‖/‖Δ_{k−1}‖ and η = θ/(1−θ), a stage has
converged when η‖Δ_k‖ ≤ κ = 0.01 in the step controller's weighted norm; θ ≥ 1 or 10 iterations is a
failure (the step is rejected and shrunk; the Jacobian is refreshed). The first iteration alone converges only
when its correction is below 1e−5 (SciML's NLNewton), never on a rate carried over from earlier stages, and the
rate test stops only on a correction within the tolerance (‖Δ_k‖ ≤ 1): a ratio of corrections larger than that
measures how fast the predictor's error went, typically in a stiff mode the Jacobian resolves in one iteration, not
the rate at which a kept Jacobian contracts the rest (see :data:`RATE_TRUSTED_BELOW`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction as Fr

import torch
from torch import Tensor

from .driver import Attempt, Counter, ErrorNorm, Stepper, WorkCounts, bcast, integrate
from .explicit import stage_sum
from .linalg import DenseSolver, make_linear_solver
from .options import SolveOptions
from .problem import ODEProblem, SplitODEProblem
from .solution import Solution

KAPPA = 0.01
FIRST_ITERATION_TOL = 1e-5
ROUNDING_ULPS = 8  # a Newton correction within this many ulp of |ψ| + |z| is rounding, not error
MAX_NEWTON = 10
# the rate test η‖Δ_k‖ ≤ κ extrapolates from θ = ‖Δ_k‖/‖Δ_{k−1}‖; it may end the iteration only once ‖Δ_k‖ is at
# most this many tolerance units. On E5 at t ~ 1e8 a kept Jacobian resolves the fast y4 mode exactly and contracts
# y2, y3 by only ~0.37 per iteration: the first two corrections were 9.5e6 and 28 units, θ = 3e−6 "converged" with
# ~1.5 units of Newton error left in every stage, and KenCarp4/TRBDF2 crept at err ≈ 0.25 on that error (MaxIters).
# A correction within the tolerance bounds the damage of a wrong θ (θ < 1) to one unit, and costs nothing where
# Newton converges as assumed (its second correction is then far below one unit).
RATE_TRUSTED_BELOW = 1.0
RTOL_FLOOR_ULPS = 100
# Krylov solves of the Newton iterations after the first stop at a weighted residual of LINEAR_FACTOR times the
# Newton tolerance (κ, in units of hF: κγ in units of the stage value), as CVODE/ARKode do (eplifac = 0.05 of the
# nonlinear tolerance): the error that leaves in a correction is ‖M⁻¹‖ ≲ 1 times that, 5% of what Newton itself may
# leave, and the next iteration or the rate test sees it. The first iteration keeps the solver's own tolerance
# (krylov_tol, 1e-5): FIRST_ITERATION_TOL judges its correction alone. A user's krylov_tol applies to every solve.
LINEAR_FACTOR = 0.05


@dataclass(frozen=True)
class ESDIRKTableau:
    name: str
    order: int
    gamma: float
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]  # row i: implicit coefficients of F_0..F_{i-1} (row 0 empty)
    b: tuple[float, ...]
    b_error: tuple[float, ...]  # b - b_hat
    a_explicit: tuple[tuple[float, ...], ...] | None = None  # IMEX: explicit coefficients, same layout
    reference: str = ""
    embedded_order: int | None = None  # order of b_hat (default order − 1)

    @property
    def error_order(self) -> int:
        """Order of the error estimate: its local error is O(h^(error_order+1)). The estimate b − b̂ measures the
        lower-order solution of the pair: TRBDF2's b̂ is third order, so its estimate is that of the propagated
        second-order solution (O(h³)), KenCarp4's is that of its third-order companion (O(h⁴))."""
        return min(self.order, self.order - 1 if self.embedded_order is None else self.embedded_order)

    @property
    def stages(self) -> int:
        return len(self.c)

    def __post_init__(self) -> None:
        for i in range(1, self.stages):
            if abs(sum(self.a[i]) + self.gamma - self.c[i]) > 1e-12:
                raise ValueError(f"{self.name}: implicit row {i} does not sum to c")
            if self.a_explicit is not None and abs(sum(self.a_explicit[i]) - self.c[i]) > 1e-12:
                raise ValueError(f"{self.name}: explicit row {i} does not sum to c")


def _f(rows):
    return tuple(tuple(float(v) for v in row) for row in rows)


def _trbdf2() -> ESDIRKTableau:
    g = 2.0 - math.sqrt(2.0)
    d, w = g / 2.0, math.sqrt(2.0) / 4.0
    b = (w, w, d)
    b_hat = ((1 - w) / 3, (3 * w + 1) / 3, d / 3)
    return ESDIRKTableau(
        "TRBDF2",
        2,
        d,
        (0.0, g, 1.0),
        ((), (d,), (w, w)),
        b,
        tuple(x - y for x, y in zip(b, b_hat, strict=True)),
        reference="Hosea & Shampine (1996), Analysis and implementation of TR-BDF2 (ESDIRK form)",
        embedded_order=3,
    )


def _kencarp4() -> ESDIRKTableau:
    g = Fr(1, 4)
    a = [
        [],
        [g],
        [Fr(8611, 62500), Fr(-1743, 31250)],
        [Fr(5012029, 34652500), Fr(-654441, 2922500), Fr(174375, 388108)],
        [Fr(15267082809, 155376265600), Fr(-71443401, 120774400), Fr(730878875, 902184768), Fr(2285395, 8070912)],
        [Fr(82889, 524892), Fr(0), Fr(15625, 83664), Fr(69875, 102672), Fr(-2260, 8211)],
    ]
    ae = [
        [],
        [Fr(1, 2)],
        [Fr(13861, 62500), Fr(6889, 62500)],
        [Fr(-116923316275, 2393684061468), Fr(-2731218467317, 15368042101831), Fr(9408046702089, 11113171139209)],
        [
            Fr(-451086348788, 2902428689909),
            Fr(-2682348792572, 7519795681897),
            Fr(12662868775082, 11960479115383),
            Fr(3355817975965, 11060851509271),
        ],
        [
            Fr(647845179188, 3216320057751),
            Fr(73281519250, 8382639484533),
            Fr(552539513391, 3454668386233),
            Fr(3354512671639, 8306763924573),
            Fr(4040, 17871),
        ],
    ]
    b = a[5] + [g]
    b_minus_bhat = [
        Fr(31666707, 9881966720),
        Fr(0),
        Fr(-256875, 105007616),
        Fr(-2768025, 128864768),
        Fr(169839, 3864644),
        Fr(-5247, 225920),
    ]
    c = [Fr(0), Fr(1, 2), Fr(83, 250), Fr(31, 50), Fr(17, 20), Fr(1)]
    return ESDIRKTableau(
        "KenCarp4",
        4,
        float(g),
        tuple(map(float, c)),
        _f(a),
        tuple(map(float, b)),
        tuple(map(float, b_minus_bhat)),
        a_explicit=_f(ae),
        reference="Kennedy & Carpenter (2003), Additive Runge–Kutta schemes for convection–diffusion–reaction "
        "equations, ARK4(3)6L[2]SA",
    )


ESDIRK_TABLEAUS = {t.name: t for t in (_trbdf2(), _kencarp4())}


class ESDIRKStepper(Stepper):
    dense = False

    def __init__(self, problem: ODEProblem, tab: ESDIRKTableau, norm: ErrorNorm, extra: dict):
        self.problem, self.tab, self.norm = problem, tab, norm
        self.name, self.order, self.error_order = tab.name, tab.order, tab.error_order
        self.imex = tab.a_explicit is not None and isinstance(problem, SplitODEProblem)
        dtype = problem.x0.dtype
        self.f = Counter(problem.f, dtype)
        self.f_implicit = Counter(problem.f1, dtype) if self.imex else self.f
        self.f_explicit = Counter(problem.f2, dtype) if self.imex else None
        self.work = WorkCounts()
        self.linear = make_linear_solver(problem, self.work, norm, extra, implicit_only=self.imex)
        own = isinstance(self.linear, DenseSolver) or "krylov_tol" in extra
        self.newton_linear_tol = None if own else LINEAR_FACTOR * KAPPA * tab.gamma
        self.stale: Tensor | None = None  # [B]: the sample's Jacobian is refreshed before its next attempt
        self.eta = None

    def start(self, t: Tensor, x: Tensor) -> Tensor:
        self.eta = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        self.stale = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return self.f(t, x)

    def _refresh_jacobian(self, t: Tensor, x: Tensor, rows: Tensor) -> Tensor:
        """New Jacobians for the samples in ``rows`` (dense: the others keep theirs; matrix-free: J v is always
        evaluated at this step's start). Returns the ``[B]`` mask of samples whose Jacobian is fresh."""
        if not isinstance(self.linear, DenseSolver):
            self.linear.set_jacobian(t, x)
            return torch.ones_like(rows)
        if bool(rows.any()):
            self.linear.set_jacobian(t, x, rows)
        return rows

    def attempt(self, t: Tensor, x: Tensor, h: Tensor, adaptive: bool) -> Attempt:
        """One step per sample. Every decision is the sample's own (its clock, its Jacobian's age, its Newton
        history), so a sample takes the same steps alone and in any batch, bit for bit."""
        tab = self.tab
        fresh = self._refresh_jacobian(t, x, self.stale)
        eta_before = self.eta
        run = self._attempt_once(t, x, h)
        retry = run[0] & ~fresh
        if bool(retry.any()):
            # a stale Jacobian may be why Newton failed: those samples retry once with a fresh one (the others'
            # rows of the second run are identical to the first, and discarded with their Newton history)
            eta_first = self.eta
            self.eta = torch.where(retry, eta_first, eta_before)
            self._refresh_jacobian(t, x, retry)
            again = self._attempt_once(t, x, h)
            self.eta = torch.where(retry, self.eta, eta_first)
            run = _merge(retry, run, again)
        failed, slow, x_new, FI, FE = run
        self.stale = slow  # slow convergence: that sample's Jacobian is refreshed at its next attempt
        err = None
        if adaptive:
            hb = bcast(h.to(x.dtype), x)
            e = stage_sum(tab.b_error, [fi if fe is None else fi + fe for fi, fe in zip(FI, FE, strict=True)])
            err = self.norm(self.linear.solve(hb * e), x, x_new)
        return Attempt(x_new=x_new, err=err, failed=failed)

    def _attempt_once(self, t: Tensor, x: Tensor, h: Tensor):
        """The stages of one step: ``(failed, slow, x_new, FI, FE)``, the masks ``[B]``."""
        tab = self.tab
        hb = bcast(h.to(x.dtype), x)
        hg = hb * tab.gamma
        inv_hg = torch.where(hg != 0, 1.0 / torch.where(hg != 0, hg, 1.0), torch.zeros_like(hg))
        failed = self.linear.factor(h * tab.gamma)
        slow = torch.zeros_like(failed)
        FI = [self.f_implicit(t, x)]
        FE = [self.f_explicit(t, x) if self.imex else None]
        for i in range(1, tab.stages):
            psi = x + hb * stage_sum(tab.a[i], FI)
            if self.imex:
                psi = psi + hb * stage_sum(tab.a_explicit[i], FE)
            ti = t + tab.c[i] * h
            # predictor: the previous stage derivative carried to this stage
            z, ok, rate = self._newton(ti, psi, psi + hg * FI[-1], hg, x)
            failed |= ~ok
            slow |= rate > 0.5
            FI.append((z - psi) * inv_hg)
            FE.append(self.f_explicit(ti, z) if self.imex else None)
        incr = stage_sum(tab.b, [fi if fe is None else fi + fe for fi, fe in zip(FI, FE, strict=True)])
        return failed, slow, x + hb * incr, FI, FE

    def _newton(self, ti: Tensor, psi: Tensor, z: Tensor, hg: Tensor, x: Tensor):
        """Solve z = ψ + hγ F(ti, z) per sample; returns (z, converged mask, max contraction rate)."""
        B = z.shape[0]
        converged = torch.zeros(B, dtype=torch.bool, device=z.device)
        ok = torch.ones(B, dtype=torch.bool, device=z.device)
        rate = torch.zeros(B, dtype=torch.float64, device=z.device)
        prev = None
        for _ in range(MAX_NEWTON):
            G = z - psi - hg * self.f_implicit(ti, z)
            delta = self.linear.solve(-G, None if prev is None else self.newton_linear_tol)
            live = bcast(~converged, z)
            z = torch.where(live, z + delta, z)
            # the correction in units of the stage's h·F (z = ψ + γ·hF): that is what enters x_new, magnified by
            # 1/γ, so measuring z's own correction would stop Newton 1/γ (4× for KenCarp4) too early (SciML's
            # NLNewton iterates on h·F for the same reason)
            nd = self.norm(delta, x) / self.tab.gamma
            # a correction within the rounding of z = ψ + hγF itself cannot shrink further: converged, whatever its
            # size in tolerance units (a per-step tolerance near the dtype's resolution, e.g. t ~ 1e12 at rtol 2e-13)
            at_rounding = (delta.abs() <= ROUNDING_ULPS * torch.finfo(z.dtype).eps * (z.abs() + psi.abs())).flatten(1)
            at_rounding = at_rounding.all(1)
            if prev is None:
                # one iteration is enough only when its correction is negligible outright (SciML's NLNewton: below
                # 1e−5 of the tolerance); a contraction rate carried over from the last stage (Hairer's FACCON) would
                # accept a first correction of up to 1/η_min = 100·κ, i.e. a full tolerance unit of Newton error
                # in every stage, which the stage derivatives (z − ψ)/(hγ) pass to the error estimate and to x_new
                done_now = nd < FIRST_ITERATION_TOL
            else:
                theta = nd / prev.clamp_min(1e-300)
                rate = torch.where(converged, rate, torch.maximum(rate, theta))
                diverging = (theta >= 1.0) & ~converged & (nd > 1e-12) & ~at_rounding
                ok &= ~diverging
                eta = theta / (1.0 - theta.clamp(max=0.999))
                done_now = (eta * nd <= KAPPA) & (nd <= RATE_TRUSTED_BELOW)
                self.eta = torch.where(done_now & ~converged, eta.clamp_min(1e-2), self.eta)
            converged |= done_now | (nd == 0) | at_rounding | ~ok
            prev = torch.where(converged, prev if prev is not None else nd, nd)
            if bool(converged.all()):
                break
        ok &= converged & torch.isfinite(z).flatten(1).all(1)
        return z, ok, rate


def _merge(rows: Tensor, first: tuple, second: tuple) -> tuple:
    """Per sample, ``second``'s results where ``rows`` else ``first``'s (tuples of masks, states, stage lists)."""

    def pick(a, b):
        if a is None:
            return None
        if isinstance(a, list):
            return [pick(u, v) for u, v in zip(a, b, strict=True)]
        return torch.where(bcast(rows, a) if a.dim() > 1 else rows, b, a)

    return tuple(pick(a, b) for a, b in zip(first, second, strict=True))


def solve_esdirk(problem: ODEProblem, name: str, opts: SolveOptions) -> Solution:
    # the stage derivatives (z − ψ)/(hγ) carry the rounding of z divided by hγ, so the error estimate's rounding
    # floor is ~eps/γ·Σ|b − b̂|, not eps: below ~100 ulp of rtol the estimate is noise and the steps creep
    norm = ErrorNorm(opts.rtol, opts.atol, problem.x0, floor_ulps=RTOL_FLOOR_ULPS)
    stepper = ESDIRKStepper(problem, ESDIRK_TABLEAUS[name], norm, opts.extra)
    sol = integrate(problem, stepper, opts, norm)
    for counter in (stepper.f_implicit, stepper.f_explicit):
        if counter is not None and counter is not stepper.f:
            sol.stats.nf += counter.n
    return sol
