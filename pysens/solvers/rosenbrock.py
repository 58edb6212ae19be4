"""Rosenbrock methods for stiff ODEs on the torch backend: linearly implicit, no Newton iteration.

Generic form (Hairer & Wanner, Solving ODEs II, IV.7, in the transformed variables used by RODAS): with
J = ∂f/∂x and T = ∂f/∂t at (t, x), for i = 1..s

    u_i = x + Σ_{j<i} a_ij k_j,
    (I − hγ J) k_i = hγ [ f(t + c_i h, u_i) + d_i h T + Σ_{j<i} (C_ij / h) k_j ],

then x_new = x + Σ m_i k_i and the error estimate is Σ (m_i − m̂_i) k_i. Every stage solves with the same
matrix M = I − hγ J, so one factorisation (dense) or one linearisation point (matrix-free GMRES) serves the
step. Rodas4 and Rodas5P are stiffly accurate (x_new is the last stage's u_s + k_s, the error is k_s) and
need the exact Jacobian each step. ``Rosenbrock23`` is Shampine's L-stable W-method (MATLAB's ode23s).

T = ∂f/∂t comes from a forward-mode JVP in t, or a one-sided finite difference when f does not support it. With a
dense solve on f's own Jacobian, f(t, x), J and T usually come from one pass instead (f on d stacked copies of the
rows, one reverse pass: :meth:`RosenbrockStepper._linearise_fused`), chosen by timing both on the first step. A step
rejected for every sample keeps J and T for its retry (same point).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from pysens.derivatives.autotune import inside_transform

from .driver import Attempt, Counter, ErrorNorm, Stepper, WorkCounts, bcast, integrate
from .linalg import DenseSolver, GraphJVP, KrylovSolver, make_linear_solver
from .options import SolveOptions
from .problem import ODEProblem
from .solution import Solution


@dataclass(frozen=True)
class RosenbrockTableau:
    name: str
    order: int
    gamma: float
    a: tuple[tuple[float, ...], ...]  # row i: coefficients of k_0..k_{i-1} in u_i (row 0 empty)
    C: tuple[tuple[float, ...], ...]  # row i: C_ij for j < i
    c: tuple[float, ...]
    d: tuple[float, ...]
    m: tuple[float, ...]
    m_error: tuple[float, ...]
    reference: str = ""

    @property
    def stages(self) -> int:
        return len(self.c)


def _lower(rows) -> tuple[tuple[float, ...], ...]:
    """Strictly lower rows of a square table given as full rows."""
    return tuple(tuple(float(v) for v in row[:i]) for i, row in enumerate(rows))


def _rodas(name, order, gamma, A, C, c, d, reference) -> RosenbrockTableau:
    # stiffly accurate: x_new = u_s + k_s, i.e. m = (a_s1 … a_s,s−1, 1); the error estimate is k_s
    s = len(c)
    m = tuple(float(v) for v in A[s - 1][: s - 1]) + (1.0,)
    m_error = (0.0,) * (s - 1) + (1.0,)
    C_full = [[0.0] * s] + [list(row) + [0.0] * (s - len(row)) for row in C]
    return RosenbrockTableau(
        name,
        order,
        float(gamma),
        _lower(A),
        _lower(C_full),
        tuple(map(float, c)),
        tuple(map(float, d)),
        m,
        m_error,
        reference,
    )


RODAS4 = _rodas(
    "Rodas4",
    4,
    0.25,
    [
        [0, 0, 0, 0, 0, 0],
        [1.544, 0, 0, 0, 0, 0],
        [0.9466785280815826, 0.2557011698983284, 0, 0, 0, 0],
        [3.314825187068521, 2.896124015972201, 0.9986419139977817, 0, 0, 0],
        [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950, 0, 0],
        [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950, 1, 0],
    ],
    [
        [-5.6688],
        [-2.430093356833875, -0.2063599157091915],
        [-0.1073529058151375, -9.594562251023355, -20.47028614809616],
        [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160],
        [8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136, -6.058818238834054],
    ],
    [0, 0.386, 0.21, 0.63, 1, 1],
    [0.25, -0.1043, 0.1035, -0.0362, 0, 0],
    "Hairer & Wanner, Solving ODEs II (RODAS, coefficients of Rodas4)",
)

RODAS5P = _rodas(
    "Rodas5P",
    5,
    0.21193756319429014,
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [3.0, 0, 0, 0, 0, 0, 0, 0],
        [2.849394379747939, 0.45842242204463923, 0, 0, 0, 0, 0, 0],
        [-6.954028509809101, 2.489845061869568, -10.358996098473584, 0, 0, 0, 0, 0],
        [2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641, 0, 0, 0, 0],
        [
            -7.502846399306121,
            2.561846144803919,
            -11.627539656261098,
            -0.18268767659942256,
            0.030198172008377946,
            0,
            0,
            0,
        ],
        [
            -7.502846399306121,
            2.561846144803919,
            -11.627539656261098,
            -0.18268767659942256,
            0.030198172008377946,
            1,
            0,
            0,
        ],
        [
            -7.502846399306121,
            2.561846144803919,
            -11.627539656261098,
            -0.18268767659942256,
            0.030198172008377946,
            1,
            1,
            0,
        ],
    ],
    [
        [-14.155112264123755],
        [-17.97296035885952, -2.859693295451294],
        [147.12150275711716, -1.41221402718213, 71.68940251302358],
        [165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306],
        [24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125, -0.6610691825249471],
        [
            30.91273214028599,
            -3.1208243349937974,
            77.79954646070892,
            34.28646028294783,
            -19.097331116725623,
            -28.087943162872662,
        ],
        [
            37.80277123390563,
            -3.2571969029072276,
            112.26918849496327,
            66.9347231244047,
            -40.06618937091002,
            -54.66780262877968,
            -9.48861652309627,
        ],
    ],
    [0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716, 0.4288403609558664, 1, 1, 1],
    [0.21193756319429014, -0.42387512638858027, -0.3384627126235924, 1.8046452872882734, 2.325825639765069, 0, 0, 0],
    "Steinebach (2023), Rodas5P: improved Rodas5 for index-1 DAEs and parabolic PDEs",
)

# ROS3P is deliberately absent: its embedded pair gives K1 = K2, i.e. a zero error estimate, on every linear
# autonomous problem (the heat equation included), so its adaptive mode would silently take huge steps there.
ROSENBROCK_TABLEAUS = {t.name: t for t in (RODAS4, RODAS5P)}
ROSENBROCK_METHODS = ("Rosenbrock23", *ROSENBROCK_TABLEAUS)
_R23_D = 1.0 / (2.0 + math.sqrt(2.0))
# refine a step's dense solves when their rounding, eps·(|k| + hγ|J||k|), exceeds this fraction of atol (per sample)
REFINE_FRACTION_OF_ATOL = 1e-3
_R23_E32 = 6.0 + math.sqrt(2.0)
FUSED_TIMING_ROUNDS = 3  # first-step timings of the fused vs separate linearisation (RosenbrockStepper)
FUSED_MARGIN = 1.25


class _Workspace:
    """A Rosenbrock step's accumulator ``acc`` ``[2, s + 1, N]`` (N = B·d): plane 0, row i (< s) accumulates
    Σ_j a_ij k_j, row s the solution increment Σ_j m_j k_j; plane 1, row i accumulates Σ_j C_ij k_j, row s the error
    estimate Σ_j (m_j − m̂_j) k_j. ``coef`` holds those coefficients as ``[2, s + 1, s]``; ``later[j]`` /
    ``coef_later[j]`` are the rows that stage j feeds (i > j) and their coefficients of k_j; ``a_sum[i]`` /
    ``c_sum[i]``: row i of each plane shaped like the state; ``c``: the nodes ``[s, 1]``."""

    def __init__(self, tab: RosenbrockTableau, x: Tensor):
        s, N = tab.stages, x.numel()
        coef = torch.zeros(2, s + 1, s, dtype=torch.float64)
        for i in range(1, s):
            coef[0, i, :i] = torch.tensor(tab.a[i], dtype=torch.float64)
            coef[1, i, :i] = torch.tensor(tab.C[i], dtype=torch.float64)
        coef[0, s] = torch.tensor(tab.m, dtype=torch.float64)
        coef[1, s] = torch.tensor(tab.m_error, dtype=torch.float64)
        coef = coef.to(dtype=x.dtype, device=x.device)
        self.acc = torch.zeros(2, s + 1, N, dtype=x.dtype, device=x.device)
        self.flat = (1, 1, N)
        self.later = [self.acc[:, j + 1 :] for j in range(s)]
        self.coef_later = [coef[:, j + 1 :, j, None] for j in range(s)]
        self.a_sum = [self.acc[0, i].view(x.shape) for i in range(s + 1)]
        self.c_sum = [self.acc[1, i].view(x.shape) for i in range(s + 1)]
        self.c = torch.tensor(tab.c, dtype=torch.float64, device=x.device)[:, None]


class RosenbrockStepper(Stepper):
    dense = False

    def __init__(
        self, problem: ODEProblem, name: str, norm: ErrorNorm, extra: dict, tab: RosenbrockTableau | None = None
    ):
        self.problem, self.name, self.norm = problem, name, norm
        self.tab = ROSENBROCK_TABLEAUS.get(name) if tab is None else tab
        self.order = 2 if self.tab is None else self.tab.order
        self.error_order = self.order
        self.f = Counter(problem.f, problem.x0.dtype)
        self.work = WorkCounts()
        self.linear = make_linear_solver(problem, self.work, norm, extra, implicit_only=False, newton=False)
        self.f0: Tensor | None = None
        dense = isinstance(self.linear, DenseSolver)
        self.graph_jvp = GraphJVP(problem, problem.f, implicit_only=False) if dense else None
        self._refine: bool | None = None  # this step's solves are refined (decided at its first solve)
        self._refine_rows: Tensor | None = None
        self._refine_every = False
        self._floor: Tensor | None = None
        self._fused: bool | None = None  # f, J and ∂f/∂t from one pass (decided after the first step)
        self._t_jvp_ok = False
        self._same_point = False  # the last attempt was rejected for every sample: J and T still hold
        self._T: Tensor | None = None
        self._ws: _Workspace | None = None
        self._selector: Tensor | None = None

    def start(self, t: Tensor, x: Tensor) -> Tensor:
        self.f0 = self.f(t, x)
        return self.f0

    def _time_derivative(self, t: Tensor, x: Tensor, h: Tensor, f0: Tensor | None = None) -> Tensor:
        """∂f/∂t at (t, x): forward mode in t, else a finite difference in the direction of h (from ``f0`` = f(t, x),
        default the step's own)."""
        tt = t.to(x.dtype)
        try:
            self.f.n += 1
            T = torch.func.jvp(lambda s: self.problem.f(s, x), (tt,), (torch.ones_like(tt),))[1]
            self._t_jvp_ok = True
            return T
        except Exception:  # f not differentiable in t (e.g. numpy inside): fall back, still per sample
            self._t_jvp_ok = False
            delta = math.sqrt(torch.finfo(x.dtype).eps) * t.abs().clamp_min(1.0)
            delta = torch.where(h < 0, -delta, delta)
            f0 = self.f0 if f0 is None else f0
            return (self.f(t + delta, x) - f0) / bcast(delta.to(x.dtype), x)

    def _fusable(self, x: Tensor) -> bool:
        """Whether f(t, x), J and ∂f/∂t may come from one replicated-rows pass (:meth:`_linearise_fused`): a dense
        solve on the Jacobian of f itself, no graph through x, not inside a ``torch.func`` transform."""
        dense_of_f = isinstance(self.linear, DenseSolver) and self.problem.jac is None
        return dense_of_f and not x.requires_grad and not inside_transform(x)

    def _linearise_fused(self, t: Tensor, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(f(t, x), J [B, d, d], ∂f/∂t or None)`` from ONE evaluation of f on d stacked copies of the rows (t
        repeated with them) and ONE reverse pass with cotangent e_i on copy i: row i of every J_b and, from the
        times' gradient, ∂f_i/∂t; copy 0 is f(t, x) itself. None: f does not depend on t (∂f/∂t = 0)."""
        B, d = x.shape[0], self.problem.dim
        leaf = x.detach().repeat(d, *([1] * (x.dim() - 1))).requires_grad_(True)
        times = t.to(x.dtype).detach().repeat(d).requires_grad_(True)
        if self._selector is None or self._selector.shape[0] != d * B:
            eye = torch.eye(d, dtype=x.dtype, device=x.device)
            self._selector = eye[:, None, :].expand(d, B, d).reshape(d * B, *x.shape[1:])
        with torch.enable_grad():
            y = self.problem.f(times, leaf)
            if y.shape != leaf.shape:
                raise ValueError(f"f must map rows shaped {tuple(x.shape[1:])} to the same shape, got {tuple(y.shape)}")
            if y.requires_grad:
                gx, gt = torch.autograd.grad(y, (leaf, times), self._selector, allow_unused=True)
            else:  # f depends on neither x nor t
                gx = gt = None
        f0 = y.detach()[:B]
        J = torch.zeros(B, d, d, dtype=x.dtype, device=x.device) if gx is None else gx.reshape(d, B, d).permute(1, 0, 2)
        T = None if gt is None else gt.reshape(d, B).T.reshape(x.shape)
        return f0, J, T

    def _linearise_separate(self, t: Tensor, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(f(t, x), J, ∂f/∂t)`` by three evaluations: f, the problem's Jacobian (its ``jac`` hook or
        :func:`pysens.derivatives.row_jacobian`) and :meth:`_time_derivative`."""
        f0 = self.f(t, x) if self.f0 is None else self.f0
        self.f0 = f0  # the finite-difference ∂f/∂t uses it
        return f0, self.linear.jacobian(t.to(x.dtype), x), self._time_derivative(t, x, h)

    def _fused_is_faster(self, t: Tensor, x: Tensor, h: Tensor) -> bool:
        """Both linearisations timed ``FUSED_TIMING_ROUNDS`` times, interleaved; the fused pass is taken unless the
        separate one's best time beats it by ``FUSED_MARGIN`` (fewer operations: it wins on the small systems a
        dense solve serves unless f's own cost dominates; the margin keeps a load burst on a shared machine from
        flipping the choice). Both are exact (equal to round-off), so the choice costs speed, never accuracy."""
        best = {"fused": math.inf, "separate": math.inf}
        nf, rows = self.f.n, self.f.rows
        try:
            for _ in range(FUSED_TIMING_ROUNDS):
                for name, run in (("fused", self._linearise_fused), ("separate", self._linearise_separate)):
                    start = time.perf_counter()
                    run(t, x, h)
                    best[name] = min(best[name], time.perf_counter() - start)
        except (RuntimeError, NotImplementedError):  # an operation of f without a reverse-mode derivative
            return False
        finally:
            self.f.n, self.f.rows = nf, rows  # measuring is not the solve's work
        return best["fused"] <= FUSED_MARGIN * best["separate"]

    def _linearise(self, t: Tensor, x: Tensor, h: Tensor) -> Tensor | None:
        """Set J (and f0) at the step's start; returns ∂f/∂t there (None when f does not depend on t).

        Where :meth:`_fusable`, the first step measures the fused pass against the separate evaluations
        (:meth:`_fused_is_faster`) and later steps run the faster; the fused pass runs
        only where forward mode in t ran on the first step (an f that cannot be differentiated in t, e.g. numpy
        inside, keeps the finite-difference ∂f/∂t of the separate path). A time read through ``float(t)`` leaves
        the graph in either mode and reads as ∂f/∂t = 0 (as before this pass existed)."""
        if self._same_point:  # every sample was rejected: same (t, x), same J and ∂f/∂t
            return self._T
        if not isinstance(self.linear, DenseSolver):
            if self.f0 is None:
                self.f0 = self.f(t, x)
            self.linear.set_jacobian(t, x)
            self._T = self._time_derivative(t, x, h)
            return self._T
        fresh_f0 = self.f0 is None
        if self._fused is None:  # first step: the separate path, then (f differentiable in t) the faster of both
            f0, J, T = self._linearise_separate(t, x, h)
            self._fused = self._fusable(x) and self._t_jvp_ok and self._fused_is_faster(t, x, h)
        elif self._fused:
            f0, J, T = self._linearise_fused(t, x)
            if fresh_f0:  # copy 0 of the pass: the evaluation of f at the step's start
                self.f.n += 1
                self.f.rows += x.shape[0]
        else:
            f0, J, T = self._linearise_separate(t, x, h)
        self.linear.set_jacobian(t, x, J=J)
        self.f0 = f0 if fresh_f0 else self.f0
        self._T = T
        return T

    def attempt(self, t: Tensor, x: Tensor, h: Tensor, adaptive: bool) -> Attempt:
        gamma = _R23_D if self.tab is None else self.tab.gamma
        hgamma = h * gamma
        T = self._linearise(t, x, h)
        singular = self._factor(hgamma)
        self._t, self._x, self._refine = t, x, None
        # Rosenbrock23's stage vectors are slopes (x_new = x + h k): their rounding reaches x times |h|
        self._k_to_x = bcast(h.abs().to(x.dtype), x) if self.tab is None else None
        hb = bcast(h.to(x.dtype), x)
        if self.tab is None:
            x_new, err_vec = self._rosenbrock23(t, x, h, hb, torch.zeros_like(x) if T is None else T)
        else:
            x_new, err_vec = self._generic(t, x, h, hb, T)
        err = self.norm(err_vec, x, x_new) if adaptive else None
        return Attempt(x_new=x_new, err=err, failed=singular)

    def _factor(self, hgamma: Tensor) -> Tensor:
        """Factor M = I − hγ J for the step; the ``[B]`` mask of singular samples."""
        return self.linear.factor(hgamma)

    def _solve(self, r: Tensor) -> Tensor:
        """``M⁻¹ r``, refined where the solve's rounding would matter against atol.

        An LU solve is exact only to ``eps·(|k| + hγ|J||k|)`` per component (backward error), and a linear invariant
        cᵀx of the system (``cᵀJ = 0``, ``cᵀM⁻¹ = cᵀ``) takes that error whole, step after step: on stiff kinetics
        the gross terms are fluxes 10⁶ times the species they pass through, so species of 1e−22 (E5) drift by
        1e−22 per step although each step is accurate to rtol of the current state. Where that rounding exceeds
        ``REFINE_FRACTION_OF_ATOL`` of atol (decided per sample at the step's first solve), one step of iterative
        refinement with the residual's J k taken along f's own arithmetic (:class:`GraphJVP`) removes it: the
        invariant then only sees the rounding of the correction (eps² × gross) and of f. The common case (rounding
        far below atol) costs one |J||k| product per step.
        """
        k = self.linear.solve(r)
        if self._refine is None:  # decided at the step's first solve
            self._refine = self._decide_refinement(k)
        if not self._refine:
            return k
        if not (self.graph_jvp.available or self.graph_jvp.hook is not None):  # f turned out not to take complex x
            self._refine = False
            return k
        self.f.n += 1
        Jk = self.graph_jvp(self._t.to(k.dtype), self._x, k)
        if Jk is None:
            return k
        return self.linear.refine(r, k, Jk, self._refine_rows, self._floor, every=self._refine_every)

    def _decide_refinement(self, k: Tensor) -> bool:
        """Whether this step's solves are refined (:meth:`_solve`); sets the per-sample ``_refine_rows``."""
        if self.graph_jvp is None or not (self.graph_jvp.available or self.graph_jvp.hook is not None):
            return False
        if self._floor is None:  # the error norm's absolute floor (atol; rtol·|x0| where atol is 0)
            zero = self.norm.scale(torch.zeros_like(self._x))
            self._floor = torch.where(zero > 0, zero, self.norm.scale(self.problem.x0.to(zero.dtype)))
            self._floor_tiny = self._floor.clamp_min(torch.finfo(k.dtype).tiny)
        gross = self.linear.gross(k) if self._k_to_x is None else self._k_to_x * self.linear.gross(k)
        rounding = torch.finfo(k.dtype).eps * gross / self._floor_tiny
        self._refine_rows = rounding.flatten(1).amax(1) > REFINE_FRACTION_OF_ATOL
        count = int(self._refine_rows.sum())
        self._refine_every = count == k.shape[0]
        return count > 0

    def _workspace(self, x: Tensor) -> _Workspace:
        """The step's buffers and their views, made once per state shape (Rosenbrock solves keep the whole batch)."""
        ws = self._ws
        if ws is None or ws.acc.shape[2] != x.numel() or ws.acc.dtype != x.dtype or ws.acc.device != x.device:
            ws = self._ws = _Workspace(self.tab, x)
        return ws

    def _generic(self, t, x, h, hb, T):
        """One step of an s-stage method (module docstring). Each stage's k_j is folded at once into the running
        sums of every later stage (Σ a_ij k_j and Σ C_ij k_j for all i > j, and the solution and error sums) by one
        elementwise ``addcmul`` over a ``[2, s + 1, N]`` accumulator: the same sums, in the same order (j
        ascending), as a loop of axpys per stage, in one operation per stage."""
        tab, ws = self.tab, self._workspace(x)
        s = tab.stages
        ws.acc.zero_()
        times = t + ws.c * h  # [s, B]: t + c_i h
        hg = hb * tab.gamma
        inv_h = torch.where(hb != 0, 1.0 / torch.where(hb != 0, hb, 1.0), torch.zeros_like(hb))
        for i in range(s):
            rhs = self.f0 if i == 0 else self.f(times[i], x + ws.a_sum[i])
            if T is not None and tab.d[i] != 0.0:
                rhs = rhs + (tab.d[i] * hb) * T
            if i:
                rhs = rhs + inv_h * ws.c_sum[i]
            k = self._solve(hg * rhs)
            ws.later[i].addcmul_(ws.coef_later[i], k.reshape(ws.flat))
        # the error sum is a view into the workspace: the caller's norm reads it before the next step
        return x + ws.a_sum[s], ws.c_sum[s]

    def _rosenbrock23(self, t, x, h, hb, T):
        d = _R23_D
        # Shampine & Reichelt (1997), ode23s, with M = I − h d J
        k1 = self._solve(self.f0 + (hb * d) * T)
        f1 = self.f(t + 0.5 * h, x + 0.5 * hb * k1)
        k2 = self._solve(f1 - k1) + k1
        x_new = x + hb * k2
        f2 = self.f(t + h, x_new)
        self._f2 = f2
        k3 = self._solve(f2 - _R23_E32 * (k2 - f1) - 2.0 * (k1 - self.f0) + (hb * d) * T)
        return x_new, (hb / 6.0) * (k1 - 2.0 * k2 + k3)

    def commit(self, accept: Tensor, t_new: Tensor, x_new: Tensor, attempt: Attempt) -> None:
        moved = bool(accept.any())
        self._same_point = not moved and isinstance(self.linear, DenseSolver)
        if self.tab is None:  # FSAL: f at the new point was the third stage's input
            self.f0 = torch.where(bcast(accept, x_new), self._f2, self.f0)
        else:
            self.f0 = None if moved else self.f0


def solve_rosenbrock(problem: ODEProblem, name: str, opts: SolveOptions) -> Solution:
    norm = ErrorNorm(opts.rtol, opts.atol, problem.x0)
    stepper = RosenbrockStepper(problem, name, norm, opts.extra)
    sol = integrate(problem, stepper, opts, norm)
    if isinstance(stepper.linear, KrylovSolver):
        sol.extra["krylov_unconverged"] = stepper.linear.unconverged
    return sol
