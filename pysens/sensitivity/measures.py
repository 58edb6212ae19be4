"""Perturbation directions η for the data law ρ: probability measures, their signed combinations, and edits.

The perturbed law is ρ + εη (seed000_sensitivity.md §1.3). The score map is blind to a rescaling of the density,
so the direction σ − ρ (the mixture path (1 − ε)ρ + εσ) and the direction σ (the unnormalised ρ + εσ) have the same
score derivative; the ρ part of any direction contributes exactly nothing (``ModelMeasure``).

Every direction knows its contribution to the score derivative at (x, t) given the model's score s = s_t(x) and
log-density ℓ = log ρ_t(x) (digest §2.1, eq. ★):

    probability measure σ:   δs = exp(log σ_t(x) − ℓ) · (∇log σ_t(x) − s)
    signed combination:      δs = Σ_k c_k δs[σ_k]               (η = Σ_k c_k σ_k)
    Gaussian mean shift:     η = −∇·(σ u) for σ = N(m, C):
                             δs = −α_t exp(log σ_t − ℓ) [(u·∇log σ_t)(∇log σ_t − s) − Σ_t⁻¹ u],  Σ_t = α_t² C + β_t² I

All noised densities come from the one closed-form kernel
:func:`pysens.diffusion.mixtures.noised_mixture_log_density_and_score` (logsumexp, log space throughout): a set of
points with weights is a mixture of point masses, a Gaussian mixture is itself. The ratio σ_t/ρ_t is only ever
formed as ``exp(log σ_t − ℓ)``: in image dimension both logs are thousands of nats.

States are ``[B, *event_shape]``; times are a float, a 0-d or a ``[B]`` tensor; measures hold no process (the process
belongs to the model) and take it at evaluation. Measures are stored in their own dtype and cast to the state's
dtype and device when evaluated.

Data edits (§1.3, [INFERRED] reading): n training points, add m_a points with law σ_a and remove m_r with law σ_r,

    ρ' = (nρ + m_a σ_a − m_r σ_r)/(n + m_a − m_r) = ρ + ε η,
    ε = (m_a + m_r)/(n + m_a − m_r),   η = (m_a σ_a − m_r σ_r)/(m_a + m_r) − ((m_a − m_r)/(m_a + m_r)) ρ

(``convention="mixture"``, the default; adding only gives ε = m/(n + m), removing only ε = m/(n − m) along ρ − σ_r,
i.e. the digest's −m/(n − m) along σ_r − ρ). ``convention="additive"`` reads the edit as the unnormalised
nρ + m_a σ_a − m_r σ_r ∝ ρ + ((m_a + m_r)/n) η with the same η less its ρ part; the two agree to first order and differ
by a factor 1 + O(m/n) in ε.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pysens.diffusion.mixtures import (
    MixtureCovariance,
    MixtureEvaluation,
    mixture_covariance,
    noised_mixture_log_density_and_score,
)
from pysens.diffusion.processes import ForwardProcess, Time, expand_as_batch, time_like
from pysens.diffusion.scores import normalised_weights

__all__ = [
    "EDIT_CONVENTIONS",
    "DataEdit",
    "EmpiricalMeasure",
    "GaussianMeanShift",
    "GaussianMixtureMeasure",
    "ModelMeasure",
    "Perturbation",
    "ProbabilityMeasure",
    "SignedMeasure",
    "data_edit",
    "edit_epsilon",
]

EDIT_CONVENTIONS = ("mixture", "additive")


class Perturbation:
    """A direction η in the space of (signed) measures on the data space.

    Subclasses implement :meth:`score_derivative`. Directions combine linearly with ``+``, ``-``, unary ``-`` and
    multiplication by a number, giving a :class:`SignedMeasure`.
    """

    event_shape: torch.Size | None = None  # None: fits any state (ModelMeasure)

    @property
    def dim(self) -> int | None:
        """d = prod(event_shape), or None for a direction that fits any dimension."""
        return None if self.event_shape is None else math.prod(self.event_shape)

    def score_derivative(
        self, x: Tensor, t: Time, process: ForwardProcess, log_density: Tensor, score: Tensor
    ) -> Tensor:
        """This direction's δs_t(x) ``[B, *event]`` given the model's ``score`` s_t(x) ``[B, *event]`` and
        ``log_density`` ℓ = log ρ_t(x) ``[B]`` (digest eq. ★)."""
        raise NotImplementedError

    def terms(self) -> list[tuple[float, Perturbation]]:
        """The direction as Σ_k c_k η_k over directions that are not combinations themselves."""
        return [(1.0, self)]

    def check_state(self, x: Tensor, name: str = "perturbations") -> None:
        """Raise ``ValueError`` naming ``name`` unless this direction lives in the dimension of ``x``
        ``[B, *event]``."""
        d = self.dim
        if d is not None and math.prod(x.shape[1:]) != d:
            raise ValueError(
                f"{name}: a perturbation of event shape {tuple(self.event_shape)} (d = {d}) does not fit states of "
                f"shape {tuple(x.shape)} (d = {math.prod(x.shape[1:])})"
            )

    # -- linear combinations -------------------------------------------------------------------------------------
    def __add__(self, other: Perturbation) -> SignedMeasure:
        if not isinstance(other, Perturbation):
            return NotImplemented
        return SignedMeasure([*self.terms(), *other.terms()])

    def __sub__(self, other: Perturbation) -> SignedMeasure:
        if not isinstance(other, Perturbation):
            return NotImplemented
        return SignedMeasure([*self.terms(), *((-c, p) for c, p in other.terms())])

    def __neg__(self) -> SignedMeasure:
        return SignedMeasure([(-c, p) for c, p in self.terms()])

    def __mul__(self, factor: float) -> SignedMeasure:
        if not isinstance(factor, (int, float)) or isinstance(factor, bool):
            return NotImplemented
        return SignedMeasure([(float(factor) * c, p) for c, p in self.terms()])

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> SignedMeasure:
        if not isinstance(divisor, (int, float)) or isinstance(divisor, bool):
            return NotImplemented
        return self * (1.0 / float(divisor))


class ProbabilityMeasure(Perturbation):
    """A probability measure σ whose noised density σ_t = law of α_t Y + β_t Z (Y ~ σ) is known in closed form."""

    def log_density_and_score(self, x: Tensor, t: Time, process: ForwardProcess) -> MixtureEvaluation:
        """log σ_t(x) ``[B]`` and ∇_x log σ_t(x) ``[B, *event]``."""
        raise NotImplementedError

    def log_density(self, x: Tensor, t: Time, process: ForwardProcess) -> Tensor:
        """log σ_t(x), ``[B]``."""
        return self.log_density_and_score(x, t, process).log_density

    def score(self, x: Tensor, t: Time, process: ForwardProcess) -> Tensor:
        """∇_x log σ_t(x), ``[B, *event]``."""
        return self.log_density_and_score(x, t, process).score

    def score_derivative(
        self, x: Tensor, t: Time, process: ForwardProcess, log_density: Tensor, score: Tensor
    ) -> Tensor:
        # eq. ★: δs = r (∇log σ_t − s), r = σ_t/ρ_t formed in log space (r underflows to 0 far from σ, never nan)
        log_sigma, score_sigma = self.log_density_and_score(x, t, process)
        ratio = torch.exp(log_sigma - log_density)
        return expand_as_batch(ratio, x) * (score_sigma - score)


class GaussianMixtureMeasure(ProbabilityMeasure):
    """σ = Σ_k w_k N(m_k, C_k) (closed form at every t; point masses when ``covariances`` is None).

    Args:
        means: ``[K, *event_shape]`` component means, K ≥ 1.
        covariances: None (point masses), ``[K]`` (isotropic), ``[K, d]`` (diagonal) or ``[K, d, d]`` (full,
            symmetric positive semi-definite; eigendecomposed once here).
        weights: ``[K]`` probabilities (non-negative, positive sum; normalised here); uniform when None.
        name: the argument name used in error messages.
    """

    def __init__(
        self,
        means: Tensor,
        covariances: Tensor | None = None,
        weights: Tensor | None = None,
        *,
        name: str = "means",
    ) -> None:
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.float64)
        if means.dim() < 2:
            raise ValueError(f"{name} must be [K, *event_shape] (K ≥ 1); got shape {tuple(means.shape)}")
        if means.shape[0] == 0:
            raise ValueError(f"{name} is empty: a perturbation measure needs at least one point or component")
        if not bool(torch.isfinite(means).all()):
            raise ValueError(f"{name} must be finite")
        K = means.shape[0]
        self.event_shape = torch.Size(means.shape[1:])
        d = math.prod(self.event_shape)
        self.means = means.reshape(K, d).detach().clone()
        if covariances is not None:
            covariances = torch.as_tensor(covariances, dtype=means.dtype, device=means.device)
        self.covariance = mixture_covariance(covariances, K, d)
        self.weights = normalised_weights(weights, K, self.means)
        self.log_weights = torch.log(self.weights)
        self._cast_cache: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor, MixtureCovariance]] = {}

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def _cast(self, like: Tensor) -> tuple[Tensor, Tensor, MixtureCovariance]:
        key = (like.dtype, like.device)
        if key not in self._cast_cache:
            cov = self.covariance

            def to(v: Tensor | None) -> Tensor | None:
                return None if v is None else v.to(dtype=like.dtype, device=like.device)

            self._cast_cache[key] = (
                to(self.means),
                to(self.log_weights),
                MixtureCovariance(cov.kind, to(cov.variances), to(cov.eigenvectors), cov.min_variance),
            )
        return self._cast_cache[key]

    def log_density_and_score(self, x: Tensor, t: Time, process: ForwardProcess) -> MixtureEvaluation:
        self.check_state(x, "x")
        t = time_like(t, x)
        means, log_weights, covariance = self._cast(x)
        flat = x.reshape(x.shape[0], -1)
        out = noised_mixture_log_density_and_score(
            flat, process.scale(t), process.sigma(t), means, log_weights, covariance
        )
        return MixtureEvaluation(out.log_density, out.score.reshape(x.shape))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(K={self.num_components}, event_shape={tuple(self.event_shape)})"


class EmpiricalMeasure(GaussianMixtureMeasure):
    """The empirical law Σ_i w_i δ_{y_i} of a set of (added or removed) training points.

    Args:
        points: ``[N, *event_shape]``, N ≥ 1.
        weights: ``[N]`` probabilities (non-negative, positive sum; normalised); uniform when None.
        bandwidth: None for exact point masses (the default). A positive number h pre-smooths every point to
            N(y_i, h² I), so that σ has a density at t = 0 and σ_t uses the variance α_t² h² + β_t². This is the
            [INFERRED] reading (a) of the paper's t̃₁ < t₁ (digest §4.3): smoothing to noise level t̃₁ means
            h = β(t̃₁)/α(t̃₁).
    """

    def __init__(self, points: Tensor, weights: Tensor | None = None, *, bandwidth: float | None = None) -> None:
        points = torch.as_tensor(points)
        if points.dim() < 2:
            raise ValueError(f"points must be [N, *event_shape]; got shape {tuple(points.shape)}")
        if points.shape[0] == 0:
            raise ValueError("points is empty: an empirical measure needs at least one point")
        covariances = None
        if bandwidth is not None:
            if not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth > 0):
                raise ValueError(f"bandwidth must be a positive number or None; got {bandwidth!r}")
            dtype = points.dtype if points.is_floating_point() else torch.float64
            covariances = torch.full((points.shape[0],), float(bandwidth) ** 2, dtype=dtype, device=points.device)
        self.bandwidth = bandwidth
        super().__init__(points, covariances, weights, name="points")

    @property
    def points(self) -> Tensor:
        """``[N, *event_shape]``."""
        return self.means.reshape(-1, *self.event_shape)

    def __repr__(self) -> str:
        extra = "" if self.bandwidth is None else f", bandwidth={self.bandwidth:g}"
        return f"EmpiricalMeasure(N={self.num_components}, event_shape={tuple(self.event_shape)}{extra})"


class ModelMeasure(Perturbation):
    """The model's own law ρ as a direction. Its noised log-density is ℓ and its score is s, so its score
    derivative is exactly zero: it only makes σ − ρ (the mixture path) writable as such."""

    def score_derivative(
        self, x: Tensor, t: Time, process: ForwardProcess, log_density: Tensor, score: Tensor
    ) -> Tensor:
        return torch.zeros_like(score)

    def __repr__(self) -> str:
        return "ModelMeasure()"


class GaussianMeanShift(Perturbation):
    """The transport direction η = −∇·(σ u) = d/dh N(m + h u, C)|₀ that moves a Gaussian σ = N(m, C) along u.

    Not a probability measure (η has zero mass); its noised version is η_t = −α_t u·∇σ_t, which gives
    δs = ∇(η_t/ρ_t) = −α_t r [(u·∇log σ_t)(∇log σ_t − s) − Σ_t⁻¹ u] with r = σ_t/ρ_t and Σ_t = α_t² C + β_t² I.
    With σ = ρ = N(μ, C) this is the mean-shift oracle of digest §2.4/§5.2, δs = α_t Σ_t⁻¹ u (constant in x).

    Args:
        mean: ``[*event_shape]`` m.
        covariance: a number or 0-d tensor (isotropic c I), ``[d]`` (diagonal) or ``[d, d]`` (full).
        direction: ``[*event_shape]`` u.
    """

    def __init__(self, mean: Tensor, covariance: Tensor | float, direction: Tensor) -> None:
        mean = torch.as_tensor(mean)
        if not mean.is_floating_point():
            mean = mean.to(torch.float64)
        direction = torch.as_tensor(direction, dtype=mean.dtype, device=mean.device)
        if direction.shape != mean.shape:
            raise ValueError(
                f"direction must be shaped like mean {tuple(mean.shape)}; got shape {tuple(direction.shape)}"
            )
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(direction).all())):
            raise ValueError("mean and direction must be finite")
        d = mean.numel()
        cov = torch.as_tensor(covariance, dtype=mean.dtype, device=mean.device)
        if cov.dim() == 0:
            cov = cov.reshape(1)
        elif cov.shape == (d,) or cov.shape == (d, d):
            cov = cov[None]
        else:
            raise ValueError(f"covariance must be a number, [d] or [d, d] with d = {d}; got shape {tuple(cov.shape)}")
        self.event_shape = torch.Size(mean.shape)
        self._component = GaussianMixtureMeasure(mean[None], cov, name="mean")
        self.direction = direction.reshape(d)

    def score_derivative(
        self, x: Tensor, t: Time, process: ForwardProcess, log_density: Tensor, score: Tensor
    ) -> Tensor:
        log_sigma, score_sigma = self._component.log_density_and_score(x, t, process)
        t = time_like(t, x)
        B = x.shape[0]
        alpha = process.scale(t).expand(B)
        beta2 = process.sigma(t).expand(B) ** 2
        u = self.direction.to(dtype=x.dtype, device=x.device)
        flat_sigma = score_sigma.reshape(B, -1)
        cov = self._component._cast(x)[2]
        # Σ_t⁻¹ u per sample, in the covariance's own form (O(d) for isotropic and diagonal, eigenbasis for full)
        if cov.kind == "isotropic":
            precision_u = u / (alpha**2 * cov.variances[0] + beta2)[:, None]
        elif cov.kind == "diagonal":
            precision_u = u / (alpha[:, None] ** 2 * cov.variances[0] + beta2[:, None])
        else:
            U, lam = cov.eigenvectors[0], cov.variances[0]
            precision_u = ((u @ U) / (alpha[:, None] ** 2 * lam + beta2[:, None])) @ U.T
        ratio = torch.exp(log_sigma - log_density)
        along = flat_sigma @ u  # u·∇log σ_t, [B]
        flat = -(alpha * ratio)[:, None] * (along[:, None] * (flat_sigma - score.reshape(B, -1)) - precision_u)
        return flat.reshape(x.shape)

    def __repr__(self) -> str:
        return f"GaussianMeanShift(event_shape={tuple(self.event_shape)})"


class SignedMeasure(Perturbation):
    """η = Σ_k c_k η_k, a signed combination of directions (an edit: add these points, remove those).

    Built directly from ``(coefficient, direction)`` pairs or with operators on directions
    (``EmpiricalMeasure(added) - EmpiricalMeasure(removed)``, ``0.5 * sigma - ModelMeasure()``). Nested combinations
    are flattened; all parts must share one dimension.
    """

    def __init__(self, terms: Iterable[tuple[float, Perturbation]]) -> None:
        flat: list[tuple[float, Perturbation]] = []
        for item in terms:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"terms must be (coefficient, Perturbation) pairs; got {item!r}")
            c, p = item
            if not isinstance(p, Perturbation):
                raise TypeError(f"terms: {p!r} is not a Perturbation")
            if not (isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)):
                raise ValueError(f"terms: coefficients must be finite numbers; got {c!r}")
            flat.extend((float(c) * c2, p2) for c2, p2 in p.terms())
        if not flat:
            raise ValueError("terms is empty: a signed measure needs at least one part")
        shapes = {p.dim for _, p in flat if p.dim is not None}
        if len(shapes) > 1:
            raise ValueError(f"terms: all parts must share one dimension; got dimensions {sorted(shapes)}")
        self._terms = flat
        self.event_shape = next((p.event_shape for _, p in flat if p.event_shape is not None), None)

    def terms(self) -> list[tuple[float, Perturbation]]:
        return list(self._terms)

    def score_derivative(
        self, x: Tensor, t: Time, process: ForwardProcess, log_density: Tensor, score: Tensor
    ) -> Tensor:
        total = torch.zeros_like(score)
        for c, p in self._terms:
            if c != 0.0 and not isinstance(p, ModelMeasure):  # the ρ part is identically zero
                total = total + c * p.score_derivative(x, t, process, log_density, score)
        return total

    def __repr__(self) -> str:
        return " ".join(f"{'+' if c >= 0 else '-'} {abs(c):g}·{p!r}" for c, p in self._terms).lstrip("+ ")


# -- data edits ------------------------------------------------------------------------------------------------


def edit_epsilon(
    n: int, *, added: int = 0, removed: int = 0, convention: Literal["mixture", "additive"] = "mixture"
) -> float:
    """ε of an edit of a training set of ``n`` points that adds ``added`` and removes ``removed`` points.

    For the direction returned by :func:`data_edit` (digest §1.3): ``"mixture"`` gives ε = (m_a + m_r)/(n + m_a − m_r),
    so m/(n + m) for adding m and m/(n − m) for removing m (along ρ − σ_r: the digest's −m/(n − m) along σ_r − ρ);
    ``"additive"`` gives ε = (m_a + m_r)/n.
    """
    for label, v in (("n", n), ("added", added), ("removed", removed)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{label} must be a non-negative integer; got {v!r}")
    if n < 1:
        raise ValueError(f"n must be a positive integer (the training-set size); got {n}")
    if removed >= n:
        raise ValueError(f"removed ({removed}) must be smaller than n ({n}): the edited set would be empty")
    if added + removed == 0:
        raise ValueError("an edit must add or remove at least one point (added = removed = 0)")
    if convention not in EDIT_CONVENTIONS:
        raise ValueError(f"convention must be one of {EDIT_CONVENTIONS}; got {convention!r}")
    moved = added + removed
    return moved / (n + added - removed) if convention == "mixture" else moved / n


@dataclass(frozen=True)
class DataEdit:
    """An edit of a training set as a first-order perturbation ρ' ≈ ρ + ε η.

    ``epsilon`` (float) and ``perturbation`` (the direction η) as :func:`data_edit` builds them; ``n``, ``added``,
    ``removed`` the counts; ``convention`` how ε was read off (module docstring).
    """

    epsilon: float
    perturbation: Perturbation
    n: int
    added: int
    removed: int
    convention: str


def data_edit(
    n: int,
    *,
    added: Tensor | None = None,
    removed: Tensor | None = None,
    convention: Literal["mixture", "additive"] = "mixture",
    bandwidth: float | None = None,
) -> DataEdit:
    """The edit "a training set of ``n`` points, add ``added`` ``[m_a, *event]``, remove ``removed`` ``[m_r, *event]``"
    as ε and a direction η (module docstring; [INFERRED] reading of digest §1.3, ``convention`` switchable).

    ``bandwidth`` pre-smooths the point sets (see :class:`EmpiricalMeasure`).
    """
    parts: list[tuple[float, Perturbation]] = []
    counts = {}
    for label, pts in (("added", added), ("removed", removed)):
        if pts is None:
            counts[label] = 0
            continue
        measure = EmpiricalMeasure(pts, bandwidth=bandwidth) if not isinstance(pts, EmpiricalMeasure) else pts
        counts[label] = measure.num_components
        parts.append((float(counts[label]), measure) if label == "added" else (-float(counts[label]), measure))
    m_a, m_r = counts["added"], counts["removed"]
    if m_a + m_r == 0:
        raise ValueError("data_edit needs added or removed points (both are None)")
    epsilon = edit_epsilon(n, added=m_a, removed=m_r, convention=convention)
    moved = float(m_a + m_r)
    terms = [(c / moved, p) for c, p in parts]
    if convention == "mixture" and m_a != m_r:
        terms.append((-(m_a - m_r) / moved, ModelMeasure()))
    return DataEdit(epsilon, SignedMeasure(terms), n, m_a, m_r, convention)


def as_perturbations(
    perturbations: Perturbation | DataEdit | Sequence[Perturbation | DataEdit], x: Tensor
) -> list[Perturbation]:
    """One direction or a sequence of them as a list (a :class:`DataEdit` stands for its direction), each checked
    against the state ``x`` ``[B, *event]``.

    Raises ``TypeError``/``ValueError`` naming ``perturbations``.
    """
    if isinstance(perturbations, Perturbation):
        items = [perturbations]
    elif isinstance(perturbations, DataEdit):
        items = [perturbations.perturbation]
    else:
        try:
            items = [p.perturbation if isinstance(p, DataEdit) else p for p in perturbations]
        except TypeError:
            raise TypeError(
                f"perturbations must be a Perturbation or a sequence of them; got {type(perturbations).__name__}"
            ) from None
    for i, p in enumerate(items):
        if not isinstance(p, Perturbation):
            raise TypeError(
                f"perturbations[{i}] must be a Perturbation (e.g. EmpiricalMeasure); got {type(p).__name__}"
            )
        p.check_state(x, f"perturbations[{i}]")
    return items
