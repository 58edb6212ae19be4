"""Divergences ∇·F of batched vector fields F: [B, *event] -> [B, *event], exact or by Hutchinson.

The engines live in :mod:`pysens.derivatives` (vmapped reverse or forward mode, a loop of reverse passes, closed
forms, ``"auto"`` measured once and cached); this module keeps the diffusion layer's names for them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from torch import Tensor

from pysens.derivatives.divergence import Analytic, divergence, hutchinson_divergence, hutchinson_probes

Field = Callable[[Tensor], Tensor]

__all__ = ["exact_divergence", "hutchinson_divergence", "hutchinson_probes"]


def exact_divergence(
    fn: Field,
    x: Tensor,
    chunk_size: int | None = None,
    *,
    engine: str = "auto",
    analytic: Analytic | None = None,
    key: Hashable | None = None,
) -> tuple[Tensor, Tensor]:
    """``(fn(x), tr ∂fn/∂x)``: the field and its exact divergence ``[B]`` (see :func:`pysens.derivatives.divergence`
    for the engines; ``chunk_size`` bounds the memory of the vmapped ones)."""
    return divergence(fn, x, engine=engine, analytic=analytic, key=key, chunk_size=chunk_size)
