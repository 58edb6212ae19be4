"""The digest's oracles O1–O3 and the stability helpers (seed002 §6, §9.1–§9.3; tests T2–T4).

Monte Carlo checks use fixed seeds and a 3-standard-error tolerance; closed forms are float64.
"""

import math

import pytest
import torch

from pysens.spde import (
    ColoredTransportNoise,
    CommonNoise,
    DDPMSchedule,
    DilationNoise,
    GaussianBump,
    Grid,
    GridSPDE,
    RadialQuadratic,
    common_noise_grad_mean_gaussian,
    dilation_noise_moments,
    dilation_stability,
    gaussian_kl,
    gaussian_w2,
    kl_bound,
    kl_noise_floor,
    logconcavity_threshold,
    ou_common_noise_expected_kl,
    ou_common_noise_expected_qv,
    simulate_particles,
    w2_bound,
    white_noise_qv_rate_gaussian,
)

M = torch.tensor([0.7, -0.3, 0.2], dtype=torch.float64)
S, ELL = 0.8, 1.3


@pytest.fixture(scope="module")
def gaussian_samples():
    g = torch.Generator().manual_seed(20260209)
    x = M + S * torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    log_u = -((x - M) ** 2).sum(1) / (2 * S**2) - 1.5 * math.log(2 * math.pi * S**2)
    return x, torch.exp(log_u)


def _within(samples: torch.Tensor, exact, k: float = 3.0) -> None:
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    exact = torch.as_tensor(exact, dtype=torch.float64)
    assert bool(((mean - exact).abs() <= k * se).all()), (mean, exact, se)


@pytest.mark.parametrize("phi", [RadialQuadratic(1.0), GaussianBump(ell2=ELL**2)], ids=["x2", "bump"])
def test_white_noise_qv_rate_closed_form(gaussian_samples, phi):
    # N3: ∫u²|∇φ|² = E_u[u(X)|∇φ(X)|²]
    x, u = gaussian_samples
    _within(u * phi.grad(x).pow(2).sum(1), white_noise_qv_rate_gaussian(M, S, phi))


@pytest.mark.parametrize("phi", [RadialQuadratic(1.0), GaussianBump(ell2=ELL**2)], ids=["x2", "bump"])
def test_common_noise_qv_rate_closed_form(gaussian_samples, phi):
    # N1: the rate is σ²|⟨u, ∇φ⟩|²; check the vector ⟨u, ∇φ⟩
    x, _ = gaussian_samples
    _within(phi.grad(x), common_noise_grad_mean_gaussian(M, S, phi))


def test_digest_numbers_for_the_closed_forms():
    assert white_noise_qv_rate_gaussian(M, S, RadialQuadratic(1.0)) == pytest.approx(0.27710, abs=5e-5)
    assert white_noise_qv_rate_gaussian(M, S, GaussianBump(ell2=ELL**2)) == pytest.approx(0.007431, abs=1e-6)
    assert float(common_noise_grad_mean_gaussian(M, S, RadialQuadratic(1.0)).pow(2).sum()) == pytest.approx(2.48)
    assert ou_common_noise_expected_qv(1.0, 0.5, [2.0, 0.0], 2.0) == pytest.approx(2.3407, abs=1e-4)
    assert dilation_noise_moments(1.0, 0.3, 2.0, 2, 2.5, 1.5)["expected_qv"] == pytest.approx(2.916, abs=1e-3)


def test_truncated_coloured_noise_rate_converges_to_the_white_noise_rate():
    # Σ_k ⟨u, σ_k·∇φ⟩² over an orthonormal Fourier basis → ∫u²|∇φ|² (Parseval), never simulating white noise
    grid = Grid(-8.0, 8.0, 800)
    x = grid.points()[:, 0]
    m, s = 0.4, 0.7
    u = torch.exp(-((x - m) ** 2) / (2 * s**2))[None] / math.sqrt(2 * math.pi * s**2)
    exact = white_noise_qv_rate_gaussian([m], s, RadialQuadratic(1.0))
    errors = []
    for n_max in (2, 8, 40):
        spde = GridSPDE(grid, None, 1.0, ColoredTransportNoise(-8.0, 8.0, n_max))
        errors.append(abs(float(spde.qv_rate(0.0, u, RadialQuadratic(1.0))[0]) / exact - 1))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6


def test_common_noise_grid_qv_rate_is_four_sigma2_mean2():
    grid = Grid(-8.0, 8.0, 400)
    x = grid.points()[:, 0]
    u = torch.exp(-((x - 0.6) ** 2) / 2)[None] / math.sqrt(2 * math.pi)
    rate = GridSPDE(grid, None, 1.0, CommonNoise(0.5)).qv_rate(0.0, u, RadialQuadratic(1.0))
    assert float(rate[0]) == pytest.approx(4 * 0.25 * 0.36, rel=1e-8)


def test_ou_common_noise_expected_qv_recovered_by_the_corrected_estimator():
    # O1 (§9.1): d = 2, λ = 1, g² = 2 (D = 1), σ = 0.5, m0 = (2, 0), s0 = 1, T = 2; closed form 2.3407
    g = torch.Generator().manual_seed(1)
    R, N, steps, T, sigma = 100, 1000, 500, 2.0, 0.5
    m0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    x0 = m0 + torch.randn(R, N, 2, generator=g, dtype=torch.float64)
    res = simulate_particles(
        lambda t, x: -x,
        1.0,
        CommonNoise(sigma),
        x0,
        (0.0, T),
        n_steps=steps,
        generator=g,
        test_functions={"x2": RadialQuadratic(1.0)},
    )
    exact = ou_common_noise_expected_qv(1.0, sigma, m0, T)
    qv = res.qv["x2"]
    _within(qv.value(correct=True), exact)
    _within(res.plugin_qv["x2"], exact)  # 4σ² Σ|μ_k|² Δτ
    # the raw estimator exceeds the corrected one by the particle-noise term, whose expectation is
    # (1/N) ∫ [4 g² E⟨u,|x|²⟩ + 4 σ² d s²] dτ (g² = 2, s² = 1 throughout)
    c = 2 * (2.0 + sigma**2)
    phi0 = float(m0 @ m0) + 2.0
    mean_phi = (phi0 - c / 2) * (1 - math.exp(-2 * T)) / 2 + c / 2 * T
    predicted = (4 * 2.0 * mean_phi + 4 * sigma**2 * 2 * T) / N
    bias = (qv.value(correct=False) - qv.value(correct=True)).mean()
    assert float(bias) == pytest.approx(predicted, rel=0.05)


def test_dilation_noise_expected_qv_from_the_moment_ode_and_the_convention_flag():
    # O3 (§9.3): σ(x) = κx, scalar B; Itô particles follow the moment ODE with a = κ² − 2λ. Stratonovich particles
    # carry the extra Itô drift +½κ²x, i.e. the same ODE with λ → λ − κ²/2.
    g = torch.Generator().manual_seed(2)
    R, N, steps, T, kappa = 300, 300, 300, 1.5, 0.3
    x0 = torch.tensor([1.0, 1.0], dtype=torch.float64) + 0.5 * torch.randn(R, N, 2, generator=g, dtype=torch.float64)
    phi0 = 2.0 + 2 * 0.25
    res = simulate_particles(
        lambda t, x: -x,
        1.0,
        DilationNoise(kappa),
        x0,
        (0.0, T),
        n_steps=steps,
        generator=g,
        test_functions={"x2": RadialQuadratic(1.0)},
    )
    ito = dilation_noise_moments(1.0, kappa, 2.0, 2, phi0, T)
    _within(res.qv["x2"].value(correct=True), ito["expected_qv"])
    _within(res.qv["x2"].series()[-1], ito["mean"])
    strat = simulate_particles(
        lambda t, x: -x,
        1.0,
        DilationNoise(kappa),
        x0[:100],
        (0.0, T),
        n_steps=steps,
        generator=g,
        convention="strat",
        test_functions={"x2": RadialQuadratic(1.0)},
    )
    expected = dilation_noise_moments(1.0 - kappa**2 / 2, kappa, 2.0, 2, phi0, T)["mean"]
    _within(strat.qv["x2"].series()[-1], expected)
    assert abs(expected - ito["mean"]) > 0.1  # the flag matters for spatially varying noise


def test_ito_and_stratonovich_particles_coincide_for_constant_sigma():
    x0 = torch.randn(3, 50, 2, dtype=torch.float64)
    runs = [
        simulate_particles(
            lambda t, x: -x,
            1.0,
            CommonNoise(0.4),
            x0,
            (0.0, 1.0),
            n_steps=20,
            generator=torch.Generator().manual_seed(5),
            convention=c,
        )
        for c in ("ito", "strat")
    ]
    torch.testing.assert_close(runs[0].final, runs[1].final, rtol=0, atol=0)


def test_additive_noise_has_no_particle_representation():
    from pysens.spde import AdditiveNoise

    with pytest.raises(TypeError, match="no particle representation"):
        simulate_particles(None, 1.0, AdditiveNoise(-1, 1, 2), torch.zeros(1, 4, 1), (0, 1), n_steps=2)


def test_logconcavity_threshold_of_the_linear_ddpm_schedule():
    lc = logconcavity_threshold(DDPMSchedule.linear().alpha_bars, 3072)
    assert lc.threshold == 890  # 0-based: the first-10% window 999…900 lies inside
    assert float(lc.kappa[899]) == pytest.approx(0.154, abs=1e-3)
    assert float(lc.kappa[999]) == pytest.approx(0.876, abs=1e-3)


def test_kl_bound_is_sharp_for_gaussian_pi():
    # Theorem A with π = N(0, I/λ), Λ = λ: the bound's limit is σ²d/4 = the exact E KL_∞
    sigma, d = 0.6, 3
    floor = kl_noise_floor(sigma, 1.0, 1.0, d)
    assert floor == pytest.approx(sigma**2 * d / 4)
    assert kl_bound(50.0, 2.0, sigma, 1.0, 1.0, d) == pytest.approx(floor)
    assert ou_common_noise_expected_kl(1.0, 2.0, sigma, [0.0] * d, 1.0, 50.0) == pytest.approx(floor)
    # the exact E KL stays below the bound at every time
    for tau in (0.1, 0.5, 2.0):
        m0 = [1.0, 0.0, 0.0]
        kl0 = gaussian_kl(torch.tensor(m0), 1.0, torch.zeros(3), 1.0)
        assert ou_common_noise_expected_kl(1.0, 2.0, sigma, m0, 1.0, tau) <= kl_bound(tau, kl0, sigma, 1.0, 1.0, d)


def test_w2_contraction_and_dilation_stability():
    assert dilation_stability(0.3, 1.0) == {"w2_contractive": True, "mean_square_stable": True}
    assert dilation_stability(1.0, 1.0) == {"w2_contractive": True, "mean_square_stable": False}
    assert dilation_stability(1.5, 1.0) == {"w2_contractive": False, "mean_square_stable": False}
    assert w2_bound(1.0, 4.0, 1.0, 0.0) == pytest.approx(4.0 * math.exp(-2.0))
    assert gaussian_w2(torch.zeros(2), 1.0, torch.tensor([3.0, 4.0]), 2.0) == pytest.approx(math.sqrt(27.0))
