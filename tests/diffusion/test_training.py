"""Denoising score matching: a trained MLP matches the exact mixture score; determinism; digits; checkpoints."""

import pytest
import torch

from pysens.diffusion.datasets import digits, toy_mixture_2d
from pysens.diffusion.networks import ConvScore, MLPScore, read_checkpoint
from pysens.diffusion.processes import VP
from pysens.diffusion.scores import GaussianMixtureScore
from pysens.diffusion.training import dsm_loss, train


@pytest.fixture(scope="module")
def toy_problem():
    process = VP()
    exact = GaussianMixtureScore(*toy_mixture_2d(), process=process)
    data = exact.sample_data(20_000, generator=torch.Generator().manual_seed(1))
    return process, exact, data


@pytest.mark.slow
def test_dsm_training_recovers_the_exact_mixture_score(toy_problem):
    # Float32 MLP, 3000 steps of batch 256 (~6 s on one thread). Measured over seeds 0..3: relative weighted
    # error 0.0025 over t ~ U[t_eps, T] and 0.06 over t ≤ 0.05 (where the score is sharpest); an untrained
    # network (ε̂ ≈ 0) scores ≈ 1 on both. Thresholds leave a 4x / 3x margin.
    process, exact, data = toy_problem
    torch.manual_seed(0)
    net = MLPScore(2, process, hidden=128, depth=3, embed_dim=32)
    result = train(net, data, steps=3000, batch_size=256, lr=2e-3, seed=0, progress=False)
    assert result.steps == 3000 and result.losses.shape == (3000,) and result.seed == 0
    assert result.losses[-200:].mean() < result.losses[:200].mean()

    g = torch.Generator().manual_seed(2)
    n = 4000
    x0 = exact.sample_data(n, generator=g)
    t = process.t_eps + (process.T - process.t_eps) * torch.rand(n, generator=g, dtype=torch.float64)
    a, b = process.scale(t)[:, None], process.sigma(t)[:, None]
    x_t = a * x0 + b * torch.randn(n, 2, generator=g, dtype=torch.float64)
    s_exact = exact(x_t, t)
    with torch.no_grad():
        s_net = net(x_t.float(), t.float()).double()
    err = ((b * (s_net - s_exact)) ** 2).sum(dim=1)
    ref = ((b * s_exact) ** 2).sum(dim=1)
    overall = float(err.mean() / ref.mean())
    small_t = t <= 0.05
    sharp = float(err[small_t].mean() / ref[small_t].mean())
    assert overall < 0.01, overall
    assert sharp < 0.2, sharp


def test_training_is_deterministic_given_the_seed(toy_problem):
    process, _, data = toy_problem
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        net = MLPScore(2, process, hidden=16, depth=2, embed_dim=8)
        result = train(net, data, steps=20, batch_size=32, seed=3, progress=False, lr_schedule="step")
        runs.append((result.losses, [p.detach().clone() for p in net.parameters()]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(p, q) for p, q in zip(runs[0][1], runs[1][1], strict=True))


def test_a_few_dsm_steps_on_digits_lower_the_loss():
    data = digits()
    process = VP()
    torch.manual_seed(0)
    net = ConvScore(process, channels=1, image_size=8, base_channels=16)
    g = torch.Generator().manual_seed(4)
    x0 = data[torch.randint(len(data), (128,), generator=g)]
    t = 0.05 + 0.9 * torch.rand(128, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        before = float(dsm_loss(net, process, x0, t, noise))
    # The output layer starts at zero, so the initial loss is exactly E‖ε‖² on this batch.
    assert before == pytest.approx(float(noise.pow(2).sum(dim=(1, 2, 3)).mean()), rel=1e-6)
    train(net, data, steps=30, batch_size=64, lr=2e-3, seed=0, progress=False)
    with torch.no_grad():
        after = float(dsm_loss(net, process, x0, t, noise))
    # Measured: 64 → 17.5 after 30 steps.
    assert after < 0.5 * before, (before, after)


def test_checkpoints_during_training_hold_the_final_ema_model(tmp_path, toy_problem):
    process, _, data = toy_problem
    net = MLPScore(2, process, hidden=16, depth=1, embed_dim=8)
    path = tmp_path / "run.pt"
    result = train(
        net,
        data,
        steps=12,
        batch_size=16,
        seed=0,
        progress=False,
        checkpoint_path=path,
        checkpoint_every=5,
        ema_decay=0.9,
    )
    saved = read_checkpoint(path)
    assert saved.extra["step"] == 12 and torch.equal(saved.extra["losses"], result.losses)
    x = torch.randn(3, 2)
    assert torch.equal(saved.model(x, 0.4), net(x, 0.4))


def test_ema_averages_the_weights(toy_problem):
    # decay → 0 makes the average the last iterate; a real decay makes it differ from it.
    process, _, data = toy_problem
    finals = {}
    for decay in (None, 1e-12, 0.9):
        torch.manual_seed(7)
        net = MLPScore(2, process, hidden=16, depth=1, embed_dim=8).double()
        train(net, data, steps=10, batch_size=16, seed=1, progress=False, ema_decay=decay)
        finals[decay] = torch.cat([p.detach().flatten() for p in net.parameters()])
    torch.testing.assert_close(finals[1e-12], finals[None], rtol=0, atol=1e-10)
    assert float((finals[0.9] - finals[None]).abs().max()) > 1e-4


def test_training_arguments_are_checked(toy_problem):
    process, exact, data = toy_problem
    net = MLPScore(2, process, hidden=8, depth=1, embed_dim=4)
    with pytest.raises(ValueError, match="t_sampling"):
        train(net, data, steps=1, t_sampling="beta", progress=False)
    with pytest.raises(ValueError, match="t_min"):
        train(net, data, steps=1, t_min=2.0, progress=False)
    with pytest.raises(TypeError, match="process"):
        train(torch.nn.Linear(2, 2), data, steps=1, progress=False)
    with pytest.raises(ValueError, match="ema_decay"):
        train(net, data, steps=1, ema_decay=1.5, progress=False)


def test_ema_warm_up_weighs_the_first_step_by_its_warm_up_decay(toy_problem):
    # step 0 decays by min(0.999, 1/10) = 0.1: EMA = 0.1 · initial + 0.9 · first iterate (one lerp, a few ulp)
    process, _, data = toy_problem
    weights = {}
    for decay in (None, 0.999):
        torch.manual_seed(7)
        net = MLPScore(2, process, hidden=16, depth=1, embed_dim=8).double()
        weights["init"] = torch.cat([p.detach().flatten() for p in net.parameters()])
        train(net, data, steps=1, batch_size=16, seed=1, progress=False, ema_decay=decay)
        weights[decay] = torch.cat([p.detach().flatten() for p in net.parameters()])
    expected = 0.1 * weights["init"] + 0.9 * weights[None]
    torch.testing.assert_close(weights[0.999], expected, rtol=0, atol=4 * torch.finfo(torch.float64).eps)
