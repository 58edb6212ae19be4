"""PF-ODE and reverse-SDE samplers against the closed-form flow of Gaussian data."""

import math

import pytest
import torch

from pysens.diffusion import VE, VP, GaussianMixtureScore
from pysens.diffusion.sampling import sample_pf_ode, sample_sde
from pysens.solvers import BrownianGrid

DT = torch.float64


def gaussian_data(d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, generator=g, dtype=DT)
    a = torch.randn(d, d, generator=g, dtype=DT)
    return m, a @ a.T / d + 0.2 * torch.eye(d, dtype=DT)


def pf_flow_exact(process, m, C, x_T, t):
    """PF-ODE map of N(m, C) data: x_t = α_t m + S_t S_T^{-1}(x_T − α_T m), S_t = (α_t² C + β_t² I)^{1/2}."""
    lam, U = torch.linalg.eigh(C)

    def sqrt_cov(s):
        a, b = float(process.scale(s)), float(process.sigma(s))
        return U @ torch.diag(torch.sqrt(a * a * lam + b * b)) @ U.T

    A = sqrt_cov(t) @ torch.linalg.inv(sqrt_cov(process.T))
    aT, at = float(process.scale(process.T)), float(process.scale(t))
    return at * m + (x_T - aT * m) @ A.T


PROCESSES = {"VP": VP(), "VE": VE(sigma_min=0.01, sigma_max=20.0)}


@pytest.mark.parametrize("name", ["VP", "VE"])
@pytest.mark.parametrize("method,backend", [("Tsit5", "torch"), ("DP5", "torch"), ("DP8", "scipy"), ("DP5", "scipy")])
def test_pf_ode_matches_affine_closed_form(name, method, backend):
    process = PROCESSES[name]
    m, C = gaussian_data()
    model = GaussianMixtureScore(m[None], C[None], process=process)
    x_T = process.prior_sample((5, 3), generator=torch.Generator().manual_seed(1))
    t1 = 1e-3
    res = sample_pf_ode(model, process, x_T, t1=t1, method=method, backend=backend, rtol=1e-10, atol=1e-10)
    assert res.retcode == "Success"
    err = float((res.x - pf_flow_exact(process, m, C, x_T, t1)).abs().max())
    assert err < 1e-8, err


def test_pf_ode_trajectory_saveat():
    process = PROCESSES["VP"]
    m, C = gaussian_data()
    model = GaussianMixtureScore(m[None], C[None], process=process)
    x_T = process.prior_sample((4, 3), generator=torch.Generator().manual_seed(2))
    ts = [1.0, 0.5, 0.1, 1e-3]
    res = sample_pf_ode(model, process, x_T, t1=1e-3, rtol=1e-10, atol=1e-10, saveat=ts)
    for i, t in enumerate(ts):
        assert float((res.solution.x[i] - pf_flow_exact(process, m, C, x_T, t)).abs().max()) < 1e-8


def test_reverse_sde_recovers_gaussian_law():
    process = VP()
    m = torch.tensor([1.0, -2.0], dtype=DT)
    C = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=DT)
    model = GaussianMixtureScore(m[None], C[None], process=process)
    n = 20000
    g = torch.Generator().manual_seed(3)
    x_T = process.prior_sample((n, 2), generator=g)
    res = sample_sde(model, process, x_T, t1=1e-3, n_steps=400, generator=g)
    x = res.x
    se = torch.sqrt(torch.diagonal(C) / n)
    # EM bias at 400 steps is O(1e-2) in this setting; the Monte-Carlo error is ~5e-3
    assert bool(((x.mean(0) - m).abs() < 3 * se + 2e-2).all())
    assert float((torch.cov(x.T) - C).abs().max()) < 3e-2


def test_reverse_sde_replays_a_brownian_path():
    process = VP()
    model = GaussianMixtureScore(torch.zeros(1, 2, dtype=DT), torch.ones(1, dtype=DT), process=process)
    x_T = process.prior_sample((3, 2), generator=torch.Generator().manual_seed(0))
    path = BrownianGrid.sample((process.T, 1e-3), 200, x_T.shape, generator=torch.Generator().manual_seed(4))
    a = sample_sde(model, process, x_T, t1=1e-3, n_steps=100, brownian=path)
    b = sample_sde(model, process, x_T, t1=1e-3, n_steps=100, brownian=path)
    assert torch.equal(a.x, b.x)
    # N(0, I) data is the VP stationary law: the exact score is -x and the reverse SDE is an OU bridge of
    # itself; samples stay finite and keep unit scale
    assert math.isfinite(float(a.x.abs().max()))


def test_sampler_bad_inputs():
    process = VP()
    model = GaussianMixtureScore(torch.zeros(1, 2, dtype=DT), torch.ones(1, dtype=DT), process=process)
    x_T = torch.randn(3, 2, dtype=DT)
    with pytest.raises(ValueError, match="t1"):
        sample_pf_ode(model, process, x_T, t1=0.0)
    with pytest.raises(ValueError, match="t1"):
        sample_pf_ode(model, process, x_T, t1=2.0)
    with pytest.raises(ValueError, match="x_T.*non-finite"):
        sample_pf_ode(model, process, torch.full((3, 2), math.nan, dtype=DT))
    with pytest.raises(TypeError, match="x_T.*float32.*float64"):
        sample_pf_ode(model, process, x_T.float())
    with pytest.raises(TypeError, match="score must be callable"):
        sample_pf_ode(42, process, x_T)
    with pytest.raises(ValueError, match="n_steps"):
        sample_sde(model, process, x_T, n_steps=0)
    with pytest.raises(ValueError, match="unknown forward process"):
        sample_pf_ode(model, "VX", x_T)
