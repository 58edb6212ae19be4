"""Divergences ∇·F = tr J of batched row-wise vector fields F: [B, *event] -> [B, *event].

Exact, by one of five engines (all return F(x) with the divergence, so the field costs nothing extra):

* ``"vjp"``: one forward pass, then the d reverse passes J_bᵀ e_i vmapped (``torch.func.vjp``);
* ``"grad-batched"``: one plain autograd forward pass (no functorch wrapping of the forward), then the d reverse
  passes batched through the recorded graph (``torch.autograd.grad(..., is_grads_batched=True)``, which vmaps
  the backward only), ``chunk_size`` of them at a time; an evaluation engine like ``"loop"``;
* ``"jvp"``: the d forward-mode products J_b e_i vmapped (``torch.func.jvp``);
* ``"loop"``: one recorded graph and a Python loop of d ``torch.autograd.grad`` calls (FFJORD's brute force);
  an evaluation engine: its results carry no autograd graph (``"auto"`` considers it only under ``no_grad``, as
  solves run);
* ``"analytic"``: the model's own divergence, ``analytic(x) -> (F(x), ∇·F(x))``: a closed form (Gaussian mixtures) or
  a structured exact pass (:meth:`pysens.diffusion.MLPScore.score_and_divergence`);
* ``"auto"`` (default): ``"analytic"`` when given (a rule that holds by measurement: see below); otherwise the
  fastest of the exact engines measured once per (``key``, shape, device, dtype) and cached
  (:mod:`pysens.derivatives.autotune`); the candidates are vjp and jvp, and under ``no_grad`` (as solves run) also
  loop, grad-batched, and grad-batched in chunks of :func:`cache_chunk` products when a whole batch of d
  cotangents is large; inside ``torch.func`` transforms (where nothing can be timed and plain autograd cannot run)
  ``"vjp"``.

Measured on one CPU thread (float64): for a d = 16 Gaussian-mixture score (B = 1..64) grad-batched is
1.5–2× faster than the vmapped VJP and 2.5–4× faster than the loop (functorch's forward costs more than the
mixture's backward); for a width-256 MLP score with d = 64 at B = 256 the loop and the chunked batched engines
are within a few per cent of each other (every engine does the same d reverse passes of large matrix products,
compute-bound), vmapped forward mode 2× slower; hence the measurement rather than a fixed rule.

A model-provided divergence is used without measuring because, where pysens has one, it beat every autodiff engine
at every shape measured (``pysens bench likelihood-speed``, one thread, float64): the mixture's closed form by
~10×, and the width-256 depth-3 MLP score's structured pass by 1.2–1.6× over the fastest autodiff engine at
d = 16 and 64, B = 1, 16 and 256 (it does the same (depth − 1) h² d multiply-adds per row as the d reverse passes,
in one matrix product per layer, minus their passes through the input and output layers and their overhead).

Hutchinson: tr J ≈ (1/K) Σ_k z_kᵀ J z_k with fixed probes z_k, by JVPs (``"jvp"``) or VJPs (``"vjp"``; what
k-diffusion and score_sde do); both give the same numbers to round-off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

import torch
from torch import Tensor

from .autotune import cache_key, inside_transform, run_cached
from .products import Field, _unit_rows, check_engine, vjp_rows_loop

DIVERGENCE_ENGINES = ("auto", "vjp", "grad-batched", "jvp", "loop", "analytic")
# the chunked batched engine joins "auto"'s candidates when chunk · B · d exceeds this many elements: d cotangents
# of a large batch at once make the backward's intermediates (d × B × width) spill out of the CPU caches
CACHE_ELEMENTS = 1 << 16
HUTCHINSON_ENGINES = ("jvp", "vjp")
Analytic = Callable[[Tensor], tuple[Tensor, Tensor]]


def _diagonal_sum(cols: Tensor, B: int, d: int) -> Tensor:
    """Σ_i cols[i, b, i] for ``cols`` ``[d, B, *event]`` (J e_i or Jᵀ e_i for every sample)."""
    return cols.reshape(d, B, d).diagonal(dim1=0, dim2=2).sum(-1)


def _divergence_vjp(fn: Field, x: Tensor, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    fx, pull = torch.func.vjp(fn, x)
    B, d = x.shape[0], math.prod(x.shape[1:])
    rows = torch.func.vmap(pull, chunk_size=chunk_size)(_unit_rows(d, fx.shape, fx))[0]
    return fx, _diagonal_sum(rows, B, d)


def _divergence_jvp(fn: Field, x: Tensor, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    B, d = x.shape[0], math.prod(x.shape[1:])

    def column(v: Tensor) -> tuple[Tensor, Tensor]:
        return torch.func.jvp(fn, (x,), (v,))

    values, cols = torch.func.vmap(column, chunk_size=chunk_size)(_unit_rows(d, x.shape, x))
    return values[0], _diagonal_sum(cols, B, d)


def _divergence_grad_batched(fn: Field, x: Tensor, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    B, d = x.shape[0], math.prod(x.shape[1:])
    step = d if chunk_size is None else min(chunk_size, d)
    leaf = x.detach().requires_grad_(True)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    div = None
    with torch.enable_grad():  # the forward must be recorded whatever the caller's grad mode
        y = fn(leaf)
        for s in range(0, d, step):
            e = min(s + step, d)
            cot = eye[s:e].reshape(e - s, 1, *y.shape[1:]).expand(e - s, *y.shape)  # e_i in every row, i in [s, e)
            (rows,) = torch.autograd.grad(y, leaf, cot, retain_graph=e < d, is_grads_batched=True)
            part = rows.reshape(e - s, B, d)[:, :, s:e].diagonal(dim1=0, dim2=2).sum(-1)  # Σ_i (J_bᵀ e_i)_i
            div = part if div is None else div + part
    return y.detach(), div


def cache_chunk(B: int, d: int) -> int | None:
    """Products per chunk for the chunked ``"grad-batched"`` candidate of ``"auto"``: the largest power of two c
    with c · B · d ≤ :data:`CACHE_ELEMENTS` (at least 1), or None when c ≥ d (one chunk: the unchunked engine)."""
    c = 1 << max(CACHE_ELEMENTS // max(B * d, 1), 1).bit_length() - 1
    return None if c >= d else c


def _divergence_loop(fn: Field, x: Tensor) -> tuple[Tensor, Tensor]:
    B, d = x.shape[0], math.prod(x.shape[1:])
    fx, rows = vjp_rows_loop(fn, x)
    return fx, _diagonal_sum(rows, B, d)


def divergence(
    fn: Field,
    x: Tensor,
    *,
    engine: str = "auto",
    analytic: Analytic | None = None,
    key: Hashable | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``(fn(x), ∇·fn(x))`` with the divergence ``[B]``, exactly.

    Args:
        fn: row-wise field ``[B, *event] -> [B, *event]``.
        engine: see the module docstring.
        analytic: ``analytic(x) -> (fn(x), divergence)`` when the model provides its own exact divergence (used by
            ``"analytic"`` and preferred by ``"auto"``).
        key: what ``"auto"`` caches its choice under (default: where ``fn`` was defined,
            :func:`~pysens.derivatives.autotune.callable_key`, so a closure rebuilt every call is measured once).
        chunk_size: bounds how many vmapped products run at once (memory ≈ chunk·B·d).
    """
    check_engine(engine, DIVERGENCE_ENGINES)
    if x.dim() < 2:
        raise ValueError(f"x must be [B, *event] with a non-empty event shape, got shape {tuple(x.shape)}")
    if engine == "analytic" or (engine == "auto" and analytic is not None):
        if analytic is None:
            raise ValueError("engine='analytic' needs analytic=callable(x) -> (field, divergence)")
        return analytic(x)
    if engine != "auto":
        return _run_engine(engine, fn, x, chunk_size)
    if inside_transform(x):
        return _divergence_vjp(fn, x, chunk_size)
    # loop and grad-batched return values without a graph: candidates only where none is being recorded (they are
    # cached apart, so a choice made under no_grad never serves a call that needs a graph)
    evaluation = not torch.is_grad_enabled()
    k = cache_key("divergence" if evaluation else "divergence (graph)", fn if key is None else key, x)
    candidates = {"vjp": lambda: _divergence_vjp(fn, x, chunk_size)}
    if evaluation:
        candidates["grad-batched"] = lambda: _divergence_grad_batched(fn, x, chunk_size)
        chunk = cache_chunk(x.shape[0], math.prod(x.shape[1:])) if chunk_size is None else None
        if chunk is not None:
            candidates[f"grad-batched:{chunk}"] = lambda: _divergence_grad_batched(fn, x, chunk)
        candidates["loop"] = lambda: _divergence_loop(fn, x)
    candidates["jvp"] = lambda: _divergence_jvp(fn, x, chunk_size)
    # a cached name runs through _run_engine: "grad-batched:c" was sized for the bucket's first batch, not this one
    return run_cached(k, x, candidates, run=lambda name: _run_engine(name, fn, x, chunk_size))[1]


def _run_engine(name: str, fn: Field, x: Tensor, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    """The exact engine ``name``: one of the forced engines, or a cached choice of ``"auto"``
    (``"grad-batched:c"``: grad-batched in chunks of c products)."""
    if name == "vjp":
        return _divergence_vjp(fn, x, chunk_size)
    if name == "jvp":
        return _divergence_jvp(fn, x, chunk_size)
    if name == "loop":
        return _divergence_loop(fn, x)
    chunk = int(name.partition(":")[2]) if ":" in name else chunk_size
    return _divergence_grad_batched(fn, x, chunk)


def hutchinson_probes(
    n_probes: int, shape: torch.Size, *, kind: str = "rademacher", generator=None, dtype=None, device=None
) -> Tensor:
    """``[K, *shape]`` probes with E[z zᵀ] = I: Rademacher (±1) or standard Gaussian."""
    if not isinstance(n_probes, int) or isinstance(n_probes, bool) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer, got {n_probes!r}")
    z = torch.randn((n_probes, *shape), generator=generator, dtype=dtype, device=device)
    if kind == "rademacher":
        return torch.sign(z) + (z == 0).to(z.dtype)
    if kind == "gaussian":
        return z
    raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {kind!r}")


def hutchinson_divergence(fn: Field, x: Tensor, probes: Tensor, *, engine: str = "jvp") -> tuple[Tensor, Tensor]:
    """``(fn(x), (1/K) Σ_k z_kᵀ J z_k)`` per sample (``[B]``) for probes ``[K, B, *event]``."""
    check_engine(engine, HUTCHINSON_ENGINES)
    if engine == "vjp":
        fx, pull = torch.func.vjp(fn, x)
        jt = torch.func.vmap(pull)(probes)[0]
        return fx, (jt * probes).flatten(2).sum(2).mean(0)

    def quad(z: Tensor) -> tuple[Tensor, Tensor]:
        value, jz = torch.func.jvp(fn, (x,), (z,))
        return value, (jz * z).flatten(1).sum(1)

    values, quads = torch.func.vmap(quad)(probes)
    return values[0], quads.mean(0)
