"""Discrete DDPM schedules, their explicit map to continuous time, and trajectory windows.

Digest seed002 §3.1. A DDPM has timesteps k ∈ {0, …, T−1} (0-based, as in ``diffusers``) with rates β_k,
α_k = 1 − β_k and ᾱ_k = ∏_{j≤k} α_j, so q(x_k | x_0) = N(√ᾱ_k x_0, (1 − ᾱ_k) I). Sampling runs k = T−1 → 0.

The continuous convention of the package (CONVENTIONS.md) is forward time t ∈ [0, T_c] with
X_t = α_t X_0 + β_t Z. A DDPM step maps to continuous time **explicitly**, never by position:

* ``time_map="exact"`` (default): t_k solves α_{t_k}² = ᾱ_k for the given process, so the continuous marginal at
  t_k *is* the discrete marginal at k and a continuous score at t_k is the exact discrete ε-target
  (ε = −β_{t_k} s(x, t_k) with β_{t_k} = √(1 − ᾱ_k)). For the linear schedule (1e-4, 0.02, T = 1000) and
  VP(0.1, 20), t_999 ≈ 1.0034 > 1: use :meth:`DDPMSchedule.vp_process`, whose horizon ends at t_{T−1}.
* ``time_map="linear"``: t_k = (k + 1)/T · T_c, score_sde's convention (Song et al. 2021, App. B); the marginals
  then agree only to O(β²).

The ε-error → particle displacement factor of the ancestral step is γ_k = β_k / (√α_k √(1 − ᾱ_k)) (§3.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pysens.diffusion.processes import VP, ForwardProcess

__all__ = [
    "TIME_MAPS",
    "VARIANCES",
    "WINDOW_WHERE",
    "DDPMSchedule",
    "alpha_bar",
    "eps_to_score",
    "linear_betas",
    "score_to_eps",
    "window",
    "window_steps",
]

TIME_MAPS = ("exact", "linear")
VARIANCES = ("fixedsmall", "fixedlarge")
WINDOW_WHERE = ("start_of_sampling", "end_of_sampling", "full")


def linear_betas(T: int = 1000, beta_min: float = 1e-4, beta_max: float = 0.02, dtype=torch.float64) -> Tensor:
    """Ho et al. (2020)'s linear schedule β_k, k = 0..T−1, ``[T]``."""
    if not isinstance(T, int) or T < 2:
        raise ValueError(f"T must be an integer >= 2, got {T!r}")
    if not 0.0 < beta_min <= beta_max < 1.0:
        raise ValueError(f"need 0 < beta_min <= beta_max < 1, got beta_min={beta_min}, beta_max={beta_max}")
    return torch.linspace(beta_min, beta_max, T, dtype=dtype)


def alpha_bar(betas: Tensor) -> Tensor:
    """ᾱ_k = ∏_{j≤k} (1 − β_j), ``[T]`` (a cumulative sum of log1p keeps it accurate at small ᾱ)."""
    return torch.exp(torch.cumsum(torch.log1p(-betas), 0))


def eps_to_score(eps: Tensor, abar: Tensor | float) -> Tensor:
    """s = −ε / √(1 − ᾱ) (§3.1); ``abar`` a float or a tensor broadcastable to ``eps``."""
    return -eps / torch.sqrt(1.0 - torch.as_tensor(abar, dtype=eps.dtype, device=eps.device))


def score_to_eps(score: Tensor, abar: Tensor | float) -> Tensor:
    """ε = −√(1 − ᾱ) s (§3.1)."""
    return -score * torch.sqrt(1.0 - torch.as_tensor(abar, dtype=score.dtype, device=score.device))


def window_steps(n_steps: int, frac: float = 0.1, where: str = "start_of_sampling") -> range:
    """Positions (0-based, in sampling order) of the reverse steps in a window of a trajectory of ``n_steps``.

    ``frac`` is the fraction of reverse steps, ⌈frac · n_steps⌉ of them (digest §5.2, 𝒲_ρ = {0, …, ⌈ρK⌉ − 1});
    ``where="start_of_sampling"`` takes the first ones (pure noise side), ``"end_of_sampling"`` the last ones,
    ``"full"`` all of them (``frac`` must then be 1).
    """
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 < float(frac) <= 1.0:
        raise ValueError(f"frac must be a fraction in (0, 1] of the reverse steps, got {frac!r}")
    if where not in WINDOW_WHERE:
        raise ValueError(f"where must be one of {WINDOW_WHERE}, got {where!r}")
    if where == "full":
        if float(frac) != 1.0:
            raise ValueError(f"where='full' is the whole trajectory; frac must be 1, got {frac}")
        return range(n_steps)
    # round before ceil so 0.1 * 1000 = 100.00000000000001 gives 100 steps, not 101
    count = max(1, math.ceil(round(float(frac) * n_steps, 9)))
    return range(count) if where == "start_of_sampling" else range(n_steps - count, n_steps)


def window(T: int, frac: float = 0.1, where: str = "start_of_sampling") -> Tensor:
    """DDPM timesteps (0-based, in sampling order) of a window of the full T-step ancestral trajectory.

    ``window(1000, 0.1)`` is 999, 998, …, 900: the first 10% of reverse steps (digest §2, §5.1: "the initial 10%
    of the sampling trajectory" = timesteps 999→900). Returns a ``[⌈frac T⌉]`` int64 tensor.
    """
    positions = window_steps(T, frac, where)
    return torch.tensor([T - 1 - p for p in positions], dtype=torch.int64)


@dataclass
class DDPMSchedule:
    """A discrete DDPM noise schedule: ``betas`` ``[T]`` (float64) and everything derived from it.

    Attributes:
        betas: β_k, k = 0..T−1.
    """

    betas: Tensor

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu().reshape(-1)
        if betas.numel() < 2 or not bool(torch.isfinite(betas).all()) or bool((betas <= 0).any() | (betas >= 1).any()):
            raise ValueError("betas must be a 1-D schedule of at least two rates in (0, 1)")
        self.betas = betas

    @classmethod
    def linear(cls, T: int = 1000, beta_min: float = 1e-4, beta_max: float = 0.02) -> DDPMSchedule:
        """The linear schedule of Ho et al. (2020) (digest §3.1 defaults)."""
        return cls(linear_betas(T, beta_min, beta_max))

    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def alphas(self) -> Tensor:
        return 1.0 - self.betas

    @property
    def alpha_bars(self) -> Tensor:
        return alpha_bar(self.betas)

    def alpha_bar_prev(self) -> Tensor:
        """ᾱ_{k−1} with ᾱ_{−1} = 1, ``[T]``."""
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])

    def posterior_variance(self, var: str = "fixedsmall") -> Tensor:
        """σ_k² of the ancestral step: β̃_k = β_k (1 − ᾱ_{k−1})/(1 − ᾱ_k) ("fixedsmall") or β_k ("fixedlarge")."""
        if var == "fixedsmall":
            return self.betas * (1.0 - self.alpha_bar_prev()) / (1.0 - self.alpha_bars)
        if var == "fixedlarge":
            return self.betas.clone()
        raise ValueError(f"var must be one of {VARIANCES}, got {var!r}")

    def gamma(self) -> Tensor:
        """γ_k = β_k / (√α_k √(1 − ᾱ_k)): an ε-error δε moves an ancestral particle by −γ_k δε (§3.1)."""
        return self.betas / (torch.sqrt(self.alphas) * torch.sqrt(1.0 - self.alpha_bars))

    def vp_process(self, beta_min: float = 0.1, beta_max: float = 20.0) -> VP:
        """The VP process (linear rate β_min + t(β_max − β_min)) whose horizon T_c is exactly t_{T−1}, the time
        at which α_t² = ᾱ_{T−1}; with it, ``continuous_times(..., "exact")`` stays inside [0, T_c]."""
        target = -math.log(float(self.alpha_bars[-1]))  # B(T_c) = β_min T_c + ½ T_c² (β_max − β_min)
        a = 0.5 * (beta_max - beta_min)
        horizon = target / beta_min if a == 0 else (-beta_min + math.sqrt(beta_min**2 + 4 * a * target)) / (2 * a)
        return VP(beta_min=beta_min, beta_max=beta_max, T=horizon)

    def continuous_times(self, process: ForwardProcess, time_map: str = "exact") -> Tensor:
        """t_k for k = 0..T−1 on ``process``'s time axis, ``[T]`` float64 (see the module docstring).

        The exact map needs a variance-preserving process (α_t² + β_t² = 1, decreasing α_t), and raises when a
        DDPM marginal lies beyond the process's horizon.
        """
        if time_map not in TIME_MAPS:
            raise ValueError(f"time_map must be one of {TIME_MAPS}, got {time_map!r}")
        if time_map == "linear":
            return torch.arange(1, self.T + 1, dtype=torch.float64) * (process.T / self.T)
        probe = torch.linspace(0.0, process.T, 7, dtype=torch.float64)[1:]
        a, b = process.scale(probe), process.sigma(probe)
        if not bool(torch.allclose(a**2 + b**2, torch.ones_like(a), atol=1e-10)):
            raise ValueError(
                f"the exact DDPM time map needs a variance-preserving process (α² + β² = 1); {process!r} is not; "
                "use time_map='linear' or a VP process"
            )
        target = 0.5 * torch.log(self.alpha_bars)  # log α_{t_k}
        end = float(process.log_scale(process.T))
        if float(target[-1]) < end - 1e-12:
            raise ValueError(
                f"ᾱ_{self.T - 1} = {float(self.alpha_bars[-1]):.3e} lies beyond the horizon of {process!r} "
                f"(α_T² = {math.exp(2 * end):.3e}); build the process with DDPMSchedule.vp_process()"
            )
        lo = torch.zeros(self.T, dtype=torch.float64)
        hi = torch.full((self.T,), float(process.T), dtype=torch.float64)
        for _ in range(200):  # bisection on the decreasing log α_t: robust for any VP-type schedule
            mid = 0.5 * (lo + hi)
            above = process.log_scale(mid) > target
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
            if float((hi - lo).max()) <= 1e-15 * process.T:
                break
        return 0.5 * (lo + hi)
