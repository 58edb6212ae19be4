"""Rosenbrock–W methods on the torch backend: the Rosenbrock stage machinery with a Jacobian kept over many steps.

A W-method satisfies its order conditions for *any* matrix W in place of J = ∂f/∂x (Steihaug & Wolfbrandt 1979;
Hairer & Wanner, Solving ODEs II, IV.7 "W-methods"), so W may be a Jacobian evaluated steps ago. The step is the one
of :mod:`pysens.solvers.rosenbrock` (same stage equations, same per-sample dense LU, same refinement), with J and
∂f/∂t taken from the sample's last linearisation point instead of the step's start. On the augmented autonomous
system (x, t) a stale (J, ∂f/∂t) pair is again just another W, so ∂f/∂t is kept with J.

``ROS34PW2`` (Rang & Angermann 2005, BIT 45): 4 stages, order 3 with an embedded order-2 solution, both orders
holding for arbitrary W; stiffly accurate and L-stable (γ = 0.435866521508459, the L-stable root of the order-3
condition); it propagates the order-3 solution (local extrapolation).

**When J is evaluated** (per sample, on the dense linear solve of an adaptive solve): OrdinaryDiffEq's rule for its
W-methods (``_rosenbrock_jac_reuse_decision`` in ``derivative_utils.jl``, after CVODE's lagged Jacobian):

* at the first attempt;
* after a rejected attempt (error test, non-finite state or singular M) made with a Jacobian from an *earlier* point
  (a rejection with a J evaluated at that very point keeps it: the retry is at the same point);
* when h differs from the sample's previous accepted step by more than :data:`GAMMA_TOL` (3 %);
* after ``max_jac_age`` accepted steps on one Jacobian (default :data:`MAX_JAC_AGE` = 20, OrdinaryDiffEq's default);
  ``max_jac_age=1`` evaluates J on every step (the plain Rosenbrock rule).

Otherwise J (and ∂f/∂t) are kept and only M = I − hγW is refactored, when hγ or W changed for some sample (kept when
neither did). The 3 % rule is not a W order condition; it trades Jacobians for steps, and steps cost more here (the
Jacobian of a small system is one replicated-rows pass). Measured on E5 at rtol 1e−4 under this method's tolerance
map: the age rule alone took 2268 steps and 114 Jacobians, the 3 % rule 1015 steps and 779 Jacobians (a stale W
inflates the embedded estimate), a fresh J on every step 946 steps. With a looser map (c = 0.77, its first
calibration) the age rule alone returned wrong Successes on E5 and on E5 with a scale-aware atol (0.20 correct digits
against 0.22 required, 2.2 against 2.5), as did a rule refreshing J when h moved by 30 % from the step J was made for;
the 3 % rule did not. Dense solves are refined (:meth:`RosenbrockStepper._solve`) only on steps whose J is fresh:
refining a solve with a stale W along f's own arithmetic at W's point measured worse there (1.6–1.8 digits against
2.5) than not refining it.

Fixed-step solves have no error test to catch a W gone bad: they evaluate J on every step (as OrdinaryDiffEq does),
and so do matrix-free (GMRES) solves, whose "J" is a product at the step's start anyway. A linearisation pass
evaluates the whole batch (f's rows need not be independent of which rows are passed) and only the samples that asked
for a fresh J take theirs, so every decision is the sample's own: a sample takes the same steps alone and in any batch.

``stats.njac`` counts linearisation passes (one per attempt that refreshed any sample); ``sol.extra["jac_rows"]``
counts the per-sample Jacobians taken into use (equal to ``njac`` for one sample).
"""

from __future__ import annotations

from fractions import Fraction

import torch
from torch import Tensor

from .driver import Attempt, ErrorNorm, integrate
from .linalg import DenseSolver, KrylovSolver
from .options import SolveOptions
from .problem import ODEProblem
from .rosenbrock import RosenbrockStepper, RosenbrockTableau
from .solution import Solution

MAX_JAC_AGE = 20  # accepted steps on one Jacobian before it is evaluated again (OrdinaryDiffEq's max_jac_age)
GAMMA_TOL = 0.03  # h moved by more than this from the sample's previous accepted step: fresh J (OrdinaryDiffEq's)


def w_tableau(name: str, order: int, alpha, Gamma, b, b_hat, reference: str) -> RosenbrockTableau:
    """A Rosenbrock(-W) method given in its published form, in the transformed variables the stepper runs.

    Published form (Hairer & Wanner IV.7 (7.4)): with Γ lower triangular (diagonal γ) and α strictly lower,
    ``(I − hγJ) k_i = h f(t + α_i h, x + Σ α_ij k_j) + hJ Σ_{j<i} Γ_ij k_j + γ_i h² ∂f/∂t``, ``x_new = x + Σ b_j k_j``.
    With ``U = Γ k`` this is the form of :mod:`pysens.solvers.rosenbrock`: ``a = α Γ⁻¹``, ``C_ij = −(Γ⁻¹)_ij``
    (i > j), ``c_i = Σ_j α_ij``, ``d_i = γ_i = Σ_{j≤i} Γ_ij``, ``m = bᵀΓ⁻¹``, and the error weights
    ``m − m̂`` with ``m̂ = b̂ᵀΓ⁻¹``. The transformation runs in exact rational arithmetic on the published decimals,
    so the only rounding is the final conversion of each coefficient to float64."""
    s = len(b)
    A = [[Fraction(v) for v in row] + [Fraction(0)] * (s - len(row)) for row in alpha]
    G = [[Fraction(v) for v in row] + [Fraction(0)] * (s - len(row)) for row in Gamma]
    inv = [[Fraction(0)] * s for _ in range(s)]  # Γ⁻¹ by forward substitution, column by column
    for col in range(s):
        for i in range(s):
            acc = Fraction(int(i == col)) - sum((G[i][j] * inv[j][col] for j in range(i)), Fraction(0))
            inv[i][col] = acc / G[i][i]

    def times_inv(row):
        return [sum((row[j] * inv[j][k] for j in range(s)), Fraction(0)) for k in range(s)]

    a = [times_inv(A[i]) for i in range(s)]
    m, m_hat = times_inv([Fraction(v) for v in b]), times_inv([Fraction(v) for v in b_hat])
    return RosenbrockTableau(
        name,
        order,
        float(G[0][0]),
        tuple(tuple(float(v) for v in a[i][:i]) for i in range(s)),
        tuple(tuple(float(-inv[i][j]) for j in range(i)) for i in range(s)),
        tuple(float(sum(A[i][:i], Fraction(0))) for i in range(s)),
        tuple(float(sum(G[i][: i + 1], Fraction(0))) for i in range(s)),
        tuple(float(v) for v in m),
        tuple(float(u - v) for u, v in zip(m, m_hat, strict=True)),
        reference,
    )


_G = "4.3586652150845900e-01"
ROS34PW2 = w_tableau(
    "ROS34PW2",
    3,
    alpha=[
        [],
        ["8.7173304301691801e-01"],
        ["8.4457060015369423e-01", "-1.1299064236484185e-01"],
        ["0", "0", "1"],
    ],
    Gamma=[
        [_G],
        ["-8.7173304301691801e-01", _G],
        ["-9.0338057013044082e-01", "5.4180672388095326e-02", _G],
        ["2.4212380706095346e-01", "-1.2232505839045147e+00", "5.4526025533510214e-01", _G],
    ],
    b=["2.4212380706095346e-01", "-1.2232505839045147e+00", "1.5452602553351020e+00", _G],
    b_hat=["3.7810903145819369e-01", "-9.6042292212423178e-02", "0.5", "2.1793326075422950e-01"],
    reference="Rang & Angermann (2005), BIT 45: ROS34PW2, Rosenbrock-W 3(2), stiffly accurate, L-stable",
)
W_TABLEAUS = {t.name: t for t in (ROS34PW2,)}
W_METHODS = tuple(W_TABLEAUS)


def _max_jac_age(extra: dict) -> int:
    age = extra.get("max_jac_age", MAX_JAC_AGE)
    if isinstance(age, bool) or not isinstance(age, int) or age < 1:
        raise ValueError(f"max_jac_age must be a positive integer (accepted steps per Jacobian), got {age!r}")
    return age


class RosenbrockWStepper(RosenbrockStepper):
    """A Rosenbrock–W step (:class:`RosenbrockStepper`'s stages) on a per-sample Jacobian kept over steps (module
    docstring: when it is evaluated). Per-sample state, all ``[B]``: ``_age`` accepted steps on the current J,
    ``_here`` J was evaluated at the sample's current point, ``_needs`` J is evaluated at the next attempt, ``_h_ref``
    the previous accepted step; ``_T``: ∂f/∂t where the sample's J was evaluated."""

    def __init__(self, problem: ODEProblem, name: str, norm: ErrorNorm, extra: dict, adaptive: bool):
        tab = W_TABLEAUS[name]
        super().__init__(problem, name, norm, extra, tab=tab)
        self.error_order = tab.order - 1  # the estimate compares orders 3 and 2: its local error is O(h³)
        self.max_jac_age = _max_jac_age(extra)
        self.reuse = adaptive and isinstance(self.linear, DenseSolver)
        self.work.extra["jac_rows"] = 0
        self._needs: Tensor | None = None
        self._here: Tensor | None = None
        self._refreshed: Tensor | None = None
        self._singular: Tensor | None = None

    def _evaluate(self, t: Tensor, x: Tensor, h: Tensor, f0: Tensor) -> tuple[Tensor, Tensor | None]:
        """J and ∂f/∂t (None: f does not read t) at ``(t, x)`` (where f is ``f0``), on the path (fused or separate)
        the first step chose."""
        if self._fused:
            _, J, T = self._linearise_fused(t, x)
            return J, T
        return self.linear.jacobian(t.to(x.dtype), x), self._time_derivative(t, x, h, f0)

    def _linearise(self, t: Tensor, x: Tensor, h: Tensor) -> Tensor | None:
        """f(t, x) for every sample; J and ∂f/∂t for the samples that need them (the others keep theirs)."""
        B = x.shape[0]
        if not self.reuse:
            self._refreshed = torch.ones(B, dtype=torch.bool, device=x.device)
            self.work.extra["jac_rows"] += B
            return super()._linearise(t, x, h)
        first = self._needs is None
        if first:
            rows = torch.ones(B, dtype=torch.bool, device=x.device)
        else:
            moved_h = (h / self._h_ref - 1.0).abs() > GAMMA_TOL
            rows = (self._needs | moved_h) & (h != 0)
        count = int(rows.sum())
        if first or count == B:
            self._same_point = False  # every sample asked for a fresh J
            self._T = super()._linearise(t, x, h)
            self._age = torch.zeros(B, dtype=torch.long, device=x.device)
            if first:
                self._h_ref = h.clone()
        else:
            if self.f0 is None:
                self.f0 = self.f(t, x)
            if count:  # the whole batch is linearised (f's rows need not be independent), the others keep theirs
                J, T_new = self._evaluate(t, x, h, self.f0)
                self.linear.set_jacobian(t, x, rows, J=J)
                if T_new is not None or self._T is not None:
                    T_new = torch.zeros_like(x) if T_new is None else T_new
                    T_old = torch.zeros_like(x) if self._T is None else self._T
                    self._T = torch.where(rows.reshape((B,) + (1,) * (x.dim() - 1)), T_new, T_old)
                self._age = torch.where(rows, 0, self._age)
        self._h_try = h
        self.work.extra["jac_rows"] += count
        self._refreshed = rows
        return self._T

    def _decide_refinement(self, k: Tensor) -> bool:
        """As :meth:`RosenbrockStepper._decide_refinement`, for the samples whose J is fresh at this step only."""
        if not super()._decide_refinement(k):
            return False
        if self.reuse:
            self._refine_rows = self._refine_rows & self._refreshed
            count = int(self._refine_rows.sum())
            self._refine_every = count == k.shape[0]
            return count > 0
        return True

    def _factor(self, hgamma: Tensor) -> Tensor:
        """Refactor M unless no sample's J or hγ changed since the last factorisation."""
        same = (
            self._singular is not None
            and not bool(self._refreshed.any())
            and self.linear.hgamma is not None
            and torch.equal(hgamma, self.linear.hgamma)
        )
        if not same:
            self._singular = super()._factor(hgamma)
        return self._singular

    def attempt(self, t: Tensor, x: Tensor, h: Tensor, adaptive: bool) -> Attempt:
        self._active = h != 0
        return super().attempt(t, x, h, adaptive)

    def commit(self, accept: Tensor, t_new: Tensor, x_new: Tensor, attempt: Attempt) -> None:
        super().commit(accept, t_new, x_new, attempt)
        if not self.reuse:
            return
        here = self._refreshed if self._here is None else self._refreshed | self._here
        self._here = here & ~accept  # J was evaluated at the sample's current point (which a rejection keeps)
        self._age = self._age + accept.long()
        rejected = self._active & ~accept
        self._needs = (rejected & ~self._here) | (self._age >= self.max_jac_age)
        self._h_ref = torch.where(accept, self._h_try, self._h_ref)


def solve_rosenbrock_w(problem: ODEProblem, name: str, opts: SolveOptions) -> Solution:
    """Solve ``problem`` with the Rosenbrock–W method ``name`` (:data:`W_METHODS`) on the torch backend."""
    norm = ErrorNorm(opts.rtol, opts.atol, problem.x0)
    stepper = RosenbrockWStepper(problem, name, norm, opts.extra, opts.adaptive)
    sol = integrate(problem, stepper, opts, norm)
    if isinstance(stepper.linear, KrylovSolver):
        sol.extra["krylov_unconverged"] = stepper.linear.unconverged
    return sol
