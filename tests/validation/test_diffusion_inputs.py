"""Bad inputs to the diffusion layer: processes, networks, training, samplers, likelihoods and checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pysens.diffusion import EDM, OU, VE, VP, ConvScore, GaussianMixtureScore, MLPScore, SubVP, train
from pysens.diffusion.likelihood import log_likelihood
from pysens.diffusion.networks import load_checkpoint, save_checkpoint
from pysens.diffusion.sampling import sample_pf_ode, sample_sde

from .conftest import assert_refused

INF, NAN = float("inf"), float("nan")

PROCESS_CASES = [
    pytest.param(lambda: VP(beta_max=INF), ValueError, "beta_max", id="vp-beta-max-inf"),
    pytest.param(lambda: VP(beta_min=-1.0), ValueError, "beta_min", id="vp-beta-min-negative"),
    pytest.param(lambda: VP(beta_min=NAN), ValueError, "beta_min", id="vp-beta-min-nan"),
    pytest.param(lambda: VP(T=INF), ValueError, "T", id="vp-T-inf"),
    pytest.param(lambda: VP(T=0.0), ValueError, "T", id="vp-T-zero"),
    pytest.param(lambda: VP(T="1"), TypeError, "T", id="vp-T-string"),
    pytest.param(lambda: VP(beta_min=True), TypeError, "beta_min", id="vp-beta-bool"),
    pytest.param(lambda: VP(beta_min=5.0, beta_max=1.0), ValueError, "beta_min <= beta_max", id="vp-order"),
    pytest.param(lambda: SubVP(T=NAN), ValueError, "T", id="subvp-T-nan"),
    pytest.param(lambda: VE(sigma_max=INF), ValueError, "sigma_max", id="ve-sigma-max-inf"),
    pytest.param(lambda: VE(sigma_min=0.0), ValueError, "sigma_min", id="ve-sigma-min-zero"),
    pytest.param(lambda: VE(T=-1.0), ValueError, "T", id="ve-T-negative"),
    pytest.param(lambda: EDM(sigma_max=NAN), ValueError, "sigma_max", id="edm-sigma-max-nan"),
    pytest.param(lambda: EDM(sigma_min="0.1"), TypeError, "sigma_min", id="edm-sigma-min-string"),
    pytest.param(lambda: OU(rate=INF), ValueError, "rate", id="ou-rate-inf"),
    pytest.param(lambda: OU(g2=-1.0), ValueError, "g2", id="ou-g2-negative"),
    pytest.param(lambda: OU(T=INF), ValueError, "T", id="ou-T-inf"),
    pytest.param(lambda: VP().prior_sample((0, 2)), ValueError, "shape", id="prior-empty-shape"),
    pytest.param(lambda: VP().prior_sample("ab"), TypeError, "shape", id="prior-shape-string"),
    pytest.param(lambda: VP().prior_sample((2, 2), dtype=torch.float16), TypeError, "dtype", id="prior-float16"),
]

NETWORK_CASES = [
    pytest.param(lambda: MLPScore(2, "VP", hidden=0), ValueError, "hidden", id="mlp-hidden-zero"),
    pytest.param(lambda: MLPScore(2, "VP", hidden=1.5), TypeError, "hidden", id="mlp-hidden-float"),
    pytest.param(lambda: MLPScore(2, "VP", depth=0), ValueError, "depth", id="mlp-depth-zero"),
    pytest.param(lambda: MLPScore(2, "VP", embed_dim=3), ValueError, "embed_dim", id="mlp-embed-odd"),
    pytest.param(lambda: MLPScore(0, "VP"), ValueError, "event_shape", id="mlp-event-zero"),
    pytest.param(lambda: MLPScore("2", "VP"), TypeError, "event_shape", id="mlp-event-string"),
    pytest.param(lambda: MLPScore(2, "XP"), ValueError, "process", id="mlp-unknown-process"),
    pytest.param(lambda: ConvScore("VP", channels=0), ValueError, "channels", id="conv-channels-zero"),
    pytest.param(lambda: ConvScore("VP", image_size=3), ValueError, "image_size", id="conv-image-odd"),
    pytest.param(lambda: ConvScore("VP", base_channels=True), TypeError, "base_channels", id="conv-base-bool"),
    pytest.param(
        lambda: GaussianMixtureScore(torch.tensor([[NAN, 0.0]], dtype=torch.float64)), ValueError, "means", id="gm-nan"
    ),
]


@pytest.mark.parametrize("call, exc, names", PROCESS_CASES + NETWORK_CASES)
def test_constructor_refuses(call, exc, names, out_dir):
    assert_refused(call, exc, names, out_dir)


# -- training ------------------------------------------------------------------------------------------------------


def mlp():
    torch.manual_seed(0)
    return MLPScore(2, "VP", hidden=8, depth=1, embed_dim=4).double()


DATA = torch.randn(16, 2, dtype=torch.float64)


class WrongShapeModel(nn.Module):
    """A score model returning [B, 1] for [B, 2] data."""

    def __init__(self):
        super().__init__()
        self.process = VP()
        self.w = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x, t):
        return x[:, :1] * self.w


TRAIN_CASES = [
    pytest.param(dict(grad_clip=-1.0), ValueError, "grad_clip", id="grad-clip-negative"),
    pytest.param(dict(grad_clip=0.0), ValueError, "grad_clip", id="grad-clip-zero"),
    pytest.param(dict(grad_clip=NAN), ValueError, "grad_clip", id="grad-clip-nan"),
    pytest.param(dict(lr=0.0), ValueError, "lr", id="lr-zero"),
    pytest.param(dict(lr=-1e-3), ValueError, "lr", id="lr-negative"),
    pytest.param(dict(lr=INF), ValueError, "lr", id="lr-inf"),
    pytest.param(dict(lr="1e-3"), TypeError, "lr", id="lr-string"),
    pytest.param(dict(steps=0), ValueError, "steps", id="steps-zero"),
    pytest.param(dict(steps=True), TypeError, "steps", id="steps-bool"),
    pytest.param(dict(steps=2.5), TypeError, "steps", id="steps-float"),
    pytest.param(dict(batch_size=0), ValueError, "batch_size", id="batch-zero"),
    pytest.param(dict(seed=-1), ValueError, "seed", id="seed-negative"),
    pytest.param(dict(ema_decay=1.5), ValueError, "ema_decay", id="ema-above-one"),
    pytest.param(dict(ema_decay=0.0), ValueError, "ema_decay", id="ema-zero"),
    pytest.param(dict(checkpoint_every=0), ValueError, "checkpoint_every", id="checkpoint-every-zero"),
    pytest.param(dict(t_sampling="normal"), ValueError, "t_sampling", id="t-sampling"),
    pytest.param(dict(lr_schedule="linear"), ValueError, "lr_schedule", id="lr-schedule"),
    pytest.param(dict(t_min=2.0), ValueError, "t_min", id="t-min-above-T"),
    pytest.param(dict(t_min="0.1"), TypeError, "t_min", id="t-min-string"),
    pytest.param(dict(progress="yes"), TypeError, "progress", id="progress-string"),
    pytest.param(
        dict(data=torch.randn(16, 3, dtype=torch.float64)), ValueError, r"data must be shaped \[N, 2\]", id="data-event"
    ),
    pytest.param(dict(data=torch.randn(16, dtype=torch.float64)), ValueError, "data", id="data-1d"),
    pytest.param(dict(data=DATA * NAN), ValueError, "data", id="data-nan"),
    pytest.param(dict(data=DATA.half()), TypeError, "data", id="data-float16"),
    pytest.param(dict(data=[[0.0, 1.0]]), TypeError, "data", id="data-list"),
    pytest.param(dict(model=WrongShapeModel()), ValueError, r"model returned shape \[4, 1\]", id="model-output-shape"),
    pytest.param(dict(model=nn.Linear(2, 2)), TypeError, "process", id="model-without-process"),
    pytest.param(dict(model=MLPScore(2, "VP", hidden=4, depth=1).half()), TypeError, "model", id="model-float16"),
    pytest.param(dict(model=MLPScore(2, "VP", hidden=4, depth=1).to("meta")), ValueError, "meta", id="model-meta"),
]


@pytest.mark.parametrize("kwargs, exc, names", TRAIN_CASES)
def test_train_refuses(kwargs, exc, names, out_dir):
    kwargs = dict(kwargs)
    model = kwargs.pop("model", None) or mlp()
    data = kwargs.pop("data", DATA)
    # a verb that would write a checkpoint points at the previous run's file, which must stay as it was
    checkpoint = {} if isinstance(model, WrongShapeModel) else {"checkpoint_path": out_dir / "previous.txt"}
    options = {"steps": 2, "batch_size": 4, "progress": False, **checkpoint, **kwargs}

    def call():
        return train(model, data, **options)

    assert_refused(call, exc, names, out_dir)


def test_checkpoint_every_needs_a_path(out_dir):
    assert_refused(
        lambda: train(mlp(), DATA, steps=2, checkpoint_every=1, progress=False), ValueError, "checkpoint_path", out_dir
    )


# -- samplers and likelihood ---------------------------------------------------------------------------------------

X = torch.randn(4, 2, dtype=torch.float64)


def exact():
    return GaussianMixtureScore(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64), process="VP")


def wrong_shape_score(x, t):
    return -x[:, :1]


def float32_score(x, t):
    return (-x).float()


VERB_CASES = [
    pytest.param(
        lambda: sample_pf_ode(wrong_shape_score, "VP", X),
        ValueError,
        r"score returned shape \[4, 1\]",
        id="pf-score-shape",
    ),
    pytest.param(lambda: sample_pf_ode(float32_score, "VP", X), TypeError, "score returned dtype", id="pf-score-dtype"),
    pytest.param(
        lambda: sample_pf_ode(wrong_shape_score, "VP", X, backend="scipy", method="DP5"),
        ValueError,
        "score returned shape",
        id="pf-score-shape-scipy",
    ),
    pytest.param(lambda: sample_pf_ode(exact(), "VP", X.half()), TypeError, "x_T", id="pf-x-float16"),
    pytest.param(lambda: sample_pf_ode(exact(), "VP", X, t1="0.1"), TypeError, "t1", id="pf-t1-string"),
    pytest.param(lambda: sample_pf_ode(exact(), "VP", X, t1=2.0), ValueError, "t1", id="pf-t1-above-T"),
    pytest.param(lambda: sample_pf_ode(exact(), "VP", X, method="Nope"), ValueError, "method", id="pf-method"),
    pytest.param(lambda: sample_pf_ode(exact(), "VP", X, backend="gpu"), ValueError, "backend", id="pf-backend"),
    pytest.param(lambda: sample_pf_ode(3, "VP", X), TypeError, "score", id="pf-score-not-callable"),
    pytest.param(
        lambda: sample_pf_ode(mlp(), "VP", torch.zeros(4, 3, dtype=torch.float64)),
        ValueError,
        r"x_T must be shaped \[B, 2\]",
        id="pf-x-event-shape",
    ),
    pytest.param(
        lambda: log_likelihood(exact(), "VP", torch.zeros(4, 3, dtype=torch.float64)),
        ValueError,
        r"^x must be shaped \[B, 2\]",
        id="ll-x-event-shape",
    ),
    pytest.param(lambda: sample_pf_ode(exact(), "VP", X, rtol=-1.0), ValueError, "rtol", id="pf-rtol"),
    pytest.param(
        lambda: sample_sde(wrong_shape_score, "VP", X, n_steps=4),
        ValueError,
        "score returned shape",
        id="sde-score-shape",
    ),
    pytest.param(lambda: sample_sde(exact(), "VP", X, n_steps=0), ValueError, "n_steps", id="sde-steps-zero"),
    pytest.param(lambda: sample_sde(exact(), "VP", X, n_steps=True), TypeError, "n_steps", id="sde-steps-bool"),
    pytest.param(
        lambda: sample_sde(exact(), "VP", X, n_steps=4, timesteps=[1.0, 0.5, 1e-3]),
        ValueError,
        "n_steps.*timesteps",
        id="sde-steps-and-grid",
    ),
    pytest.param(lambda: sample_sde(exact(), "VP", X, n_steps=10**13), ValueError, "dt", id="sde-absurd-grid"),
    pytest.param(
        lambda: log_likelihood(wrong_shape_score, "VP", X), ValueError, "score returned shape", id="ll-score-shape"
    ),
    pytest.param(
        lambda: log_likelihood(exact(), "VP", X, terminal_log_density=lambda x: x[:, :1].sum(1, keepdim=True)),
        ValueError,
        r"terminal_log_density returned shape \[4, 1\]",
        id="ll-terminal-shape",
    ),
    pytest.param(
        lambda: log_likelihood(exact(), "VP", X, terminal_log_density=lambda x: x.sum(1).float()),
        TypeError,
        "terminal_log_density returned dtype",
        id="ll-terminal-dtype",
    ),
    pytest.param(
        lambda: log_likelihood(exact(), "VP", X, terminal_log_density="prior"),
        TypeError,
        "terminal_log_density",
        id="ll-terminal-string",
    ),
    pytest.param(
        lambda: log_likelihood(exact(), "VP", X, divergence="approx"), ValueError, "divergence", id="ll-divergence"
    ),
    pytest.param(
        lambda: log_likelihood(exact(), "VP", X, divergence="hutchinson", n_probes=0),
        ValueError,
        "n_probes",
        id="ll-probes-zero",
    ),
    pytest.param(lambda: log_likelihood(exact(), "VP", X, n_probes=True), TypeError, "n_probes", id="ll-probes-bool"),
    pytest.param(lambda: log_likelihood(exact(), "VP", X, chunk_size=0), ValueError, "chunk_size", id="ll-chunk-zero"),
    pytest.param(lambda: log_likelihood(exact(), "VP", X, t0=-0.1), ValueError, "t0", id="ll-t0-negative"),
    pytest.param(lambda: log_likelihood(exact(), "VP", X * NAN), ValueError, "x", id="ll-x-nan"),
]


@pytest.mark.parametrize("call, exc, names", VERB_CASES)
def test_verb_refuses(call, exc, names, out_dir):
    assert_refused(call, exc, names, out_dir)


# -- checkpoint files ----------------------------------------------------------------------------------------------


def test_truncated_or_foreign_checkpoints_are_named(out_dir):
    good = out_dir / "model.pt"
    save_checkpoint(mlp(), good)
    truncated = out_dir / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = out_dir / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    assert_refused(lambda: load_checkpoint(truncated), ValueError, "truncated.pt.*not a readable checkpoint", out_dir)
    assert_refused(lambda: load_checkpoint(foreign), ValueError, "foreign.pt.*not a pysens", out_dir)
    assert_refused(lambda: load_checkpoint(out_dir / "missing.pt"), FileNotFoundError, "missing.pt", out_dir)
