"""MLPScore.score_and_divergence (pysens.diffusion.network_jacobians) against the explicit Jacobian's trace, jacrev,
the autodiff engines, a depth-1 closed form; its gradients; float32; chunking; and its use by log_likelihood.

Tolerance from the arithmetic: the structured trace and every reference sum the same products
(W_o)_{i j_L} silu'(a_L)_{j_L} ⋯ silu'(a_1)_{j_1} (W_1)_{j_1 i} in different orders, each within γ_n of
τ = |c_in/β| (tr(|W_o| |D_L| |W_L| ⋯ |D_1| |W_1|) + d |g|) with n the summation length plus a few ulp per factor
(silu', the products, the scaling): two of them differ by at most 2 n' u τ with n' = d + L h + 5 (L + 2).
"""

import math

import pytest
import torch
import torch.nn.functional as F

from pysens import derivatives as D
from pysens.diffusion import VE, VP, GaussianMixtureScore
from pysens.diffusion import network_jacobians as NJ
from pysens.diffusion.likelihood import log_likelihood
from pysens.diffusion.networks import MLPScore

DT = torch.float64


def _net(event_shape, depth, input_skip=False, process=None, hidden=12, dtype=DT):
    torch.manual_seed(depth + 10 * input_skip)
    net = MLPScore(event_shape, process or VP(), hidden=hidden, depth=depth, embed_dim=6, input_skip=input_skip)
    if input_skip:  # a gate of O(1), so its d·g term is visible next to the trace
        torch.nn.init.normal_(net.skip_gate.weight, std=0.5)
    return net.to(dtype)


def _explicit(net: MLPScore, x, t):
    """(divergence from the explicit per-sample Jacobian c_in/β (W_o D_L W_L ⋯ D_1 W_1 + g I), bound τ of the
    module docstring), with silu' from autograd of F.silu (not from the code under test's formula)."""
    c_in, c_noise, beta = net.preconditioning(x, t)
    flat = (c_in.reshape(-1, *[1] * (x.dim() - 1)) * x if c_in.dim() else c_in * x).reshape(x.shape[0], -1)
    e = net.embedding(c_noise)
    B, d = flat.shape
    jac = torch.eye(d, dtype=x.dtype).expand(B, d, d)
    jac_abs = jac
    h = flat
    for layer, projection in zip(net.layers, net.noise_projections, strict=True):
        a = (layer(h) + projection(e)).detach().requires_grad_()
        with torch.enable_grad():
            (slope,) = torch.autograd.grad(F.silu(a).sum(), a)
        h = F.silu(a.detach())
        jac = slope[:, :, None] * (layer.weight @ jac)
        jac_abs = slope.abs()[:, :, None] * (layer.weight.abs() @ jac_abs)
    jac, jac_abs = net.output.weight @ jac, net.output.weight.abs() @ jac_abs
    trace, trace_abs = jac.diagonal(dim1=1, dim2=2).sum(1), jac_abs.diagonal(dim1=1, dim2=2).sum(1)
    if net.skip_gate is not None:
        gate = net.skip_gate(e)[:, 0]
        trace, trace_abs = trace + d * gate, trace_abs + d * gate.abs()
    ratio = (c_in / beta).expand(B)
    n = d + net.depth * net.hidden + 5 * (net.depth + 2)
    bound = 2 * n * torch.finfo(x.dtype).eps * (ratio.abs() * trace_abs)
    return -ratio * trace, bound


def _x(shape, B=5, seed=1, dtype=DT):
    return torch.randn(B, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


CONFIGS = [  # (event shape, depth, input_skip, process)
    ((5,), 1, False, VP()),
    ((5,), 2, False, VE(sigma_min=0.01, sigma_max=20.0)),
    ((5,), 3, True, VP()),
    ((2, 3), 3, False, VP()),
    ((2, 3), 2, True, VE(sigma_min=0.01, sigma_max=20.0)),
]


@pytest.mark.parametrize("shape,depth,skip,process", CONFIGS)
def test_divergence_is_the_explicit_jacobian_trace_and_the_autodiff_engines(shape, depth, skip, process):
    net = _net(shape, depth, skip, process)
    x = _x(shape)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 1.0], dtype=DT)
    with torch.no_grad():
        score, div = net.score_and_divergence(x, t)
        forward = net(x, t)
        exact, bound = _explicit(net, x, t)
        references = {e: D.divergence(lambda u: net(u, t), x, engine=e)[1] for e in ("loop", "vjp", "jvp")}
    references["jacrev"] = (
        torch.func.vmap(lambda u, s: torch.func.jacrev(lambda v: net(v[None], s[None])[0])(u))(x, t)
        .reshape(5, math.prod(shape), math.prod(shape))
        .diagonal(dim1=1, dim2=2)
        .sum(1)
    )
    assert score.shape == x.shape and div.shape == (5,)
    torch.testing.assert_close(score, forward, rtol=0, atol=4 * torch.finfo(DT).eps * float(forward.abs().max()))
    assert bool(((div - exact).abs() <= bound).all()), (div - exact, bound)
    for name, ref in references.items():
        assert bool(((div - ref).abs() <= bound).all()), (name, div - ref, bound)


def test_depth_one_closed_form():
    """Depth 1: ∇·s = −(c_in/β) Σ_j silu'(a_j) Σ_i (W_o)_ij (W_1)_ji, silu'(a) = σ(a)(1 + a(1 − σ(a)))."""
    net = _net((4,), 1)
    x, t = _x((4,)), 0.3
    with torch.no_grad():
        _, div = net.score_and_divergence(x, t)
        c_in, c_noise, beta = net.preconditioning(x, t)
        a = net.layers[0](c_in * x) + net.noise_projections[0](net.embedding(c_noise))
        sig = 1 / (1 + torch.exp(-a))
        coupling = torch.einsum("ij,ji->j", net.output.weight, net.layers[0].weight)
        closed = -(c_in / beta) * ((sig * (1 + a * (1 - sig))) * coupling).sum(1)
    _, bound = _explicit(net, x, t)
    assert bool(((div - closed).abs() <= bound).all())


def test_gradients_flow_through_the_structured_divergence():
    """∂(Σ_b ∇·s)/∂x and /∂W_2 equal those through the vmapped-VJP engine's graph (second derivatives: the same
    products again in other orders; 1e-11 relative to the largest entry is ~100× n u at these sizes)."""
    net = _net((4,), 3, input_skip=True)
    x = _x((4,)).requires_grad_()
    t = torch.full((5,), 0.4, dtype=DT)
    weight = net.layers[1].weight
    ours = torch.autograd.grad(net.score_and_divergence(x, t)[1].sum(), (x, weight))
    theirs = torch.autograd.grad(D.divergence(lambda u: net(u, t), x, engine="vjp")[1].sum(), (x, weight))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11 * float(b.abs().max()))
    # inside a torch.func transform (no in-place arithmetic there)
    func_grad = torch.func.grad(lambda u: net.score_and_divergence(u, t)[1].sum())(x.detach())
    torch.testing.assert_close(func_grad, theirs[0], rtol=0, atol=1e-11 * float(theirs[0].abs().max()))


def test_row_chunks_give_the_one_block_result(monkeypatch):
    net = _net((6,), 3)
    x, t = _x((6,), B=7), 0.6
    with torch.no_grad():
        whole = net.score_and_divergence(x, t)[1]
        monkeypatch.setattr(NJ, "CHUNK_ELEMENTS", 2 * net.hidden * 6)  # two rows per block: 4 blocks
        chunked = net.score_and_divergence(x, t)[1]
        _, bound = _explicit(net, x, t)
    assert bool(((chunked - whole).abs() <= bound).all())


def test_float32_follows_the_network_dtype():
    net64 = _net((5,), 3)
    net32 = _net((5,), 3, dtype=torch.float32)
    x = _x((5,))
    with torch.no_grad():
        s32, d32 = net32.score_and_divergence(x.float(), 0.5)
        exact, bound = _explicit(net64, x, 0.5)
    assert s32.dtype == d32.dtype == torch.float32
    # float32 weights are the float64 ones rounded: the reference differs by the same few ulp of float32 per factor
    eps_ratio = torch.finfo(torch.float32).eps / torch.finfo(DT).eps
    assert bool(((d32.double() - exact).abs() <= 2 * eps_ratio * bound).all())


def test_bad_state_shape_is_a_value_error():
    with pytest.raises(ValueError, match="x must have shape"):
        _net((5,), 2).score_and_divergence(torch.zeros(3, 4, dtype=DT), 0.5)


def test_log_likelihood_uses_the_models_divergence(monkeypatch):
    """Engine "auto" takes score_and_divergence from the caller's object (pysens's MLP and the closed-form mixture),
    and the result agrees with the loop engine's solve to the solve's tolerance."""
    calls = {"MLPScore": 0, "GaussianMixtureScore": 0}
    for cls in (MLPScore, GaussianMixtureScore):
        original = cls.score_and_divergence

        def counted(self, x, t, original=original, name=cls.__name__):
            calls[name] += 1
            return original(self, x, t)

        monkeypatch.setattr(cls, "score_and_divergence", counted)
    net = _net((3,), 2)
    g = torch.Generator().manual_seed(2)
    mixture = GaussianMixtureScore(torch.randn(2, 3, generator=g, dtype=DT), torch.ones(2, 3, dtype=DT), process=VP())
    x = _x((3,), B=4)
    for model in (net, mixture):
        with torch.no_grad():
            auto = log_likelihood(model, VP(), x, t0=0.05, rtol=1e-6, atol=1e-6).log_density
            loop = log_likelihood(model, VP(), x, t0=0.05, rtol=1e-6, atol=1e-6, divergence_engine="loop").log_density
        assert calls[type(model).__name__] > 0
        # right-hand sides equal to round-off: the solves agree far inside their tolerance (a wrong trace moves
        # log p by O(1)); 1e-6 allows for a step decision flipped by that round-off
        assert float((auto - loop).abs().max()) < 1e-6
