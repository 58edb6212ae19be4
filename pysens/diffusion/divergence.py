"""Divergences ∇·F of batched vector fields F: [B, *event] -> [B, *event], exact or by Hutchinson.

Both use forward-mode JVPs from ``torch.func`` and rest on batch independence (row b of F depends only on
x[b]), so one JVP with the tangent e_i in every row gives column i of every sample's Jacobian at once.

* exact: tr J = Σ_i (J e_i)_i, the d JVPs vmapped (``chunk_size`` bounds memory: d·B·d at most per chunk);
* Hutchinson: tr J ≈ (1/K) Σ_k z_kᵀ J z_k with fixed probes z_k (Rademacher or Gaussian), unbiased.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Field = Callable[[Tensor], Tensor]


def exact_divergence(fn: Field, x: Tensor, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """``(fn(x), tr ∂fn/∂x)``: the field and its divergence ``[B]`` from d vmapped JVPs (no Python loop
    over dimensions); the field comes with the JVPs at no extra cost."""
    B, d = x.shape[0], math.prod(x.shape[1:])
    basis = torch.eye(d, dtype=x.dtype, device=x.device).reshape(d, 1, *x.shape[1:]).expand(d, *x.shape)

    def column(v: Tensor) -> tuple[Tensor, Tensor]:
        return torch.func.jvp(fn, (x,), (v,))

    values, cols = torch.func.vmap(column, chunk_size=chunk_size)(basis)  # [d, B, *event]: J e_i per sample
    return values[0], cols.reshape(d, B, d).diagonal(dim1=0, dim2=2).sum(-1)


def hutchinson_probes(
    n_probes: int, shape: torch.Size, *, kind: str = "rademacher", generator=None, dtype=None, device=None
) -> Tensor:
    """``[K, *shape]`` probes with E[z zᵀ] = I: Rademacher (±1) or standard Gaussian."""
    if not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer, got {n_probes!r}")
    z = torch.randn((n_probes, *shape), generator=generator, dtype=dtype, device=device)
    if kind == "rademacher":
        return torch.sign(z) + (z == 0).to(z.dtype)
    if kind == "gaussian":
        return z
    raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")


def hutchinson_divergence(fn: Field, x: Tensor, probes: Tensor) -> tuple[Tensor, Tensor]:
    """``(fn(x), (1/K) Σ_k z_kᵀ J z_k)`` per sample (``[B]``) for probes ``[K, B, *event]``."""

    def quad(z: Tensor) -> tuple[Tensor, Tensor]:
        value, jz = torch.func.jvp(fn, (x,), (z,))
        return value, (jz * z).flatten(1).sum(1)

    values, quads = torch.func.vmap(quad)(probes)
    return values[0], quads.mean(0)
