"""Bad inputs to the Fokker–Planck residuals and training, the work-precision harness and the sensitivity entry."""

from __future__ import annotations

import pytest
import torch

from pysens.bench.work_precision import Setup, work_precision
from pysens.diffusion import VP, GaussianMixtureScore
from pysens.fokker_planck import (
    NonlinearDriftProcess,
    PotentialScoreNet,
    load_authors_checkpoint,
    load_potential_checkpoint,
    log_fp_residual,
    residual_functional,
    save_potential_checkpoint,
    score_fp_residual,
    train_fp_regularised,
)
from pysens.sensitivity import sample_sensitivity
from pysens.solvers import ODEProblem, SDEProblem

from .conftest import assert_refused

X = torch.randn(5, 2, dtype=torch.float64)
NAN = float("nan")


def phi(x, t):
    return -0.5 * (x**2).sum(1)


def net():
    torch.manual_seed(0)
    return PotentialScoreNet(dim=2, process="VP", hidden=8, depth=1).double()


FP_CASES = [
    pytest.param(lambda: log_fp_residual(phi, VP(), X, 1.5), ValueError, r"t must .*\[0, T\]", id="fp-t-above-T"),
    pytest.param(lambda: log_fp_residual(phi, VP(), X, -0.1), ValueError, "t must", id="fp-t-negative"),
    pytest.param(lambda: log_fp_residual(phi, VP(), X, NAN), ValueError, "t must", id="fp-t-nan"),
    pytest.param(
        lambda: log_fp_residual(phi, VP(), X, torch.tensor([0.5, 0.5, 0.5, 0.5, 3.0], dtype=torch.float64)),
        ValueError,
        "t must",
        id="fp-t-one-above-T",
    ),
    pytest.param(lambda: log_fp_residual(phi, VP(), X * NAN, 0.5), ValueError, "x", id="fp-x-nan"),
    pytest.param(lambda: log_fp_residual(phi, VP(), X.tolist(), 0.5), TypeError, "x", id="fp-x-list"),
    pytest.param(lambda: log_fp_residual(phi, VP(), X.half(), 0.5), TypeError, "x", id="fp-x-float16"),
    pytest.param(
        lambda: log_fp_residual(lambda x, t: phi(x, t)[:, None], VP(), X, 0.5),
        ValueError,
        r"phi returned shape \[5, 1\].*\[5\]",
        id="fp-phi-shape",
    ),
    pytest.param(lambda: log_fp_residual("phi", VP(), X, 0.5), TypeError, "phi", id="fp-phi-string"),
    pytest.param(lambda: log_fp_residual(phi, "VP", X, 0.5), TypeError, "process", id="fp-process-string"),
    pytest.param(
        lambda: score_fp_residual(lambda x, t: -x[:, :1], VP(), X, 0.5),
        ValueError,
        "score returned shape",
        id="fp-score-shape",
    ),
    pytest.param(lambda: score_fp_residual(lambda x, t: -x, VP(), X, 2.0), ValueError, "t must", id="fp-score-t"),
    pytest.param(
        lambda: NonlinearDriftProcess(lambda x, t: -x, lambda t: t, T=float("inf")), ValueError, "T", id="nl-T-inf"
    ),
    pytest.param(lambda: NonlinearDriftProcess("drift", lambda t: t, T=1.0), TypeError, "drift", id="nl-drift"),
    pytest.param(lambda: PotentialScoreNet(dim=0), ValueError, "dim", id="potential-dim-zero"),
    pytest.param(lambda: PotentialScoreNet(hidden=2.5), TypeError, "hidden", id="potential-hidden-float"),
    pytest.param(lambda: PotentialScoreNet(beta=-1.0), ValueError, "beta", id="potential-beta-negative"),
    pytest.param(lambda: residual_functional(phi, VP(), n_points=1), ValueError, "n_points", id="rf-points-one"),
    pytest.param(lambda: residual_functional(phi, VP(), n_points=True), TypeError, "n_points", id="rf-points-bool"),
    pytest.param(lambda: residual_functional(phi, VP(), box=0.0), ValueError, "box", id="rf-box-zero"),
    pytest.param(lambda: residual_functional(phi, VP(), t_max=2.0), ValueError, "t_max", id="rf-t-max-above-T"),
]

FP_TRAIN_CASES = [
    pytest.param(dict(w_residual=-1.0), ValueError, "w_residual", id="fpt-weight-negative"),
    pytest.param(dict(w_residual=NAN), ValueError, "w_residual", id="fpt-weight-nan"),
    pytest.param(dict(steps=0), ValueError, "steps", id="fpt-steps-zero"),
    pytest.param(dict(dsm_batch=True), TypeError, "dsm_batch", id="fpt-batch-bool"),
    pytest.param(dict(t_sampling="normal"), ValueError, "t_sampling", id="fpt-t-sampling"),
    pytest.param(dict(collocation="grid"), ValueError, "collocation", id="fpt-collocation"),
    pytest.param(dict(t_eps=0.0), ValueError, "t_eps", id="fpt-t-eps-zero"),
    pytest.param(dict(t_eps=5.0), ValueError, "t_eps", id="fpt-t-eps-above-T"),
    pytest.param(dict(box=-1.0), ValueError, "box", id="fpt-box"),
    pytest.param(dict(checkpoint_every=2), ValueError, "checkpoint_path", id="fpt-every-without-path"),
    pytest.param(dict(data="moons"), TypeError, "data", id="fpt-data-string"),
    pytest.param(dict(data=torch.randn(8, 3, dtype=torch.float64)), ValueError, "data", id="fpt-data-shape"),
]


@pytest.mark.parametrize("call, exc, names", FP_CASES)
def test_fp_refuses(call, exc, names, out_dir):
    assert_refused(call, exc, names, out_dir)


@pytest.mark.parametrize("kwargs, exc, names", FP_TRAIN_CASES)
def test_fp_training_refuses(kwargs, exc, names, out_dir):
    options = {"w_residual": 0.0, "steps": 2, "dsm_batch": 4, "residual_batch": 4, "progress": False, **kwargs}
    data = options.pop("data", torch.randn(8, 2, dtype=torch.float64))
    assert_refused(lambda: train_fp_regularised(net(), data, **options), exc, names, out_dir)


def test_truncated_potential_checkpoint_is_named(out_dir):
    good = out_dir / "potential.pt"
    save_potential_checkpoint(net(), good)
    cut = out_dir / "cut.pt"
    cut.write_bytes(good.read_bytes()[:100])
    foreign = out_dir / "foreign.pt"
    torch.save([1, 2, 3], foreign)
    assert_refused(lambda: load_potential_checkpoint(cut), ValueError, "cut.pt.*not a readable checkpoint", out_dir)
    assert_refused(lambda: load_potential_checkpoint(foreign), ValueError, "foreign.pt.*not a pysens", out_dir)
    assert_refused(lambda: load_potential_checkpoint(out_dir / "none.pt"), FileNotFoundError, "none.pt", out_dir)


def test_truncated_authors_checkpoint_is_named(out_dir):
    import numpy as np

    good = out_dir / "authors.npz"
    np.savez(good, **{"input.weight": np.zeros((4, 3)), "input.bias": np.zeros(4)})
    cut = out_dir / "cut.npz"
    cut.write_bytes(good.read_bytes()[:60])
    assert_refused(lambda: load_authors_checkpoint(cut), ValueError, "cut.npz.*not a readable checkpoint", out_dir)
    assert_refused(lambda: load_authors_checkpoint(good, dtype=torch.float16), TypeError, "dtype", out_dir)


# -- work-precision harness ------------------------------------------------------------------------------------------

PROBLEM = ODEProblem(lambda t, x: -x, torch.ones(2, 2, dtype=torch.float64), (0.0, 1.0))
TSIT5 = Setup("Tsit5", "Tsit5")


def exact(t):
    return torch.exp(-t)[:, None, None] * torch.ones(1, 2, 2, dtype=torch.float64)


WP_CASES = [
    pytest.param(dict(setups=[]), ValueError, "setups", id="wp-no-setups"),
    pytest.param(dict(setups=TSIT5), TypeError, "setups", id="wp-setup-not-list"),
    pytest.param(dict(setups=["Tsit5"]), TypeError, r"setups\[0\]", id="wp-setup-string"),
    pytest.param(dict(abstols=[-1e-6], reltols=[1e-6]), ValueError, r"abstols\[0\]", id="wp-abstol-negative"),
    pytest.param(dict(abstols=[1e-6], reltols=["1e-6"]), TypeError, r"reltols\[0\]", id="wp-reltol-string"),
    pytest.param(dict(abstols=[], reltols=[]), ValueError, "non-empty", id="wp-empty-tolerances"),
    pytest.param(dict(abstols=None, reltols=None, dts=[0.0]), ValueError, r"dts\[0\]", id="wp-dt-zero"),
    pytest.param(dict(reference=lambda t: exact(t)[:, :1]), ValueError, r"reference returned shape", id="wp-ref-shape"),
    pytest.param(dict(reference=torch.zeros(2, 2)), ValueError, "reference", id="wp-ref-tensor-shape"),
    pytest.param(dict(runs=0), ValueError, "runs", id="wp-runs-zero"),
    pytest.param(dict(warmup=-1), ValueError, "warmup", id="wp-warmup-negative"),
    pytest.param(dict(reference=None), ValueError, "reference", id="wp-no-reference"),
]


@pytest.mark.parametrize("kwargs, exc, names", WP_CASES)
def test_work_precision_refuses(kwargs, exc, names, out_dir):
    options = {"setups": [TSIT5], "abstols": [1e-6], "reltols": [1e-6], "reference": exact, "runs": 1, **kwargs}
    assert_refused(lambda: work_precision(PROBLEM, **options), exc, names, out_dir)


def test_work_precision_sde_reference_shape_is_named(out_dir):
    """A strong reference ref(t, W) must return [n, paths * B, *event] (path-major ensemble rows)."""
    prob = SDEProblem(
        lambda t, x: -x, lambda t, x: 0.1 * torch.ones_like(x), torch.ones(2, 1, dtype=torch.float64), (0.0, 1.0)
    )
    em = Setup("EM", "EM")

    def wrong(t, w):
        return w[:, :1]

    call = lambda: work_precision(prob, [em], dts=[0.25], reference=wrong, paths=3, runs=1)  # noqa: E731
    assert_refused(call, ValueError, r"reference returned shape \[2, 1, 1\].*\[2, 6, 1\]", out_dir)


# -- sensitivity entry ------------------------------------------------------------------------------------------------


def mixture():
    return GaussianMixtureScore(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64), process="VP")


SENS_CASES = [
    pytest.param(
        lambda: sample_sensitivity(lambda x, t: -x[:, :1], "VP", X),
        TypeError,
        "score",
        id="sens-score-shape",
    ),
    pytest.param(
        lambda: sample_sensitivity(lambda x, t: (-x).float(), "VP", X),
        TypeError,
        "score returned dtype",
        id="sens-dtype",
    ),
    pytest.param(
        lambda: sample_sensitivity(mixture(), "VP", X, log_density=lambda x, t: x),
        ValueError,
        "log_density",
        id="sens-ld",
    ),
]


@pytest.mark.parametrize("call, exc, names", SENS_CASES)
def test_sensitivity_refuses(call, exc, names, out_dir):
    assert_refused(call, exc, names, out_dir)
