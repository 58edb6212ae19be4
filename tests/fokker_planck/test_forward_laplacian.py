"""The forward-Laplacian engine against torch.func and nested autograd (exact answers, float64), on the authors'
checkpoint in float32, its θ-gradient, and its errors."""

import pytest
import torch
from torch import nn

import pysens.fokker_planck.laplacian as laplacian_module
from pysens.diffusion.processes import OU
from pysens.fokker_planck import (
    PotentialScoreNet,
    authors_checkpoint_path,
    load_authors_checkpoint,
    log_fp_residual,
    potential_derivatives,
)

DT = torch.float64
FIELDS = ("phi", "phi_t", "grad", "laplacian")


class _ExplicitCELU(nn.Module):
    """CELU written out, so autograd differentiates the formula: torch's own float64 CELU backward rounds 1/α to
    float32 (derivatives off by ~1e-8), which would hide the forward engine's exactness."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, z):
        return torch.where(z > 0, z, self.alpha * torch.expm1(z.clamp(max=0.0) / self.alpha))


ACTIVATIONS = {
    "softplus-beta100": lambda: nn.Softplus(beta=100.0),
    "softplus-beta1-threshold2": lambda: nn.Softplus(beta=1.0, threshold=2.0),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "logsigmoid": nn.LogSigmoid,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "gelu-tanh": lambda: nn.GELU(approximate="tanh"),
    "elu": lambda: nn.ELU(alpha=0.7),
    "celu": lambda: nn.CELU(alpha=1.3),
    "selu": nn.SELU,
}


def _mlp(d: int, activation: nn.Module, seed: int, width: int = 24) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(1 + d, width), activation, nn.Linear(width, width), activation, nn.Linear(width, 1)
    ).to(DT)


def _inputs(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return 1.5 * torch.randn(n, d, generator=gen, dtype=DT), 0.05 + torch.rand(n, generator=gen, dtype=DT)


def _assert_same(a, b, tol: float) -> None:
    for field in FIELDS:
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=tol, atol=tol, msg=field)


@pytest.mark.parametrize("d", [2, 7])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_forward_laplacian_equals_func_and_autograd(name, d):
    net = _mlp(d, ACTIVATIONS[name](), seed=d)
    x, t = _inputs(64, d, seed=10 + d)
    forward = potential_derivatives(net, x, t, engine="forward")
    reference = net
    if name == "celu":
        reference = nn.Sequential(*(_ExplicitCELU(1.3) if isinstance(m, nn.CELU) else m for m in net))
    for engine in ("func", "autograd"):
        _assert_same(forward, potential_derivatives(reference, x, t, engine=engine), 1e-10)
    assert forward.laplacian.abs().max() > 1e-3 and forward.grad.shape == (64, d)
    # "auto" picks the forward engine for a readable nn.Sequential
    _assert_same(potential_derivatives(net, x, t), forward, 0.0)


def test_softplus_sees_both_branches():
    # β = 100: pre-activations βz far above the threshold 20 (torch's linear branch, σ'' = 0) and inside the smooth
    # region both occur, and the forward engine matches autograd on each (the check above, at these points)
    d = 2
    net = _mlp(d, nn.Softplus(beta=100.0), seed=3)
    x, t = _inputs(256, d, seed=4)
    bz = 100.0 * net[0](torch.cat([t[:, None], x], 1))
    assert (bz > 20).float().mean() > 0.2 and (bz.abs() < 5).float().mean() > 0.01
    _assert_same(
        potential_derivatives(net, x, t, engine="forward"), potential_derivatives(net, x, t, engine="autograd"), 1e-10
    )


@pytest.mark.parametrize("d", [2, 7])
def test_potential_score_net_is_read_and_blocks_do_not_matter(d, monkeypatch):
    torch.manual_seed(d)
    net = PotentialScoreNet(dim=d, process=OU(), hidden=32, depth=3, beta=100.0).to(DT)
    x, t = _inputs(300, d, seed=20 + d)
    func = potential_derivatives(net.potential, x, t, engine="func")
    forward = potential_derivatives(net.potential, x, t, engine="forward")
    _assert_same(forward, func, 1e-10)
    _assert_same(potential_derivatives(net.potential, x, t, engine="autograd"), func, 1e-10)
    torch.testing.assert_close(forward.phi, net.potential(x, t), rtol=0, atol=1e-13)
    # the CPU pass runs in row blocks; blocks of a few rows give the same numbers
    monkeypatch.setattr(laplacian_module, "_FORWARD_BLOCK_BYTES", 4096)
    _assert_same(potential_derivatives(net.potential, x, t, engine="forward"), forward, 1e-13)
    # finite-difference ∂_t replaces the exact one alike in both engines
    fd = dict(time_derivative="fd", fd_step=1e-4)
    _assert_same(
        potential_derivatives(net.potential, x, t, engine="forward", **fd),
        potential_derivatives(net.potential, x, t, engine="func", **fd),
        1e-10,
    )


def test_authors_checkpoint_residual_forward_equals_nested_autograd(authors_dir):
    # float32, 2000 points over the authors' box, a quarter of them at t < 0.01 where R is largest. Float32 floors
    # the agreement at the size of R's terms, not of R: pointwise, every engine is ~1e-4 from the float64 residual
    # where |R| ~ 40. So: unregularised (|R| up to ~40), forward and nested autograd agree to 1e-5 of max |R|;
    # regularised (the terms cancel to |R| < 3), the forward residual is as close to the float64 one as the nested
    # autograd residual is.
    gen = torch.Generator().manual_seed(0)
    x = (2 * torch.rand(2000, 2, generator=gen) - 1) * 3.5
    t = 1e-5 + 10 * torch.rand(2000, generator=gen)
    t[:500] = 1e-5 + 1e-2 * torch.rand(500, generator=gen)
    for weight in (0.0, 1.0):
        path = authors_checkpoint_path("blob", weight, authors_dir)
        net, net64 = load_authors_checkpoint(path), load_authors_checkpoint(path, dtype=DT)
        forward = log_fp_residual(net.potential, net.process, x, t, engine="forward")
        nested = log_fp_residual(net.potential, net.process, x, t, engine="autograd")
        exact = log_fp_residual(net64.potential, net64.process, x.to(DT), t.to(DT), engine="autograd")
        if weight == 0.0:
            assert (forward - nested).abs().max() < 1e-5 * nested.abs().max()
        error_forward = (forward.to(DT) - exact).abs().max()
        assert error_forward < 1.5 * (nested.to(DT) - exact).abs().max() and error_forward < 1e-4 * exact.abs().max()
        torch.testing.assert_close(log_fp_residual(net.potential, net.process, x, t), forward, rtol=0, atol=0)


@pytest.mark.parametrize(
    "make_net",
    [
        lambda: PotentialScoreNet(dim=2, process=OU(), hidden=16, depth=3, beta=100.0).to(DT),
        lambda: _mlp(3, nn.Tanh(), seed=5, width=16),
    ],
    ids=["PotentialScoreNet-softplus100", "Sequential-tanh-d3"],
)
def test_parameter_gradient_of_mean_squared_residual_matches(make_net):
    torch.manual_seed(7)
    net = make_net()
    phi = net.potential if isinstance(net, PotentialScoreNet) else net
    d = 2 if isinstance(net, PotentialScoreNet) else 3
    x, t = _inputs(80, d, seed=8)
    params = list(net.parameters())
    grads = {}
    for engine in ("forward", "func", "autograd"):
        loss = log_fp_residual(phi, OU(), x, t, engine=engine).pow(2).mean()
        # the output bias shifts φ by a constant, which R does not see: unused by every engine
        grads[engine] = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
    for engine in ("func", "autograd"):
        for a, b in zip(grads["forward"], grads[engine], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
    assert max(g.abs().max() for g in grads["forward"]) > 1e-3


@pytest.mark.parametrize("d", [3, 40])
def test_hutchinson_with_the_same_probes_is_the_same_estimate_in_every_engine(d, monkeypatch):
    # the forward engine carries J z_k instead of J; ∂_tφ and ∇φ stay exact
    torch.manual_seed(9)
    net = PotentialScoreNet(dim=d, process=OU(), hidden=16, depth=2, beta=3.0).to(DT)
    x, t = _inputs(20, d, seed=11)
    probes = torch.randn(5, 20, d, generator=torch.Generator().manual_seed(12), dtype=DT)
    hutch = dict(laplacian="hutchinson", probes=probes)
    forward = potential_derivatives(net.potential, x, t, engine="forward", **hutch)
    for engine in ("func", "autograd"):
        _assert_same(forward, potential_derivatives(net.potential, x, t, engine=engine, **hutch), 1e-10)
    exact = potential_derivatives(net.potential, x, t)
    for field in ("phi", "phi_t", "grad"):
        torch.testing.assert_close(getattr(forward, field), getattr(exact, field), rtol=1e-10, atol=1e-10)
    assert (forward.laplacian - exact.laplacian).abs().max() > 1e-3  # an estimate, not Δφ
    monkeypatch.setattr(laplacian_module, "_FORWARD_BLOCK_BYTES", 4096)  # per-point probes split with the blocks
    _assert_same(potential_derivatives(net.potential, x, t, engine="forward", **hutch), forward, 1e-13)
    # drawn probes: the same generator seed gives the same probes, hence the same estimate
    drawn = {
        engine: potential_derivatives(
            net.potential,
            x,
            t,
            engine=engine,
            laplacian="hutchinson",
            n_probes=3,
            generator=torch.Generator().manual_seed(13),
        )
        for engine in ("forward", "func")
    }
    _assert_same(drawn["forward"], drawn["func"], 1e-10)


def test_engines_under_no_grad():
    torch.manual_seed(9)
    net = PotentialScoreNet(dim=3, process=OU(), hidden=16, depth=2, beta=3.0).to(DT)
    x, t = _inputs(20, 3, seed=11)
    with torch.no_grad():
        for engine in ("forward", "func", "autograd"):
            r = log_fp_residual(net.potential, net.process, x, t, engine=engine)
            assert not r.requires_grad, engine


def test_all_linear_chain_has_zero_laplacian():
    net = nn.Sequential(nn.Linear(3, 4), nn.Identity(), nn.Sequential(nn.Linear(4, 1))).to(DT)
    x, t = _inputs(10, 2, seed=13)
    der = potential_derivatives(net, x, t, engine="forward")
    weight = (net[2][0].weight @ net[0].weight)[0]
    torch.testing.assert_close(der.grad, weight[1:].expand(10, 2), rtol=0, atol=1e-14)
    torch.testing.assert_close(der.phi_t, weight[0].expand(10), rtol=0, atol=1e-14)
    assert der.laplacian.abs().max() == 0


def test_bad_engines_and_unreadable_networks_give_clear_errors():
    x, t = _inputs(8, 2, seed=14)
    net = _mlp(2, nn.Tanh(), seed=0)
    with pytest.raises(ValueError, match=r"engine must be one of \('auto', 'forward', 'func', 'autograd'\)"):
        log_fp_residual(net, OU(), x, t, engine="jax")
    relu = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).to(DT)
    with pytest.raises(ValueError, match=r"layer 1 \(ReLU\(\)\) is not supported"):
        log_fp_residual(relu, OU(), x, t, engine="forward")
    # "auto" falls back to torch.func for a network it cannot read
    torch.testing.assert_close(log_fp_residual(relu, OU(), x, t), log_fp_residual(relu, OU(), x, t, engine="func"))
    with pytest.raises(ValueError, match="PotentialScoreNet's .potential or an nn.Sequential"):
        potential_derivatives(lambda y, s: (y * y).sum(1) * s, x, t, engine="forward")
    with pytest.raises(ValueError, match="one output feature"):
        potential_derivatives(nn.Sequential(nn.Linear(3, 2), nn.Tanh()).to(DT), x, t, engine="forward")
    with pytest.raises(ValueError, match="takes 3 features"):
        potential_derivatives(net, torch.zeros(8, 5, dtype=DT), t, engine="forward")
