"""sample_sensitivity: the PF-ODE tangent system (digest §3.1) against exact answers."""

import math

import pytest
import torch

from pysens.diffusion import EDM, VP, EmpiricalScore, GaussianMixtureScore, ScoreToDenoiser
from pysens.diffusion.sampling import sample_pf_ode
from pysens.sensitivity import (
    GaussianMeanShift,
    GaussianMixtureMeasure,
    ModelMeasure,
    data_edit,
    sample_sensitivity,
)

from .conftest import DT, make_oracle, richardson

T1 = 1e-3


def relative_error(y, ref):
    return float(((y - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).max())


@pytest.fixture(scope="module")
def fd_case():
    """VP, d = 3, two noise seeds: the oracle, x_T and the Richardson FD of the exact perturbed samples."""
    oracle = make_oracle("VP", 3, seed=0)
    x_T = oracle.process.prior_sample((2, 3), generator=torch.Generator().manual_seed(1))
    fd = richardson(lambda e: oracle.perturbed_sample(e, x_T, T1), 1e-4)
    return oracle, x_T, fd


@pytest.mark.parametrize(
    "backend, method, tol",
    [("torch", "DP8", 1e-11), ("scipy", "DP8", 1e-11), ("torch", "Rodas5P", 1e-9)],
)
def test_matches_richardson_finite_difference(fd_case, backend, method, tol):
    oracle, x_T, fd = fd_case
    res = sample_sensitivity(
        oracle.model,
        oracle.process,
        x_T,
        oracle.sigma,
        t1=T1,
        method=method,
        backend=backend,
        rtol=tol,
        atol=tol,
        terminal_log_density=oracle.terminal,
    )
    assert res.retcode == "Success"
    err = relative_error(res.sensitivity[0], fd)
    print(f"{backend} {method}: relative error vs Richardson FD {err:.2e} (nf {res.stats.nf})")
    assert err < 1e-5
    assert torch.allclose(res.x, oracle.perturbed_sample(0.0, x_T, T1), atol=1e-8)


def test_final_denoise_pushes_the_sensitivity_through_the_perturbed_denoiser(fd_case):
    oracle, x_T, _ = fd_case
    process = oracle.process
    alpha, beta2 = process.scale(T1), process.sigma(T1) ** 2

    def denoised(e):
        x = oracle.perturbed_sample(e, x_T, T1)
        return (x + beta2 * oracle.perturbed(e)(x, T1)) / alpha

    fd = richardson(denoised, 1e-4)
    res = sample_sensitivity(
        oracle.model,
        process,
        x_T,
        oracle.sigma,
        t1=T1,
        method="DP8",
        rtol=1e-11,
        atol=1e-11,
        terminal_log_density=oracle.terminal,
        denoise=True,
    )
    assert torch.allclose(res.x, denoised(0.0), atol=1e-8)
    assert relative_error(res.sensitivity[0], fd) < 1e-5


@pytest.mark.parametrize("name", ["VP", "VE"])
def test_log_density_along_the_path_is_the_closed_form(name):
    oracle = make_oracle(name, 3, seed=2)
    process = oracle.process
    x_T = process.prior_sample((3, 3), generator=torch.Generator().manual_seed(3))
    saveat = torch.linspace(process.T, T1, 9, dtype=DT)
    res = sample_sensitivity(
        oracle.model,
        process,
        x_T,
        oracle.sigma,
        t1=T1,
        method="DP8",
        rtol=1e-11,
        atol=1e-11,
        terminal_log_density=oracle.terminal,
        saveat=saveat,
    )
    path = res.path()
    exact = torch.stack([oracle.model.log_density(x, float(t)) for t, x in zip(path["t"], path["x"], strict=True)])
    err = float((path["ell"] - exact).abs().max())
    print(f"{name}: |ℓ − log ρ_t(x_t)| along the path {err:.2e}")
    assert err < 1e-8
    assert path["y"].shape == (9, 1, 3, 3)
    # from the plain prior the error is one constant per sample: log prior(x_T) − log ρ_T(x_T) (digest §3.3)
    plain = sample_sensitivity(oracle.model, process, x_T, t1=T1, method="DP8", rtol=1e-11, atol=1e-11, saveat=saveat)
    offset = plain.path()["ell"] - exact
    gap = process.prior_log_density(x_T) - oracle.terminal(x_T)
    assert float((offset - gap).abs().max()) < 1e-8
    assert plain.sensitivity.shape == (0, 3, 3)


@pytest.mark.parametrize(
    "process, t1, expected", [(VP(), 1e-3, 0.9933734400), (EDM(sigma_min=0.002, sigma_max=80.0), 0.002, 0.9875009515)]
)
def test_gaussian_mean_shift_matches_the_closed_form(process, t1, expected):
    # ρ = N(μ, I), direction d/dμ·u: y_{t1} = (α_{t1} − sqrt(v_{t1}/v_T) α_T) u, v_t = α_t² + β_t² (digest §5.2)
    d = 2
    mu = torch.tensor([0.7, -0.4], dtype=DT)
    u = torch.tensor([1.0, 0.0], dtype=DT)
    model = GaussianMixtureScore(mu[None], torch.ones(1, dtype=DT), process=process)
    x_T = process.prior_sample((3, d), generator=torch.Generator().manual_seed(4))
    res = sample_sensitivity(
        model,
        process,
        x_T,
        GaussianMeanShift(mu, 1.0, u),
        t1=t1,
        method="DP8",
        rtol=1e-12,
        atol=1e-12,
        terminal_log_density=lambda z: model.log_density(z, process.T),
    )
    v = lambda t: process.scale(t) ** 2 + process.sigma(t) ** 2  # noqa: E731
    closed = float(process.scale(t1) - torch.sqrt(v(t1) / v(process.T)) * process.scale(process.T))
    assert closed == pytest.approx(expected, abs=5e-11)
    y = res.sensitivity[0]
    err = float((y - closed * u).abs().max())
    print(f"{process.name}: mean-shift y = {float(y[0, 0]):.10f} vs {closed:.10f}, error {err:.1e}")
    assert err < 1e-9


def test_linear_in_the_direction_and_zero_along_the_model_itself():
    oracle = make_oracle("VP", 2, seed=5)
    process = oracle.process
    g = torch.Generator().manual_seed(6)
    other = GaussianMixtureMeasure(torch.randn(2, 2, generator=g, dtype=DT), torch.ones(2, dtype=DT))
    itself = GaussianMixtureMeasure(oracle.means, oracle.cov, oracle.weights)
    rho = ModelMeasure()
    x_T = process.prior_sample((3, 2), generator=g)
    res = sample_sensitivity(
        oracle.model,
        process,
        x_T,
        [oracle.sigma - rho, other - rho, oracle.sigma + other - 2 * rho, 2.5 * oracle.sigma, rho, itself],
        t1=T1,
        rtol=1e-9,
        atol=1e-9,
        terminal_log_density=oracle.terminal,
    )
    y = res.sensitivity
    scale = float(y[0].abs().max())
    assert scale > 1e-2
    assert float((y[0] + y[1] - y[2]).abs().max()) < 1e-12 * max(scale, 1.0)
    assert float((2.5 * y[0] - y[3]).abs().max()) < 1e-12 * max(scale, 1.0)
    assert torch.equal(y[4], torch.zeros_like(y[4]))
    # the model's law as an explicit mixture: r = 1 up to the ℓ error and ∇log σ_t − s_t = 0 exactly
    assert float(y[5].abs().max()) < 1e-12 * scale


def test_terminal_shift_scales_the_sensitivity_by_exp_minus_c():
    oracle = make_oracle("VP", 2, seed=7)
    process = oracle.process
    x_T = process.prior_sample((2, 2), generator=torch.Generator().manual_seed(8))
    c = 0.75
    runs = [
        sample_sensitivity(
            oracle.model,
            process,
            x_T,
            oracle.sigma,
            t1=T1,
            method="RK4",
            dt=(process.T - T1) / 100,
            terminal_log_density=lambda z, s=shift: process.prior_log_density(z) + s,
        )
        for shift in (0.0, c)
    ]
    assert torch.equal(runs[0].x, runs[1].x)
    assert torch.allclose(runs[1].log_density - runs[0].log_density, torch.full((2,), c, dtype=DT), atol=1e-13)
    assert relative_error(runs[1].sensitivity[0], math.exp(-c) * runs[0].sensitivity[0]) < 1e-13


def test_denoiser_parameterisation_on_edm_is_the_score_form():
    oracle = make_oracle("EDM", 2, seed=9)
    process = oracle.process
    x_T = process.prior_sample((2, 2), generator=torch.Generator().manual_seed(10))
    common = dict(t1=0.002, rtol=1e-7, atol=1e-7, terminal_log_density=oracle.terminal)
    by_score = sample_sensitivity(oracle.model, process, x_T, oracle.sigma, **common)
    denoiser = ScoreToDenoiser(oracle.model, process)
    by_denoiser = sample_sensitivity(denoiser, process, x_T, oracle.sigma, parameterization="denoiser", **common)
    # the adapter's (α D − x)/β² round trip differs from s by rounding only; the solves then agree to tolerance
    assert torch.allclose(by_denoiser.x, by_score.x, atol=1e-6)
    assert relative_error(by_denoiser.sensitivity[0], by_score.sensitivity[0]) < 1e-5


def test_predict_is_x_plus_epsilon_y_and_first_order_accurate(fd_case):
    oracle, x_T, _ = fd_case
    res = sample_sensitivity(
        oracle.model,
        oracle.process,
        x_T,
        oracle.sigma,
        t1=T1,
        rtol=1e-10,
        atol=1e-10,
        terminal_log_density=oracle.terminal,
    )
    eps = 1e-2
    pred = res.predict(eps)
    assert torch.equal(pred, res.x + eps * res.sensitivity)
    actual = oracle.perturbed_sample(eps, x_T, T1, rtol=1e-10, atol=1e-10)
    first_order = (pred[0] - actual).norm() / (actual - res.x).norm()
    assert float(first_order) < 0.1  # the O(ε²) remainder is small against the O(ε) change
    with pytest.raises(ValueError, match="epsilon"):
        res.predict([0.1, 0.2])


def test_memorising_model_in_784_dimensions_moves_the_samples_near_the_removed_point():
    # 50 training images in d = 784, in two clusters 28 apart, with their exact (memorising) score: every sample
    # lands on a training point. Remove the point sample 0 lands on (ε = 1/49).
    g = torch.Generator().manual_seed(0)
    n, d = 50, 784
    process = VP()
    cluster = torch.arange(n) % 2
    centers = torch.stack([torch.full((d,), 0.5, dtype=DT), torch.full((d,), -0.5, dtype=DT)])
    points = (centers[cluster] + 0.3 * torch.randn(n, d, generator=g, dtype=DT)).reshape(n, 1, 28, 28)
    model = EmpiricalScore(points, process=process)
    x_T = process.prior_sample((8, 1, 28, 28), generator=g)
    landing = sample_pf_ode(model, process, x_T, t1=T1, rtol=1e-6, atol=1e-6).x
    landed = torch.cdist(landing.flatten(1), points.flatten(1)).argmin(1)
    near = int(landed[0])
    edit = data_edit(n, removed=points[near : near + 1])
    res = sample_sensitivity(model, process, x_T, edit, t1=T1, rtol=1e-6, atol=1e-6, log_density=model.log_density)
    assert res.retcode == "Success"
    # no overflow: log-densities are thousands of nats and the ratio σ_t/ρ_t spans e^{±thousands} along the paths
    assert float(res.log_density.min()) > 1000.0
    assert bool(torch.isfinite(res.sensitivity).all())
    y = res.sensitivity[0].flatten(1).norm(dim=1)
    on_point = landed == near
    other_cluster = cluster[landed] != cluster[near]
    ratio = float(y[on_point].min() / y[other_cluster].max())
    print(
        f"|y| landing on the removed point {float(y[on_point].min()):.3g}; other cluster at most "
        f"{float(y[other_cluster].max()):.3g} (ratio {ratio:.1f}); same cluster at most {float(y[~on_point].max()):.3g}"
    )
    assert bool(other_cluster.any()) and int(y.argmax()) == 0
    assert ratio > 10.0
    # the score derivative at the other samples is exactly 0 (σ_t/ρ_t underflows, never nan)
    ds = (
        res.perturbations[0]
        .score_derivative(res.x, T1, process, model.log_density(res.x, T1), model(res.x, T1))
        .flatten(1)
        .norm(dim=1)
    )
    assert float(ds[~on_point].max()) == 0.0 and bool(torch.isfinite(ds).all())


def test_stats_count_one_vmapped_jvp_per_stage(fd_case):
    oracle, x_T, _ = fd_case
    res = sample_sensitivity(oracle.model, oracle.process, x_T, [oracle.sigma, oracle.sigma], t1=T1)
    assert res.stats.njvp == res.stats.nf * (2 + 3)


def test_hutchinson_divergence_is_reproducible_and_close_to_exact(fd_case):
    oracle, x_T, _ = fd_case
    common = dict(t1=T1, rtol=1e-8, atol=1e-8, terminal_log_density=oracle.terminal)
    exact = sample_sensitivity(oracle.model, oracle.process, x_T, oracle.sigma, **common)
    runs = [
        sample_sensitivity(
            oracle.model, oracle.process, x_T, oracle.sigma, divergence="hutchinson", n_probes=16,
            generator=torch.Generator().manual_seed(0), **common,
        )
        for _ in range(2)
    ]  # fmt: skip
    assert torch.equal(runs[0].sensitivity, runs[1].sensitivity)  # probes drawn once from the generator
    assert torch.allclose(runs[0].x, exact.x, atol=1e-7)  # the probes touch ℓ only
    # the probe noise in ℓ rescales y by e^{−(ℓ error)} (digest §3.2-3.3): small, but not rounding-small
    err = (runs[0].log_density - exact.log_density).abs()
    assert float(err.max()) < 0.5
    ratio = runs[0].sensitivity[0].norm(dim=1) / exact.sensitivity[0].norm(dim=1)
    assert float((ratio - 1).abs().max()) < 0.5
