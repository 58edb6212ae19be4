"""DDPM ancestral and DDIM samplers that stream per-step statistics: the particle solver of the SPDE in high d.

Digest seed002 §3.1, §8 item 3. Timesteps k ∈ {0, …, T−1} run from T−1 (pure noise) down to 0; "position" j = 0, 1,
… counts reverse steps in sampling order. A score model ``model(x, t)`` (CONVENTIONS.md) is evaluated at the
continuous time t_k of the explicit map of :meth:`DDPMSchedule.continuous_times`, and read as ε̂ = −β_{t_k} s;
``parameterization="eps"`` takes a discrete ε-model ``model(x, k)`` with k an int64 ``[N]`` tensor instead.

* Ancestral (Ho et al. 2020, Alg. 2): x_{k−1} = (x_k − β_k/√(1−ᾱ_k) ε̂)/√α_k + σ_k z, σ_k² "fixedsmall" or
  "fixedlarge", no noise at k = 0.
* DDIM (Song, Meng & Ermon 2021, eq. 12) on a sub-sequence of S timesteps: x̂_0 = (x − √(1−ᾱ_k) ε̂)/√ᾱ_k,
  x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z, σ = η √((1−ᾱ_prev)/(1−ᾱ_k)) √(1 − ᾱ_k/ᾱ_prev).

Each step's ε-error δε moves a particle by −γ δε; γ = β_k/(√α_k √(1−ᾱ_k)) (ancestral) or
√ᾱ_prev √(1−ᾱ_k)/√ᾱ_k − √(1−ᾱ_prev−σ²) (DDIM): the factor SIEM-B and SIEM-C weigh by.

Streamed per step (state *before* the step), never the N × d × K trajectory: φ values (for the realized QV of
Φ̄, :class:`~pysens.spde.qv.EnsembleQV`), the particle mean μ_k ``[d]``, the batch-mean predicted noise μ^ε_k
``[d]``, the batch-mean ∇φ ``[d]``, and optionally the white-noise rate (1/N)Σ u(X^i)|∇φ(X^i)|² in log space with
u from a density-ratio classifier against q_k = N(√ᾱ_k m, (1 − ᾱ_k) I) (SIEM-C).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pysens.diffusion.processes import ForwardProcess

from .density_ratio import DensityRatio
from .qv import EnsembleQV
from .schedules import VARIANCES, DDPMSchedule
from .test_functions import RadialTestFunction

__all__ = [
    "PARAMETERIZATIONS",
    "SAMPLERS",
    "TrajectoryStats",
    "WhiteNoisePlugin",
    "ddim_timesteps",
    "sample_with_statistics",
]

SAMPLERS = ("ancestral", "ddim")
PARAMETERIZATIONS = ("score", "eps")


@dataclass
class WhiteNoisePlugin:
    """Where and how to estimate the white-noise rate (1/N)Σ_i u(X^i)|∇φ(X^i)|² (SIEM-C) during sampling.

    Attributes:
        positions: reverse-step positions at which to fit the density ratio (each fit costs a classifier).
        reference_mean: m of the reference q_k = N(√ᾱ_k m, (1 − ᾱ_k) I), ``[*event]`` (None: 0, q_k = N(0, (1−ᾱ_k)I)).
        features: the classifier's features (:class:`~pysens.spde.density_ratio.DensityRatio`).
        n_reference: reference samples per fit (None: as many as particles).
    """

    positions: frozenset[int] | set[int]
    reference_mean: Tensor | None = None
    features: str = "quadratic"
    n_reference: int | None = None


@dataclass
class TrajectoryStats:
    """Per-step statistics of one sampling run (rows in sampling order; K = steps run).

    Attributes:
        timesteps: ``[K]`` DDPM timesteps visited; times: ``[K]`` their continuous times (score parameterization);
        alpha_bars: ``[K]``; gamma: ``[K]`` the ε-error displacement factors.
        qv: ``{name: EnsembleQV}`` over the K+1 states (the last one after the last step).
        phi_mean: ``{name: [K+1]}`` Φ̄_k.
        x_mean: ``[K+1, d]`` particle means μ_k; eps_mean: ``[K, d]`` batch-mean predicted noise μ^ε_k.
        grad_mean: ``{name: [K, d]}`` batch-mean ∇φ.
        white_log_rate: ``{name: [K]}`` log (1/N)Σ u|∇φ|², NaN where not estimated.
        nfe: network evaluations per particle (= K); n_particles; event_shape; wall_time (s).
        final: the particles after the last step ``[N, *event]`` (None unless kept).
    """

    timesteps: Tensor
    times: Tensor
    alpha_bars: Tensor
    gamma: Tensor
    qv: dict[str, EnsembleQV]
    x_mean: Tensor
    eps_mean: Tensor
    grad_mean: dict[str, Tensor]
    white_log_rate: dict[str, Tensor]
    nfe: int
    n_particles: int
    event_shape: tuple[int, ...]
    wall_time: float
    final: Tensor | None = None
    config: dict = field(default_factory=dict)

    @property
    def phi_mean(self) -> dict[str, Tensor]:
        return {name: q.series()[:, 0] for name, q in self.qv.items()}

    @property
    def dim(self) -> int:
        return math.prod(self.event_shape)


def ddim_timesteps(T: int, steps: int) -> Tensor:
    """S evenly spaced timesteps from T−1 down to 0 (int64, distinct), starting at T−1 so windows line up with the
    full trajectory's 999, 998, …"""
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"ddim steps must be an integer in [1, {T}], got {steps!r}")
    return torch.unique(torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long()).flip(0)


def _model_eps(
    model, x: Tensor, k: int, t: Tensor | None, beta_t: float, parameterization: str, batch_size: int | None
) -> Tensor:
    chunks = [x] if batch_size is None else list(torch.split(x, batch_size))
    out = []
    for xc in chunks:
        if parameterization == "eps":
            out.append(model(xc, torch.full((xc.shape[0],), k, dtype=torch.int64, device=x.device)))
        else:
            out.append(-beta_t * model(xc, t))
    eps = torch.cat(out)
    if eps.shape != x.shape:
        raise ValueError(f"the model returned shape {tuple(eps.shape)} for inputs {tuple(x.shape)}")
    return eps


def sample_with_statistics(
    model: Callable[[Tensor, Tensor], Tensor],
    event_shape: tuple[int, ...],
    n_particles: int,
    schedule: DDPMSchedule,
    *,
    process: ForwardProcess | None = None,
    parameterization: str = "score",
    time_map: str = "exact",
    sampler: str = "ancestral",
    var: str = "fixedsmall",
    eta: float = 0.0,
    ddim_steps: int | None = None,
    stop_after: int | None = None,
    test_functions: dict[str, RadialTestFunction] | None = None,
    white: WhiteNoisePlugin | None = None,
    eps_error: Callable[[int, int, Tensor, Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
    keep_final: bool = True,
) -> TrajectoryStats:
    """Run the sampler from N(0, I) and stream per-step statistics (module docstring).

    Args:
        model: a score model ``model(x, t)`` (``parameterization="score"``) or a discrete ε-model ``model(x, k)``.
        event_shape: the shape of one sample; n_particles: N.
        process: the continuous process the score model lives on (default: the model's ``process`` attribute, or
            :meth:`DDPMSchedule.vp_process`).
        sampler: ``"ancestral"`` or ``"ddim"`` (``ddim_steps`` timesteps, default T; stochasticity ``eta``).
        stop_after: run only the first reverse steps (the SIEM window), saving their network evaluations.
        eps_error: an optional injected ε-error ``eps_error(position, timestep, x, eps) -> δε`` added to ε̂ (for
            experiments with known score error, digest §9.5).
        batch_size: evaluate the model in chunks of this many particles.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    if var not in VARIANCES:
        raise ValueError(f"var must be one of {VARIANCES}, got {var!r}")
    if not isinstance(n_particles, int) or n_particles < 2:
        raise ValueError(f"n_particles must be an integer >= 2, got {n_particles!r}")
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    event_shape = tuple(int(s) for s in event_shape)
    T = schedule.T
    if sampler == "ancestral":
        if ddim_steps is not None:
            raise ValueError("ddim_steps applies to sampler='ddim'; the ancestral sampler visits all T timesteps")
        visit = torch.arange(T - 1, -1, -1)
    else:
        visit = ddim_timesteps(T, T if ddim_steps is None else ddim_steps)
    if stop_after is not None:
        if not isinstance(stop_after, int) or not 1 <= stop_after <= visit.numel():
            raise ValueError(
                f"stop_after must be an integer in [1, {visit.numel()}] (the trajectory), got {stop_after!r}"
            )
        run = visit[:stop_after]
    else:
        run = visit
    abar = schedule.alpha_bars
    times = torch.full((T,), math.nan, dtype=torch.float64)
    sig_t = torch.sqrt(1.0 - abar)
    if parameterization == "score":
        process = process if process is not None else getattr(model, "process", None) or schedule.vp_process()
        times = schedule.continuous_times(process, time_map)
        sig_t = process.sigma(times)
    test_functions = dict(test_functions or {})
    generator_device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else generator_device

    def randn(shape) -> Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype, device=generator_device).to(device)

    start = time.perf_counter()
    N = n_particles
    d = math.prod(event_shape)
    x = randn((N, *event_shape))
    qv = {name: EnsembleQV() for name in test_functions}
    grad_means = {name: [] for name in test_functions}
    white_rates = {name: torch.full((run.numel(),), math.nan, dtype=torch.float64) for name in test_functions}
    x_means, eps_means, gammas = [], [], []
    posterior = schedule.posterior_variance(var)

    for j, k in enumerate(run.tolist()):
        flat = x.reshape(N, d)
        x_means.append(flat.mean(0))
        grads_now = {}
        for name, phi in test_functions.items():
            values, grads = phi.values_grads(x)
            qv[name].update(values)
            grads_now[name] = grads.reshape(N, d)
            grad_means[name].append(grads_now[name].mean(0))
        t_k = torch.tensor(float(times[k]), dtype=dtype, device=device)
        with torch.no_grad():
            eps = _model_eps(model, x, k, t_k, float(sig_t[k]), parameterization, batch_size)
        if eps_error is not None:
            eps = eps + eps_error(j, k, x, eps)
        eps_means.append(eps.reshape(N, d).mean(0))
        if white is not None and j in white.positions and test_functions:
            _white_rates(white, x, grads_now, float(abar[k]), white_rates, j, generator, randn)
        a_k = float(abar[k])
        if sampler == "ancestral":
            b_k, alpha_k = float(schedule.betas[k]), 1.0 - float(schedule.betas[k])
            coef = b_k / math.sqrt(1.0 - a_k)
            gammas.append(coef / math.sqrt(alpha_k))
            x = (x - coef * eps) / math.sqrt(alpha_k)
            if k > 0:
                x = x + math.sqrt(float(posterior[k])) * randn(x.shape)
        else:
            pos = int((visit == k).nonzero()[0])
            a_prev = float(abar[visit[pos + 1]]) if pos + 1 < visit.numel() else 1.0
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a_k)) * math.sqrt(max(0.0, 1 - a_k / a_prev))
            direction = math.sqrt(max(0.0, 1 - a_prev - sigma**2))
            gammas.append(math.sqrt(a_prev) * math.sqrt(1 - a_k) / math.sqrt(a_k) - direction)
            x0_hat = (x - math.sqrt(1 - a_k) * eps) / math.sqrt(a_k)
            x = math.sqrt(a_prev) * x0_hat + direction * eps
            if sigma > 0:
                x = x + sigma * randn(x.shape)
    for name, phi in test_functions.items():
        qv[name].update(phi(x))
    x_means.append(x.reshape(N, d).mean(0))
    return TrajectoryStats(
        timesteps=run.clone(),
        times=times[run].clone(),
        alpha_bars=abar[run].clone(),
        gamma=torch.tensor(gammas, dtype=torch.float64),
        qv=qv,
        # per-step summaries are small ([K, d]): keep them on the CPU next to the schedule's coefficients
        x_mean=torch.stack(x_means).double().cpu(),
        eps_mean=torch.stack(eps_means).double().cpu(),
        grad_mean={name: torch.stack(v).double().cpu() for name, v in grad_means.items()},
        white_log_rate=white_rates,
        nfe=run.numel(),
        n_particles=N,
        event_shape=event_shape,
        wall_time=time.perf_counter() - start,
        final=x if keep_final else None,
        config={"sampler": sampler, "var": var, "eta": eta, "parameterization": parameterization, "time_map": time_map},
    )


def _white_rates(
    white: WhiteNoisePlugin,
    x: Tensor,
    grads: dict[str, Tensor],
    a_k: float,
    out: dict[str, Tensor],
    j: int,
    generator: torch.Generator | None,
    randn: Callable,
) -> None:
    """log (1/N)Σ_i u(X^i)|∇φ(X^i)|² with log u = log r + log q_k, r from a classifier of X against q_k."""
    N = x.shape[0]
    flat = x.reshape(N, -1).double()
    d = flat.shape[1]
    m = torch.zeros(d, dtype=torch.float64, device=x.device)
    if white.reference_mean is not None:
        m = torch.as_tensor(white.reference_mean, dtype=torch.float64).reshape(-1).to(x.device)
    center, var = math.sqrt(a_k) * m, 1.0 - a_k
    n_ref = white.n_reference or N
    ref = center + math.sqrt(var) * randn((n_ref, d)).double()
    ratio = DensityRatio(white.features).fit(flat, ref, generator=generator)
    log_q = -0.5 * ((flat - center) ** 2).sum(1) / var - 0.5 * d * math.log(2 * math.pi * var)
    log_u = ratio.log_ratio(flat) + log_q
    for name, g in grads.items():
        sq = g.double().pow(2).sum(1)
        log_sq = torch.where(sq > 0, torch.log(sq.clamp_min(1e-300)), torch.full_like(sq, -math.inf))
        out[name][j] = float(torch.logsumexp(log_u + log_sq, 0) - math.log(N))
