"""DDPM ancestral/DDIM samplers with streamed statistics on Gaussian data (seed002 §9.5; tests T7, T8)."""

import math

import pytest
import torch

from pysens.diffusion import GaussianMixtureScore
from pysens.spde import (
    DDPMSchedule,
    RadialQuadratic,
    ddpm_gaussian_recursion,
    mu_curves,
    realized_qv,
    sample_with_statistics,
    window,
)

D, N = 16, 2000
MEAN = 0.5 * torch.ones(D, dtype=torch.float64)
VAR = 0.49  # s = 0.7


@pytest.fixture(scope="module")
def schedule():
    return DDPMSchedule.linear()


def exact_eps(schedule, bias: float = 0.0):
    """ε*(x, k) = √(1−ᾱ_k)(x − √ᾱ_k m)/v_k (+ a constant ε-error), as a discrete ε-model."""
    abar = schedule.alpha_bars

    def model(x, k):
        a = abar[k].to(x.dtype)[:, None]
        return torch.sqrt(1 - a) * (x - torch.sqrt(a) * MEAN.to(x.dtype)) / (a * VAR + 1 - a) + bias

    return model


def test_the_digest_recursion_numbers(schedule):
    rec = ddpm_gaussian_recursion(schedule, MEAN, VAR, n_steps=100)
    assert float(realized_qv(rec.second_moment)) == pytest.approx(2.1e-8, rel=0.05)
    bias = ddpm_gaussian_recursion(schedule, MEAN, VAR, n_steps=100, delta_eps=0.02 * torch.ones(100, D))
    assert float(realized_qv(bias.second_moment)) == pytest.approx(1.1e-7, rel=0.05)


@pytest.mark.parametrize("bias", [0.0, 0.02], ids=["exact", "bias"])
def test_ancestral_sampler_matches_the_exact_mean_variance_recursion(schedule, bias):
    stats = sample_with_statistics(
        exact_eps(schedule, bias),
        (D,),
        N,
        schedule,
        parameterization="eps",
        test_functions={"x2": RadialQuadratic(1.0)},
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64,
    )
    rec = ddpm_gaussian_recursion(schedule, MEAN, VAR, delta_eps=bias * torch.ones(schedule.T, D, dtype=torch.float64))
    x = stats.final
    m_hat, v_hat = x.mean(), x.var(0).mean()
    m, v = float(rec.mean[-1].mean()), float(rec.var[-1])
    assert abs(float(m_hat) - m) < 3 * math.sqrt(v / (N * D))
    assert abs(float(v_hat) - v) < 3 * v * math.sqrt(2 / (N * D))
    # the streamed projections Φ̄_k track Φ*_k = E|x_k|² all along the trajectory
    phi = stats.phi_mean["x2"]
    sd = torch.sqrt(2 * D * rec.var**2 + 4 * rec.var * (rec.mean**2).sum(1)) / math.sqrt(N)
    assert float(((phi - rec.second_moment) / sd).abs().max()) < 4.5
    assert stats.nfe == 1000 and stats.x_mean.shape == (1001, D) and stats.eps_mean.shape == (1000, D)


def test_score_parameterization_on_the_exact_time_map_equals_the_discrete_eps_model(schedule):
    score = GaussianMixtureScore(MEAN[None], torch.tensor([VAR], dtype=torch.float64), process=schedule.vp_process())
    runs = [
        sample_with_statistics(
            model,
            (D,),
            64,
            schedule,
            parameterization=p,
            stop_after=150,
            generator=torch.Generator().manual_seed(2),
            dtype=torch.float64,
        )
        for model, p in ((score, "score"), (exact_eps(schedule), "eps"))
    ]
    torch.testing.assert_close(runs[0].final, runs[1].final, rtol=0, atol=1e-9)


def test_ddim_with_eta_one_on_all_steps_is_the_ancestral_sampler(schedule):
    kw = dict(parameterization="eps", stop_after=200, dtype=torch.float64)
    anc = sample_with_statistics(
        exact_eps(schedule), (D,), 32, schedule, generator=torch.Generator().manual_seed(3), **kw
    )
    ddim = sample_with_statistics(
        exact_eps(schedule),
        (D,),
        32,
        schedule,
        sampler="ddim",
        eta=1.0,
        generator=torch.Generator().manual_seed(3),
        **kw,
    )
    torch.testing.assert_close(ddim.final, anc.final, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ddim.gamma, anc.gamma, rtol=1e-10, atol=0)


def test_ddim_eta_zero_is_deterministic_given_the_start(schedule):
    kw = dict(parameterization="eps", sampler="ddim", ddim_steps=50, dtype=torch.float64)
    a = sample_with_statistics(
        exact_eps(schedule), (D,), 16, schedule, generator=torch.Generator().manual_seed(4), **kw
    )
    b = sample_with_statistics(
        exact_eps(schedule), (D,), 16, schedule, generator=torch.Generator().manual_seed(4), **kw
    )
    torch.testing.assert_close(a.final, b.final, rtol=0, atol=0)
    assert a.timesteps[0] == 999 and a.timesteps[-1] == 0 and a.nfe == 50
    assert float(a.final.mean()) == pytest.approx(0.5, abs=0.15)


def test_mu_eps_sits_at_the_monte_carlo_floor_for_the_exact_score_and_rises_with_common_noise(schedule):
    # T8 (§9.5): ‖μ^ε‖ averaged over the first 10% sits at E‖N(0, I_d/N)‖ = √(2/N) Γ((d+1)/2)/Γ(d/2) ≈ √(d/N)
    runs = 12
    exact = mu_curves(
        exact_eps(schedule), (D,), schedule, parameterization="eps", n_particles=N, n_runs=runs, dtype=torch.float64
    )
    floor = math.sqrt(2 / N) * math.exp(math.lgamma((D + 1) / 2) - math.lgamma(D / 2))
    assert exact.floor == pytest.approx(math.sqrt(D / N))
    w = exact.window["eps_mean"]
    assert exact.timesteps.tolist() == window(1000, 0.1).tolist()
    assert abs(float(w.mean()) - floor) < 3 * float(w.std()) / math.sqrt(runs)
    assert abs(float(w.mean()) / exact.floor - 1) < 0.1

    def common(j, k, x, eps):  # δε_k = 0.05 ξ_k, the same for every particle
        g = torch.Generator().manual_seed(10_000 + j)
        return 0.05 * torch.randn(D, generator=g, dtype=x.dtype)

    noisy = mu_curves(
        exact_eps(schedule),
        (D,),
        schedule,
        parameterization="eps",
        n_particles=N,
        n_runs=4,
        eps_error=common,
        dtype=torch.float64,
    )
    assert float(noisy.window["eps_mean"].min()) > 2 * exact.floor  # ≈ sqrt(d/N + 0.05² d) = 0.22


def test_bad_sampler_arguments_are_clear_errors(schedule):
    model = exact_eps(schedule)
    with pytest.raises(ValueError, match="stop_after"):
        sample_with_statistics(model, (D,), 8, schedule, parameterization="eps", stop_after=1001)
    with pytest.raises(ValueError, match="ddim_steps"):
        sample_with_statistics(model, (D,), 8, schedule, parameterization="eps", ddim_steps=10)
    with pytest.raises(ValueError, match="n_particles"):
        sample_with_statistics(model, (D,), 1, schedule, parameterization="eps")
