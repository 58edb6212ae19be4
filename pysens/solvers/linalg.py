"""Linear solves with M = I − hγ J, per sample, for the implicit torch methods.

Rosenbrock stages and simplified-Newton iterations of ESDIRK methods both solve ``M_b v_b = r_b`` for every
sample b, with ``J_b`` the Jacobian of the (implicit part of the) right-hand side at a fixed point and
``hγ`` a per-sample scalar. Two interchangeable solvers:

* :class:`DenseSolver`: per-sample Jacobians ``[B, d, d]`` from ``torch.func.jacrev`` (or the problem's ``jac``
  hook) and a batched LU of ``M``; the Jacobian can be kept while only ``hγ`` changes (refactorisation only).
  For small d. The system is solved in the error norm's units: with ``D = diag(atol + rtol·|x|)`` at the
  Jacobian's point, LU factors ``D⁻¹ M D`` and ``v = D · (D⁻¹ M D)⁻¹ (D⁻¹ r)``. Partial pivoting then keeps each
  component's rounding error relative to that component's own scale; unscaled, a component of 1e−22 next to one of
  1e−3 (kinetics: E5) gets rounding errors of eps·1e−3 ≫ 1e−22 at every stage, which drifts linear invariants.
* :class:`KrylovSolver`: matrix-free minimal-residual Krylov solves (GMRES's iterates, in the GCR form that keeps
  the products) on ``v ↦ v − hγ J v``, batched with per-sample inner products; the directions are kept across the
  solves that share one operator (all stages of a Rosenbrock step), so later stages need few or no new products.
  J v comes from the problem's ``jvp`` hook when it has one, else from :func:`pysens.derivatives.jvp`
  with ``jvp_engine`` (default ``"fd"`` under a Newton iteration, ``"fd-central"`` for Rosenbrock stages, which
  use the linear solutions uncorrected: :func:`krylov_jvp`; ``"fd"``: one right-hand-side call per product with
  the JFNK step ε_b = √eps (1 + ‖x_b‖)/‖v_b‖ around f(x) computed once per linearisation point, as CVODE and SciML's
  Jacobian-free Newton–Krylov do; ``"fd-central"``, ``"forward"`` (``torch.func.jvp``, exact but tens of
  right-hand-side costs on small kinetics systems), ``"double-vjp"``). Optionally right-preconditioned by
  a user ``precond(t, x, hgamma, v) ≈ M⁻¹ v``. No d × d matrix is ever formed. The residual is measured in
  the solver's weighted RMS error norm (the same scale as the step-size controller), and iterations stop when
  every sample's weighted residual is below ``tol`` (default :data:`KRYLOV_TOL` = 1e-5 of the error tolerance).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from pysens.derivatives import JVP_ENGINES
from pysens.derivatives import jvp as directional_derivative
from pysens.derivatives.products import DifferenceJVP

from .driver import ErrorNorm, WorkCounts, bcast
from .problem import ODEProblem

Precond = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
REFINE_MAX_CORRECTION = 2.0**-26  # √eps: a larger refinement correction means the JVP is not J's (rejected)
COMPLEX_STEP = 1e-100  # imaginary step of the complex-step JVP, relative to max |v| (its error is O(step²))

# weighted RMS residual at which Krylov solves stop, in units of the error tolerance. Rosenbrock stages use the
# linear solution as it is (no Newton iteration corrects it), so its error accumulates over the steps like a local
# error: on HIRES at rtol 1e-6, 1e-3 cost 1.4 of Rodas5P's 7.7 correct digits and 1e-4 cost 1.6; at 1e-5 the
# digits equal the dense LU's. Recycling the directions across the stages (KrylovSolver.solve) makes the tighter
# residual cheap (about 6 products per step on HIRES).
KRYLOV_TOL = 1e-5


class DenseSolver:
    def __init__(self, jacobian: Callable[[Tensor, Tensor], Tensor], work: WorkCounts, norm: ErrorNorm | None = None):
        self.jacobian, self.work, self.norm = jacobian, work, norm
        self.J: Tensor | None = None
        self.D: Tensor | None = None  # [B, d, 1] row/column scale of the system, or None
        self.lu = None
        self.hgamma: Tensor | None = None
        self._eye: Tensor | None = None

    def set_jacobian(self, t: Tensor, x: Tensor, rows: Tensor | None = None, J: Tensor | None = None) -> None:
        """Evaluate J (and the scale D) at ``(t, x)``; with ``rows`` (a ``[B]`` mask), only those samples' are
        replaced and the others keep theirs (per-sample Jacobian reuse). ``J`` ``[B, d, d]``: the Jacobian at
        ``(t, x)`` when the caller already has it (it is then only stored and counted)."""
        # the driver keeps clocks in float64; right-hand sides see times in the state's dtype
        if J is None:
            J = self.jacobian(t.to(x.dtype), x)
        self.work.njac += 1
        D = None
        if self.norm is not None:
            sc = self.norm.scale(x).expand_as(x).reshape(x.shape[0], -1, 1)
            D = torch.where(sc > 0, sc, torch.ones_like(sc))
        if rows is None or self.J is None:
            self.J, self.D = J, D
            return
        self.J = torch.where(rows[:, None, None], J, self.J)
        if D is not None:
            self.D = torch.where(rows[:, None, None], D, self.D)

    def factor(self, hgamma: Tensor) -> Tensor:
        """Factor M = I − hγ J (scaled: D⁻¹ M D) for every sample; returns a ``[B]`` mask of singular samples (an
        exactly zero pivot, which LAPACK reports in ``info``, or a non-finite one)."""
        J = self.J
        if self.D is not None:
            J = J * (self.D.transpose(1, 2) / self.D)  # (D⁻¹ J D)_ij = J_ij D_j / D_i
        if self._eye is None or self._eye.shape[0] != J.shape[-1] or self._eye.dtype != J.dtype:
            self._eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
        M = self._eye - hgamma.to(J.dtype)[:, None, None] * J
        lu, piv, info = torch.linalg.lu_factor_ex(M)
        self.lu, self.piv, self.hgamma = lu, piv, hgamma
        self.work.nfactor += 1
        return (info != 0) | ~torch.isfinite(lu.diagonal(dim1=-2, dim2=-1)).all(-1)

    def solve(self, r: Tensor, tol: float | None = None) -> Tensor:
        """``M⁻¹ r`` by the LU factors (``tol``: accepted for the Krylov solver's signature; LU is exact)."""
        self.work.nlinsolve += 1
        b = r.reshape(r.shape[0], -1, 1)
        if self.D is not None:
            b = b / self.D
        v = torch.linalg.lu_solve(self.lu, self.piv, b)
        return (v if self.D is None else self.D * v).reshape(r.shape)

    def gross(self, k: Tensor) -> Tensor:
        """``|k| + |hγ| |J| |k|`` (shaped like ``k``): the magnitudes whose rounding a solve with M incurs. An LU
        solve's backward error is ``|δM| ≲ c·eps·|L||U|`` (≈ eps·|M| when scaled), so each component of the
        residual ``r − M k`` is of order eps times this, however small the net ``(M k)_i`` is."""
        kb = k.reshape(k.shape[0], -1, 1).abs()
        hg = self.hgamma.to(k.dtype).abs()[:, None, None]
        return (kb + hg * (self.J.abs() @ kb)).reshape(k.shape)

    def refine(self, r: Tensor, k: Tensor, Jk: Tensor, rows: Tensor, scale: Tensor, every: bool = False) -> Tensor:
        """One step of iterative refinement of ``M k = r`` for the samples in ``rows`` (a ``[B]`` mask; ``every``:
        the caller knows it holds every sample), with the residual ``r − k + hγ·Jk`` built from ``Jk = J k``
        computed by the caller along the right-hand side's own arithmetic (see :class:`GraphJVP`). The correction of
        a solve that was exact to rounding is tiny; a sample whose correction exceeds √eps of ``|k| + scale`` in
        some component (``Jk`` disagrees with the factored J: a JVP that does not follow f) keeps its unrefined
        ``k``."""
        hg = self.hgamma.to(k.dtype).reshape((-1,) + (1,) * (k.dim() - 1))
        res = r - (k - hg * Jk)
        if not every:
            res = torch.where(rows.reshape(hg.shape), res, torch.zeros_like(r))
        delta = self.solve(res)
        limit = REFINE_MAX_CORRECTION * (k.abs() + scale)
        ok = (delta.abs() <= limit).flatten(1).all(1)
        if not every:
            ok = rows & ok
        return torch.where(ok.reshape(hg.shape), k + delta, k)


class GraphJVP:
    """``J_f(t, x) v`` computed along the right-hand side's own arithmetic, for refining dense solves.

    A linear invariant ``cᵀf = 0`` that f keeps by construction (a component computed as a difference of the others,
    as kinetics with conserved totals are written) survives a product J v only if J v is formed by the same
    operations: a dense ``J`` has each entry rounded separately and ``J @ v`` sums gross terms, so ``cᵀ(J v)`` is
    wrong by ``eps·|J||v|``, which on stiff kinetics (fluxes 10⁶ times the species they pass through) swamps
    species of 1e−22. The product here is the problem's ``jvp`` hook when it has one, else the complex step
    (Squire & Trapp 1998): ``J v = Im f(t, x + iδv)/δ`` with no subtraction, exact to rounding for real-analytic
    f, one complex evaluation of f. ``available`` turns False (and stays so) when f does not accept complex
    states; a JVP that runs but does not follow J (e.g. ``abs`` inside f) is caught by the correction check of
    :meth:`DenseSolver.refine`.
    """

    def __init__(self, problem: ODEProblem, f: Callable[[Tensor, Tensor], Tensor], implicit_only: bool):
        hook = getattr(problem, "jvp1", None) if implicit_only else problem.jvp
        self.hook, self.f = hook, f
        self.available = True

    def __call__(self, t: Tensor, x: Tensor, v: Tensor) -> Tensor | None:
        if self.hook is not None:
            return self.hook(t, x, v)
        if not self.available or x.is_complex():
            return None
        scale = v.abs().flatten(1).amax(1).clamp_min(torch.finfo(v.dtype).tiny)
        scale = scale.reshape((-1,) + (1,) * (v.dim() - 1))
        try:
            fz = self.f(t, torch.complex(x, COMPLEX_STEP * (v / scale)))
        except (RuntimeError, TypeError, ValueError):
            fz = None
        if fz is None or not torch.is_tensor(fz) or not fz.is_complex() or fz.shape != x.shape:
            self.available = False
            return None
        return fz.imag * (scale / COMPLEX_STEP)


class KrylovSolver:
    def __init__(
        self,
        jvp: Callable[[Tensor, Tensor, Tensor], Tensor],
        work: WorkCounts,
        norm: ErrorNorm,
        *,
        krylov_dim: int = 30,
        max_restarts: int = 4,
        tol: float = KRYLOV_TOL,
        precond: Precond | None = None,
    ):
        if not isinstance(krylov_dim, int) or krylov_dim < 1:
            raise ValueError(f"krylov_dim must be a positive integer, got {krylov_dim!r}")
        if not (isinstance(tol, float) and 0 < tol < 1):
            raise ValueError(f"krylov_tol must be a float in (0, 1), got {tol!r}")
        if precond is not None and not callable(precond):
            raise TypeError("precond must be callable as precond(t, x, hgamma, v) -> approx (I - hgamma J)^-1 v")
        self.jvp, self.work, self.norm = jvp, work, norm
        self.m, self.max_restarts, self.tol, self.precond = krylov_dim, max_restarts, tol, precond
        self.unconverged = 0
        self._weights: Tensor | None = None

    def set_jacobian(self, t: Tensor, x: Tensor) -> None:
        # matrix-free: J is "evaluated" lazily at this point by every JVP (times in the state's dtype)
        self._t, self._x = t.to(x.dtype), x
        self._weights = None
        self._kept = 0  # the operator changes: forget the recycled directions
        reset = getattr(self.jvp, "reset", None)
        if reset is not None:
            reset()

    def factor(self, hgamma: Tensor) -> Tensor:
        self.hgamma = hgamma
        self._kept = 0
        return torch.zeros(hgamma.shape[0], dtype=torch.bool, device=hgamma.device)

    def _apply_M(self, v: Tensor) -> Tensor:
        self.work.njvp += 1
        self.work.nkrylov += 1
        return v - bcast(self.hgamma.to(v.dtype), v) * self.jvp(self._t, self._x, v)

    def _apply_P(self, v: Tensor) -> Tensor:
        return v if self.precond is None else self.precond(self._t, self._x, self.hgamma, v)

    def solve(self, r: Tensor, tol: float | None = None) -> Tensor:
        """Minimal-residual solve of M P u = r for every sample in the weighted norm, then ``P u``; ``tol`` (default
        the solver's ``tol``): the weighted RMS residual to stop at, in units of the error tolerance.

        In the weighted variables (``A z = w ⊙ M P (z / w)``, w = 1/scale) the kept pairs ``(Z, C = A Z)`` have
        orthonormal ``C`` per sample. With a preconditioner, ``Q = P (Z / w)`` is kept instead of ``Z``
        (``C = w ⊙ M Q``), so the answer ``Σ α q`` is a combination of kept vectors and needs no preconditioner
        solve of its own (on the grid SPDE that halved the FFT solves), and its residual is the tracked one exactly,
        whatever P does (the flexible form). A solve first takes the best combination
        of the kept directions (no products: ``y = Cᵀ r``), then extends the space by GCR steps (direction =
        current residual, ``A z`` orthogonalised against ``C`` by two Gram–Schmidt passes) until the weighted RMS
        residual is below ``tol``.
        Started from an empty space this is GMRES's minimal-residual iterate on the same Krylov space; kept
        across the solves that share one operator (every stage of a Rosenbrock step, every simplified-Newton
        iteration of an ESDIRK stage, until :meth:`set_jacobian` or :meth:`factor` changes it), later solves
        need few or no new products (on a d-dimensional system at most d directions are ever independent).
        When ``krylov_dim`` directions are kept the space is dropped and the iteration restarts from the current
        solution (at most ``krylov_restarts`` times; then the sample counts as unconverged)."""
        self.work.nlinsolve += 1
        B, shape = r.shape[0], r.shape
        if self._weights is None:  # the error norm's componentwise scale at the linearisation point
            self._weights = (1.0 / self.norm.scale(self._x)).expand_as(r).contiguous()
        # On the CPU with no graph being recorded the iteration runs on numpy views of the same memory: on small
        # systems (HIRES: 8 components) each torch operation's fixed cost would outweigh the right-hand side
        host = r.device.type == "cpu" and not torch.is_grad_enabled()
        if host:

            def to_basis(a: Tensor):
                return a.detach().reshape(B, -1).numpy()

            def from_basis(a) -> Tensor:
                return torch.from_numpy(np.ascontiguousarray(a)).reshape(shape)

        else:

            def to_basis(a: Tensor):
                return a.reshape(B, -1)

            def from_basis(a) -> Tensor:
                return a.reshape(shape)

        w = to_basis(self._weights)
        res = to_basis(r) * w
        n = res.shape[1]
        if self._kept == 0 or getattr(self, "_Q", None) is None or self._Q.shape[0] != B or self._Q.shape[2] != n:
            zeros = np.zeros if host else (lambda s, dtype: res.new_zeros(s))
            self._Q, self._C = zeros((B, self.m, n), dtype=res.dtype), zeros((B, self.m, n), dtype=res.dtype)
            self._kept = 0
        Q, C = self._Q, self._C
        info = torch.finfo(r.dtype)
        tiny = float(info.tiny)
        # weighted RMS residual <= tol, or a relative residual of eps^(2/3) (below that the products' rounding, and
        # for the difference JVP its √eps error, leave nothing to gain: a right-hand side far larger than the error
        # scale, as Rosenbrock23's unscaled stage derivatives, would otherwise ask for less than rounding)
        target = ((res * res).sum(1)) ** 0.5 * (info.eps ** (2.0 / 3.0))
        floor = (self.tol if tol is None else tol) * n**0.5
        target = target + (target < floor) * (floor - target)
        # kept directions and the answer: with a preconditioner q = P (z / w), in the caller's units; without one
        # q = z, the answer divided by w once at the end (the plain solve's arithmetic)
        plain = self.precond is None
        u = res * 0.0
        if self._kept:  # the best combination of the kept directions: no new products
            y = (C[:, : self._kept] @ res[:, :, None]).swapaxes(1, 2)  # [B, 1, kept]
            u = (y @ Q[:, : self._kept])[:, 0]
            res = res - (y @ C[:, : self._kept])[:, 0]
        restarts = 0
        while True:
            rnorm = ((res * res).sum(1)) ** 0.5
            if bool((rnorm <= target).all()):
                break
            if self._kept == self.m:
                if restarts == self.max_restarts:
                    self.unconverged += 1
                    break
                restarts += 1
                self._kept = 0
            k = self._kept
            pz = self._apply_P(from_basis(res / w))  # the direction z = res
            a = w * to_basis(self._apply_M(pz))
            q = res if plain else to_basis(pz)
            if k:
                for _ in range(2):  # classical Gram–Schmidt, twice (as stable as the modified form)
                    bt = (C[:, :k] @ a[:, :, None]).swapaxes(1, 2)  # [B, 1, k]
                    a = a - (bt @ C[:, :k])[:, 0]
                    q = q - (bt @ Q[:, :k])[:, 0]
            anorm = ((a * a).sum(1)) ** 0.5
            inv = 1.0 / (anorm + (anorm <= tiny))
            inv = inv * (anorm > tiny)  # a breakdown (A z in the kept space) adds nothing for that sample
            a, q = a * inv[:, None], q * inv[:, None]
            C[:, k], Q[:, k] = a, q
            self._kept = k + 1
            alpha = (a * res).sum(1)[:, None]
            u = u + alpha * q
            res = res - alpha * a
        return from_basis(u / w if plain else u)


LINSOLVES = ("auto", "dense", "gmres")
KRYLOV_JVP_ENGINES = ("auto", *JVP_ENGINES)


class FieldJVP:
    """``(t, x, v) -> J_f(t, x) v`` of a right-hand side by a :mod:`pysens.derivatives` engine; f(t, x) at the current
    linearisation point is computed once (on the first product after :meth:`reset`) and reused by ``"fd"``."""

    def __init__(self, f, engine: str, work: WorkCounts):
        self.f, self.engine, self.work = f, engine, work
        self._point: DifferenceJVP | None = None

    def reset(self) -> None:
        self._point = None

    def __call__(self, t: Tensor, x: Tensor, v: Tensor) -> Tensor:
        if self.engine != "fd":
            return directional_derivative(lambda y: self.f(t, y), x, v, engine=self.engine)[1]
        if self._point is None:  # f(x) and the step numerator, once per linearisation point
            self._point = DifferenceJVP(lambda y: self.f(t, y), x)
        return self._point(v)


def krylov_jvp(problem: ODEProblem, implicit_only: bool, engine: str, work: WorkCounts, newton: bool = True):
    """The J v GMRES uses: the problem's own ``jvp`` hook when it has one (and ``engine`` is "auto"), else
    :class:`FieldJVP` with ``engine``. "auto" is "fd" where a Newton iteration corrects the linear solutions
    (``newton``: ESDIRK stages, as CVODE and JFNK) and "fd-central" where they are used as they are (Rosenbrock
    stages): a one-sided difference at the √eps step carries a rounding error of about eps‖J‖‖x‖/ε ≈ √eps‖J‖ in
    each product, which a stiff J makes large (the stiff linear test, ‖J‖ = 1e6: Rosenbrock23 ended in
    DtLessThanMin after 48 553 steps, where the central difference's eps^(1/3) step, ~400× smaller rounding, takes
    668–1402; Rodas5P on HIRES costs ~1.4× the one-sided products' time). SciML's Krylov Rosenbrock methods take
    exact (dual-number) products for the same reason."""
    if engine not in KRYLOV_JVP_ENGINES:
        raise ValueError(f"jvp_engine must be one of {KRYLOV_JVP_ENGINES}, got {engine!r}")
    hook = getattr(problem, "jvp1", problem.jvp) if implicit_only else problem.jvp
    if engine == "auto" and hook is not None:
        return problem.implicit_jvp if implicit_only else problem.rhs_jvp
    f = getattr(problem, "f1", problem.f) if implicit_only else problem.f
    if engine == "auto":
        engine = "fd" if newton else "fd-central"
    return FieldJVP(f, engine, work)


def make_linear_solver(
    problem: ODEProblem, work: WorkCounts, norm: ErrorNorm, extra: dict, implicit_only: bool, newton: bool = True
):
    """The linear solver asked for by ``linsolve`` ("dense", "gmres", or "auto": dense up to d = 64); ``newton``:
    whether a Newton iteration corrects its solutions (the Krylov products' default engine, :func:`krylov_jvp`)."""
    linsolve = extra.get("linsolve", "auto")
    if linsolve not in LINSOLVES:
        raise ValueError(f"linsolve must be one of {LINSOLVES}, got {linsolve!r}")
    if linsolve == "auto":
        linsolve = "dense" if problem.dim <= 64 else "gmres"
    jac = problem.implicit_jacobian if implicit_only else problem.rhs_jacobian
    if linsolve == "dense":
        for name in ("precond", "jvp_engine"):
            if name in extra:
                raise ValueError(f"{name} applies to linsolve='gmres' only")
        return DenseSolver(jac, work, norm)
    return KrylovSolver(
        krylov_jvp(problem, implicit_only, extra.get("jvp_engine", "auto"), work, newton),
        work,
        norm,
        krylov_dim=extra.get("krylov_dim", 30),
        max_restarts=extra.get("krylov_restarts", 4),
        tol=extra.get("krylov_tol", KRYLOV_TOL),
        precond=extra.get("precond"),
    )
