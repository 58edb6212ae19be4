"""Sample sensitivity of the probability-flow ODE: the augmented tangent system (digest §3.1, Algorithm B §4.2).

With x_T fixed, the sample x_{t1}(ε) of the model s + ε δs has the derivative y = ∂x_{t1}/∂ε at ε = 0. The state

    z = (x, ℓ, y_1, …, y_P)      packed as StateLayout blocks  x [*event], ell [], y [P, *event]   → [B, D]

is integrated **from T down to t1** as one ODE on any backend and method:

    dx/dt   = f(t) x − ½ g(t)² s_t(x)                                      x(T) = x_T
    dℓ/dt   = −d f(t) + ½ g(t)² ∇·s_t(x)                                   ℓ(T) = log ρ_T(x_T) (default: the prior)
    dy_p/dt = f(t) y_p − ½ g(t)² (J_{s_t}(x) y_p + δs_p(x, ℓ))              y_p(T) = 0
              δs_p = exp(log σ_{p,t}(x) − ℓ)(∇log σ_{p,t}(x) − s_t(x))       (eq. ★, per part of the direction)

ℓ = log ρ_t(x_t) is the change of variables along the sample path; the P sensitivities share x and ℓ and are linear
in y, so one vmapped JVP per stage gives every J_s y_p and the divergence (:mod:`pysens.sensitivity.tangents`).
The first-order prediction of the perturbed sample is x_{t1} + ε y_{t1} (:meth:`SensitivityResult.predict`).

EDM/denoiser models: pass ``parameterization="denoiser"`` (or ``"epsilon"``) and the model is read through the
adapters of :mod:`pysens.diffusion.adapters` (s = (α D − x)/β²); with the EDM process (α = 1, β = t) the system above
is exactly the digest's EDM form dx/dt = (x − D)/t, dℓ/dt = −(d − ∇·D)/t, dy/dt = (y − J_D y)/t − r (D^σ − D)/t.

Robustness (digest §3.3): an error c in ℓ(T) shifts ℓ by c along the whole path and scales every y by e^{−c};
correlation and cosine comparisons are blind to it. With an exact model whose ``log_density`` is known, pass
``log_density=model.log_density`` and ℓ is evaluated in closed form at each stage instead of integrated (no
divergence, no ℓ block).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pysens.diffusion.adapters import DenoiserToScore, EpsilonToScore
from pysens.diffusion.divergence import hutchinson_probes
from pysens.diffusion.processes import ForwardProcess, Time, expand_as_batch, resolve_process, time_like
from pysens.diffusion.sampling import ScoreModel, check_cutoff, check_score_model
from pysens.sensitivity.measures import DataEdit, Perturbation, as_perturbations
from pysens.sensitivity.perturbation_bank import PerturbationBank
from pysens.sensitivity.reference import (
    DataLaw,
    Reference,
    ReferenceDiagnostics,
    reference_diagnostics,
    resolve_reference,
)
from pysens.sensitivity.tangents import DIVERGENCES, check_differentiable, score_jets
from pysens.solvers import BrownianGrid, ODEProblem, Solution, Stats, solve
from pysens.solvers.layout import StateLayout
from pysens.solvers.problem import check_state
from pysens.validation import check_output

__all__ = ["PARAMETERIZATIONS", "SensitivityResult", "TangentField", "as_score_model", "sample_sensitivity"]

PARAMETERIZATIONS = ("score", "denoiser", "epsilon")


def as_score_model(model: ScoreModel, process: ForwardProcess, parameterization: str) -> ScoreModel:
    """The model as a score model: ``"score"`` as is, ``"denoiser"`` (D ≈ E[X_0|x], EDM) or ``"epsilon"`` through
    the adapters."""
    if parameterization == "score":
        return model
    if parameterization == "denoiser":
        return DenoiserToScore(model, process)
    if parameterization == "epsilon":
        return EpsilonToScore(model, process)
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}; got {parameterization!r}")


@dataclass
class SensitivityResult:
    """Samples and their sensitivities to P perturbations of the data law.

    Attributes:
        x: ``[B, *event]`` samples at ``t1`` (after the final denoising step when one was asked for).
        sensitivity: ``[P, B, *event]``, y_p = ∂x/∂ε_p at ε = 0.
        log_density: ``[B]`` ℓ(t1) = log ρ_{t1}(x_{t1}) as tracked along the path.
        x_T: ``[B, *event]`` the noise the samples came from.
        terminal_log_density: ``[B]`` ℓ(T) the path started from.
        t1: the cut-off time.
        stats, retcode: work counters and the solve's return code (a failed sample's rows are NaN).
        solution: the augmented ODE solve (``layout`` unpacks its states), or None for the SDE and discrete modes.
        brownian: the Brownian path of the SDE mode (replayable), else None.
        perturbations: the P directions, in order.
        diagnostics: per-sample model-vs-data log-ratio and off-range flags
            (:class:`~pysens.sensitivity.reference.ReferenceDiagnostics`; its fields are None without ``data``).
    """

    x: Tensor
    sensitivity: Tensor
    log_density: Tensor
    x_T: Tensor
    terminal_log_density: Tensor
    t1: float
    stats: Stats
    retcode: str
    solution: Solution | None = None
    layout: StateLayout | None = None
    brownian: BrownianGrid | None = None
    perturbations: list[Perturbation] = field(default_factory=list)
    diagnostics: ReferenceDiagnostics | None = None

    def predicted_change(self, epsilon: float | Sequence[float] | Tensor) -> Tensor:
        """ε_p y_p ``[P, B, *event]``; ``epsilon`` is one number or one per perturbation (e.g. ``DataEdit.epsilon``)."""
        eps = torch.as_tensor(epsilon, dtype=self.sensitivity.dtype, device=self.sensitivity.device)
        P = self.sensitivity.shape[0]
        if eps.dim() == 0:
            eps = eps.expand(P)
        if eps.shape != (P,):
            raise ValueError(
                f"epsilon must be a number or hold one value per perturbation ({P}); got {tuple(eps.shape)}"
            )
        return eps.reshape(P, *([1] * (self.sensitivity.dim() - 1))) * self.sensitivity

    def predict(self, epsilon: float | Sequence[float] | Tensor) -> Tensor:
        """The first-order perturbed samples x + ε_p y_p, ``[P, B, *event]`` (digest §3.1)."""
        return self.x + self.predicted_change(epsilon)

    def path(self) -> dict[str, Tensor]:
        """The saved trajectory as named blocks: ``t`` ``[n]``, ``x`` ``[n, B, *event]``, ``ell`` ``[n, B]`` (when
        integrated) and ``y`` ``[n, P, B, *event]`` (when P > 0)."""
        if self.solution is None or self.layout is None:
            raise ValueError("this result has no ODE solution to unpack (SDE or discrete mode)")
        blocks = self.layout.unpack(self.solution.x)
        out = {"t": self.solution.t, **blocks}
        if "y" in out:
            out["y"] = out["y"].movedim(2, 1)
        return out


class TangentField:
    """The right-hand side of the augmented system (module docstring) for a score model and P perturbations.

    ``divergence``: "exact" or "hutchinson" (``probes`` ``[K, B, *event]``, fixed for a solve) when ℓ is
    integrated; ignored when ``log_density`` (closed-form ℓ(x, t)) is given. ``reference`` says which law the
    ratio and score of eq. (★) come from (:mod:`pysens.sensitivity.reference`; None: the model's).
    """

    def __init__(
        self,
        score: ScoreModel,
        process: ForwardProcess,
        perturbations: list[Perturbation],
        *,
        divergence: str = "exact",
        probes: Tensor | None = None,
        log_density: Callable[[Tensor, Time], Tensor] | None = None,
        chunk_size: int | None = None,
        reference: Reference | None = None,
    ) -> None:
        self.score, self.process, self.perturbations = score, process, perturbations
        self.bank = PerturbationBank(perturbations)  # all P directions' δs in one batched evaluation
        self.reference = reference
        self.divergence = None if log_density is not None else divergence
        self.probes, self.log_density, self.chunk_size = probes, log_density, chunk_size

    def jvps_per_evaluation(self, d: int) -> int:
        """Tangents in the one vmapped JVP of an evaluation, for states of dimension d: P plus the divergence's."""
        P = len(self.perturbations)
        if self.divergence == "exact":
            return P + d
        if self.divergence == "hutchinson":
            return P + self.probes.shape[0]
        return P

    def __call__(
        self, t: Tensor, x: Tensor, ell: Tensor | None, y: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        """(dx/dt, dℓ/dt or None, dy/dt ``[P, B, *event]`` or None, ℓ used) at times ``t`` (0-d or ``[B]``)."""
        jets = score_jets(
            self.score, x, t, y, divergence=self.divergence, probes=self.probes, chunk_size=self.chunk_size
        )
        f, g2 = self.process.drift_coef(t), self.process.g2(t)
        fx, g2x = expand_as_batch(f, x), expand_as_batch(g2, x)
        dx = fx * x - 0.5 * g2x * jets.score
        d = math.prod(x.shape[1:])
        dell = None
        if self.log_density is not None:
            ell = self.log_density(x, t)
        else:
            dell = -d * f.expand(x.shape[0]) + 0.5 * g2 * jets.divergence
        dy = None
        if y is not None:
            ds = self.score_derivatives(t, x, ell, jets.score)
            dy = fx * y - 0.5 * g2x * (jets.products + ds)
        return dx, dell, dy, ell

    def score_derivatives(self, t: Tensor, x: Tensor, ell: Tensor, s: Tensor) -> Tensor:
        """δs_p(x) ``[P, B, *event]`` for the model's log-density ``ell`` and score ``s`` (eq. ★), read against
        ``self.reference``."""
        if self.reference is not None:
            ell, s = self.reference.inputs(x, t, ell, s)
        return self.bank.score_derivatives(x, t, self.process, ell, s)


@dataclass
class _Setup:
    """What every sensitivity mode validates and prepares the same way."""

    score: ScoreModel
    process: ForwardProcess
    perturbations: list[Perturbation]
    t1: float
    terminal_log_density: Tensor
    probes: Tensor | None
    reference: Reference


def prepare(
    model: ScoreModel,
    process: ForwardProcess | str,
    x_T: Tensor,
    perturbations,
    *,
    t1: float | None,
    parameterization: str,
    divergence: str,
    n_probes: int,
    probe: str,
    generator: torch.Generator | None,
    terminal_log_density: Callable[[Tensor], Tensor] | None,
    log_density: Callable[[Tensor, Time], Tensor] | None,
    reference: str = "model",
    data: Tensor | DataLaw | None = None,
) -> _Setup:
    """Checks shared by the ODE, SDE and discrete modes; raises errors naming the argument."""
    process = resolve_process(process)
    check_state(x_T, "x_T")
    check_score_model(model, x_T, "x_T")
    t1 = check_cutoff(process, t1, "t1")
    resolved = resolve_reference(reference, data, process, x_T.shape[1:])
    score = as_score_model(model, process, parameterization)
    items = as_perturbations(perturbations, x_T) if perturbations is not None else []
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}; got {divergence!r}")
    if terminal_log_density is not None and not callable(terminal_log_density):
        raise TypeError("terminal_log_density must be callable as terminal_log_density(x_T) -> [B]")
    if log_density is not None and not callable(log_density):
        raise TypeError("log_density must be callable as log_density(x, t) -> [B] (e.g. an exact model's)")
    check_differentiable(score, x_T, process.T, "score")
    if log_density is not None:
        with torch.no_grad():  # one evaluation: a wrongly shaped log_density fails before the solve
            check_output(log_density(x_T, process.T), "log_density", "log_density(x, t)", x_T.shape[:1], None, None)
    ell_T = (terminal_log_density or process.prior_log_density)(x_T)
    if not isinstance(ell_T, Tensor) or ell_T.shape != (x_T.shape[0],):
        raise ValueError(f"terminal_log_density must return one value per sample, shape [{x_T.shape[0]}]")
    probes = None
    if divergence == "hutchinson" and log_density is None:
        probes = hutchinson_probes(
            n_probes, x_T.shape, kind=probe, generator=generator, dtype=x_T.dtype, device=x_T.device
        )
    return _Setup(score, process, items, t1, ell_T.to(x_T.dtype), probes, resolved)


def final_denoise(
    field_: TangentField, t1: float, x: Tensor, ell: Tensor | None, y: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Tweedie's denoiser D = (x + β² s)/α applied to the samples, with the total ε-derivative pushed through it:
    ∂_ε D = (y + β² (J_s y + δs))/α (the denoiser of the perturbed model moves too; digest §4.2 step 4)."""
    process = field_.process
    t = time_like(t1, x)
    jets = score_jets(field_.score, x, t, y, chunk_size=field_.chunk_size)
    alpha = expand_as_batch(process.scale(t), x)
    beta2 = expand_as_batch(process.sigma(t), x) ** 2
    x_out = (x + beta2 * jets.score) / alpha
    if y is None:
        return x_out, None
    if field_.log_density is not None:
        ell = field_.log_density(x, t)
    ds = field_.score_derivatives(t, x, ell, jets.score)
    return x_out, (y + beta2 * (jets.products + ds)) / alpha


def sample_sensitivity(
    score: ScoreModel,
    process: ForwardProcess | str,
    x_T: Tensor,
    perturbations: Perturbation | DataEdit | Sequence[Perturbation | DataEdit] | None = None,
    *,
    t1: float | None = None,
    method: str = "Tsit5",
    backend: str = "torch",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    parameterization: str = "score",
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    terminal_log_density: Callable[[Tensor], Tensor] | None = None,
    log_density: Callable[[Tensor, Time], Tensor] | None = None,
    denoise: bool = False,
    chunk_size: int | None = None,
    saveat=None,
    reference: str = "model",
    data: Tensor | DataLaw | None = None,
    **solve_kwargs,
) -> SensitivityResult:
    """PF-ODE samples from ``x_T`` with their log-densities and sensitivities to P perturbations (digest §3.1).

    Args:
        score: the model (a score model, or a denoiser / ε-predictor with ``parameterization``).
        process: its forward process.
        x_T: ``[B, *event]`` noise at T.
        perturbations: one direction, a sequence of P (a :class:`DataEdit` stands for its direction), or None /
            ``[]`` (then only x and ℓ are integrated: sampling plus the log-likelihood along the path).
        t1: cut-off in (0, T) (default ``process.t_eps``).
        method, backend, rtol, atol, saveat, **solve_kwargs: passed to :func:`pysens.solve` (any ODE method: torch
            explicit and stiff, scipy, julia). The error norm sees the whole augmented state.
        divergence: ``"exact"`` (d basis JVPs per stage, ``chunk_size`` bounds the vmap) or ``"hutchinson"``
            (``n_probes`` probes of kind ``probe`` drawn once from ``generator`` and kept for the whole solve).
            [INFERRED] choice (digest §3.2): Hutchinson noise in ℓ enters r = e^{ℓ_σ − ℓ} exponentially, so exact is
            the default.
        terminal_log_density: ℓ(T) = log ρ_T(x_T) ``-> [B]``; default the prior's log-density (an error c there scales
            y by e^{−c}; pass the exact one when known).
        log_density: closed-form log ρ_t(x) ``(x, t) -> [B]`` instead of integrating ℓ (exact models only).
        denoise: finish with Tweedie's denoiser and push y through it (module ``final_denoise``); default off.
        reference: which law eq. (★) reads its ratio and score from: ``"model"`` (the model's ℓ and s, the
            paper-faithful default), ``"data"`` (the training set's noised law, closed form), ``"data-ratio"`` or
            ``"data-score"`` (one from each); when each is valid: :mod:`pysens.sensitivity.reference`.
        data: the training set ``[N, *event]`` (or a :class:`~pysens.sensitivity.reference.DataLaw`, e.g. with a
            bandwidth); required by the data readings, and with any reading it fills ``result.diagnostics``
            (model-vs-data log-ratio at t1, off-range flags).

    Returns:
        :class:`SensitivityResult` (``sensitivity`` ``[P, B, *event]``; ``predict(ε)`` gives x + ε y).
    """
    setup = prepare(
        score,
        process,
        x_T,
        perturbations,
        t1=t1,
        parameterization=parameterization,
        divergence=divergence,
        n_probes=n_probes,
        probe=probe,
        generator=generator,
        terminal_log_density=terminal_log_density,
        log_density=log_density,
        reference=reference,
        data=data,
    )
    process, P = setup.process, len(setup.perturbations)
    event = tuple(x_T.shape[1:])
    field_ = TangentField(
        setup.score,
        process,
        setup.perturbations,
        divergence=divergence,
        probes=setup.probes,
        log_density=log_density,
        chunk_size=chunk_size,
        reference=setup.reference,
    )
    blocks: dict[str, tuple[int, ...]] = {"x": event}
    if log_density is None:
        blocks["ell"] = ()
    if P:
        blocks["y"] = (P, *event)
    layout = StateLayout(**blocks)

    def rhs(t: Tensor, z: Tensor) -> Tensor:
        parts = layout.unpack(z)
        y = parts["y"].movedim(1, 0) if P else None
        dx, dell, dy, _ = field_(t, parts["x"], parts.get("ell"), y)
        out = {"x": dx}
        if dell is not None:
            out["ell"] = dell
        if dy is not None:
            out["y"] = dy.movedim(0, 1)
        return layout.pack(**out)

    start = {"x": x_T}
    if log_density is None:
        start["ell"] = setup.terminal_log_density
    if P:
        start["y"] = torch.zeros(x_T.shape[0], P, *event, dtype=x_T.dtype, device=x_T.device)
    problem = ODEProblem(rhs, layout.pack(**start), (process.T, setup.t1), name="pf-ode sensitivity")
    sol = solve(problem, method, backend, rtol=rtol, atol=atol, saveat=saveat, **solve_kwargs)
    sol.stats.njvp = sol.stats.nf * field_.jvps_per_evaluation(math.prod(event))
    end = layout.unpack(sol.final)
    x = end["x"]
    y = end["y"].movedim(1, 0) if P else x.new_zeros(0, *x.shape)
    ell = end["ell"] if log_density is None else log_density(x, setup.t1)
    x_t1 = x
    if denoise:
        # like the solve, no autograd graph unless asked for (the JVPs are forward mode and need none)
        with torch.set_grad_enabled(bool(solve_kwargs.get("differentiable")) and torch.is_grad_enabled()):
            x, y_out = final_denoise(field_, setup.t1, x, ell, y if P else None)
        y = y_out if P else y
    return SensitivityResult(
        x=x,
        sensitivity=y,
        log_density=ell,
        x_T=x_T,
        terminal_log_density=setup.terminal_log_density,
        t1=setup.t1,
        stats=sol.stats,
        retcode=sol.retcode,
        solution=sol,
        layout=layout,
        perturbations=setup.perturbations,
        diagnostics=reference_diagnostics(setup.reference, x_t1, ell, setup.t1, x),
    )
