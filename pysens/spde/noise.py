"""Noise models of the forward SPDE (N1–N4) and smooth Brownian paths.

Digest seed002 §4.2. The drift error is modelled as a random field white in time, Σ_k σ_k(τ, x) dB^k, with B^k
scalar Brownian motions **shared by all particles** (common noise). For particles

    dY = b(τ, Y) dτ + √(2D) dW + Σ_k σ_k(τ, Y) ⋆ dB^k        (⋆ = Itô or Stratonovich: the ``convention``)

and for the conditional density u = Law(Y | B), with b_S the particles' Stratonovich drift (b_S = b for
``"strat"``; b_S = b − ½Σ_k (σ_k·∇)σ_k for ``"ito"``, which :meth:`NoiseModel.ito_to_strat_drift` returns),

    Stratonovich form:  du = [−∇·(b_S u) + DΔu] dτ + Σ_k L_k u ∘ dB^k,           L_k u = −∇·(σ_k u),
    Itô form:           du = [−∇·(b_S u) + DΔu + ½ Σ_k L_k L_k u] dτ + Σ_k L_k u dB^k,

which for ``"ito"`` is the digest's du = [FP + ½∂ᵢ∂ⱼ(a u)] dτ − Σ∇·(σ_k u) dB^k, a = Σσ_kσ_kᵀ. The two conventions
coincide when the σ_k do not depend on x (N1). Models:

* :class:`CommonNoise` (N1): σ_k = σ(τ) e_k, k = 1..dim: a random common translation.
* :class:`DilationNoise` (N2): one field σ(x) = κ(τ)(x − c): a common relative error of the score's magnitude.
* :class:`ColoredTransportNoise` (N3, truncated): σ_{j,n} = A q_n^{1/2} χ_n(x) e_j over an orthonormal real Fourier
  basis χ_n of the box with |n_i| ≤ ``n_max``, spectrum q_n = (1 + |2πn/L|²)^{−α}. With α = 0 and A = 1 its QV
  rate Σ⟨u, σ_k·∇φ⟩² → ∫u²|∇φ|² (the formal space-time white noise of N3) as n_max grows (Parseval); raw white
  noise itself is ill-posed (its Itô correction Σ|σ_k|² is infinite) and is never simulated.
* :class:`AdditiveNoise` (N4): du = FP dτ + Σ_k A q_n^{1/2} ψ_n dB^k with the mean-zero Fourier modes ψ_n (n ≠ 0):
  mass is preserved, positivity is **not** (an additive source can push u below 0), and there is no particle
  representation.

Shapes: points ``x`` are ``[P, dim]``; :meth:`NoiseModel.fields` returns ``[K, P, dim]``, :meth:`sources`
``[K, P]``. Time ``t`` is a float or a 0-d tensor.

:class:`SmoothBrownianPath` is a Karhunen–Loève truncation of B (a Brownian path made smooth in time, "coloured
in time"): with it the SPDE becomes a random ODE that any adaptive ODE solver integrates to tolerance (Wong–Zakai:
the limit is the Stratonovich form).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "NOISE_CONVENTIONS",
    "AdditiveNoise",
    "ColoredTransportNoise",
    "CommonNoise",
    "DilationNoise",
    "FourierBasis",
    "NoiseModel",
    "SmoothBrownianPath",
]

NOISE_CONVENTIONS = ("ito", "strat")

Amplitude = float | Callable[[float], float]


def _amplitude(a: Amplitude, t, name: str) -> float:
    value = a(float(t)) if callable(a) else a
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}({float(t)}) is not finite")
    return value


class NoiseModel:
    """Base class. ``kind`` is ``"transport"`` (σ_k fields) or ``"additive"`` (source fields)."""

    kind = "transport"
    label = "noise"

    def n_modes(self, dim: int) -> int:
        raise NotImplementedError

    def fields(self, t, x: Tensor) -> Tensor:
        """σ_k(t, x) ``[K, P, dim]`` for points ``x`` ``[P, dim]``."""
        raise NotImplementedError

    def ito_to_strat_drift(self, t, x: Tensor) -> Tensor:
        """−½ Σ_k (σ_k·∇)σ_k at ``x`` ``[P, dim]``: add it to an Itô particle drift to get the Stratonovich one."""
        return torch.zeros_like(x)

    def sources(self, t, x: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} is transport noise; it has no additive source fields")

    @property
    def constant_fields(self) -> bool:
        """True when every σ_k is independent of x (then Itô and Stratonovich coincide)."""
        return False

    def particle_increment(self, t, x: Tensor, dB: Tensor) -> Tensor:
        """Σ_k σ_k(t, X^i) ΔB^k for particles ``x`` ``[R, N, dim]`` and increments ``dB`` ``[R, K]`` (one common
        path per row r), ``[R, N, dim]``."""
        if self.kind != "transport":
            raise TypeError(
                f"{type(self).__name__} (N4, additive noise in the density) has no particle representation: an "
                "additive source is not the law of any particle system; use the grid solver"
            )
        R, N, dim = x.shape
        sig = self.fields(t, x.reshape(R * N, dim)).reshape(-1, R, N, dim)
        return torch.einsum("krnd,rk->rnd", sig, dB.to(x.dtype))

    def projected_fields(self, t, x: Tensor, grads: Tensor) -> Tensor:
        """⟨u, σ_k·∇φ⟩ = (1/N) Σ_i σ_k(X^i)·∇φ(X^i) per mode and row, ``[K, R]``, for particles ``x`` and gradients
        ``grads`` ``[R, N, dim]``: the common-noise QV rate of ⟨u, φ⟩ is Σ_k of its square."""
        R, N, dim = x.shape
        sig = self.fields(t, x.reshape(R * N, dim)).reshape(-1, R, N, dim)
        return (sig * grads[None]).sum(-1).mean(-1)

    def config(self) -> dict:
        return {"model": self.label}


class CommonNoise(NoiseModel):
    """N1: σ_k = σ(τ) e_k for k = 1..dim (K = dim), a common random translation of all particles."""

    label = "N1"

    def __init__(self, sigma: Amplitude) -> None:
        if not callable(sigma) and not (isinstance(sigma, (int, float)) and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a finite number or a function of time, got {sigma!r}")
        self.sigma = sigma

    def amplitude(self, t) -> float:
        return _amplitude(self.sigma, t, "sigma")

    def n_modes(self, dim: int) -> int:
        return dim

    @property
    def constant_fields(self) -> bool:
        return True

    def fields(self, t, x: Tensor) -> Tensor:
        dim = x.shape[1]
        eye = torch.eye(dim, dtype=x.dtype, device=x.device) * self.amplitude(t)
        return eye[:, None, :].expand(dim, x.shape[0], dim)

    def particle_increment(self, t, x: Tensor, dB: Tensor) -> Tensor:
        # a translation: σ ΔB, the same for every particle of a path
        return (self.amplitude(t) * dB.to(x.dtype))[:, None, :].expand_as(x)

    def projected_fields(self, t, x: Tensor, grads: Tensor) -> Tensor:
        # σ e_k · ⟨u, ∇φ⟩: the fields are constant, so only the mean gradient is needed
        return self.amplitude(t) * grads.mean(1).T

    def config(self) -> dict:
        return {"model": self.label, "sigma": self.sigma if not callable(self.sigma) else "callable"}


class DilationNoise(NoiseModel):
    """N2: one field σ(x) = κ(τ)(x − c) (K = 1); (σ·∇)σ = κ²(x − c)."""

    label = "N2"

    def __init__(self, kappa: Amplitude, center: Tensor | None = None) -> None:
        if not callable(kappa) and not (isinstance(kappa, (int, float)) and math.isfinite(kappa)):
            raise ValueError(f"kappa must be a finite number or a function of time, got {kappa!r}")
        self.kappa = kappa
        self.center = None if center is None else torch.as_tensor(center).reshape(-1)

    def n_modes(self, dim: int) -> int:
        return 1

    def _offset(self, x: Tensor) -> Tensor:
        return x if self.center is None else x - self.center.to(dtype=x.dtype, device=x.device)

    def fields(self, t, x: Tensor) -> Tensor:
        return (_amplitude(self.kappa, t, "kappa") * self._offset(x))[None]

    def ito_to_strat_drift(self, t, x: Tensor) -> Tensor:
        return -0.5 * _amplitude(self.kappa, t, "kappa") ** 2 * self._offset(x)

    def config(self) -> dict:
        return {"model": self.label, "kappa": self.kappa if not callable(self.kappa) else "callable"}


class FourierBasis:
    """The real orthonormal Fourier basis of L²(box) on ``[lower, upper]^dim``, all |n_i| ≤ ``n_max``.

    1-D factors: 1/√L (n = 0), √(2/L) cos(2πn(x−a)/L) (n > 0), √(2/L) sin(2π|n|(x−a)/L) (n < 0); products across
    axes. ``include_constant=False`` drops the all-zero multi-index (mean-zero modes, for mass-preserving sources).
    """

    def __init__(self, lower, upper, n_max: int, include_constant: bool = True) -> None:
        self.lower = tuple(float(v) for v in torch.as_tensor(lower, dtype=torch.float64).reshape(-1).tolist())
        self.upper = tuple(float(v) for v in torch.as_tensor(upper, dtype=torch.float64).reshape(-1).tolist())
        if len(self.lower) != len(self.upper) or any(b <= a for a, b in zip(self.lower, self.upper, strict=True)):
            raise ValueError(f"the noise box needs lower < upper per axis, got {lower!r}, {upper!r}")
        if not isinstance(n_max, int) or n_max < 0:
            raise ValueError(f"n_max must be a non-negative integer, got {n_max!r}")
        self.dim, self.n_max = len(self.lower), n_max
        ranges = [range(-n_max, n_max + 1)] * self.dim
        self.indices = [n for n in itertools.product(*ranges) if include_constant or any(n)]
        if not self.indices:
            raise ValueError("the Fourier basis is empty: raise n_max")

    def __len__(self) -> int:
        return len(self.indices)

    def wavenumbers(self) -> Tensor:
        """|2πn/L|² per mode, ``[K]``."""
        L = torch.tensor([b - a for a, b in zip(self.lower, self.upper, strict=True)], dtype=torch.float64)
        n = torch.tensor(self.indices, dtype=torch.float64)
        return ((2 * math.pi * n / L) ** 2).sum(1)

    def _factor(self, axis: int, n: int, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.lower[axis], self.upper[axis]
        L = b - a
        if n == 0:
            return torch.full_like(x, 1.0 / math.sqrt(L)), torch.zeros_like(x)
        w = 2 * math.pi * abs(n) / L
        arg = w * (x - a)
        c = math.sqrt(2.0 / L)
        if n > 0:
            return c * torch.cos(arg), -c * w * torch.sin(arg)
        return c * torch.sin(arg), c * w * torch.cos(arg)

    def evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """χ_n(x) ``[K, P]`` and ∇χ_n(x) ``[K, P, dim]`` for points ``x`` ``[P, dim]``."""
        if x.shape[1] != self.dim:
            raise ValueError(f"the noise basis is {self.dim}-D but the points are {x.shape[1]}-D")
        values, grads = [], []
        for n in self.indices:
            factors = [self._factor(i, n[i], x[:, i]) for i in range(self.dim)]
            v = math.prod(f for f, _ in factors) if self.dim > 1 else factors[0][0]
            g = []
            for i in range(self.dim):
                others = [factors[j][0] for j in range(self.dim) if j != i]
                g.append(factors[i][1] * (math.prod(others) if others else 1.0))
            values.append(v)
            grads.append(torch.stack(g, dim=-1))
        return torch.stack(values), torch.stack(grads)


class ColoredTransportNoise(NoiseModel):
    """N3 truncated: σ_{j,n}(x) = A q_n^{1/2} χ_n(x) e_j, j = 1..dim, over :class:`FourierBasis` modes (K = dim·|n|).

    Args:
        lower, upper: the box of the basis (usually the grid's domain).
        n_max: largest |n_i| (the truncation).
        alpha: spectrum exponent, q_n = (1 + |2πn/L|²)^{−α}; 0 is the truncated white noise.
        amplitude: A (a number or a function of τ).
    """

    label = "N3"

    def __init__(self, lower, upper, n_max: int, alpha: float = 0.0, amplitude: Amplitude = 1.0) -> None:
        self.basis = FourierBasis(lower, upper, n_max)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0 (a decaying spectrum), got {alpha}")
        self.alpha, self.amplitude = float(alpha), amplitude
        self.q = (1.0 + self.basis.wavenumbers()) ** (-self.alpha)

    def n_modes(self, dim: int) -> int:
        if dim != self.basis.dim:
            raise ValueError(f"this noise lives on a {self.basis.dim}-D box, not {dim}-D")
        return dim * len(self.basis)

    def _scaled(self, t, x: Tensor) -> tuple[Tensor, Tensor]:
        chi, dchi = self.basis.evaluate(x)
        s = _amplitude(self.amplitude, t, "amplitude") * self.q.to(dtype=x.dtype, device=x.device).sqrt()
        return s[:, None] * chi, s[:, None, None] * dchi

    def fields(self, t, x: Tensor) -> Tensor:
        chi, _ = self._scaled(t, x)  # [M, P]
        dim = x.shape[1]
        eye = torch.eye(dim, dtype=x.dtype, device=x.device)
        # mode (j, n) -> χ_n e_j, ordered direction-major
        return (eye[:, None, None, :] * chi[None, :, :, None]).reshape(dim * chi.shape[0], x.shape[0], dim)

    def ito_to_strat_drift(self, t, x: Tensor) -> Tensor:
        # (σ_{j,n}·∇)σ_{j,n} = s_n² χ_n ∂_j χ_n e_j, summed over n, one component j at a time
        chi, dchi = self._scaled(t, x)
        return -0.5 * (chi[:, :, None] * dchi).sum(0)

    def config(self) -> dict:
        return {"model": self.label, "n_max": self.basis.n_max, "alpha": self.alpha, "modes": len(self.basis)}


class AdditiveNoise(NoiseModel):
    """N4: a mass-preserving Q-Wiener source Σ_n A q_n^{1/2} ψ_n(x) dB^n over the mean-zero Fourier modes."""

    kind = "additive"
    label = "N4"

    def __init__(self, lower, upper, n_max: int, alpha: float = 1.0, amplitude: Amplitude = 1.0) -> None:
        self.basis = FourierBasis(lower, upper, n_max, include_constant=False)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha, self.amplitude = float(alpha), amplitude
        self.q = (1.0 + self.basis.wavenumbers()) ** (-self.alpha)

    def n_modes(self, dim: int) -> int:
        if dim != self.basis.dim:
            raise ValueError(f"this noise lives on a {self.basis.dim}-D box, not {dim}-D")
        return len(self.basis)

    def fields(self, t, x: Tensor) -> Tensor:
        raise TypeError("AdditiveNoise (N4) has no transport fields; it is a source in the density equation")

    def sources(self, t, x: Tensor) -> Tensor:
        chi, _ = self.basis.evaluate(x)
        s = _amplitude(self.amplitude, t, "amplitude") * self.q.to(dtype=x.dtype, device=x.device).sqrt()
        return s[:, None] * chi

    def config(self) -> dict:
        return {"model": self.label, "n_max": self.basis.n_max, "alpha": self.alpha, "modes": len(self.basis)}


class SmoothBrownianPath:
    """A Karhunen–Loève truncation of a Brownian motion on [t0, t1], one path per batch row and mode.

    B(t) = Σ_{j=1}^{J} ξ_j √(2S) sin(ω_j s)/(ω_j S),  s = |t − t0|, S = |t1 − t0|, ω_j = (j − ½)π/S, ξ_j ~ N(0, 1):
    the exact KL expansion of Brownian motion truncated after J terms (Var B(s) → s as J → ∞). Its derivative
    Σ ξ_j √(2/S) cos(ω_j s) is smooth, so the SPDE driven by it is a random ODE; as J → ∞ its solutions converge
    to the Stratonovich SPDE (Wong–Zakai). Resolution in time ≈ S/J.

    Args:
        tspan: (t0, t1), either direction.
        n_terms: J.
        shape: ``(B, K)``: batch rows (independent SPDE realisations) × noise modes.
    """

    def __init__(
        self,
        tspan: tuple[float, float],
        n_terms: int,
        shape: tuple[int, int],
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(n_terms, int) or n_terms < 1:
            raise ValueError(f"n_terms must be a positive integer, got {n_terms!r}")
        self.t0, self.t1 = float(tspan[0]), float(tspan[1])
        self.S = abs(self.t1 - self.t0)
        if self.S == 0:
            raise ValueError("tspan must have positive length")
        self.shape = tuple(shape)
        self.xi = torch.randn((n_terms, *self.shape), generator=generator, dtype=dtype, device=device)
        self.omega = (torch.arange(1, n_terms + 1, dtype=dtype, device=device) - 0.5) * math.pi / self.S

    def _elapsed(self, t) -> Tensor:
        t = torch.as_tensor(t, dtype=self.xi.dtype, device=self.xi.device)
        s = (t - self.t0).abs()
        if s.dim() == 0:
            return s.expand(self.shape[0])
        if s.shape != (self.shape[0],):
            raise ValueError(f"t must be a number or a [B] tensor with B = {self.shape[0]}, got {tuple(s.shape)}")
        return s

    def value(self, t) -> Tensor:
        """B(t) ``[B, K]``."""
        s = self._elapsed(t)  # [B]
        basis = math.sqrt(2 * self.S) * torch.sin(self.omega[:, None] * s[None]) / (self.omega[:, None] * self.S)
        return torch.einsum("jb,jbk->bk", basis, self.xi)

    def rate(self, t) -> Tensor:
        """dB/dt ``[B, K]`` (signed in the direction of integration: the path runs from t0 to t1)."""
        s = self._elapsed(t)
        basis = math.sqrt(2 / self.S) * torch.cos(self.omega[:, None] * s[None])
        sign = 1.0 if self.t1 > self.t0 else -1.0
        return sign * torch.einsum("jb,jbk->bk", basis, self.xi)
