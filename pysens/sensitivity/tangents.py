"""One vmapped forward-mode JVP per solver stage: the score, J_s·y for every sensitivity, and ∇·s together.

The tangent systems need, at each stage, s_t(x), the products J_s y_p for P tangents and the divergence ∇·s
(digest §3.2). All are JVPs of the same function at the same point, so they are computed by **one**
``torch.func.vmap`` over ``torch.func.jvp`` with the stacked tangents

    [y_1, …, y_P, (e_1, …, e_d) or (z_1, …, z_K)]          ([P + M, B, *event])

where the e_i (exact divergence, in every row at once: batch independence) or the Hutchinson probes z_k follow the
sensitivities; vmap evaluates the primal once. The divergence is read off as in
:mod:`pysens.diffusion.divergence` (Σ_i (J e_i)_i, or the mean of z_kᵀ J z_k).

With the exact divergence (or P ≥ d) the d columns are needed anyway, so ``engine="auto"`` instead takes the
per-sample Jacobian blocks by reverse mode (:func:`pysens.derivatives.jacobian`, d vmapped VJPs after one forward
pass), reads the divergence off its diagonal and forms J_s y_p by a batched matrix product: extra sensitivities
then cost a [B, d, d] × [B, d, P] product instead of P more forward-mode passes (measured, d = 16, B = 256, one
CPU thread: mixture score 34 ms against 140 ms for P = 1, MLP score 117 ms for P = 1 and P = 8 against 171 and
322 ms). ``engine="forward"`` keeps the single vmapped JVP.

Without the Jacobian (no divergence or Hutchinson, P < d), ``engine="reverse"`` forms the P products by reverse mode
twice (J v is the VJP of the linear map u ↦ Jᵀu, vmapped over the tangents, after one recorded forward pass) and the
Hutchinson quadratic forms z_kᵀ J z_k as (Jᵀ z_k)·z_k with one VJP per probe; ``engine="autograd"`` does the same with
plain autograd, the first probe's backward pass doubling as the map u ↦ Jᵀu (no graph on its results: only with
grad mode off, as solves run). On CPU these avoid forward mode's per-operation overhead in ``torch.func`` (zero
tangents of the weights go through decomposed kernels). Measured on one CPU thread, float32, B = 64, d = 64, one
probe (CPU ms, P = 0 / 1 / 8): width-256 MLP score: forward 7.2 / 5.7 / 11.1, reverse 2.3 / 3.6 / 7.6, autograd
1.6 / 2.3 / 5.2; ConvScore: forward 79 / 86 / 264, reverse 40 / 93 / 303, autograd 31 / 80 / 322. No engine wins
everywhere, so ``engine="auto"`` measures them once per (score, P, probes, shape, device, dtype) and keeps the
fastest (:func:`measured_jets`, best of three timed rounds; an engine the model cannot run is skipped). All engines
give the same values up to round-off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pysens.derivatives import jacobian
from pysens.derivatives.autotune import cache_key, chosen_engines, inside_transform, run_cached
from pysens.diffusion.processes import Time
from pysens.validation import check_output

__all__ = ["DIVERGENCES", "ScoreJets", "check_differentiable", "chosen_jet_engines", "score_jets"]

DIVERGENCES = ("exact", "hutchinson")
JET_ENGINES = ("auto", "forward", "reverse", "autograd", "jacobian")


@dataclass
class ScoreJets:
    """``score`` s(x, t) ``[B, *event]``; ``products`` J_s v for the given tangents ``[P, B, *event]`` (None when
    P = 0); ``divergence`` ∇·s ``[B]`` (None when not asked for)."""

    score: Tensor
    products: Tensor | None
    divergence: Tensor | None


def score_jets(
    score: Callable[[Tensor, Time], Tensor],
    x: Tensor,
    t: Time,
    tangents: Tensor | None = None,
    *,
    divergence: str | None = None,
    probes: Tensor | None = None,
    chunk_size: int | None = None,
    engine: str = "auto",
) -> ScoreJets:
    """s(x, t), J_s·tangents and ∇·s from one vmapped JVP.

    Args:
        score: a score model ``score(x, t)``.
        x: ``[B, *event]``.
        t: float, 0-d or ``[B]``.
        tangents: ``[P, B, *event]`` or None.
        divergence: None, ``"exact"`` (d basis tangents) or ``"hutchinson"`` (``probes`` ``[K, B, *event]``).
        chunk_size: passed to ``torch.func.vmap`` to bound memory (exact divergence in high d).
        engine: ``"forward"`` (one vmapped JVP), ``"reverse"`` (double-VJP products, VJP Hutchinson forms; with the
            exact divergence the Jacobian path, which is reverse mode too), ``"autograd"`` (the same by plain
            autograd, results without a graph), ``"jacobian"`` (reverse-mode Jacobian blocks, products by bmm) or
            ``"auto"`` (``"jacobian"`` when the exact divergence is asked for or P ≥ d without Hutchinson probes,
            else the fastest of ``"forward"``, ``"reverse"`` and, when grad mode is off, ``"autograd"``, measured once
            and cached; ``"forward"`` inside ``torch.func`` transforms).

    A score model with a ``closed_form_jets(x, t, tangents, divergence=, probes=)`` method (such as
    :class:`~pysens.sensitivity.reference.DataLaw`) answers all three itself, whatever ``engine``.
    """
    if engine not in JET_ENGINES:
        raise ValueError(f"engine must be one of {JET_ENGINES}, got {engine!r}")
    closed_form = getattr(score, "closed_form_jets", None)
    if callable(closed_form):  # a law that knows its own JVPs (e.g. DataLaw): no autograd through it
        return closed_form(x, t, tangents, divergence=divergence, probes=probes)
    B = x.shape[0]
    d = math.prod(x.shape[1:])
    stack = [] if tangents is None else [tangents]
    P = 0 if tangents is None else tangents.shape[0]
    if divergence == "exact":
        basis = torch.eye(d, dtype=x.dtype, device=x.device).reshape(d, 1, *x.shape[1:]).expand(d, *x.shape)
        stack.append(basis)
    elif divergence == "hutchinson":
        if probes is None:
            raise ValueError("divergence='hutchinson' needs probes [K, B, *event]")
        stack.append(probes)
    elif divergence is not None:
        raise ValueError(f"divergence must be one of {DIVERGENCES} or None; got {divergence!r}")

    def field(u: Tensor) -> Tensor:
        return score(u, t)

    use_jacobian = divergence == "exact" or (P >= d and divergence != "hutchinson")
    if engine == "jacobian" or (engine in ("auto", "reverse") and use_jacobian):
        if divergence == "hutchinson":
            raise ValueError("engine='jacobian' computes the exact divergence; use engine='forward' for Hutchinson")
        value, J = jacobian(field, x, engine="vjp", chunk_size=chunk_size)  # [B, d, d]
        products = None
        if P:
            flat = torch.einsum("bij,pbj->pbi", J, tangents.reshape(P, B, d))
            products = flat.reshape(tangents.shape)
        div = J.diagonal(dim1=1, dim2=2).sum(-1) if divergence == "exact" else None
        return ScoreJets(value, products, div)
    if not stack:
        return ScoreJets(field(x), None, None)
    all_tangents = stack[0] if len(stack) == 1 else torch.cat(stack, dim=0)

    def forward() -> ScoreJets:
        return _jets_forward(field, x, all_tangents, P, divergence, probes, chunk_size)

    def reverse() -> ScoreJets:
        return _jets_reverse(field, x, tangents, divergence, probes, chunk_size)

    def plain_autograd() -> ScoreJets:
        return _jets_autograd(field, x, tangents, divergence, probes)

    if engine == "forward" or (engine == "auto" and inside_transform(x)):
        return forward()
    if engine == "reverse":
        return reverse()
    if engine == "autograd":
        return plain_autograd()
    K = 0 if probes is None or divergence != "hutchinson" else probes.shape[0]
    candidates = {"forward": forward, "reverse": reverse}
    if not torch.is_grad_enabled():  # its results carry no graph: only where none is recorded (as solves run)
        candidates["autograd"] = plain_autograd
    # keyed by callable_key (a model by its id, a closure by its definition site, a bound method by its function and
    # instance), never the model itself: the cache must not keep models alive (a reused id only costs speed)
    key = cache_key(f"score_jets:P={P}:K={K}:{'+'.join(candidates)}", score, x)
    return measured_jets(key, x, candidates)


def _jets_autograd(
    field: Callable[[Tensor], Tensor],
    x: Tensor,
    tangents: Tensor | None,
    divergence: str | None,
    probes: Tensor | None,
) -> ScoreJets:
    """Plain autograd, no ``torch.func``: one recorded forward pass; one backward pass at u = z_1 (the first probe,
    or 0) recorded too, which gives Jᵀz_1 for Hutchinson and, being linear in u, J v as its gradient in u with
    cotangent v, one more backward per tangent; further probes by one backward each. Results carry no graph."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        value = field(leaf)
        hutchinson = divergence == "hutchinson"
        has_tangents = tangents is not None and tangents.shape[0] > 0
        u = (probes[0] if hutchinson else torch.zeros_like(value)).detach().requires_grad_(has_tangents)
        (pulled,) = torch.autograd.grad(value, leaf, u, create_graph=has_tangents, retain_graph=True)
        div = None
        if hutchinson:
            forms = [(pulled * probes[0]).flatten(1).sum(1)]
            for z in probes[1:]:
                (jt_z,) = torch.autograd.grad(value, leaf, z, retain_graph=True)
                forms.append((jt_z * z).flatten(1).sum(1))
            div = torch.stack(forms).mean(0).detach()
        products = None
        if has_tangents:
            products = torch.stack([torch.autograd.grad(pulled, u, v, retain_graph=True)[0] for v in tangents])
    return ScoreJets(value.detach(), products, div)


def measured_jets(key: tuple, x: Tensor, candidates: dict[str, Callable[[], ScoreJets]]) -> ScoreJets:
    """The cached engine's jets, or (first call for ``key``) every candidate run once to warm up and then measured
    by :func:`pysens.derivatives.autotune.measure_engines` (best of its timed rounds; on a shared, oversubscribed CPU a
    single round was seen to keep an engine 1.3–1.6× slower for a whole benchmark)."""
    return run_cached(key, x, candidates, warmup=True)[1]


def chosen_jet_engines() -> dict[tuple, str]:
    """A copy of the choices of ``engine="auto"``:
    ``{(kind, callable_key(score), batch bucket, event shape, device, dtype): engine}``."""
    return {k: v for k, v in chosen_engines().items() if k[0].startswith("score_jets:")}


def _jets_forward(
    field: Callable[[Tensor], Tensor],
    x: Tensor,
    all_tangents: Tensor,
    P: int,
    divergence: str | None,
    probes: Tensor | None,
    chunk_size: int | None,
) -> ScoreJets:
    """One vmapped ``torch.func.jvp`` over ``all_tangents`` ``[P + M, B, *event]`` (sensitivities, then the exact
    divergence's basis or the Hutchinson probes); the primal comes with it."""
    B, d = x.shape[0], math.prod(x.shape[1:])

    def column(v: Tensor) -> tuple[Tensor, Tensor]:
        return torch.func.jvp(field, (x,), (v,))

    values, jv = torch.func.vmap(column, chunk_size=chunk_size)(all_tangents)
    products = jv[:P] if P else None
    div = None
    if divergence == "exact":
        div = jv[P:].reshape(d, B, d).diagonal(dim1=0, dim2=2).sum(-1)
    elif divergence == "hutchinson":
        div = (jv[P:] * probes).flatten(2).sum(2).mean(0)
    return ScoreJets(values[0], products, div)


def _jets_reverse(
    field: Callable[[Tensor], Tensor],
    x: Tensor,
    tangents: Tensor | None,
    divergence: str | None,
    probes: Tensor | None,
    chunk_size: int | None,
) -> ScoreJets:
    """Reverse mode only: s = field(x) with its pullback u ↦ Jᵀu; J·tangents as the pullback of that (linear) map
    (double VJP), vmapped; Hutchinson z_kᵀ J z_k = (Jᵀ z_k)·z_k, one VJP per probe."""
    value, pull = torch.func.vjp(field, x)
    products = None
    if tangents is not None and tangents.shape[0]:
        # g(u) = Jᵀu is linear, so its VJP with cotangent v is J v at any u (u = 0 here)
        _, pull_pull = torch.func.vjp(lambda u: pull(u)[0], torch.zeros_like(value))
        products = torch.func.vmap(pull_pull, chunk_size=chunk_size)(tangents)[0]
    div = None
    if divergence == "hutchinson":
        jt_z = torch.func.vmap(pull, chunk_size=chunk_size)(probes)[0]
        div = (jt_z * probes).flatten(2).sum(2).mean(0)
    return ScoreJets(value, products, div)


def check_differentiable(score: Callable[[Tensor, Time], Tensor], x: Tensor, t: Time, name: str = "score") -> None:
    """Raise ``TypeError`` naming ``name`` unless ``score`` returns a tensor shaped like ``x`` and admits
    ``torch.func.jvp`` in x (the J_s·y products and divergences need it). Checked on the first row only."""
    x1 = x[:1]
    t1 = t[:1] if isinstance(t, Tensor) and t.dim() == 1 else t
    try:
        value, tangent = torch.func.jvp(lambda u: score(u, t1), (x1,), (torch.ones_like(x1),))
    except Exception as err:  # any failure inside the user's model: say what is needed, keep the cause
        raise TypeError(
            f"{name} must be differentiable in x by torch.func.jvp (forward mode): sensitivities need J_s·y and "
            f"the divergence ∇·s; evaluating it failed with {type(err).__name__}: {err}"
        ) from err
    if not isinstance(value, Tensor) or value.shape != x1.shape:
        raise TypeError(
            f"{name}(x, t) must return a tensor shaped like x {tuple(x1.shape)}; got "
            f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}"
        )
    check_output(value, name, f"{name}(x, t)", x1.shape, x1.dtype, x1.device)  # dtype and device too
