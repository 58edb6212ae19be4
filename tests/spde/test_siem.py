"""SIEM estimators, normalisations, windows, correlations, the density ratio and the study's checks (seed002 §5)."""

import argparse
import math

import pytest
import scipy.stats
import torch

from pysens.diffusion import MLPScore, save_checkpoint
from pysens.spde import (
    DDPMSchedule,
    DensityRatio,
    GaussianBump,
    RadialQuadratic,
    SIEMConfig,
    add_cli,
    check_checkpoints,
    correlate,
    sample_with_statistics,
    siem,
    siem_from_stats,
    white_noise_qv_rate_gaussian,
    window_steps,
)
from pysens.spde.ddpm import WhiteNoisePlugin
from pysens.spde.siem import window_positions

D = 8
MEAN = 0.5 * torch.ones(D, dtype=torch.float64)


@pytest.fixture(scope="module")
def schedule():
    return DDPMSchedule.linear()


def eps_model(schedule, bias: float):
    abar = schedule.alpha_bars

    def model(x, k):
        a = abar[k].to(x.dtype)[:, None]
        return torch.sqrt(1 - a) * (x - torch.sqrt(a) * MEAN) / (a * 0.49 + 1 - a) + bias

    return model


@pytest.fixture(scope="module")
def runs(schedule):
    """One window-only run per bias level (an increasing score error), with SIEM-C rates at every 20th step."""
    out = []
    for bias in (0.0, 0.05, 0.15, 0.4):
        white = WhiteNoisePlugin(positions=frozenset(range(0, 100, 20)), reference_mean=MEAN)
        out.append(
            sample_with_statistics(
                eps_model(schedule, bias),
                (D,),
                400,
                schedule,
                parameterization="eps",
                stop_after=100,
                test_functions={"phi": RadialQuadratic()},
                white=white,
                generator=torch.Generator().manual_seed(0),
                dtype=torch.float64,
            )
        )
    return out


@pytest.mark.filterwarnings("ignore:log10 of a non-positive SIEM value")  # the corrected A may be < 0: NaN, said so
def test_normalisations_do_not_change_rank_correlations(runs):
    # T10: every normalisation is a monotone map of each estimator, so Spearman correlations are unchanged
    positions = window_steps(1000, 0.1)
    ranks = {}
    for how in ("none", "per_step", "per_dim", "log10"):
        cfg = SIEMConfig(normalize=how, white_stride=20)
        values = [siem_from_stats(s, cfg, positions) for s in runs]
        ranks[how] = {k: scipy.stats.spearmanr([v[k] for v in values], [0, 1, 2, 3])[0] for k in ("A_raw", "B", "C")}
    for how in ("per_step", "per_dim", "log10"):
        assert ranks[how] == pytest.approx(ranks["none"])
    assert ranks["none"]["B"] == pytest.approx(1.0)  # the common-mode plug-in sees a constant ε-bias grow


def test_estimator_b_is_the_common_mode_plug_in(runs):
    s = runs[-1]
    idx = list(range(100))
    b = (s.gamma[idx] * (s.eps_mean[idx] * s.grad_mean["phi"][idx]).sum(1)).pow(2).sum()
    assert siem_from_stats(s, SIEMConfig(estimators=("B",)), range(100))["B"] == pytest.approx(float(b))


def test_correlate_matches_scipy():
    a = [0.3, 1.2, 0.7, 2.5, 1.9, 3.3, 0.1]
    b = [1.0, 2.1, 1.5, 2.0, 3.2, 4.1, 0.4]
    out = correlate(a, b, n_boot=200)
    assert out["spearman"]["r"] == pytest.approx(scipy.stats.spearmanr(a, b)[0])
    assert out["pearson"]["r"] == pytest.approx(scipy.stats.pearsonr(a, b)[0])
    assert out["kendall"]["r"] == pytest.approx(scipy.stats.kendalltau(a, b)[0])
    for v in out.values():
        assert v["lo"] <= v["r"] <= v["hi"]
    assert math.isnan(correlate([1, 2], [3, 4])["spearman"]["r"])  # too few configurations


def test_white_noise_rate_from_the_density_ratio_matches_the_gaussian_closed_form():
    # SIEM-C's ingredient (1/N)Σ u(X^i)|∇φ(X^i)|² with u = r·q from the classifier, against ∫u²|∇φ|² (§9.2)
    g = torch.Generator().manual_seed(5)
    d, n, m, s = 4, 4000, torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64), 0.8
    x = m + s * torch.randn(n, d, generator=g, dtype=torch.float64)
    ref = torch.randn(n, d, generator=g, dtype=torch.float64)
    log_q = -0.5 * (x**2).sum(1) - 0.5 * d * math.log(2 * math.pi)
    log_u = DensityRatio().fit(x, ref).log_ratio(x) + log_q
    for phi in (RadialQuadratic(1.0), GaussianBump(ell2=1.5)):
        est = float(torch.exp(torch.logsumexp(log_u + torch.log(phi.grad(x).pow(2).sum(1)), 0)) / n)
        assert est == pytest.approx(white_noise_qv_rate_gaussian(m, s, phi), rel=0.1)


def test_siem_end_to_end_window_only_costs_the_window(schedule):
    res = siem(
        eps_model(schedule, 0.1),
        (D,),
        schedule,
        parameterization="eps",
        n_particles=64,
        n_runs=2,
        estimators=("A", "B"),
        dtype=torch.float64,
    )
    assert res.nfe == 100 and res.window.tolist() == list(range(999, 899, -1))
    assert set(res.values) == {"A", "A_raw", "B"} and res.values["A"].shape == (2,)
    full = siem(
        eps_model(schedule, 0.1),
        (D,),
        schedule,
        parameterization="eps",
        n_particles=16,
        n_runs=1,
        estimators=("B",),
        sampler="ddim",
        ddim_steps=20,
        frac=1.0,
        where="full",
        dtype=torch.float64,
    )
    assert full.nfe == 20


def test_window_outside_the_trajectory_is_an_error(runs):
    with pytest.raises(ValueError, match="outside the recorded trajectory"):
        window_positions(runs[0], 0.5, "start_of_sampling", total_steps=1000)  # recorded only 100 steps
    with pytest.raises(ValueError, match="outside the"):
        runs[0].qv["phi"].value(range(95, 120))


def test_config_errors_and_non_radial_test_functions(schedule):
    with pytest.raises(ValueError, match="estimators"):
        SIEMConfig(estimators=("D",))
    with pytest.raises(ValueError, match="normalize"):
        SIEMConfig(normalize="zscore")
    with pytest.raises(ValueError, match="not radial"):
        siem(
            eps_model(schedule, 0.0),
            (D,),
            schedule,
            parameterization="eps",
            n_particles=8,
            n_runs=1,
            estimators=("A",),
            test_function=lambda x: x[:, 0] ** 2,
        )
    with pytest.raises(ValueError, match="data_mean"):
        siem(eps_model(schedule, 0.0), (D,), schedule, parameterization="eps", n_particles=8, n_runs=1)


def test_mismatched_checkpoints_are_a_clear_error(tmp_path, schedule):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    save_checkpoint(MLPScore((1, 8, 8), schedule.vp_process(), hidden=8, depth=1), a)
    save_checkpoint(MLPScore((1, 8, 8), "VE", hidden=8, depth=1), b)
    assert len(check_checkpoints([a, a])) == 2
    with pytest.raises(ValueError, match="mismatched checkpoints"):
        check_checkpoints([a, b])


def test_cli_verb_is_registered():
    parser = argparse.ArgumentParser(prog="pysens")
    sub = parser.add_subparsers(dest="command")
    add_cli(sub)
    args = parser.parse_args(["siem-study", "--quick", "--out", "x", "--particles", "10"])
    assert args.command == "siem-study" and args.quick and args.particles == 10 and callable(args.func)
