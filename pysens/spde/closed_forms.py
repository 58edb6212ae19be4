"""Closed forms of the SPDE/SIEM reconstruction: the exact answers the estimators and solvers are checked against.

Every formula here is [DERIVED] in digest seed002 and was verified there numerically (§9, oracles O1–O5); the
section is named on each function. Conventions: d is the dimension, φ = a|x|² is :class:`RadialQuadratic` with
scale a (None: 1/d) and φ = exp(−|x|²/(2ℓ²)) is :class:`GaussianBump`, both centred at the origin. Inputs are
floats or float64 tensors; outputs are Python floats or float64 tensors.

* OU with common constant noise (N1, §9.1): dX^i = −λX^i dτ + g dW^i + σ dB, X_0 ~ N(m_0, s_0² I). The conditional
  law is u_τ = N(μ_τ, s_τ² I), μ_τ = e^{−λτ} m_0 + σ∫e^{−λ(τ−r)} dB_r, s_τ² = e^{−2λτ} s_0² + g²(1 − e^{−2λτ})/(2λ).
* Gaussian QV rates (§9.2) for u = N(m, s² I): white noise (N3) ∫u²|∇φ|², common noise (N1) ⟨u, ∇φ⟩.
* OU with dilation noise (N2, §9.3): σ(x) = κx, scalar B; moment ODEs for E Φ, E Φ², E[QV] of Φ = ⟨u, |x|²⟩.
* DDPM on Gaussian data (§9.5): the exact per-coordinate mean/variance recursion of the ancestral sampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from .schedules import DDPMSchedule
from .test_functions import GaussianBump, RadialQuadratic, RadialTestFunction

__all__ = [
    "GaussianRecursion",
    "common_noise_grad_mean_gaussian",
    "ddpm_gaussian_recursion",
    "dilation_noise_moments",
    "ou_common_noise_expected_kl",
    "ou_common_noise_expected_qv",
    "ou_conditional_variance",
    "white_noise_qv_rate_gaussian",
]


def _vec(m) -> Tensor:
    return torch.as_tensor(m, dtype=torch.float64).reshape(-1)


def ou_conditional_variance(lam: float, g2: float, s0: float, tau: float) -> float:
    """s_τ² = e^{−2λτ} s_0² + g²(1 − e^{−2λτ})/(2λ), the (deterministic) variance of u_τ per coordinate (§9.1)."""
    e = math.exp(-2.0 * lam * tau)
    return e * s0**2 + g2 * (1.0 - e) / (2.0 * lam)


def ou_common_noise_expected_qv(lam: float, sigma: float, m0: Sequence[float] | Tensor, T: float) -> float:
    """E[⟨u, |x|²⟩]_T = 4σ²[|m_0|²(1 − e^{−2λT})/(2λ) + σ² d (T/(2λ) − (1 − e^{−2λT})/(4λ²))] (§9.1).

    The QV of Φ = ⟨u, |x|²⟩ = |μ|² + d s² is ∫4σ²|μ_τ|² dτ; d = len(m_0). Independent of g and s_0.
    """
    m0 = _vec(m0)
    d = m0.numel()
    e = math.exp(-2.0 * lam * T)
    return (
        4.0
        * sigma**2
        * (float(m0 @ m0) * (1.0 - e) / (2.0 * lam) + sigma**2 * d * (T / (2.0 * lam) - (1.0 - e) / (4.0 * lam**2)))
    )


def ou_common_noise_expected_kl(
    lam: float, g2: float, sigma: float, m0: Sequence[float] | Tensor, s0: float, T: float
) -> float:
    """E KL(u_T | π) for π = N(0, v I), v = g²/(2λ), the stationary law of the noiseless Fokker–Planck (§9.1).

    KL(N(μ, s²I) | N(0, vI)) = |μ|²/(2v) + (d/2)(s²/v − 1 − log(s²/v)), with E|μ_T|² = e^{−2λT}|m_0|² +
    σ² d (1 − e^{−2λT})/(2λ). As T → ∞ it tends to σ² d/(2g²) = σ² d/4 for g² = 2 (§6.2, Theorem A, sharp).
    """
    m0 = _vec(m0)
    d = m0.numel()
    v = g2 / (2.0 * lam)
    e = math.exp(-2.0 * lam * T)
    mean_sq = e * float(m0 @ m0) + sigma**2 * d * (1.0 - e) / (2.0 * lam)
    ratio = ou_conditional_variance(lam, g2, s0, T) / v
    return mean_sq / (2.0 * v) + 0.5 * d * (ratio - 1.0 - math.log(ratio))


def _gaussian_check(test_fn: RadialTestFunction, supported: tuple[type, ...]) -> None:
    if not isinstance(test_fn, supported) or test_fn.center is not None:
        raise ValueError(
            f"closed forms exist for origin-centred {', '.join(c.__name__ for c in supported)}; got {test_fn!r}"
        )


def white_noise_qv_rate_gaussian(mean: Sequence[float] | Tensor, std: float, test_fn: RadialTestFunction) -> float:
    """∫ u(x)² |∇φ(x)|² dx for u = N(m, s² I_d): the QV rate of ⟨u, φ⟩ under formal white transport noise (N3, §9.2).

    φ = a|x|²: 4a²(4πs²)^{−d/2}(|m|² + d s²/2). Gaussian bump ℓ: (4πs²)^{−d/2}(πℓ²)^{d/2} ℓ^{−4} N(m; 0, (A+B)I)
    (|c|² + dC) with A = s²/2, B = ℓ²/2, C = AB/(A+B), c = Bm/(A+B).
    """
    _gaussian_check(test_fn, (RadialQuadratic, GaussianBump))
    m = _vec(mean)
    d = m.numel()
    s2 = float(std) ** 2
    base = (4.0 * math.pi * s2) ** (-d / 2)
    if isinstance(test_fn, RadialQuadratic):
        a = test_fn._a(d)
        return 4.0 * a**2 * base * (float(m @ m) + d * s2 / 2.0)
    l2 = test_fn.length2(d)
    A, B = s2 / 2.0, l2 / 2.0
    C = A * B / (A + B)
    c = B * m / (A + B)
    normal = (2.0 * math.pi * (A + B)) ** (-d / 2) * math.exp(-float(m @ m) / (2.0 * (A + B)))
    return base * (math.pi * l2) ** (d / 2) * l2**-2 * normal * (float(c @ c) + d * C)


def common_noise_grad_mean_gaussian(mean: Sequence[float] | Tensor, std: float, test_fn: RadialTestFunction) -> Tensor:
    """⟨u, ∇φ⟩ for u = N(m, s² I_d), ``[d]``: the QV rate under common noise σ dB is σ²|⟨u, ∇φ⟩|² (N1, §9.2).

    φ = a|x|²: 2a m. Gaussian bump ℓ: −(ℓ²/(s²+ℓ²))^{d/2} exp(−|m|²/(2(s²+ℓ²))) m/(s²+ℓ²).
    """
    _gaussian_check(test_fn, (RadialQuadratic, GaussianBump))
    m = _vec(mean)
    d = m.numel()
    s2 = float(std) ** 2
    if isinstance(test_fn, RadialQuadratic):
        return 2.0 * test_fn._a(d) * m
    l2 = test_fn.length2(d)
    return -((l2 / (s2 + l2)) ** (d / 2)) * math.exp(-float(m @ m) / (2.0 * (s2 + l2))) * m / (s2 + l2)


def dilation_noise_moments(lam: float, kappa: float, g2: float, d: int, phi0: float, T: float) -> dict[str, float]:
    """E Φ_T, E Φ_T² and E[Φ]_T for OU with dilation noise σ(x) = κx, scalar B, Itô particles (N2, §9.3).

    dΦ = [(κ² − 2λ)Φ + g² d] dτ + 2κΦ dB, so with a = κ² − 2λ, c = g² d:
    E Φ' = a E Φ + c;  E Φ²' = (2a + 4κ²) E Φ² + 2c E Φ;  E[QV]' = 4κ² E Φ²; Φ_0 = ``phi0`` (deterministic).
    Solved exactly by the matrix exponential of the linear system (augmented with a constant 1).
    """
    a, c = kappa**2 - 2.0 * lam, g2 * d
    M = np.array(
        [[a, 0.0, 0.0, c], [2.0 * c, 2.0 * a + 4.0 * kappa**2, 0.0, 0.0], [0.0, 4.0 * kappa**2, 0.0, 0.0], [0, 0, 0, 0]]
    )
    y = scipy.linalg.expm(M * T) @ np.array([phi0, phi0**2, 0.0, 1.0])
    return {"mean": float(y[0]), "second_moment": float(y[1]), "expected_qv": float(y[2])}


class GaussianRecursion:
    """The exact law of the ancestral DDPM sampler on Gaussian data, step by step (§9.5).

    Attributes (rows in sampling order: row j is the state *before* reverse step j, the last row the output):
        timesteps: ``[K]`` DDPM timesteps visited (T−1 down to the last one).
        mean: ``[K+1, d]`` per-coordinate mean; var: ``[K+1]`` per-coordinate variance.
        second_moment: ``[K+1]`` E|x|² = |mean|² + d var (the exact ⟨u, |x|²⟩ path, Φ*).
    """

    def __init__(self, timesteps: Tensor, mean: Tensor, var: Tensor) -> None:
        self.timesteps, self.mean, self.var = timesteps, mean, var
        self.second_moment = (mean**2).sum(1) + mean.shape[1] * var


def ddpm_gaussian_recursion(
    schedule: DDPMSchedule,
    data_mean: Sequence[float] | Tensor,
    data_var: float,
    *,
    var: str = "fixedsmall",
    n_steps: int | None = None,
    delta_eps: Tensor | None = None,
) -> GaussianRecursion:
    """Mean/variance recursion of the ancestral sampler on data N(m, s² I_d), started at N(0, I) (§9.5).

    With v_k = ᾱ_k s² + 1 − ᾱ_k the exact ε*(x, k) = √(1−ᾱ_k)(x − √ᾱ_k m)/v_k makes the step affine:
    x_{k−1} = A_k x_k + c_k − γ_k δε_k + σ_k z, A_k = (1 − β_k/v_k)/√α_k, c_k = β_k √ᾱ_k m/(v_k √α_k),
    so m_{k−1} = A_k m_k + c_k − γ_k δε_k and var_{k−1} = A_k² var_k + σ_k² (σ_0 = 0: the last step adds no noise).

    Args:
        delta_eps: an optional spatially constant ε-error per step, ``[n_steps, d]`` in sampling order.
        n_steps: run only the first reverse steps (default all T).
    """
    m = _vec(data_mean)
    d = m.numel()
    T = schedule.T
    n_steps = T if n_steps is None else int(n_steps)
    if not 1 <= n_steps <= T:
        raise ValueError(f"n_steps must be in [1, {T}], got {n_steps}")
    betas, alphas, abar = schedule.betas, schedule.alphas, schedule.alpha_bars
    sig2, gamma = schedule.posterior_variance(var), schedule.gamma()
    if delta_eps is not None:
        delta_eps = torch.as_tensor(delta_eps, dtype=torch.float64)
        if delta_eps.shape != (n_steps, d):
            raise ValueError(f"delta_eps must be [n_steps, d] = [{n_steps}, {d}], got {tuple(delta_eps.shape)}")
    mean = torch.zeros(n_steps + 1, d, dtype=torch.float64)
    variance = torch.ones(n_steps + 1, dtype=torch.float64)
    timesteps = torch.arange(T - 1, T - 1 - n_steps, -1)
    for j, k in enumerate(timesteps.tolist()):
        v = abar[k] * data_var + 1.0 - abar[k]
        A = (1.0 - betas[k] / v) / torch.sqrt(alphas[k])
        c = betas[k] * torch.sqrt(abar[k]) * m / (v * torch.sqrt(alphas[k]))
        mean[j + 1] = A * mean[j] + c - (0.0 if delta_eps is None else gamma[k] * delta_eps[j])
        variance[j + 1] = A**2 * variance[j] + (sig2[k] if k > 0 else 0.0)
    return GaussianRecursion(timesteps, mean, variance)
