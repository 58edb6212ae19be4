"""Closed-form Jacobian and divergence of the noised Gaussian-mixture score.

For p_t = Σ_k w_k N(α m_k, Σ_k), Σ_k = α² C_k + β² I, with responsibilities r_k(x) = softmax_k(log w_k + log N_k(x))
and component scores g_k = −Σ_k⁻¹ (x − α m_k), the score is s = Σ_k r_k g_k and (differentiating r_k, whose
gradient is r_k (g_k − s))

    ∇s = −Σ_k r_k Σ_k⁻¹ + Σ_k r_k g_k g_kᵀ − s sᵀ,
    ∇·s = −Σ_k r_k tr Σ_k⁻¹ + Σ_k r_k ‖g_k‖² − ‖s‖².

In each component's eigenbasis (C_k = U_k diag(λ_k) U_kᵀ) Σ_k⁻¹ = U_k diag(1/(α² λ_k + β²)) U_kᵀ, so the trace and
‖g_k‖² are sums over d; the point, isotropic and diagonal kinds are the same formula with U_k = I. One pass over the
components, ``[B, K, d]`` temporaries (``[B, K, d, d]`` for the full Jacobian of a full-covariance mixture).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .mixtures import MixtureCovariance


def _component_terms(
    x: Tensor, alpha: Tensor, beta: Tensor, means: Tensor, log_weights: Tensor, cov: MixtureCovariance
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Responsibilities r ``[B, K]``, eigen-coordinates y_k/v_k of −g_k ``[B, K, d]``, the variances v ``[B, K, d]``
    and U ``[K, d, d]`` (None when every component is axis-aligned)."""
    B, d = x.shape
    a2, b2 = (alpha**2)[:, None, None], (beta**2)[:, None, None]
    diff = x[:, None, :] - alpha[:, None, None] * means[None]  # [B, K, d]
    U = None
    if cov.kind == "point":
        var = b2.expand(B, means.shape[0], d)
    elif cov.kind == "isotropic":
        var = (a2 * cov.variances[None, :, None] + b2).expand(B, -1, d)
    elif cov.kind == "diagonal":
        var = a2 * cov.variances[None] + b2
    else:
        U = cov.eigenvectors
        diff = torch.einsum("kji,bkj->bki", U, diff)
        var = a2 * cov.variances[None] + b2
    scaled = diff / var
    logits = log_weights - 0.5 * (diff * scaled + torch.log(var)).sum(2)
    r = torch.softmax(logits, dim=1)
    return r, scaled, var, U


def _score(r: Tensor, scaled: Tensor, U: Tensor | None) -> tuple[Tensor, Tensor]:
    """(s ``[B, d]``, g ``[B, K, d]`` in the original basis)."""
    g = -scaled if U is None else -torch.einsum("kij,bkj->bki", U, scaled)
    return torch.einsum("bk,bkd->bd", r, g), g


def mixture_score_and_divergence(
    x: Tensor, alpha: Tensor, beta: Tensor, means: Tensor, log_weights: Tensor, cov: MixtureCovariance
) -> tuple[Tensor, Tensor]:
    """(s ``[B, d]``, ∇·s ``[B]``) for x ``[B, d]``, α, β ``[B]``."""
    r, scaled, var, U = _component_terms(x, alpha, beta, means, log_weights, cov)
    s, _ = _score(r, scaled, U)
    per_component = -(1.0 / var).sum(2) + (scaled**2).sum(2)  # −tr Σ_k⁻¹ + ‖g_k‖² (U orthogonal)
    return s, (r * per_component).sum(1) - (s**2).sum(1)


def mixture_score_and_jacobian(
    x: Tensor, alpha: Tensor, beta: Tensor, means: Tensor, log_weights: Tensor, cov: MixtureCovariance
) -> tuple[Tensor, Tensor]:
    """(s ``[B, d]``, ∇s ``[B, d, d]``) for x ``[B, d]``, α, β ``[B]``."""
    r, scaled, var, U = _component_terms(x, alpha, beta, means, log_weights, cov)
    s, g = _score(r, scaled, U)
    inv = r[:, :, None] / var  # r_k / v_k, [B, K, d]
    if U is None:
        precision = torch.diag_embed(inv.sum(1))
    else:
        precision = torch.einsum("kij,bkj,klj->bil", U, inv, U)
    outer = torch.einsum("bk,bki,bkj->bij", r, g, g)
    return s, outer - precision - s[:, :, None] * s[:, None, :]
