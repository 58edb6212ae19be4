"""Fixed-step SDE methods of the torch backend, for additive and diagonal noise.

The SDE is Itô, dx = f(t, x) dt + g(t, x) dW, with ``g(t, x)`` shaped like ``x`` and multiplying the
increment elementwise (diagonal noise; additive when g does not depend on x). Every method runs on a fixed
grid (``dt`` or ``timesteps``) shared by the batch, under the same driver as the ODE methods
(:func:`pysens.solvers.driver.integrate`): per-sample return codes, ``saveat`` rows, partial solutions. Time may
run backwards (reverse-time samplers): the step h is signed and the increments have variance |h|.

Notation for one step from t to t + h: ΔW the Brownian increment, ΔZ = ∫_t^{t+h} (W(s) − W(t)) |ds| its time
integral (see :mod:`pysens.solvers.noise`), χ = ΔZ / |h|, f_n = f(t, x_n), g_n = g(t, x_n).

* ``EM``, Euler–Maruyama (Kloeden & Platen 1992, §10.2); strong order 0.5, 1 for additive noise:
  x_{n+1} = x_n + f_n h + g_n ΔW.
* ``EulerHeun``, the Stratonovich Heun predictor–corrector (Kloeden & Platen §11.1; torchsde's ``euler_heun``):
  x̃ = x_n + f_n h + g_n ΔW,  x_{n+1} = x_n + (f_n + f(t+h, x̃)) h/2 + (g_n + g(t+h, x̃)) ΔW/2.
  It converges to the *Stratonovich* solution (strong order 1 for commutative noise); for additive noise this
  equals the Itô solution, for multiplicative noise it does not (GBM: X0 exp(μt + σW) instead of the Itô
  X0 exp((μ − σ²/2)t + σW)).
* ``SRA1`` (Rößler 2010) and ``SOSRA`` (Rackauckas & Nie 2018), stochastic Runge–Kutta methods of strong order
  1.5 for additive noise, as tableaus of the SRA family (see :class:`SRATableau`).
* ``ImplicitEM``, the drift-implicit θ-method (Kloeden & Platen §12.2):
  x_{n+1} = x_n + [(1 − θ) f(t, x_n) + θ f(t+h, x_{n+1})] h + g_n ΔW, solved by Newton's method per sample.
  On a :class:`~pysens.solvers.problem.SplitSDEProblem` only f1 is implicit and f2 is explicit (the IMEX step for
  stiff method-of-lines SPDEs): x_{n+1} = x_n + [(1 − θ) f1(t, x_n) + θ f1(t+h, x_{n+1}) + f2(t, x_n)] h + g_n ΔW.
  Strong order 0.5 (1 for additive noise); θ = 1 by default, as in current StochasticDiffEq.jl (older releases
  used θ = 1/2, now ``STrapezoid``).

ImplicitEM options, passed through ``solve(..., **options)`` (``SolveOptions.extra``; the method table lists which
ones ``solve`` accepts): ``theta`` (in [0, 1], default 1), ``linsolve`` ("auto": dense up to d = 64, "dense":
batched LU of I − θhJ with per-sample Jacobians [B, d, d], "gmres": matrix-free GMRES on JVPs; the solvers and the
Krylov options ``krylov_dim``, ``krylov_restarts``, ``krylov_tol``, ``precond`` are the stiff ODE methods', see
:mod:`pysens.solvers.linalg`; GMRES weighs residuals by ``atol + rtol |x|``), ``newton_tol`` (default 0.01·sqrt(eps):
the per-sample RMS of the Newton update relative to 1 + |x|) and ``newton_maxiters`` (default 10). A sample whose
Newton iteration does not converge (or whose I − θhJ is singular) stops with retcode ``ConvergenceFailure``; a
non-finite state gives ``Unstable``; either way the other samples go on and the rows already saved are kept.

Stats: ``nf`` counts drift calls (f1 calls on split problems for ImplicitEM; f2 calls are ``extra["nf2"]``),
``extra["ng"]`` diffusion calls; ImplicitEM also counts ``njac``, ``nfactor``, ``nlinsolve`` and
``extra["newton_iters"]``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .driver import Attempt, Counter, ErrorNorm, Stepper, WorkCounts, bcast, integrate, rms
from .explicit import stage_sum
from .linalg import make_linear_solver
from .methods import MethodInfo, check_noise
from .noise import sample_increments
from .options import SolveOptions, fixed_grid
from .problem import ODEProblem, SDEProblem, SplitODEProblem, SplitSDEProblem
from .solution import Solution


@dataclass(frozen=True)
class SRATableau:
    """A stochastic Runge–Kutta method for additive noise (Rößler 2010, eq. (6.1)), for s stages:

        H_i = x_n + h Σ_j A0[i][j] f(t + c0[j] h, H_j) + χ Σ_j B0[i][j] g(t + c1[j] h),
        x_{n+1} = x_n + h Σ_i α_i f(t + c0[i] h, H_i) + Σ_i (β1_i ΔW + β2_i χ) g(t + c1[i] h),

    with A0, B0 strictly lower triangular (row i holds stages 0..i-1). Strong order 1.5 needs (Rößler 2010,
    Thm. 6.3) Σα = 1, Σβ1 = 1, Σβ2 = 0, α·B0e = 1, α·A0e = 1/2, α·(B0e)² = 3/2, β1·c1 = 1, β2·c1 = −1.
    """

    name: str
    c0: tuple[float, ...]
    c1: tuple[float, ...]
    A0: tuple[tuple[float, ...], ...]
    B0: tuple[tuple[float, ...], ...]
    alpha: tuple[float, ...]
    beta1: tuple[float, ...]
    beta2: tuple[float, ...]
    reference: str = ""

    @property
    def stages(self) -> int:
        return len(self.alpha)


SRA1 = SRATableau(
    name="SRA1",
    c0=(0.0, 3 / 4),
    c1=(1.0, 0.0),
    A0=((), (3 / 4,)),
    B0=((), (3 / 2,)),
    alpha=(1 / 3, 2 / 3),
    beta1=(1.0, 0.0),
    beta2=(-1.0, 1.0),
    reference="Rößler, SIAM J. Numer. Anal. 48(3):922–952, 2010, Table 6.1 (SRA1)",
)

SOSRA = SRATableau(
    name="SOSRA",
    c0=(0.0, 0.6923962376159507, 1.0),
    c1=(0.0, 0.041248171110700504, 1.0),
    A0=((), (0.6923962376159507,), (-3.1609142252828395, 4.1609142252828395)),
    B0=((), (1.3371632704399763,), (1.442371048468624, 1.8632741501139225)),
    alpha=(0.2889874966892885, 0.6859880440839937, 0.025024459226717772),
    beta1=(-16.792534242221663, 17.514995785380226, 0.27753845684143835),
    beta2=(0.4237535769069274, 0.6010381474428539, -1.0247917243497813),
    reference=(
        "Rackauckas & Nie, 'Stability-optimized high order methods and stiffness detection for pathwise stiff "
        "stochastic differential equations', IEEE HPEC 2020 (arXiv:1804.04344); coefficients as in "
        "StochasticDiffEq.jl constructSOSRA"
    ),
)

SRA_TABLEAUS = {tab.name: tab for tab in (SRA1, SOSRA)}


_StepResult = tuple[Tensor, Tensor | None]  # (x_new, samples whose implicit solve failed or None)


class _Increments:
    """(ΔW, ΔZ, |h|) for step n of the solver grid: from the problem's Brownian grid, or drawn afresh.

    A Brownian grid is checked once, before any work: it must cover ``tspan`` and hold every solver grid time.
    """

    def __init__(self, problem: SDEProblem, grid: Tensor, iterated: bool, generator: torch.Generator | None):
        x0 = problem.x0
        self.grid, self.iterated, self.generator = grid, iterated, generator
        self.shape, self.dtype, self.device = x0.shape, x0.dtype, x0.device
        self.slack = 1e-12 * max(1.0, float(grid.abs().max()))
        self.path = problem.brownian
        if self.path is not None:
            self.path.check_covers(problem.tspan, x0)
            self.index = self.path.indices(grid)

    def __call__(self, n: int) -> tuple[Tensor, Tensor | None, float]:
        h = float(self.grid[n + 1] - self.grid[n])
        if self.path is None:
            dw, dz = sample_increments(
                h, self.shape, iterated=self.iterated, generator=self.generator, dtype=self.dtype, device=self.device
            )
            return dw, dz, abs(h)
        k_a, k_b = self.index[n], self.index[n + 1]
        dw = self.path.increment_between(k_a, k_b).to(dtype=self.dtype, device=self.device)
        dz = None
        if self.iterated:
            dz = self.path.iterated_integral_between(k_a, k_b).to(dtype=self.dtype, device=self.device)
        return dw, dz, abs(h)


class SDEStepper(Stepper):
    """The common part of the SDE methods: noise for each grid step, counters, the reused first drift.

    Subclasses implement :meth:`step`; the driver calls :meth:`attempt` once per grid step (fixed-step mode).
    """

    order = 1
    error_order = None
    dense = False
    iterated = False  # whether the method needs ΔZ

    def __init__(self, problem: SDEProblem, method: MethodInfo, noise: _Increments):
        dtype = problem.x0.dtype
        self.name = method.name
        self.problem, self.noise = problem, noise
        self.f = Counter(problem.f, dtype)
        self.g = Counter(problem.g, dtype)
        self.work = WorkCounts(extra={"ng": 0})
        self._n = 0
        self._f0: Tensor | None = None

    def start(self, t: Tensor, x: Tensor) -> Tensor:
        self._f0 = self.f(t, x)
        return self._f0

    def drift(self, t: Tensor, x: Tensor) -> Tensor:
        """f(t, x) at the start of a step; the first step reuses the evaluation made by :meth:`start`."""
        if self._f0 is not None:
            f0, self._f0 = self._f0, None
            return f0
        return self.f(t, x)

    def attempt(self, t: Tensor, x: Tensor, h: Tensor, adaptive: bool) -> Attempt:
        n = self._n
        # the driver and the noise walk the same grid; a mismatch would silently pair steps with wrong increments
        off_grid = (t - self.noise.grid[n].item()).abs() > self.noise.slack
        if bool((off_grid & (h != 0)).any()):
            raise RuntimeError(f"internal error: SDE step {n} is out of step with the noise grid")
        dw, dz, habs = self.noise(n)
        x_new, failed = self.step(t, x, h, dw, dz, habs)
        return Attempt(x_new=x_new, err=None, failed=failed)

    def commit(self, accept: Tensor, t_new: Tensor, x_new: Tensor, attempt: Attempt) -> None:
        self._n += 1
        self._f0 = None
        self.work.extra["ng"] = self.g.n

    def step(self, t: Tensor, x: Tensor, h: Tensor, dw: Tensor, dz: Tensor | None, habs: float) -> _StepResult:
        """One step for every sample: ``t``, ``h`` are ``[B]`` (float64, h = 0 for finished samples), ``x``,
        ``dw``, ``dz`` are ``[B, *event]``; returns the new state and the samples whose implicit solve failed."""
        raise NotImplementedError


class EMStepper(SDEStepper):
    """x_{n+1} = x_n + f_n h + g_n ΔW."""

    def step(self, t: Tensor, x: Tensor, h: Tensor, dw: Tensor, dz: Tensor | None, habs: float) -> _StepResult:
        hb = bcast(h.to(x.dtype), x)
        return x + self.drift(t, x) * hb + self.g(t, x) * dw, None


class EulerHeunStepper(SDEStepper):
    """Stratonovich Heun: an Euler predictor, then the trapezoid of f and g over the step."""

    def step(self, t: Tensor, x: Tensor, h: Tensor, dw: Tensor, dz: Tensor | None, habs: float) -> _StepResult:
        hb = bcast(h.to(x.dtype), x)
        f0, g0 = self.drift(t, x), self.g(t, x)
        pred = x + f0 * hb + g0 * dw
        t1 = t + h
        return x + 0.5 * (f0 + self.f(t1, pred)) * hb + 0.5 * (g0 + self.g(t1, pred)) * dw, None


class SRAStepper(SDEStepper):
    """Any :class:`SRATableau` (SRA1, SOSRA); stage drifts at their own times, g at its own (additive noise)."""

    iterated = True

    def __init__(self, problem: SDEProblem, method: MethodInfo, noise: _Increments):
        super().__init__(problem, method, noise)
        self.tab = SRA_TABLEAUS[method.name]

    def step(self, t: Tensor, x: Tensor, h: Tensor, dw: Tensor, dz: Tensor | None, habs: float) -> _StepResult:
        tab = self.tab
        hb = bcast(h.to(x.dtype), x)
        chi = dz / habs  # I_(1,0) / |h|
        fs: list[Tensor] = []
        gs: list[Tensor] = []
        for i in range(tab.stages):
            H = x
            drift_part = stage_sum(tab.A0[i], fs[:i])
            noise_part = stage_sum(tab.B0[i], gs[:i])
            if drift_part is not None:
                H = H + hb * drift_part
            if noise_part is not None:
                H = H + chi * noise_part
            fs.append(self.drift(t, x) if i == 0 and tab.c0[0] == 0.0 else self.f(t + tab.c0[i] * h, H))
            # additive noise: g does not depend on the state; H is passed only to keep g's signature
            gs.append(self.g(t + tab.c1[i] * h, H))
        x_new = x + hb * stage_sum(tab.alpha, fs)
        for weights, scale in ((tab.beta1, dw), (tab.beta2, chi)):
            part = stage_sum(weights, gs)
            if part is not None:
                x_new = x_new + scale * part
        return x_new, None


class ImplicitEMStepper(SDEStepper):
    """The drift-implicit θ-method, IMEX on split problems; options as in the module docstring."""

    def __init__(self, problem: SDEProblem, method: MethodInfo, noise: _Increments, options: dict, norm: ErrorNorm):
        super().__init__(problem, method, noise)
        x0 = problem.x0
        dtype = x0.dtype
        self.theta = _check_theta(options.get("theta", 1.0))
        self.tol = _check_positive(options.get("newton_tol", 0.01 * math.sqrt(torch.finfo(dtype).eps)), "newton_tol")
        self.maxiters = options.get("newton_maxiters", 10)
        if not isinstance(self.maxiters, int) or isinstance(self.maxiters, bool) or self.maxiters < 1:
            raise ValueError(f"newton_maxiters must be a positive integer, got {self.maxiters!r}")
        self.split = isinstance(problem, SplitSDEProblem) and method.imex
        if self.split:
            # nf counts the implicit part (the one Newton iterates on); f2 runs once per step
            self.f = Counter(problem.f1, dtype)
            self.f2 = Counter(problem.f2, dtype)
            self.work.extra["nf2"] = 0
        self._f20: Tensor | None = None
        self.work.extra["newton_iters"] = 0
        # the drift as an ODE problem hands Newton the same linear solvers (and the same "linsolve" choice:
        # "auto", "dense" or "gmres") as the stiff ODE methods; on a split problem only f1 is linearised
        drift = (
            SplitODEProblem(problem.f1, problem.f2, x0, problem.tspan)
            if self.split
            else ODEProblem(problem.f, x0, problem.tspan)
        )
        self.linear = make_linear_solver(drift, self.work, norm, options, implicit_only=self.split)

    def start(self, t: Tensor, x: Tensor) -> Tensor:
        if not self.split:
            return super().start(t, x)
        self._f0 = self.f(t, x)
        self._f20 = self.f2(t, x)
        return self._f0 + self._f20

    def commit(self, accept: Tensor, t_new: Tensor, x_new: Tensor, attempt: Attempt) -> None:
        super().commit(accept, t_new, x_new, attempt)
        if self.split:
            self._f20 = None
            self.work.extra["nf2"] = self.f2.n

    def step(self, t: Tensor, x: Tensor, h: Tensor, dw: Tensor, dz: Tensor | None, habs: float) -> _StepResult:
        theta = self.theta
        hb = bcast(h.to(x.dtype), x)
        base = x + self.g(t, x) * dw
        if theta < 1.0:
            base = base + (1.0 - theta) * hb * self.drift(t, x)
        if self.split:
            f2 = self._f20 if self._f20 is not None else self.f2(t, x)
            base = base + hb * f2
        if theta == 0.0:
            return base, None
        return self._newton(t + h, x, base, theta * h, active=h != 0)

    def _newton(self, t1: Tensor, x: Tensor, base: Tensor, a: Tensor, active: Tensor) -> _StepResult:
        """Solve y = base + a f(t1, y) per sample (a = θh, ``[B]``) by Newton with a reused Jacobian.

        The Jacobian is taken at the first iterate (one Jacobian and one factorisation per step solve linear drifts
        exactly) and refreshed at the current iterate when some sample converges slower than rate 0.1, which makes
        the iteration quadratic again on nonlinear drifts. A sample has converged when its update, or the error left
        after it as estimated from the observed rate ρ (ρ/(1 − ρ) times the update; Hairer & Wanner II, IV.8), is
        below ``newton_tol``. Returns (y, failed); failed samples get y = x, so the driver reports them as
        ``ConvergenceFailure`` rather than ``Unstable``.
        """
        ab = bcast(a.to(x.dtype), x)
        y = base
        self.linear.set_jacobian(t1, y)
        failed = active & self.linear.factor(a)
        converged = ~active
        previous: Tensor | None = None
        for _ in range(self.maxiters):
            busy = ~(converged | failed)
            residual = y - base - ab * self.f(t1, y)
            delta = self.linear.solve(-residual)
            y = y + torch.where(bcast(busy, y), delta, torch.zeros_like(delta))
            size = rms(delta / (1.0 + y.abs())).to(torch.float64)
            self.work.extra["newton_iters"] += 1
            small = size <= self.tol
            if previous is not None:
                rate = size / previous.clamp_min(torch.finfo(torch.float64).tiny)
                small |= (rate < 1) & (rate / (1 - rate).clamp_min(1e-300) * size <= self.tol)
            failed |= busy & ~torch.isfinite(size)
            converged |= busy & ~failed & small
            busy = ~(converged | failed)
            if not bool(busy.any()):
                break
            if previous is not None and bool((busy & (size > 0.1 * previous)).any()):
                self.linear.set_jacobian(t1, y)
                failed |= busy & self.linear.factor(a)
            previous = size
        failed = active & ~converged
        return torch.where(bcast(failed, y), x, y), failed


def _check_theta(theta) -> float:
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0.0 <= float(theta) <= 1.0:
        raise ValueError(f"theta must be a number in [0, 1] (1: drift-implicit Euler, 1/2: trapezoid), got {theta!r}")
    return float(theta)


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


_STEPPERS: dict[str, type[SDEStepper]] = {
    "EM": EMStepper,
    "EulerHeun": EulerHeunStepper,
    "SRA1": SRAStepper,
    "SOSRA": SRAStepper,
    "ImplicitEM": ImplicitEMStepper,
}


def solve_sde(problem: SDEProblem, method: MethodInfo, opts: SolveOptions) -> Solution:
    """Solve ``problem`` with the SDE ``method`` on the fixed grid given by ``opts`` (``dt`` or ``timesteps``)."""
    if not isinstance(problem, SDEProblem):
        raise TypeError(f"{method.name} solves SDEProblems, got {type(problem).__name__}")
    check_noise(method, problem.noise)
    if method.name == "EulerHeun" and problem.noise == "diagonal":
        warnings.warn(
            "EulerHeun converges to the Stratonovich solution; with diagonal (state-dependent) noise it differs "
            "from the Itô solution of this SDEProblem (use EM or ImplicitEM for Itô)",
            stacklevel=3,
        )
    if opts.adaptive:
        raise ValueError(
            f"{method.name} runs on a fixed grid on the torch backend: give dt (a step size) or timesteps (a grid), "
            "and leave adaptive unset; adaptive SDE stepping is available on backend='julia'"
        )
    unknown = sorted(set(opts.extra) - set(method.options))
    if unknown:  # solve() checks this too; direct callers of the backend get the same message
        accepted = ", ".join(method.options) or "none"
        raise TypeError(f"unknown solve options for {method.name}: {', '.join(unknown)} (it accepts: {accepted})")
    cls = _STEPPERS[method.name]
    grid = fixed_grid(problem.tspan, opts.dt, opts.timesteps, opts.saveat)  # the grid the driver walks
    noise = _Increments(problem, grid, cls.iterated, opts.generator)
    norm = ErrorNorm(opts.rtol, opts.atol, problem.x0)
    if cls is ImplicitEMStepper:
        stepper = ImplicitEMStepper(problem, method, noise, opts.extra, norm)
    else:
        stepper = cls(problem, method, noise)
    return integrate(problem, stepper, opts, norm)


SDE_SOLVERS = dict.fromkeys(_STEPPERS, solve_sde)
