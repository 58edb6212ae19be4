"""Closed-form log-density and score of a noised Gaussian mixture: the one kernel every mixture-like model uses.

A data law ρ = Σ_k w_k N(m_k, C_k) pushed through the affine forward process X_t = α X_0 + β Z is again a
mixture (seed000_sensitivity.md §1.3, "noised marginal"):

    p_t(x) = Σ_k w_k N(x; α m_k, Σ_k),        Σ_k = α² C_k + β² I,
    ∇ log p_t(x) = −Σ_k r_k(x) Σ_k⁻¹ (x − α m_k),     r_k(x) = softmax_k(log w_k + log N(x; α m_k, Σ_k)).

Covariances come in four kinds, told apart by shape (K components, dimension d):

- ``None``: point masses (C_k = 0), the empirical / memorising case;
- ``[K]``: isotropic, C_k = c_k I;
- ``[K, d]``: diagonal;
- ``[K, d, d]``: full. They are eigendecomposed once, C_k = U_k Λ_k U_kᵀ, so that Σ_k = U_k (α² Λ_k + β²) U_kᵀ
  has an O(d) inverse and log-determinant for every per-sample (α, β) without forming ``[B, K, d, d]``.

Everything is computed in log space. Squared distances are formed from differences x − α m_k (the expansion
|x|² − 2 x·y + |y|² cancels catastrophically when x is close to a mean, which is exactly the small-t regime).
Components are processed in chunks whose ``[B, K_chunk, d]`` temporaries stay under a memory budget, with an
online (streaming) logsumexp so that the softmax over all K is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from pysens.diffusion.processes import can_inspect_values

__all__ = [
    "MixtureCovariance",
    "MixtureEvaluation",
    "mixture_covariance",
    "noised_mixture_log_density_and_score",
    "sample_gaussian_mixture",
]

CovarianceKind = Literal["point", "isotropic", "diagonal", "full"]

# Temporaries of shape [B, K_chunk, d] are kept under this many bytes.
DEFAULT_CHUNK_BYTES = 256 * 2**20
# Number of live [B, K_chunk, d] temporaries per chunk, used to size the chunks.
_TEMPORARIES_PER_CHUNK = 4


class MixtureEvaluation(NamedTuple):
    """log p_t(x) ``[B]`` and ∇_x log p_t(x) (shaped like the input ``x``)."""

    log_density: Tensor
    score: Tensor


@dataclass(frozen=True)
class MixtureCovariance:
    """Component covariances in the form the kernel uses.

    ``kind``: "point" (C_k = 0), "isotropic", "diagonal" or "full".
    ``variances``: None for "point"; ``[K]`` variances for "isotropic"; ``[K, d]`` for "diagonal"; the
    eigenvalues Λ_k ``[K, d]`` for "full".
    ``eigenvectors``: U ``[K, d, d]`` (columns are eigenvectors, C_k = U_k diag(Λ_k) U_kᵀ) for "full", else None.
    ``min_variance``: smallest variance of any component along any direction (0 for "point"); when it is 0,
    β must be positive for the noised density to exist.
    """

    kind: CovarianceKind
    variances: Tensor | None = None
    eigenvectors: Tensor | None = None
    min_variance: float = 0.0


def mixture_covariance(covariances: Tensor | None, num_components: int, dim: int) -> MixtureCovariance:
    """Validate ``covariances`` (None, ``[K]``, ``[K, d]`` or ``[K, d, d]``) and bring it to kernel form.

    Full covariances must be symmetric positive semi-definite (up to round-off; tiny negative eigenvalues are
    clipped to 0) and are eigendecomposed here, once. Raises ``ValueError`` naming ``covariances``.
    """
    if covariances is None:
        return MixtureCovariance("point")
    c = covariances
    if not c.is_floating_point():
        raise TypeError(f"covariances must be a floating tensor; got dtype {c.dtype}")
    if not bool(torch.isfinite(c).all()):
        raise ValueError("covariances must be finite")
    K, d = num_components, dim
    if c.shape == (K,) or c.shape == (K, d):
        if bool((c < 0).any()):
            raise ValueError("covariances (variances) must be non-negative")
        kind: CovarianceKind = "isotropic" if c.dim() == 1 else "diagonal"
        return MixtureCovariance(kind, variances=c, min_variance=float(c.min()))
    if c.shape == (K, d, d):
        scale = float(c.abs().max()) if c.numel() else 0.0
        tol = math.sqrt(torch.finfo(c.dtype).eps) * max(scale, torch.finfo(c.dtype).tiny)
        if float((c - c.mT).abs().max()) > tol:
            raise ValueError("covariances [K, d, d] must be symmetric")
        eigenvalues, eigenvectors = torch.linalg.eigh(c)
        if bool((eigenvalues < -tol).any()):
            raise ValueError(
                f"covariances must be positive semi-definite; smallest eigenvalue {float(eigenvalues.min()):.3g}"
            )
        eigenvalues = eigenvalues.clamp_min(0.0)
        return MixtureCovariance(
            "full", variances=eigenvalues, eigenvectors=eigenvectors, min_variance=float(eigenvalues.min())
        )
    raise ValueError(
        f"covariances must be None, [K] (isotropic), [K, d] (diagonal) or [K, d, d] (full) with K = {K}, "
        f"d = {d}; got shape {tuple(c.shape)}"
    )


def _per_sample(c: Tensor | float, batch: int, like: Tensor, name: str) -> Tensor:
    c = torch.as_tensor(c, dtype=like.dtype, device=like.device)
    if c.dim() == 0:
        return c.expand(batch)
    if c.shape == (batch,):
        return c
    raise ValueError(f"{name} must be 0-d or [B] with B = {batch}; got shape {tuple(c.shape)}")


def _components_per_chunk(batch: int, dim: int, num_components: int, itemsize: int, max_bytes: int) -> int:
    per_component = _TEMPORARIES_PER_CHUNK * batch * dim * itemsize
    return max(1, min(num_components, max_bytes // max(per_component, 1)))


def noised_mixture_log_density_and_score(
    x: Tensor,
    alpha: Tensor | float,
    beta: Tensor | float,
    means: Tensor,
    log_weights: Tensor,
    covariance: MixtureCovariance | Tensor | None = None,
    *,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> MixtureEvaluation:
    """log p_t(x) and ∇ log p_t(x) for p_t = Σ_k w_k N(α m_k, α² C_k + β² I).

    Args:
        x: ``[B, d]`` points.
        alpha, beta: α_t and β_t, 0-d or ``[B]`` (per-sample times).
        means: ``[K, d]`` component means m_k.
        log_weights: ``[K]`` log w_k; normalised (logsumexp = 0) for a probability density. Entries may be −inf.
        covariance: a ``MixtureCovariance`` (precomputed, e.g. stored by a model) or a raw tensor ``[K]``,
            ``[K, d]``, ``[K, d, d]``, or None for point masses (a raw full tensor is eigendecomposed per call).
        max_chunk_bytes: memory budget for the ``[B, K_chunk, d]`` temporaries.

    Returns:
        ``MixtureEvaluation(log_density [B], score [B, d])``. Differentiable in x, α, β (autograd).

    Float32 note: the log-density is a sum of d terms of size up to |x − α m|²/β², so at small β in high d its
    absolute error grows like eps·d/β²; responsibilities between far-apart components are unaffected.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be [B, d]; got shape {tuple(x.shape)}")
    B, d = x.shape
    if means.dim() != 2 or means.shape[1] != d:
        raise ValueError(f"means must be [K, d] with d = {d}; got shape {tuple(means.shape)}")
    K = means.shape[0]
    if K == 0:
        raise ValueError("means must contain at least one component")
    if log_weights.shape != (K,):
        raise ValueError(f"log_weights must be [K] with K = {K}; got shape {tuple(log_weights.shape)}")
    if not isinstance(covariance, MixtureCovariance):
        covariance = mixture_covariance(covariance, K, d)
    alpha = _per_sample(alpha, B, x, "alpha")
    beta = _per_sample(beta, B, x, "beta")
    alpha2, beta2 = alpha**2, beta**2
    if covariance.min_variance <= 0.0 and can_inspect_values(beta2) and not bool((beta2 > 0).all()):
        raise ValueError(
            "beta (β_t) must be positive: some component has zero variance, so its noised density is a point "
            "mass at β_t = 0 (use t >= process.t_eps)"
        )

    chunk = _components_per_chunk(B, d, K, x.element_size(), max_chunk_bytes)
    run_max: Tensor | None = None  # running max of the logits, [B]
    run_sum = x.new_zeros(B)  # Σ_k exp(logit_k − run_max)
    run_grad = x.new_zeros(B, d)  # Σ_k exp(logit_k − run_max) ∇ log N_k
    for start in range(0, K, chunk):
        stop = min(start + chunk, K)
        logits, weighted_grad = _chunk_terms(x, alpha, alpha2, beta2, means, log_weights, covariance, start, stop)
        # The max only stabilises the exponentials; detaching it keeps autograd from carrying the exactly
        # cancelling terms through it.
        chunk_max = logits.detach().max(dim=1).values
        new_max = chunk_max if run_max is None else torch.maximum(run_max, chunk_max)
        # An all −inf row (zero-weight components only so far) must not produce (−inf) − (−inf) = nan.
        ref = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        p = torch.exp(logits - ref[:, None])
        if run_max is None:
            run_sum = p.sum(dim=1)
            run_grad = weighted_grad(p)
        else:
            rescale = torch.exp(run_max - ref)
            run_sum = run_sum * rescale + p.sum(dim=1)
            run_grad = run_grad * rescale[:, None] + weighted_grad(p)
        run_max = new_max

    assert run_max is not None
    ref = torch.where(torch.isfinite(run_max), run_max, torch.zeros_like(run_max))
    log_density = ref + torch.log(run_sum)
    score = run_grad / run_sum[:, None]
    if covariance.kind == "point":
        # The Gaussian normaliser is the same for every point mass; it was left out of the logits (smaller
        # logits keep more float32 digits in the softmax) and is added back here.
        log_density = log_density - 0.5 * d * torch.log(2.0 * math.pi * beta2)
    return MixtureEvaluation(log_density, score)


def _chunk_terms(
    x: Tensor,
    alpha: Tensor,
    alpha2: Tensor,
    beta2: Tensor,
    means: Tensor,
    log_weights: Tensor,
    covariance: MixtureCovariance,
    start: int,
    stop: int,
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Logits log w_k + log N_k ``[B, Kc]`` of components start:stop and a map p ↦ Σ_k p_k ∇ log N_k ``[B, d]``."""
    d = x.shape[1]
    m = means[start:stop]
    log_w = log_weights[start:stop]
    diff = x[:, None, :] - alpha[:, None, None] * m[None, :, :]  # x − α m_k, [B, Kc, d]
    kind = covariance.kind

    if kind in ("point", "isotropic"):
        if kind == "point":
            var = beta2[:, None]  # [B, 1]; normaliser added once by the caller
            log_norm = 0.0
        else:
            var = alpha2[:, None] * covariance.variances[start:stop] + beta2[:, None]  # [B, Kc]
            log_norm = -0.5 * d * torch.log(2.0 * math.pi * var)
        logits = log_w - 0.5 * (diff**2).sum(dim=2) / var + log_norm

        def weighted_grad(p: Tensor) -> Tensor:
            # Σ_k p_k (−(x − α m_k)/v_k)
            return -torch.einsum("bk,bkd->bd", p / var, diff)

        return logits, weighted_grad

    if kind == "diagonal":
        var = alpha2[:, None, None] * covariance.variances[None, start:stop] + beta2[:, None, None]  # [B, Kc, d]
        logits = log_w - 0.5 * ((diff**2) / var + torch.log(2.0 * math.pi * var)).sum(dim=2)
        scaled = diff / var

        def weighted_grad(p: Tensor) -> Tensor:
            return -torch.einsum("bk,bkd->bd", p, scaled)

        return logits, weighted_grad

    # full: rotate into each component's eigenbasis, where Σ_k is diagonal with entries α² λ + β².
    U = covariance.eigenvectors[start:stop]  # [Kc, d, d]
    lam = covariance.variances[start:stop]  # [Kc, d]
    y = torch.einsum("kji,bkj->bki", U, diff)  # U_kᵀ (x − α m_k)
    var = alpha2[:, None, None] * lam[None] + beta2[:, None, None]
    logits = log_w - 0.5 * ((y**2) / var + torch.log(2.0 * math.pi * var)).sum(dim=2)
    scaled = y / var

    def weighted_grad(p: Tensor) -> Tensor:
        # Σ_k p_k (−U_k (y_k / v_k))
        return -torch.einsum("kij,bkj->bi", U, p[:, :, None] * scaled)

    return logits, weighted_grad


def sample_gaussian_mixture(
    n: int,
    means: Tensor,
    weights: Tensor,
    covariance: MixtureCovariance,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw ``n`` points ``[n, d]`` from Σ_k w_k N(m_k, C_k) (``weights`` ``[K]``, non-negative, any sum)."""
    K, d = means.shape
    component = torch.multinomial(weights, n, replacement=True, generator=generator)
    mean = means[component]
    if covariance.kind == "point":
        return mean.clone()
    z = torch.randn(n, d, generator=generator, dtype=means.dtype, device=means.device)
    std = covariance.variances[component].sqrt()
    if covariance.kind == "isotropic":
        return mean + std[:, None] * z
    if covariance.kind == "diagonal":
        return mean + std * z
    return mean + torch.einsum("nij,nj->ni", covariance.eigenvectors[component], std * z)
