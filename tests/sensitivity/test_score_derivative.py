"""score_derivative (digest eq. ★) against finite differences of the exact perturbed mixture score."""

import pytest
import torch

from pysens.diffusion import VP, GaussianMixtureScore
from pysens.diffusion.mixtures import sample_gaussian_mixture
from pysens.sensitivity import EmpiricalMeasure, ModelMeasure, score_derivative

from .conftest import DT, make_oracle, richardson

# |δs| below this fraction of |s| is under the finite-difference round-off floor (digest §2.4): u·|s|/h with
# h = 1e-4/max(1, r) and two Richardson levels leaves ~1e-10 relative at 1e-5 |s|.
FD_FLOOR = 1e-5


def query_points(oracle, n: int, seed: int):
    """Points from ρ_t and σ_t (alternating) at times spread over (0, T], one time per point."""
    g = torch.Generator().manual_seed(seed)
    process = oracle.process
    t = process.T * torch.logspace(-2.5, 0, n, dtype=DT)
    from_sigma = sample_gaussian_mixture(n - n // 2, oracle.s_means, oracle.s_weights, oracle.sigma.covariance, g)
    x0 = torch.cat([oracle.model.sample_data(n // 2, generator=g), from_sigma])
    alpha, beta = process.scale(t)[:, None], process.sigma(t)[:, None]
    return alpha * x0 + beta * torch.randn(x0.shape, generator=g, dtype=DT), t


@pytest.mark.parametrize("name", ["VP", "VE"])
@pytest.mark.parametrize("d", [3, 10])
def test_matches_finite_differences_of_the_exact_perturbed_score(name, d):
    oracle = make_oracle(name, d, seed=d)
    x, t = query_points(oracle, 24, seed=1)
    res = score_derivative(oracle.model, oracle.process, x, t, oracle.sigma, log_density=oracle.model.log_density)
    ds = res.derivative[0]
    # the step shrinks where r = σ_t/ρ_t is large so that ε r stays small (digest §2.4)
    log_r = oracle.sigma.log_density(x, t, oracle.process) - oracle.model.log_density(x, t)
    h = 1e-4 / torch.clamp(log_r.exp(), min=1.0)
    fd = torch.stack(
        [
            richardson(lambda e, i=i: oracle.perturbed(e)(x[i : i + 1], t[i : i + 1])[0], float(h[i]))
            for i in range(len(t))
        ]
    )
    s = res.score
    above = ds.norm(dim=1) > FD_FLOOR * s.norm(dim=1)
    rel = (ds - fd).norm(dim=1) / ds.norm(dim=1)
    assert int(above.sum()) >= len(t) // 3, "too few points above the finite-difference floor to test anything"
    print(
        f"{name} d={d}: {int(above.sum())}/{len(t)} above the floor, worst relative error {float(rel[above].max()):.2e}"
    )
    assert float(rel[above].max()) < 1e-6


def test_flow_likelihood_gives_the_same_derivative():
    # log ρ_t from the model's own PF-ODE likelihood (exact terminal density) instead of the closed form
    oracle = make_oracle("VP", 3, seed=7)
    x, t = query_points(oracle, 4, seed=2)
    t = torch.full_like(t, 0.3)
    exact = score_derivative(oracle.model, oracle.process, x, t, oracle.sigma, log_density=oracle.model.log_density)
    flow = score_derivative(
        oracle.model,
        oracle.process,
        x,
        0.3,
        [oracle.sigma, ModelMeasure()],
        rtol=1e-10,
        atol=1e-10,
        terminal_log_density=oracle.terminal,
    )
    assert flow.retcode == "Success" and len(flow.likelihoods) == 1
    assert torch.allclose(flow.log_density, exact.log_density, rtol=0, atol=1e-8)
    assert torch.allclose(flow.derivative[0], exact.derivative[0], rtol=1e-7, atol=1e-12)
    assert torch.equal(flow.derivative[1], torch.zeros_like(flow.derivative[1]))


def test_per_sample_times_group_the_likelihood_solves():
    oracle = make_oracle("VP", 2, seed=8)
    x, _ = query_points(oracle, 4, seed=3)
    t = torch.tensor([0.2, 0.5, 0.2, 0.5], dtype=DT)
    res = score_derivative(
        oracle.model, oracle.process, x, t, oracle.sigma, rtol=1e-9, atol=1e-9, terminal_log_density=oracle.terminal
    )
    assert len(res.likelihoods) == 2
    assert torch.allclose(res.log_density, oracle.model.log_density(x, t), atol=1e-7)


def test_hutchinson_likelihood_is_unbiased_in_the_mean_over_probes():
    oracle = make_oracle("VP", 3, seed=9)
    x, _ = query_points(oracle, 2, seed=4)
    runs = [
        score_derivative(
            oracle.model,
            oracle.process,
            x,
            0.4,
            oracle.sigma,
            divergence="hutchinson",
            n_probes=8,
            generator=torch.Generator().manual_seed(k),
            rtol=1e-7,
            atol=1e-7,
            terminal_log_density=oracle.terminal,
        ).log_density
        for k in range(6)
    ]
    mean = torch.stack(runs).mean(0)
    spread = torch.stack(runs).std(0)
    exact = oracle.model.log_density(x, 0.4)
    assert float(spread.max()) > 1e-6  # the probes do make noise
    assert bool(((mean - exact).abs() < 4 * spread / len(runs) ** 0.5 + 1e-6).all())


def test_memorising_model_point_direction_is_the_responsibility():
    # ρ = (1/n) Σ_k δ_{x_k} and σ = δ_{x_j}: r = σ_t/ρ_t = n p(j|x), so δs = n p(j|x)(s_j − s) with
    # s_j = (α x_j − x)/β² (digest §2.4; removing x_j is the direction ρ − σ, i.e. minus this)
    g = torch.Generator().manual_seed(10)
    pts = torch.randn(5, 2, generator=g, dtype=DT)
    process = VP()
    model = GaussianMixtureScore(pts, process=process)
    x = torch.randn(3, 2, generator=g, dtype=DT)
    t = 0.2
    res = score_derivative(model, process, x, t, EmpiricalMeasure(pts[1:2]), log_density=model.log_density)
    alpha, beta2 = process.scale(t), process.sigma(t) ** 2
    logits = -((x[:, None] - alpha * pts[None]) ** 2).sum(-1) / (2 * beta2)
    p_j = torch.softmax(logits, dim=1)[:, 1]
    s_j = (alpha * pts[1] - x) / beta2
    expected = 5 * p_j[:, None] * (s_j - model(x, t))
    assert torch.allclose(res.derivative[0], expected, rtol=1e-11, atol=1e-13)
