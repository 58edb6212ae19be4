"""φ's derivatives ∂_tφ, ∇_xφ and Δφ (exact or Hutchinson) by three engines, for the Fokker–Planck residual.

The engines (see :mod:`pysens.fokker_planck.residual` for the residual they feed):

* ``"forward"``: the forward Laplacian (after Li et al. 2023) for a chain of ``nn.Linear`` layers and elementwise
  activations with σ' and σ'' in closed form (``FORWARD_ACTIVATIONS``): one batched pass carries the value and its
  x-Jacobian (or the Jacobian along Hutchinson probes), one reverse sweep gathers Δφ, ∂_tφ and ∇_xφ.
* ``"func"``: ``torch.func`` transforms over the whole batch (a JVP of the gradient along every basis tangent or
  probe, vmapped), for any potential.
* ``"autograd"``: nested ``torch.autograd.grad`` calls, one per tangent (the authors' way; the reference).

Shapes: ``x`` ``[B, *event]`` (flattened to d inside), ``t`` a float, 0-d or ``[B]``; ``phi(x, t) -> [B]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pysens.diffusion.divergence import hutchinson_probes
from pysens.diffusion.processes import Time, time_like
from pysens.fokker_planck.potential import PotentialScoreNet

__all__ = [
    "ENGINES",
    "FORWARD_ACTIVATIONS",
    "LAPLACIANS",
    "TIME_DERIVATIVES",
    "PotentialDerivatives",
    "potential_derivatives",
]

LAPLACIANS = ("exact", "hutchinson")
TIME_DERIVATIVES = ("autograd", "fd")
ENGINES = ("auto", "forward", "func", "autograd")

Potential = Callable[[Tensor, Tensor], Tensor]


def _batch_times(t: Time, x: Tensor) -> Tensor:
    """``t`` as a ``[B]`` tensor on ``x``'s dtype and device (a 0-d time is repeated for every row)."""
    t = time_like(t, x)
    # a real copy, not a stride-0 view: forward-mode AD (torch.func.jvp) refuses to write into overlapping memory
    return t.expand(x.shape[0]).clone() if t.dim() == 0 else t


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")


def _resolve_probes(
    probes: Tensor | None, n_probes: int, flat: Tensor, probe_kind: str, generator: torch.Generator | None
) -> Tensor:
    """Probes ``[K, B, d]`` with E[z zᵀ] = I; K = 0 is refused (the estimate would be 0/0)."""
    if probes is None:
        return hutchinson_probes(
            n_probes, flat.shape, kind=probe_kind, generator=generator, dtype=flat.dtype, device=flat.device
        )
    probes = probes.reshape(probes.shape[0], *flat.shape) if probes.dim() > 1 else probes
    if probes.dim() != 3 or probes.shape[1:] != flat.shape:
        raise ValueError(
            f"probes must be [K, B, *event] with B, event = {tuple(flat.shape)}; got {tuple(probes.shape)}"
        )
    if probes.shape[0] == 0:
        raise ValueError("Hutchinson needs at least one probe; got probes with K = 0")
    return probes.to(dtype=flat.dtype, device=flat.device)


@dataclass
class PotentialDerivatives:
    """φ's derivatives at a batch: ``phi_t`` ∂_tφ ``[B]``, ``grad`` ∇_xφ ``[B, d]``, ``laplacian`` Δφ ``[B]``
    (exact or a Hutchinson estimate), for the Hutchinson path the probes ``[K, B, d]`` it used, and ``phi`` the
    value φ ``[B]`` (every engine has it for free; None where ``with_phi=False`` let the forward engine skip it)."""

    phi_t: Tensor
    grad: Tensor
    laplacian: Tensor
    probes: Tensor | None = None
    phi: Tensor | None = None


def _fd_time_derivative(fn: Callable[[Tensor], Tensor], t: Tensor, step: float) -> Tensor:
    """Central difference (fn(t + h) − fn(t − h)) / 2h with h = min(step, t/2) per row, so t − h stays ≥ t/2 > 0
    (second order; FP-Diffusion uses finite differences too, seed001 §7)."""
    h = torch.minimum(torch.full_like(t, step), 0.5 * t)
    if bool((h <= 0).any()):
        raise ValueError("time_derivative='fd' needs t > 0 for every point")
    forward, backward = fn(t + h), fn(t - h)
    shape = (-1,) + (1,) * (forward.dim() - 1)
    return (forward - backward) / (2.0 * h).reshape(shape)


# ---- The forward Laplacian ------------------------------------------------------------------------------------
# Each rule maps the pre-activation z to (σ(z), σ'(z), σ''(z)), elementwise and in closed form; the branch
# conventions (Softplus's threshold, ELU's z ≤ 0) are torch's own, so the derivatives equal autograd's. With
# ``value=False`` a rule may return None for σ(z) (after the last activation only φ needs it, which R does not).
ActivationRule = Callable[[nn.Module, Tensor, bool], tuple[Tensor | None, Tensor, Tensor]]


@functools.cache
def _sigmoid_rounds_to_one(u: float, dtype: torch.dtype) -> bool:
    # through the vectorised kernel (a 64-element tensor), which is the one the batch goes through
    return bool((torch.sigmoid(torch.full((64,), u, dtype=dtype)) == 1.0).all())


def _softplus(m: nn.Softplus, z: Tensor, value: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    # softplus(z) = log(1 + e^{βz})/β, and z itself where βz > threshold (torch's linear branch): σ' = sigmoid(βz)
    # is set to exactly 1 there, which makes σ'' = β σ'(1 − σ') exactly 0 too. When sigmoid(threshold) already
    # rounds to 1 in z's dtype (float32 and the default threshold 20), the mask changes nothing and is skipped.
    bz = m.beta * z
    s = torch.sigmoid(bz)
    if not _sigmoid_rounds_to_one(m.threshold, z.dtype):
        s = torch.where(bz > m.threshold, 1.0, s)
    return F.softplus(z, m.beta, m.threshold) if value else None, s, m.beta * torch.addcmul(s, s, s, value=-1.0)


def _tanh(m: nn.Tanh, z: Tensor, value: bool) -> tuple[Tensor, Tensor, Tensor]:
    y = torch.tanh(z)
    d1 = 1.0 - y * y
    return y, d1, -2.0 * y * d1


def _sigmoid(m: nn.Sigmoid, z: Tensor, value: bool) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sigmoid(z)
    d1 = s * (1.0 - s)
    return s, d1, d1 * (1.0 - 2.0 * s)


def _logsigmoid(m: nn.LogSigmoid, z: Tensor, value: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    s = torch.sigmoid(z)
    return F.logsigmoid(z) if value else None, 1.0 - s, -s * (1.0 - s)


def _silu(m: nn.SiLU, z: Tensor, value: bool) -> tuple[Tensor, Tensor, Tensor]:
    # z s(z): σ' = s (1 + z(1 − s)), σ'' = s(1 − s)(2 + z(1 − 2s))
    s = torch.sigmoid(z)
    return z * s, s * (1.0 + z * (1.0 - s)), s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))


_GELU_K = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


def _gelu(m: nn.GELU, z: Tensor, value: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    if m.approximate == "tanh":
        # ½ z (1 + tanh u), u = k(z + c z³): σ' = ½(1 + T) + ½ z (1 − T²) u',
        # σ'' = (1 − T²)(u' + ½ z (u'' − 2 T u'²)), with T = tanh u, u' = k(1 + 3c z²), u'' = 6 k c z
        tanh_u = torch.tanh(_GELU_K * (z + _GELU_C * z**3))
        sech2 = 1.0 - tanh_u * tanh_u
        du = _GELU_K * (1.0 + 3.0 * _GELU_C * z * z)
        d2u = 6.0 * _GELU_K * _GELU_C * z
        d1 = 0.5 * (1.0 + tanh_u) + 0.5 * z * sech2 * du
        d2 = sech2 * (du + 0.5 * z * (d2u - 2.0 * tanh_u * du * du))
        return F.gelu(z, approximate="tanh") if value else None, d1, d2
    # z Φ(z): σ' = Φ + z ϕ, σ'' = ϕ (2 − z²), with ϕ the standard normal density
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z * cdf, cdf + z * pdf, pdf * (2.0 - z * z)


def _exponential_linear(
    z: Tensor, alpha: float, scale: float, input_scale: float, value: bool
) -> tuple[Tensor | None, Tensor, Tensor]:
    # scale · (z for z > 0, α (e^{z·input_scale} − 1) for z ≤ 0): ELU, CELU and SELU. The exponential sees
    # min(z, 0) only, so the unused branch never overflows (an inf there would turn the θ-gradient into NaN).
    positive = z > 0
    zn = input_scale * z.clamp(max=0.0)
    e = alpha * torch.exp(zn)
    y = scale * torch.where(positive, z, alpha * torch.expm1(zn)) if value else None
    d1 = torch.where(positive, 1.0, input_scale * e)
    d2 = torch.where(positive, 0.0, input_scale * input_scale * e)
    return y, scale * d1, scale * d2


def _elu(m: nn.ELU, z: Tensor, value: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    return _exponential_linear(z, m.alpha, 1.0, 1.0, value)


def _celu(m: nn.CELU, z: Tensor, value: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    return _exponential_linear(z, m.alpha, 1.0, 1.0 / m.alpha, value)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu(m: nn.SELU, z: Tensor, value: bool) -> tuple[Tensor | None, Tensor, Tensor]:
    return _exponential_linear(z, _SELU_ALPHA, _SELU_SCALE, 1.0, value)


_ACTIVATION_RULES: dict[type[nn.Module], ActivationRule] = {
    nn.Softplus: _softplus,
    nn.Tanh: _tanh,
    nn.Sigmoid: _sigmoid,
    nn.LogSigmoid: _logsigmoid,
    nn.SiLU: _silu,
    nn.GELU: _gelu,
    nn.ELU: _elu,
    nn.CELU: _celu,
    nn.SELU: _selu,
}
FORWARD_ACTIVATIONS = tuple(cls.__name__ for cls in _ACTIVATION_RULES)


def _flatten_modules(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flatten_modules(child)]
    return [] if isinstance(module, nn.Identity) else [module]


def _forward_chain(phi: object) -> tuple[list[nn.Module] | None, str]:
    """The modules of φ(x, t) = chain([t, x])[:, 0] when ``phi`` is a ``PotentialScoreNet``'s ``potential`` or an
    ``nn.Sequential`` of ``nn.Linear`` and supported activations; else None and the reason."""
    if getattr(phi, "__func__", None) is PotentialScoreNet.potential:
        modules = phi.__self__.chain()
    elif isinstance(phi, nn.Sequential):
        modules = _flatten_modules(phi)
    else:
        return None, (
            f"it needs a PotentialScoreNet's .potential or an nn.Sequential on [t, x]; got {type(phi).__name__} "
            f"{getattr(phi, '__qualname__', '')}".rstrip()
        )
    for i, module in enumerate(modules):
        if not isinstance(module, nn.Linear) and type(module) not in _ACTIVATION_RULES:
            return None, (
                f"layer {i} ({module}) is not supported; the chain may hold nn.Linear and the activations "
                f"{', '.join(FORWARD_ACTIVATIONS)}"
            )
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    if not linears or linears[-1].out_features != 1:
        return None, "the network must contain nn.Linear layers and end with one output feature"
    return modules, ""


def _sequential_potential(net: nn.Sequential) -> Callable[[Tensor, Tensor], Tensor]:
    """An ``nn.Sequential`` read as a potential: φ(x, t) = net([t, x])[:, 0] (t first, as in PotentialScoreNet)."""

    def phi(x: Tensor, t: Tensor) -> Tensor:
        t = time_like(t, x)
        return net(torch.cat([t.expand(x.shape[0])[:, None], x.reshape(x.shape[0], -1)], dim=1))[:, 0]

    return phi


# Rows per block of the forward pass on the CPU: blocks of about this many bytes per tangent tensor. Large tensors
# cost page faults on every allocation (the allocator maps fresh memory above a few tens of MiB) and miss the caches;
# blocks of about a MiB run the same arithmetic several times faster. On a GPU the batch goes through whole.
_FORWARD_BLOCK_BYTES = 1 << 20


def _forward_laplacian(
    chain: list[nn.Module], x: Tensor, t: Tensor, with_value: bool = True, probes: Tensor | None = None
) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
    """(φ or None, ∂_tφ, ∇_xφ, Δ_xφ) of φ = chain([t, x])[:, 0] by the forward Laplacian, for ``x`` ``[B, d]``.

    Forward sweep: the value z ``[n, w]`` and its x-Jacobian ``J`` ``[d, n, w]`` (tangent-major, so σ'(z) scales
    every row in one contiguous broadcast and a Linear maps all rows in one matrix product; the identity at the
    input, the same for every point, so ``[d, 1, 1 + d]`` until the first activation). Each activation keeps σ'(z)
    and its Laplacian source σ''(z) Σ_i J_i². The forward-Laplacian recursion L ← σ'(z) L + σ''(z) Σ_i J_i²,
    L ← L Wᵀ is linear in L, so Δφ is the sum of the sources carried to the output by the linear map ∂φ/∂h: a
    reverse sweep of the adjoint a = ∂φ/∂h (a ← a W through a Linear, a ← σ'(z) a through an activation) adds
    a · source at each activation and ends as ∂φ/∂(t, x) at the input. This does the same arithmetic as carrying
    ∂/∂t and L forward as extra rows, with one adjoint row in place of those two.

    With ``probes`` ``[K, B, d]`` the forward sweep carries the directional derivatives J z_k instead of J, and the
    sources average (J z_k)² over k: Δφ becomes the Hutchinson estimate (1/K) Σ_k z_kᵀ H z_k with these probes,
    at a cost O(K) whatever d, while ∂_tφ and ∇_xφ (from the adjoint) stay exact.
    Without ``with_value`` the values after the last activation, which only φ needs, are not computed.
    """
    first = chain[0]
    if isinstance(first, nn.Linear) and first.in_features != 1 + x.shape[1]:
        raise ValueError(
            f"the network's first layer takes {first.in_features} features, i.e. [t, x] with "
            f"{first.in_features - 1} coordinates; x has {x.shape[1]}"
        )
    B, d = x.shape
    inputs = torch.cat([t[:, None], x], dim=1)
    if probes is None:
        J0 = torch.eye(1 + d, dtype=x.dtype, device=x.device)[1:, None, :]  # e_1 … e_d, no t component
    else:
        J0 = F.pad(probes, (1, 0))  # [K, B, 1 + d]: each probe with a zero t component
    one = torch.ones(1, 1, dtype=x.dtype, device=x.device)
    activations = [i for i, m in enumerate(chain) if not isinstance(m, nn.Linear)]
    values_until = len(chain) if with_value else (activations[-1] if activations else -1)
    rows = B
    if x.device.type == "cpu":
        width = max([1 + d] + [m.out_features for m in chain if isinstance(m, nn.Linear)])
        rows = max(1, _FORWARD_BLOCK_BYTES // (x.element_size() * (len(J0) + 3) * width))

    def block(z: Tensor, J: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        n = z.shape[0]
        kept: list[tuple[Tensor, Tensor]] = []
        for i, module in enumerate(chain):
            if isinstance(module, nn.Linear):
                z = F.linear(z, module.weight, module.bias) if i < values_until else None
                J = F.linear(J, module.weight)
            else:
                z, d1, d2 = _ACTIVATION_RULES[type(module)](module, z, i < values_until)
                kept.append((d1, d2 * J.square().sum(0)))  # σ'(z), σ''(z) Σ_i (∂z/∂x_i)² (or Σ_k (J z_k)²)
                J = d1 * J
        adjoint, lap = one, torch.zeros(n, dtype=x.dtype, device=x.device)
        for module in reversed(chain):
            if isinstance(module, nn.Linear):
                adjoint = adjoint @ module.weight
            else:
                d1, source = kept.pop()
                # a · source per point; the adjoint is the same for every point until the first σ'(z) scales it
                lap = lap + (source @ adjoint[0] if adjoint.shape[0] == 1 else torch.linalg.vecdot(adjoint, source))
                adjoint = d1 * adjoint
        return (None if z is None else z[:, 0]), adjoint.expand(n, -1), lap if probes is None else lap / len(J0)

    chunks = inputs.split(rows)
    tangents = [J0] * len(chunks) if probes is None else J0.split(rows, dim=1)
    parts = [block(z, J) for z, J in zip(chunks, tangents, strict=True)]
    value = torch.cat([p[0] for p in parts]) if with_value else None
    adjoint, lap = (torch.cat(p) for p in list(zip(*parts, strict=True))[1:])
    return value, adjoint[:, 0], adjoint[:, 1:], lap


def _func_derivatives(
    phi_flat: Callable[[Tensor, Tensor], Tensor],
    flat: Tensor,
    tb: Tensor,
    tangents: Tensor,
    with_t: bool,
    chunk_size: int | None,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """(φ, ∂_tφ or None, ∇_xφ, vᵀHv per tangent ``[K, B]``) by one ``vmap`` over the tangents of a JVP of the
    gradient ∇_{(x,t)} Σ_b φ (forward-over-reverse)."""

    def gradient(y: Tensor, s: Tensor) -> tuple[tuple[Tensor, Tensor], Tensor]:
        # ∇ of Σ_b φ(x_b, t_b) w.r.t. (x, t) is (∇_xφ, ∂_tφ) row by row, because rows are independent.
        def total(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
            value = phi_flat(a, b)
            return value.sum(), value

        if with_t:
            return torch.func.grad(total, argnums=(0, 1), has_aux=True)(y, s)
        gx, value = torch.func.grad(total, has_aux=True)(y, s)
        return (gx, s), value  # s stands in for ∂_tφ (a transform's outputs must be tensors)

    def directional(v: Tensor) -> tuple[tuple[tuple[Tensor, Tensor], Tensor], Tensor]:
        primal, ((hv, _), _) = torch.func.jvp(gradient, (flat, tb), (v, torch.zeros_like(tb)))
        return primal, (hv * v).sum(-1)

    ((grads, phi_ts), values), quads = torch.func.vmap(directional, chunk_size=chunk_size)(tangents)
    return values[0], (phi_ts[0] if with_t else None), grads[0], quads


def _autograd_derivatives(
    phi_flat: Callable[[Tensor, Tensor], Tensor], flat: Tensor, tb: Tensor, tangents: Tensor, with_t: bool
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """The same by nested ``torch.autograd.grad`` calls: one for (∇_xφ, ∂_tφ), then one per tangent v for H v
    (the authors' loop, pinn_utils.pinn_loss). Outside a graph-recording context the results are detached."""
    record = torch.is_grad_enabled()
    with torch.enable_grad():
        y = flat if flat.requires_grad else flat.detach().requires_grad_(True)
        s = tb if tb.requires_grad or not with_t else tb.detach().clone().requires_grad_(True)
        value = phi_flat(y, s)
        inputs = (y, s) if with_t else (y,)
        first = torch.autograd.grad(value.sum(), inputs, create_graph=True, allow_unused=True, materialize_grads=True)
        grad = first[0]
        quads = []
        for v in tangents:
            if grad.requires_grad:
                options = {"allow_unused": True, "materialize_grads": True}
                (hv,) = torch.autograd.grad((grad * v).sum(), y, create_graph=record, retain_graph=True, **options)
            else:  # φ is affine in x
                hv = torch.zeros_like(y)
            quads.append((hv * v).sum(-1))
    results = (value, first[1] if with_t else None, grad, torch.stack(quads))
    if record:
        return results
    return tuple(r if r is None else r.detach() for r in results)  # type: ignore[return-value]


def _resolve_engine(engine: str, chain: list[nn.Module] | None, reason: str) -> str:
    _check_choice(engine, ENGINES, "engine")
    if engine == "auto":
        return "forward" if chain is not None else "func"
    if engine == "forward" and chain is None:
        raise ValueError(f"engine='forward' cannot read this network: {reason}. Use engine='func' or 'autograd'")
    return engine


def potential_derivatives(
    phi: Potential | nn.Sequential,
    x: Tensor,
    t: Time,
    *,
    laplacian: str = "exact",
    time_derivative: str = "autograd",
    engine: str = "auto",
    n_probes: int = 1,
    probes: Tensor | None = None,
    probe_kind: str = "rademacher",
    generator: torch.Generator | None = None,
    fd_step: float = 1e-3,
    chunk_size: int | None = None,
    with_phi: bool = True,
) -> PotentialDerivatives:
    """φ, ∂_tφ, ∇_xφ and Δφ of ``phi(x, t) -> [B]`` at ``x`` ``[B, *event]``.

    ``phi`` is a callable potential, or an ``nn.Sequential`` read as φ(x, t) = net([t, x])[:, 0].
    ``engine`` (see the module docstring): "forward" (the forward Laplacian, for a ``PotentialScoreNet.potential``
    or an ``nn.Sequential`` of ``nn.Linear`` and the activations in ``FORWARD_ACTIVATIONS``; cost ≈ d + 2 network
    evaluations, batched), "func" (one ``vmap`` over the d basis tangents of a JVP of the gradient ∇_{(x,t)} Σ_b φ,
    whose tangents are the Hessian columns H e_i; cost ∝ d gradient evaluations, batched), "autograd" (nested
    ``torch.autograd.grad``, one per tangent; not inside ``torch.func`` transforms), or "auto" (the default:
    "forward" when it can read the network, else "func").
    Hutchinson: Δφ ≈ (1/K) Σ_k z_kᵀ H z_k along K probes z_k (unbiased; O(K) whatever d): the same Hessian-vector
    products along the probes ("func", "autograd"), or the probes in place of the basis tangents of the forward
    sweep ("forward", cost ≈ K + 2 network evaluations); ∂_tφ and ∇_xφ stay exact. The same probes give the same
    estimate in every engine. ``time_derivative="fd"`` replaces ∂_tφ by a central difference of step ``fd_step``.
    ``chunk_size`` bounds the "func" engine's vmap memory (d·B·d tangents at once for the exact path).
    ``with_phi=False`` lets the forward engine skip what only φ itself needs (its ``phi`` is then None); the
    residual uses derivatives only.

    Raises ``ValueError`` for unknown options, and for ``engine="forward"`` on a network it cannot read (naming the
    layer).
    """
    _check_choice(laplacian, LAPLACIANS, "laplacian")
    _check_choice(time_derivative, TIME_DERIVATIVES, "time_derivative")
    if isinstance(phi, PotentialScoreNet):  # the module's forward is the score; its potential is φ
        phi = phi.potential
    chain, reason = _forward_chain(phi)
    engine = _resolve_engine(engine, chain, reason)
    potential = _sequential_potential(phi) if isinstance(phi, nn.Sequential) else phi
    event = x.shape[1:]
    flat = x.reshape(x.shape[0], -1)
    tb = _batch_times(t, flat)
    B, d = flat.shape

    def phi_flat(y: Tensor, s: Tensor) -> Tensor:
        return potential(y.reshape(y.shape[0], *event), s).reshape(B)

    with_t = time_derivative == "autograd"
    used_probes = None
    if laplacian == "hutchinson":
        used_probes = _resolve_probes(probes, n_probes, flat, probe_kind, generator)
    if engine == "forward":
        value, phi_t, grad, lap = _forward_laplacian(chain, flat, tb, with_phi, used_probes)
    else:
        if laplacian == "exact":
            tangents = torch.eye(d, dtype=flat.dtype, device=flat.device).reshape(d, 1, d).expand(d, B, d)
        else:
            tangents = used_probes
        if engine == "func":
            value, phi_t, grad, quads = _func_derivatives(phi_flat, flat, tb, tangents, with_t, chunk_size)
        else:
            value, phi_t, grad, quads = _autograd_derivatives(phi_flat, flat, tb, tangents, with_t)
        lap = quads.sum(0) if laplacian == "exact" else quads.mean(0)
    if not with_t:
        phi_t = _fd_time_derivative(lambda s: phi_flat(flat, s), tb, fd_step)
    return PotentialDerivatives(phi_t=phi_t, grad=grad, laplacian=lap, probes=used_probes, phi=value)
