"""Score networks: shapes, the ε → score relation, per-sample times, and checkpoints."""

import os

import pytest
import torch

from pysens.diffusion.networks import (
    ConvScore,
    MLPScore,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from pysens.diffusion.processes import EDM, VE, VP

EPS64 = torch.finfo(torch.float64).eps


@pytest.mark.parametrize("event_shape", [2, (3, 4)])
def test_mlp_shapes_and_time_forms(event_shape):
    net = MLPScore(event_shape, VP(), hidden=16, depth=2, embed_dim=8).double()
    shape = (5, event_shape) if isinstance(event_shape, int) else (5, *event_shape)
    x = torch.randn(shape, dtype=torch.float64)
    for t in (0.3, torch.tensor(0.3, dtype=torch.float64), torch.full((5,), 0.3, dtype=torch.float64)):
        assert net(x, t).shape == shape
    # A 0-d time and a [B] time reach α_t, β_t through different kernels (scalar vs vectorised exp/log/sqrt, which
    # may differ by an ulp); the network then amplifies that by O(1). 16 ulps of the largest output bounds it.
    full = net(x, torch.full((5,), 0.3, dtype=torch.float64))
    torch.testing.assert_close(net(x, 0.3), full, rtol=0, atol=16 * EPS64 * float(full.detach().abs().max()))


@pytest.mark.parametrize("image_size", [8, 28])
def test_conv_score_runs_on_8x8_and_28x28(image_size):
    net = ConvScore(VP(), channels=1, image_size=image_size, base_channels=8)
    for p in net.output.parameters():  # the zero-initialised output would hide wiring errors
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(3, 1, image_size, image_size)
    t = torch.tensor([0.1, 0.5, 0.9])
    out = net(x, t)
    assert out.shape == (3, 1, image_size, image_size) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    # Per-sample times are per-sample: each row equals the row computed alone (GroupNorm is per sample).
    torch.testing.assert_close(out[1:2], net(x[1:2], 0.5), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(3, 1, image_size + 2, image_size + 2), 0.5)


def test_conv_score_needs_an_even_image_size():
    with pytest.raises(ValueError, match="image_size must be even"):
        ConvScore(VP(), image_size=7)


@pytest.mark.parametrize("process", [VP(), VE(), EDM()], ids=["VP", "VE", "EDM"])
def test_score_is_minus_predicted_noise_over_beta(process):
    net = MLPScore(3, process, hidden=16, depth=2, embed_dim=8).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.5, 1.0], dtype=torch.float64) * process.T
    a, b = process.scale(t)[:, None], process.sigma(t)[:, None]
    eps = net.predict_noise(x / torch.sqrt(a**2 + b**2), torch.log(b[:, 0]))
    expected = -eps / b
    # The network preconditions with rsqrt(α²+β²)·x, this test with x/sqrt(α²+β²): the inputs differ by at most three
    # roundings (≤ 3 ulps relative), the MLP (2 layers of width 16) maps that to a few ulps of its largest output,
    # and the final −ε/β is the same operation on both sides. Elementwise relative error is meaningless for the
    # entries that cancel to near 0, so the bound is normwise: 16 ulps of max|score| (measured ≤ 3.4 ulps over 600
    # draws with ATEN_CPU_CAPABILITY = default, avx2 and avx512).
    torch.testing.assert_close(net(x, t), expected, rtol=0, atol=16 * EPS64 * float(expected.detach().abs().max()))


def _sample_input(net):
    return torch.randn(4, *net.event_shape, generator=torch.Generator().manual_seed(0)).to(next(net.parameters()).dtype)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLPScore((2,), VE(sigma_max=20.0), hidden=16, depth=2, embed_dim=8).double(),
        lambda: ConvScore(EDM(), channels=2, image_size=8, base_channels=8),
    ],
    ids=["MLPScore-float64", "ConvScore-float32"],
)
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, make):
    net = make()
    for p in net.parameters():  # move off the initial values so the weights themselves are tested
        p.data.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "net.pt"
    save_checkpoint(net, path, extra={"note": "hello", "step": 3})
    loaded = read_checkpoint(path)
    assert type(loaded.model) is type(net) and loaded.extra == {"note": "hello", "step": 3}
    assert loaded.model.process == net.process
    x = _sample_input(net)
    t = 0.37 * net.process.T
    assert torch.equal(loaded.model(x, t), net(x, t))
    assert torch.equal(load_checkpoint(path, map_location="cpu")(x, t), net(x, t))


def test_corrupt_or_foreign_files_error_clearly(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(MLPScore(2, VP(), hidden=8, depth=1, embed_dim=4), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(ValueError, match="not a pysens score-network checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_interrupted_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    net = MLPScore(2, VP(), hidden=8, depth=1, embed_dim=4).double()
    path = tmp_path / "net.pt"
    save_checkpoint(net, path, extra={"version": "old"})
    old_bytes = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # the crash happens after part of the data is written
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", failing_save)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(net, path, extra={"version": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert read_checkpoint(path).extra == {"version": "old"}
    assert os.listdir(tmp_path) == ["net.pt"]


def test_only_known_networks_are_checkpointed(tmp_path):
    with pytest.raises(TypeError, match="model must be one of"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "x.pt")


def test_mlp_input_skip_lifts_the_width_bound_on_the_noise_jacobian(tmp_path):
    # without the skip, ε̂ = W h(x) + b passes through `hidden` features, so ∂ε̂/∂x has rank ≤ hidden < d and
    # ε̂ ≈ x_t (the optimum at large noise) is out of reach; the gated skip g(c)·x adds g·I: full rank
    d, hidden = 12, 3
    plain = MLPScore(d, VP(), hidden=hidden, depth=2, embed_dim=8).double()
    skip = MLPScore(d, VP(), hidden=hidden, depth=2, embed_dim=8, input_skip=True).double()
    x, c = torch.randn(1, d, dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64)
    for net, rank in ((plain, hidden), (skip, d)):
        jac = torch.autograd.functional.jacobian(lambda v, net=net: net.predict_noise(v, c), x).reshape(d, d)
        assert int(torch.linalg.matrix_rank(jac)) == rank
    with torch.no_grad():  # zero MLP output and unit gate: ε̂ = x exactly
        torch.nn.init.zeros_(skip.output.weight), torch.nn.init.zeros_(skip.output.bias)
        torch.nn.init.zeros_(skip.skip_gate.weight), torch.nn.init.ones_(skip.skip_gate.bias)
    torch.testing.assert_close(skip.predict_noise(x, c), x, rtol=0, atol=0)
    save_checkpoint(skip, tmp_path / "skip.pt")  # the option survives a checkpoint; old configs load without it
    loaded = load_checkpoint(tmp_path / "skip.pt")
    assert loaded.input_skip and loaded.config() == skip.config() and "input_skip" not in plain.config()
    torch.testing.assert_close(loaded.predict_noise(x, c), x, rtol=0, atol=0)
    with pytest.raises(TypeError, match="input_skip"):
        MLPScore(d, VP(), input_skip="yes")
