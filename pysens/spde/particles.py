"""The particle representation of the SPDE: a conditional McKean–Vlasov system with common noise, any dimension.

Digest seed002 §4.2, §8 item 6. R independent common-noise paths B^{(r)} (one per row), each carrying N particles

    dX^{r,i} = b(τ, X^{r,i}) dτ + √(2D(τ)) dW^{r,i} + Σ_k σ_k(τ, X^{r,i}) ⋆ dB^{(r),k},

so the empirical measure of row r approximates the conditional law u_τ^{(r)} = Law(X | B^{(r)}), which solves the
grid SPDE of :mod:`pysens.spde.solver` driven by the same B^{(r)}. Euler–Maruyama on the Itô form: for
``convention="strat"`` the Stratonovich drift correction +½Σ(σ_k·∇)σ_k is added (exactly the Itô drift of the
Stratonovich particles), so both conventions are simulated by the same Itô scheme.

Statistics are streamed: per test function the ensemble projections Φ̄ ``[K+1, R]`` and their realized QV
(:class:`~pysens.spde.qv.EnsembleQV`), the common-noise plug-in QV Σ_k Σ_j ⟨u, σ_j·∇φ⟩² Δτ, and the particle means;
never the ``[K, R, N, d]`` trajectory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pysens.solvers import BrownianGrid

from .noise import NOISE_CONVENTIONS, NoiseModel
from .qv import EnsembleQV
from .test_functions import RadialTestFunction

__all__ = ["ParticleResult", "simulate_particles"]


@dataclass
class ParticleResult:
    """What :func:`simulate_particles` returns.

    Attributes:
        times: ``[K+1]`` step times.
        qv: ``{name: EnsembleQV}`` per test function (``.value(correct=...)`` → ``[R]``; ``.series()`` → Φ̄).
        plugin_qv: ``{name: [R]}`` Σ_k Σ_j ⟨u_k, σ_j·∇φ⟩² Δτ from the particles (transport noise), the estimator
            that needs the noise model (for N1 and φ = |x|², 4σ² Σ|μ_k|² Δτ).
        mean: ``[K+1, R, d]`` particle means.
        final: ``[R, N, *event]`` the particles at the end.
        wall_time: seconds.
    """

    times: Tensor
    qv: dict[str, EnsembleQV]
    plugin_qv: dict[str, Tensor]
    mean: Tensor
    final: Tensor
    wall_time: float
    extra: dict = field(default_factory=dict)


def simulate_particles(
    drift: Callable[[Tensor, Tensor], Tensor] | None,
    diffusion: float | Callable[[float], float],
    noise: NoiseModel | None,
    x0: Tensor,
    tspan: tuple[float, float],
    *,
    n_steps: int | None = None,
    common: BrownianGrid | None = None,
    convention: str = "ito",
    generator: torch.Generator | None = None,
    test_functions: dict[str, RadialTestFunction] | None = None,
) -> ParticleResult:
    """Simulate R × N particles from ``x0`` ``[R, N, *event]`` over ``tspan`` with Euler–Maruyama.

    Args:
        drift: b(τ, x) for x ``[P, *event]`` and a 0-d τ → like x (None: no drift).
        diffusion: D(τ) (the particle noise is √(2D) dW).
        noise: the common noise model (None: independent particles only). Additive N4 noise has no particles.
        common: the common increments ``[n, R, K]`` on a grid spanning ``tspan`` (replayable: the grid SPDE can
            use the same object); without it they are drawn from ``generator`` on ``n_steps`` equal steps.
        n_steps: steps when ``common`` is None (with ``common`` the grid's intervals are the steps).
        test_functions: φ's whose Φ̄, QV and plug-in QV are streamed.
    """
    if convention not in NOISE_CONVENTIONS:
        raise ValueError(f"convention must be one of {NOISE_CONVENTIONS}, got {convention!r}")
    if not isinstance(x0, Tensor) or x0.dim() < 3:
        raise ValueError(f"x0 must be [R, N, *event] (common-noise paths × particles × event), got {tuple(x0.shape)}")
    if noise is not None and noise.kind != "transport":
        raise TypeError(f"{type(noise).__name__} has no particle representation (additive noise in the density)")
    R, N = x0.shape[:2]
    event = x0.shape[2:]
    d = math.prod(event)
    K = 0 if noise is None else noise.n_modes(d)
    t0, t1 = float(tspan[0]), float(tspan[1])
    if common is not None:
        if noise is None:
            raise ValueError("common increments were given but there is no noise model")
        common.check_covers((t0, t1), torch.empty(R, K))
        times = common.times.clone()
    else:
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(
                f"n_steps must be a positive integer when no common Brownian grid is given, got {n_steps!r}"
            )
        times = torch.linspace(t0, t1, n_steps + 1, dtype=torch.float64)
    test_functions = dict(test_functions or {})
    dtype, device = x0.dtype, x0.device
    start = time.perf_counter()

    qv = {name: EnsembleQV() for name in test_functions}
    plugin = {name: torch.zeros(R, dtype=dtype, device=device) for name in test_functions}
    means = []
    x = x0.reshape(R, N, d).clone()

    def observe(x: Tensor, t: float, h: float | None) -> None:
        means.append(x.mean(1))
        flat = x.reshape(R * N, *event)
        for name, phi in test_functions.items():
            values, grads = phi.values_grads(flat)
            qv[name].update(values.reshape(R, N))
            if h is not None and noise is not None:
                # ⟨u, σ_j·∇φ⟩ per mode and row: the common-noise QV rate, integrated left-point
                proj = noise.projected_fields(t, x, grads.reshape(R, N, d))  # [K, R]
                plugin[name] += proj.pow(2).sum(0) * abs(h)

    for n in range(times.numel() - 1):
        ta, tb = float(times[n]), float(times[n + 1])
        h = tb - ta
        observe(x, ta, h)
        tt = torch.tensor(ta, dtype=dtype, device=device)
        flat = x.reshape(R * N, *event)
        b = torch.zeros_like(x) if drift is None else drift(tt, flat).reshape(R, N, d)
        if noise is not None and convention == "strat":
            b = b - noise.ito_to_strat_drift(ta, x.reshape(R * N, d)).reshape(R, N, d)
        D = float(diffusion(ta)) if callable(diffusion) else float(diffusion)
        dw = torch.randn(x.shape, generator=generator, dtype=dtype, device=device) * math.sqrt(abs(h))
        x_new = x + b * h + math.sqrt(2.0 * D) * dw
        if noise is not None:
            if common is not None:
                dB = common.increment_between(n, n + 1).to(dtype=dtype, device=device)
            else:
                dB = torch.randn(R, K, generator=generator, dtype=dtype, device=device) * math.sqrt(abs(h))
            x_new = x_new + noise.particle_increment(ta, x, dB)
        x = x_new
    observe(x, t1, None)
    return ParticleResult(
        times=times.to(dtype),
        qv=qv,
        plugin_qv=plugin,
        mean=torch.stack(means),
        final=x.reshape(R, N, *event),
        wall_time=time.perf_counter() - start,
    )
