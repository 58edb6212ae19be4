"""Exact score models: noised Gaussian mixtures and the empirical (memorising) score.

A score model is anything callable as ``score(x, t) -> tensor shaped like x`` with ``x`` ``[B, *event_shape]``
and ``t`` a float, 0-d or ``[B]`` tensor (see CONVENTIONS.md). The classes here know their density in closed
form, so they also expose ``log_density(x, t) -> [B]``. They are ``torch.nn.Module``s whose parameters are
buffers, so ``.to(device, dtype)`` moves them; inputs must then match the model's dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pysens.diffusion.mixture_derivatives import mixture_score_and_divergence, mixture_score_and_jacobian
from pysens.diffusion.mixtures import (
    MixtureCovariance,
    MixtureEvaluation,
    mixture_covariance,
    noised_mixture_log_density_and_score,
    sample_gaussian_mixture,
)
from pysens.diffusion.processes import ForwardProcess, Time, resolve_process, time_like

__all__ = ["EmpiricalScore", "GaussianMixtureScore", "check_state", "normalised_weights"]


def check_state(x: Tensor, event_shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> None:
    """Raise a ``TypeError``/``ValueError`` naming ``x`` unless it is a ``[B, *event_shape]`` tensor of the given
    dtype on the given device.

    Non-finite rows are not refused: their score and log-density are NaN in those rows only, as a network's would be,
    so a solver stage that went non-finite for one sample gives that sample a non-Success retcode instead of aborting
    the whole batch (the verbs check the user's own inputs for finiteness).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    event_shape = tuple(event_shape)
    if x.dim() != 1 + len(event_shape) or tuple(x.shape[1:]) != event_shape:
        raise ValueError(
            f"x must have shape [B, {', '.join(map(str, event_shape))}] (batch first, event shape "
            f"{event_shape}); got shape {tuple(x.shape)}"
        )
    if x.dtype != dtype:
        raise TypeError(f"x has dtype {x.dtype} but the model is {dtype}; convert x or call model.to({dtype}) first")
    if x.device != device:
        raise ValueError(f"x is on device {x.device} but the model is on {device}; move one of them first")


class GaussianMixtureScore(nn.Module):
    """Exact score of a Gaussian mixture data law pushed through a forward process.

    p_0 = Σ_k w_k N(m_k, C_k) and p_t = Σ_k w_k N(α_t m_k, α_t² C_k + β_t² I); the score is ∇ log p_t
    (closed form, ``pysens.diffusion.mixtures``).

    Args:
        means: ``[K, *event_shape]`` component means (d = prod(event_shape)).
        covariances: None (point masses), ``[K]`` (isotropic), ``[K, d]`` (diagonal) or ``[K, d, d]`` (full,
            symmetric positive semi-definite; eigendecomposed once here).
        weights: ``[K]``, non-negative with a positive sum (normalised here); uniform when None.
        process: a ``ForwardProcess`` or the name of one in ``PROCESSES`` (default parameters).

    Integer means are converted to float64; covariances and weights take the means' dtype and device.
    """

    def __init__(
        self,
        means: Tensor,
        covariances: Tensor | None = None,
        weights: Tensor | None = None,
        process: ForwardProcess | str = "VP",
    ) -> None:
        super().__init__()
        self.process = resolve_process(process)
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.float64)
        if means.dim() < 2:
            raise ValueError(f"means must be [K, *event_shape]; got shape {tuple(means.shape)}")
        if means.shape[0] == 0:
            raise ValueError("means must contain at least one component (got K = 0)")
        if not bool(torch.isfinite(means).all()):
            raise ValueError("means must be finite")
        K = means.shape[0]
        self._event_shape = torch.Size(means.shape[1:])
        d = math.prod(self._event_shape)
        flat_means = means.reshape(K, d)

        if covariances is not None:
            covariances = torch.as_tensor(covariances, dtype=means.dtype, device=means.device)
        covariance = mixture_covariance(covariances, K, d)
        self._covariance_kind = covariance.kind
        self._min_variance = covariance.min_variance

        self.register_buffer("means", flat_means.detach().clone())
        self.register_buffer("weights", normalised_weights(weights, K, flat_means))
        self.register_buffer("log_weights", torch.log(self.weights))
        self.register_buffer("variances", covariance.variances)
        self.register_buffer("eigenvectors", covariance.eigenvectors)

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def event_shape(self) -> torch.Size:
        return self._event_shape

    @property
    def dim(self) -> int:
        """d = prod(event_shape)."""
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def covariance(self) -> MixtureCovariance:
        """The component covariances in kernel form (on the model's current dtype and device)."""
        return MixtureCovariance(self._covariance_kind, self.variances, self.eigenvectors, self._min_variance)

    # -- evaluation -------------------------------------------------------------------------------------------
    def log_density_and_score(self, x: Tensor, t: Time) -> MixtureEvaluation:
        """log p_t(x) ``[B]`` and ∇_x log p_t(x) ``[B, *event_shape]`` for x ``[B, *event_shape]``."""
        check_state(x, self._event_shape, self.means.dtype, self.means.device)
        self.process.check_time(t)
        t = time_like(t, x)
        alpha = self.process.scale(t)
        beta = self.process.sigma(t)
        flat = x.reshape(x.shape[0], -1)
        result = noised_mixture_log_density_and_score(flat, alpha, beta, self.means, self.log_weights, self.covariance)
        return MixtureEvaluation(result.log_density, result.score.reshape(x.shape))

    def forward(self, x: Tensor, t: Time) -> Tensor:
        """The score ∇_x log p_t(x), shaped like ``x``."""
        return self.log_density_and_score(x, t).score

    def _flat_coefficients(self, x: Tensor, t: Time) -> tuple[Tensor, Tensor, Tensor]:
        check_state(x, self._event_shape, self.means.dtype, self.means.device)
        self.process.check_time(t)
        t = time_like(t, x).expand(x.shape[0])
        return x.reshape(x.shape[0], -1), self.process.scale(t), self.process.sigma(t)

    def score_and_divergence(self, x: Tensor, t: Time) -> tuple[Tensor, Tensor]:
        """The score (shaped like ``x``) and its exact divergence ∇·s ``[B]`` in closed form (one pass, no autodiff;
        :mod:`pysens.diffusion.mixture_derivatives`)."""
        flat, alpha, beta = self._flat_coefficients(x, t)
        s, div = mixture_score_and_divergence(flat, alpha, beta, self.means, self.log_weights, self.covariance)
        return s.reshape(x.shape), div

    def score_and_jacobian(self, x: Tensor, t: Time) -> tuple[Tensor, Tensor]:
        """The score (shaped like ``x``) and its per-sample Jacobian ∇s ``[B, d, d]`` in closed form."""
        flat, alpha, beta = self._flat_coefficients(x, t)
        s, jac = mixture_score_and_jacobian(flat, alpha, beta, self.means, self.log_weights, self.covariance)
        return s.reshape(x.shape), jac

    def log_density(self, x: Tensor, t: Time) -> Tensor:
        """log p_t(x), shape ``[B]``."""
        return self.log_density_and_score(x, t).log_density

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` points ``[n, *event_shape]`` from the t = 0 mixture (the generator must be on the model's
        device)."""
        if n < 0:
            raise ValueError(f"n must be non-negative; got {n}")
        flat = sample_gaussian_mixture(n, self.means, self.weights, self.covariance, generator)
        return flat.reshape(n, *self._event_shape)

    def extra_repr(self) -> str:
        return (
            f"K={self.num_components}, event_shape={tuple(self._event_shape)}, "
            f"covariances={self._covariance_kind}, process={self.process!r}"
        )


class EmpiricalScore(GaussianMixtureScore):
    """Exact optimal score of a finite, weighted training set (the memorising model).

    p_0 = Σ_i w_i δ_{y_i}, so p_t = Σ_i w_i N(α_t y_i, β_t² I) and ∇ log p_t(x) = (α_t E[Y | x] − x)/β_t²
    with posterior weights softmax_i(log w_i − |x − α_t y_i|²/(2β_t²)). Requires β_t > 0 (t > 0).

    Args:
        points: ``[N, *event_shape]`` training points (N ≥ 1).
        weights: ``[N]``, non-negative with a positive sum; uniform when None.
        process: a ``ForwardProcess`` or a name in ``PROCESSES``.
    """

    def __init__(self, points: Tensor, weights: Tensor | None = None, process: ForwardProcess | str = "VP") -> None:
        points = torch.as_tensor(points)
        if points.dim() < 2:
            raise ValueError(f"points must be [N, *event_shape]; got shape {tuple(points.shape)}")
        if points.shape[0] == 0:
            raise ValueError("points must contain at least one point (got an empty set)")
        super().__init__(points, covariances=None, weights=weights, process=process)

    @property
    def points(self) -> Tensor:
        """The training points, ``[N, *event_shape]``."""
        return self.means.reshape(-1, *self.event_shape)


def normalised_weights(weights: Tensor | None, K: int, like: Tensor) -> Tensor:
    if weights is None:
        return torch.full((K,), 1.0 / K, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if w.shape != (K,):
        raise ValueError(f"weights must have shape [K] = [{K}]; got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weights must be finite")
    if bool((w < 0).any()):
        raise ValueError(f"weights must be non-negative; got minimum {float(w.min())!r}")
    total = w.sum()
    if not float(total) > 0:
        raise ValueError("weights must have a positive sum")
    return w / total
