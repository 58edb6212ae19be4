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
* :class:`KrylovSolver`: matrix-free restarted GMRES on ``v ↦ v − hγ J v``, batched with per-sample inner
  products. J v comes from the problem's ``jvp`` hook when it has one, else from :func:`pysens.derivatives.jvp`
  with ``jvp_engine`` (default ``"fd"``: one right-hand-side call per product with the JFNK step
  ε_b = √eps (1 + ‖x_b‖)/‖v_b‖ around f(x) computed once per linearisation point, as CVODE and SciML's
  Jacobian-free Newton–Krylov do; ``"fd-central"``, ``"forward"`` (``torch.func.jvp``, exact but tens of
  right-hand-side costs on small kinetics systems), ``"double-vjp"``). Optionally right-preconditioned by
  a user ``precond(t, x, hgamma, v) ≈ M⁻¹ v``. No d × d matrix is ever formed. The residual is measured in
  the solver's weighted RMS error norm (the same scale as the step-size controller), and iterations stop when
  every sample's weighted residual is below ``tol`` (default 1e-3 of the error tolerance).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pysens.derivatives import JVP_ENGINES
from pysens.derivatives import jvp as directional_derivative

from .driver import ErrorNorm, WorkCounts, bcast
from .problem import ODEProblem

Precond = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
REFINE_MAX_CORRECTION = 2.0**-26  # √eps: a larger refinement correction means the JVP is not J's (rejected)
COMPLEX_STEP = 1e-100  # imaginary step of the complex-step JVP, relative to max |v| (its error is O(step²))


class DenseSolver:
    def __init__(self, jacobian: Callable[[Tensor, Tensor], Tensor], work: WorkCounts, norm: ErrorNorm | None = None):
        self.jacobian, self.work, self.norm = jacobian, work, norm
        self.J: Tensor | None = None
        self.D: Tensor | None = None  # [B, d, 1] row/column scale of the system, or None
        self.lu = None
        self.hgamma: Tensor | None = None

    def set_jacobian(self, t: Tensor, x: Tensor, rows: Tensor | None = None) -> None:
        """Evaluate J (and the scale D) at ``(t, x)``; with ``rows`` (a ``[B]`` mask), only those samples' are
        replaced and the others keep theirs (per-sample Jacobian reuse)."""
        # the driver keeps clocks in float64; right-hand sides see times in the state's dtype
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
        """Factor M = I − hγ J (scaled: D⁻¹ M D) for every sample; returns a ``[B]`` mask of singular samples."""
        J = self.J
        if self.D is not None:
            J = J * (self.D.transpose(1, 2) / self.D)  # (D⁻¹ J D)_ij = J_ij D_j / D_i
        eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
        M = eye - hgamma.to(J.dtype)[:, None, None] * J
        lu, piv, info = torch.linalg.lu_factor_ex(M)
        self.lu, self.piv, self.hgamma = lu, piv, hgamma
        self.work.nfactor += 1
        diag = lu.diagonal(dim1=-2, dim2=-1).abs()
        return (info != 0) | ~torch.isfinite(diag).all(-1) | (diag.min(-1).values == 0)

    def solve(self, r: Tensor) -> Tensor:
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

    def refine(self, r: Tensor, k: Tensor, Jk: Tensor, rows: Tensor, scale: Tensor) -> Tensor:
        """One step of iterative refinement of ``M k = r`` for the samples in ``rows`` (a ``[B]`` mask), with the
        residual ``r − k + hγ·Jk`` built from ``Jk = J k`` computed by the caller along the right-hand side's own
        arithmetic (see :class:`GraphJVP`). The correction of a solve that was exact to rounding is tiny; a sample
        whose correction exceeds √eps of ``|k| + scale`` in some component (``Jk`` disagrees with the factored J:
        a JVP that does not follow f) keeps its unrefined ``k``."""
        hg = self.hgamma.to(k.dtype).reshape((-1,) + (1,) * (k.dim() - 1))
        rows_b = rows.reshape(hg.shape)
        res = torch.where(rows_b, r - (k - hg * Jk), torch.zeros_like(r))
        delta = self.solve(res)
        limit = REFINE_MAX_CORRECTION * (k.abs() + scale)
        ok = rows & (delta.abs() <= limit).flatten(1).all(1)
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
        tol: float = 1e-3,
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

    def set_jacobian(self, t: Tensor, x: Tensor) -> None:
        # matrix-free: J is "evaluated" lazily at this point by every JVP (times in the state's dtype)
        self._t, self._x = t.to(x.dtype), x
        reset = getattr(self.jvp, "reset", None)
        if reset is not None:
            reset()

    def factor(self, hgamma: Tensor) -> Tensor:
        self.hgamma = hgamma
        return torch.zeros(hgamma.shape[0], dtype=torch.bool, device=hgamma.device)

    def _apply_M(self, v: Tensor) -> Tensor:
        self.work.njvp += 1
        self.work.nkrylov += 1
        return v - bcast(self.hgamma.to(v.dtype), v) * self.jvp(self._t, self._x, v)

    def _apply_P(self, v: Tensor) -> Tensor:
        return v if self.precond is None else self.precond(self._t, self._x, self.hgamma, v)

    def solve(self, r: Tensor) -> Tensor:
        """Restarted right-preconditioned GMRES for every sample on the weighted system diag(1/sc) M."""
        self.work.nlinsolve += 1
        B = r.shape[0]
        w = 1.0 / self.norm.scale(self._x)  # weights: the error norm's componentwise scale
        n = r[0].numel()
        x = torch.zeros_like(r)
        for _ in range(self.max_restarts + 1):
            res = w * (r - self._apply_M(self._apply_P(x))) if bool(x.any()) else w * r
            y, converged = self._arnoldi_solve(res, w, n, B)
            x = x + y
            if converged:
                break
        else:
            self.unconverged += 1
        return self._apply_P(x)

    def _arnoldi_solve(self, res: Tensor, w: Tensor, n: int, B: int) -> tuple[Tensor, bool]:
        """One GMRES cycle on the weighted residual ``res``; returns the (unpreconditioned) update."""
        dtype = res.dtype
        beta = res.flatten(1).norm(dim=1)
        tiny = torch.finfo(dtype).tiny
        V = [res / bcast(beta.clamp_min(tiny), res)]
        H = torch.zeros(B, self.m + 1, self.m, dtype=dtype, device=res.device)
        cs = torch.zeros(B, self.m, dtype=dtype, device=res.device)
        sn = torch.zeros_like(cs)
        g = torch.zeros(B, self.m + 1, dtype=dtype, device=res.device)
        g[:, 0] = beta
        target = self.tol * (n**0.5)  # weighted RMS residual <= tol
        converged = bool((beta <= target).all())
        k = 0
        while not converged and k < self.m:
            v = w * self._apply_M(self._apply_P(V[k] / w))
            for i in range(k + 1):  # modified Gram–Schmidt, per sample
                hik = (v * V[i]).flatten(1).sum(1)
                H[:, i, k] = hik
                v = v - bcast(hik, v) * V[i]
            hnext = v.flatten(1).norm(dim=1)
            H[:, k + 1, k] = hnext
            V.append(v / bcast(hnext.clamp_min(tiny), v))
            for i in range(k):  # apply the previous Givens rotations to the new column
                a, b = H[:, i, k].clone(), H[:, i + 1, k].clone()
                H[:, i, k] = cs[:, i] * a + sn[:, i] * b
                H[:, i + 1, k] = -sn[:, i] * a + cs[:, i] * b
            a, b = H[:, k, k], H[:, k + 1, k]
            rad = torch.sqrt(a * a + b * b).clamp_min(tiny)
            cs[:, k], sn[:, k] = a / rad, b / rad
            H[:, k, k], H[:, k + 1, k] = rad, 0.0
            g[:, k + 1] = -sn[:, k] * g[:, k]
            g[:, k] = cs[:, k] * g[:, k]
            k += 1
            converged = bool((g[:, k].abs() <= target).all())
        if k == 0:
            return torch.zeros_like(res), converged
        R = H[:, :k, :k]
        diag = R.diagonal(dim1=-2, dim2=-1)
        # a lucky breakdown leaves an exact zero pivot: its coefficient is irrelevant, pin it
        R = R + torch.diag_embed(torch.where(diag.abs() > tiny, torch.zeros_like(diag), torch.ones_like(diag)))
        coef = torch.linalg.solve_triangular(R, g[:, :k, None], upper=True)[..., 0]  # [B, k]
        update = sum(bcast(coef[:, i], res) * V[i] for i in range(k))
        return update / w, converged


LINSOLVES = ("auto", "dense", "gmres")
KRYLOV_JVP_ENGINES = ("auto", *JVP_ENGINES)


class FieldJVP:
    """``(t, x, v) -> J_f(t, x) v`` of a right-hand side by a :mod:`pysens.derivatives` engine; f(t, x) at the current
    linearisation point is computed once (on the first product after :meth:`reset`) and reused by ``"fd"``."""

    def __init__(self, f, engine: str, work: WorkCounts):
        self.f, self.engine, self.work = f, engine, work
        self._fx: Tensor | None = None

    def reset(self) -> None:
        self._fx = None

    def __call__(self, t: Tensor, x: Tensor, v: Tensor) -> Tensor:
        if self.engine == "fd" and self._fx is None:
            self._fx = self.f(t, x)
        return directional_derivative(lambda y: self.f(t, y), x, v, engine=self.engine, fx=self._fx)[1]


def krylov_jvp(problem: ODEProblem, implicit_only: bool, engine: str, work: WorkCounts):
    """The J v GMRES uses: the problem's own ``jvp`` hook when it has one (and ``engine`` is "auto"), else
    :class:`FieldJVP` with ``engine`` ("auto" = "fd")."""
    if engine not in KRYLOV_JVP_ENGINES:
        raise ValueError(f"jvp_engine must be one of {KRYLOV_JVP_ENGINES}, got {engine!r}")
    hook = getattr(problem, "jvp1", problem.jvp) if implicit_only else problem.jvp
    if engine == "auto" and hook is not None:
        return problem.implicit_jvp if implicit_only else problem.rhs_jvp
    f = getattr(problem, "f1", problem.f) if implicit_only else problem.f
    return FieldJVP(f, "fd" if engine == "auto" else engine, work)


def make_linear_solver(problem: ODEProblem, work: WorkCounts, norm: ErrorNorm, extra: dict, implicit_only: bool):
    """The linear solver asked for by ``linsolve`` ("dense", "gmres", or "auto": dense up to d = 64)."""
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
        krylov_jvp(problem, implicit_only, extra.get("jvp_engine", "auto"), work),
        work,
        norm,
        krylov_dim=extra.get("krylov_dim", 30),
        max_restarts=extra.get("krylov_restarts", 4),
        tol=extra.get("krylov_tol", 1e-3),
        precond=extra.get("precond"),
    )
