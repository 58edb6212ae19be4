"""Parameterisation adapters: turn ε-predictors and denoisers into score models and back.

For the transition X_t = α_t X_0 + β_t ε (processes.py) the three usual network outputs are tied by

    score      s(x, t) = ∇ log p_t(x)
    noise      ε̂(x, t) = E[ε | X_t = x]  = −β_t s            (so s = −ε̂ / β_t)
    denoiser   D(x, t) = E[X_0 | X_t = x] = (x + β_t² s)/α_t  (Tweedie; so s = (α_t D − x)/β_t²)

EDM's denoiser is the α = 1, β = t case: s = (D − x)/t². Each adapter is an ``nn.Module`` wrapping a model
(a module or any callable ``model(x, t)``) and a process; ``t`` is a float, 0-d or ``[B]`` tensor.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from pysens.diffusion.processes import ForwardProcess, Time, expand_as_batch, resolve_process, time_like

__all__ = ["DenoiserToScore", "EpsilonToScore", "ScoreToDenoiser", "ScoreToEpsilon"]

Model = Callable[[Tensor, Time], Tensor]


class _Adapter(nn.Module):
    def __init__(self, model: Model, process: ForwardProcess | str) -> None:
        super().__init__()
        # A module is registered as a submodule (so .to() and state_dict reach it); a plain callable is stored.
        self.model = model
        self.process = resolve_process(process)

    def _coefficients(self, x: Tensor, t: Time) -> tuple[Tensor, Tensor, Tensor]:
        t = time_like(t, x)
        return t, expand_as_batch(self.process.scale(t), x), expand_as_batch(self.process.sigma(t), x)


class EpsilonToScore(_Adapter):
    """Score from an ε-predictor: s = −ε̂(x, t) / β_t."""

    def forward(self, x: Tensor, t: Time) -> Tensor:
        t, _, beta = self._coefficients(x, t)
        return -self.model(x, t) / beta


class DenoiserToScore(_Adapter):
    """Score from a denoiser (Tweedie): s = (α_t D(x, t) − x) / β_t²."""

    def forward(self, x: Tensor, t: Time) -> Tensor:
        t, alpha, beta = self._coefficients(x, t)
        return (alpha * self.model(x, t) - x) / beta**2


class ScoreToEpsilon(_Adapter):
    """ε-prediction from a score model: ε̂ = −β_t s(x, t)."""

    def forward(self, x: Tensor, t: Time) -> Tensor:
        t, _, beta = self._coefficients(x, t)
        return -beta * self.model(x, t)


class ScoreToDenoiser(_Adapter):
    """Denoiser from a score model (Tweedie): D = (x + β_t² s(x, t)) / α_t."""

    def forward(self, x: Tensor, t: Time) -> Tensor:
        t, alpha, beta = self._coefficients(x, t)
        return (x + beta**2 * self.model(x, t)) / alpha
