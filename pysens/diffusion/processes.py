"""Forward (noising) processes: one object per process, closed-form coefficients only.

Every process here is an affine (linear-Gaussian) SDE

    dX = f(t) X dt + g(t) dW,    t ∈ [0, T],  t = 0 data, t = T noise,

whose transition from data is X_t = α_t X_0 + β_t Z with Z ~ N(0, I). The coefficients are tied by
(seed000_sensitivity.md §1.3)

    f = d log α_t / dt,        g² = d(β_t²)/dt − 2 f β_t².

Time arguments are a Python float, a 0-d tensor or a ``[B]`` tensor (per-sample times). Coefficients come back
as tensors with ``t``'s dtype and device when ``t`` is a tensor, and as 0-d float64 tensors when ``t`` is a
Python number. ``expand_as_batch`` reshapes such a coefficient to broadcast against a state ``[B, *event]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pysens.validation import check_dtype, check_int, check_number

Time = float | Tensor

__all__ = [
    "EDM",
    "PROCESSES",
    "VE",
    "VP",
    "ForwardProcess",
    "OU",
    "SubVP",
    "Time",
    "as_time",
    "can_inspect_values",
    "expand_as_batch",
    "make_process",
    "process_from_config",
    "resolve_process",
    "time_like",
]


def as_time(t: Time) -> Tensor:
    """``t`` as a floating tensor: Python numbers become 0-d float64, integer tensors become float64."""
    if isinstance(t, Tensor):
        return t if t.is_floating_point() else t.to(torch.float64)
    return torch.tensor(float(t), dtype=torch.float64)


def can_inspect_values(x: Tensor) -> bool:
    """False inside functorch transforms (``torch.func.vmap``, ``grad``, ``jacrev``), where a tensor's values
    cannot drive Python control flow; input checks that read values are skipped there."""
    return not torch._C._functorch.is_functorch_wrapped_tensor(x)


def time_like(t: Time, x: Tensor, name: str = "t") -> Tensor:
    """``t`` as a 0-d or ``[B]`` tensor on ``x``'s dtype and device, for a state ``x`` of shape ``[B, *event]``.

    The conversion keeps autograd history, so derivatives with respect to ``t`` flow through.
    Raises ``ValueError`` naming ``name`` when ``t`` is neither 0-d nor ``[B]``.
    """
    t = as_time(t).to(dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return t
    if t.dim() == 1 and t.shape[0] == x.shape[0]:
        return t
    raise ValueError(
        f"{name} must be a float, a 0-d tensor or a [B] tensor with B = {x.shape[0]} (the batch size of x); "
        f"got shape {tuple(t.shape)}"
    )


def expand_as_batch(c: Tensor, x: Tensor) -> Tensor:
    """Reshape a 0-d or ``[B]`` coefficient so it broadcasts against ``x`` of shape ``[B, *event]``.

    A 0-d coefficient is returned as is; a ``[B]`` one becomes ``[B, 1, ..., 1]`` (``x.dim()`` axes).
    """
    if c.dim() == 0:
        return c
    if c.dim() == 1 and c.shape[0] in (1, x.shape[0]):
        return c.reshape(c.shape[0], *([1] * (x.dim() - 1)))
    raise ValueError(f"a time coefficient must be 0-d or [B] with B = {x.shape[0]}; got shape {tuple(c.shape)}")


class ForwardProcess:
    """Base class of the affine forward processes dX = f(t) X dt + g(t) dW on [0, T].

    Subclasses set ``name``, ``T``, ``t_eps`` (the smallest time samplers and likelihoods use by default),
    ``prior_std`` (the prior is N(0, prior_std² I)) and implement the tensor-level coefficients
    ``_log_scale``, ``_sigma``, ``_drift_coef`` and ``_g2``.
    """

    name: str = "ForwardProcess"
    T: float
    t_eps: float
    prior_std: float

    # -- coefficients ------------------------------------------------------------------------------------------
    def log_scale(self, t: Time) -> Tensor:
        """log α_t, shaped like ``t``."""
        return self._log_scale(as_time(t))

    def scale(self, t: Time) -> Tensor:
        """α_t, the mean factor of the transition from data, shaped like ``t``."""
        return torch.exp(self._log_scale(as_time(t)))

    def sigma(self, t: Time) -> Tensor:
        """β_t, the noise std of the transition from data (X_t = α_t X_0 + β_t Z), shaped like ``t``."""
        return self._sigma(as_time(t))

    def drift_coef(self, t: Time) -> Tensor:
        """f(t) = d log α_t / dt, shaped like ``t``."""
        return self._drift_coef(as_time(t))

    def g2(self, t: Time) -> Tensor:
        """g(t)² = d(β_t²)/dt − 2 f(t) β_t², shaped like ``t``."""
        return self._g2(as_time(t))

    def diffusion(self, t: Time) -> Tensor:
        """g(t), shaped like ``t``."""
        return torch.sqrt(self._g2(as_time(t)))

    # -- prior ------------------------------------------------------------------------------------------------
    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw from the prior N(0, prior_std² I); ``shape`` is ``[B, *event]``.

        Without ``device`` the draw is made on the generator's device (CPU when there is no generator).
        """
        if isinstance(shape, (int, str)) or not all(check_int(n, "shape", minimum=1) for n in shape) or not shape:
            raise TypeError(f"shape must be a sequence of positive integers [B, *event], got {shape!r}")
        check_dtype(dtype, "dtype")
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return self.prior_std * z

    def prior_log_density(self, x: Tensor) -> Tensor:
        """log N(x; 0, prior_std² I) of ``x`` ``[B, *event]``, summed over the event axes, shape ``[B]``."""
        if x.dim() < 1:
            raise ValueError(f"x must have a batch axis, shape [B, *event]; got shape {tuple(x.shape)}")
        flat = x.reshape(x.shape[0], -1)
        d = flat.shape[1]
        var = self.prior_std**2
        return -0.5 * (flat**2).sum(dim=1) / var - 0.5 * d * math.log(2.0 * math.pi * var)

    # -- checks and serialisation -----------------------------------------------------------------------------
    def check_time(self, t: Time, name: str = "t") -> None:
        """Raise ``ValueError`` naming ``name`` unless every entry of ``t`` is finite and in [0, T].

        The upper end allows a few ulps of round-off (``t = T·(1 + 8 eps)`` still passes).
        """
        t = as_time(t)
        if not can_inspect_values(t):
            return
        tol = 8.0 * torch.finfo(t.dtype).eps * max(self.T, 1.0)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} must be finite; got {_describe(t)}")
        if bool((t < 0).any()) or bool((t > self.T + tol).any()):
            raise ValueError(f"{name} must lie in [0, T] = [0, {self.T:g}] for {self.name}; got {_describe(t)}")

    def params(self) -> dict[str, float]:
        """Constructor arguments of this process."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """``{"class": name, **params}``, enough for ``process_from_config`` to rebuild the process."""
        return {"class": type(self).__name__, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ForwardProcess) and type(self) is type(other) and self.params() == other.params()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params().items()))))

    # -- subclass interface -----------------------------------------------------------------------------------
    def _log_scale(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _drift_coef(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _g2(self, t: Tensor) -> Tensor:
        raise NotImplementedError


def _positive(value: Any, name: str) -> float:
    """A process parameter: a finite positive real number (strings, bools, NaN and inf are refused)."""
    return check_number(value, name, positive=True)


def _describe(t: Tensor) -> str:
    if t.numel() == 1:
        return f"{t.item()!r}"
    return f"a tensor with min {t.min().item()!r} and max {t.max().item()!r}"


class VP(ForwardProcess):
    """Variance-preserving process (Song et al. 2021), linear rate b(t) = β_min + t (β_max − β_min).

    α_t = exp(−½ B(t)) with B(t) = ∫₀ᵗ b = β_min t + ½ t² (β_max − β_min), β_t² = 1 − α_t² = −expm1(−B(t)),
    f = −b/2, g² = b. Prior N(0, I). ``T`` only sets where the time axis ends; b keeps its formula in t.
    """

    name = "VP"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0) -> None:
        beta_min, beta_max = _positive(beta_min, "beta_min"), _positive(beta_max, "beta_max")
        T = _positive(T, "T")
        if not (beta_min > 0 and beta_max >= beta_min):
            raise ValueError(f"need 0 < beta_min <= beta_max; got beta_min={beta_min}, beta_max={beta_max}")
        if not T > 0:
            raise ValueError(f"T must be positive; got {T}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.T = float(T)
        self.t_eps = 1e-5
        self.prior_std = 1.0

    def params(self) -> dict[str, float]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "T": self.T}

    def rate(self, t: Time) -> Tensor:
        """b(t) = β_min + t (β_max − β_min)."""
        t = as_time(t)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_rate(self, t: Time) -> Tensor:
        """B(t) = ∫₀ᵗ b(s) ds = β_min t + ½ t² (β_max − β_min)."""
        t = as_time(t)
        return t * (self.beta_min + 0.5 * t * (self.beta_max - self.beta_min))

    def _log_scale(self, t: Tensor) -> Tensor:
        return -0.5 * self.integrated_rate(t)

    def _sigma(self, t: Tensor) -> Tensor:
        # expm1 keeps β_t² = 1 − exp(−B) accurate when B is tiny (t near 0), where 1 − α² would cancel.
        return torch.sqrt(-torch.expm1(-self.integrated_rate(t)))

    def _drift_coef(self, t: Tensor) -> Tensor:
        return -0.5 * self.rate(t)

    def _g2(self, t: Tensor) -> Tensor:
        return self.rate(t)


class SubVP(VP):
    """Sub-VP process (Song et al. 2021): the VP mean factor with a smaller variance.

    α_t as in ``VP``, β_t = 1 − α_t² = −expm1(−B(t)), f = −b/2, g² = b (1 − α_t⁴) = b·(−expm1(−2B)).
    Prior N(0, I).
    """

    name = "SubVP"

    def _sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.integrated_rate(t))

    def _g2(self, t: Tensor) -> Tensor:
        return self.rate(t) * -torch.expm1(-2.0 * self.integrated_rate(t))


class VE(ForwardProcess):
    """Variance-exploding process (Song et al. 2021) with geometric noise σ(t) = σ_min (σ_max/σ_min)^{t/T}.

    α = 1, f = 0, g² = dσ²/dt = 2 σ(t)² log(σ_max/σ_min) / T. The transition std from data is the **exact**
    β_t = sqrt(σ(t)² − σ_min²) = σ_min sqrt(expm1(2 (t/T) log(σ_max/σ_min))), so β_0 = 0 and the SDE and the
    transition agree. Song et al.'s code uses σ(t) itself as the transition std, which is the exact one only
    up to the σ_min² offset (it pretends the data were already noised by σ_min at t = 0).

    Prior N(0, σ_max² I), the usual choice; the true marginal at T has covariance Cov(X_0) + (σ_max² − σ_min²) I,
    so the prior is deliberately an approximation of it.
    """

    name = "VE"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0) -> None:
        sigma_min, sigma_max = _positive(sigma_min, "sigma_min"), _positive(sigma_max, "sigma_max")
        T = _positive(T, "T")
        if not (sigma_min > 0 and sigma_max > sigma_min):
            raise ValueError(f"need 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
        if not T > 0:
            raise ValueError(f"T must be positive; got {T}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.T = float(T)
        self.t_eps = 1e-5
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def params(self) -> dict[str, float]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "T": self.T}

    def noise_level(self, t: Time) -> Tensor:
        """σ(t) = σ_min (σ_max/σ_min)^{t/T} (Song et al.'s noise level, not the transition std)."""
        t = as_time(t)
        return self.sigma_min * torch.exp(t * (self._log_ratio / self.T))

    def _log_scale(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _sigma(self, t: Tensor) -> Tensor:
        # β² = σ_min² (r^{2t/T} − 1); expm1 keeps it accurate near t = 0.
        return self.sigma_min * torch.sqrt(torch.expm1(t * (2.0 * self._log_ratio / self.T)))

    def _drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: Tensor) -> Tensor:
        return self.noise_level(t) ** 2 * (2.0 * self._log_ratio / self.T)


class EDM(ForwardProcess):
    """EDM process (Karras et al. 2022): time is the noise level.

    α = 1, β_t = t, f = 0, g² = 2t, T = σ_max, t_eps = σ_min, prior N(0, σ_max² I).
    """

    name = "EDM"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        sigma_min, sigma_max = _positive(sigma_min, "sigma_min"), _positive(sigma_max, "sigma_max")
        if not (sigma_min > 0 and sigma_max > sigma_min):
            raise ValueError(f"need 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.T = self.sigma_max
        self.t_eps = self.sigma_min
        self.prior_std = self.sigma_max

    def params(self) -> dict[str, float]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def _log_scale(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _sigma(self, t: Tensor) -> Tensor:
        return t.clone()

    def _drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: Tensor) -> Tensor:
        return 2.0 * t


class OU(ForwardProcess):
    """Ornstein–Uhlenbeck process dX = −r X dt + sqrt(g2) dW, the forward SDE of Deveney et al. (seed001 §2.1).

    α_t = e^{−r t}, β_t² = (g2 / 2r)(1 − e^{−2 r t}), f = −r, g² = g2 (constant), prior N(0, (g2 / 2r) I), the
    stationary law. The defaults r = 1, g2 = 1, T = 10 are the authors' (``OU_rate = −1``, ``g = 1``): prior
    N(0, ½ I), β_t² = ½(1 − e^{−2t}). In VP language this is β(t) ≡ 2r with stationary variance g2/(2r).
    """

    name = "OU"

    def __init__(self, rate: float = 1.0, g2: float = 1.0, T: float = 10.0) -> None:
        rate, g2, T = _positive(rate, "rate"), _positive(g2, "g2"), _positive(T, "T")
        if not (rate > 0 and g2 > 0):
            raise ValueError(f"need rate > 0 and g2 > 0; got rate={rate}, g2={g2}")
        if not T > 0:
            raise ValueError(f"T must be positive; got {T}")
        self.rate = float(rate)
        self.g2_value = float(g2)
        self.T = float(T)
        self.t_eps = 1e-5
        self.prior_std = math.sqrt(self.g2_value / (2.0 * self.rate))

    def params(self) -> dict[str, float]:
        return {"rate": self.rate, "g2": self.g2_value, "T": self.T}

    def _log_scale(self, t: Tensor) -> Tensor:
        return -self.rate * t

    def _sigma(self, t: Tensor) -> Tensor:
        # expm1 keeps β_t² = (g2/2r)(1 − e^{−2rt}) accurate near t = 0.
        return torch.sqrt(-torch.expm1(-2.0 * self.rate * t) * (self.g2_value / (2.0 * self.rate)))

    def _drift_coef(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -self.rate)

    def _g2(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.g2_value)


PROCESSES: dict[str, type[ForwardProcess]] = {"VP": VP, "SubVP": SubVP, "VE": VE, "EDM": EDM, "OU": OU}


def make_process(name: str, **params: float) -> ForwardProcess:
    """Build a process by its name in ``PROCESSES`` (``"VP"``, ``"SubVP"``, ``"VE"``, ``"EDM"``, ``"OU"``)."""
    try:
        cls = PROCESSES[name]
    except KeyError:
        raise ValueError(f"unknown forward process {name!r}; known processes: {', '.join(PROCESSES)}") from None
    return cls(**params)


def resolve_process(process: ForwardProcess | str) -> ForwardProcess:
    """Accept a process object or the name of one (built with default parameters)."""
    if isinstance(process, ForwardProcess):
        return process
    if isinstance(process, str):
        return make_process(process)
    raise TypeError(f"process must be a ForwardProcess or one of {list(PROCESSES)}; got {type(process).__name__}")


def process_from_config(config: dict[str, Any]) -> ForwardProcess:
    """Rebuild a process from ``ForwardProcess.config()``."""
    if not isinstance(config, dict) or "class" not in config:
        raise ValueError(f"a process config is a dict with a 'class' key; got {config!r}")
    params = {k: v for k, v in config.items() if k != "class"}
    return make_process(config["class"], **params)
