"""Discretise-then-differentiate (digest §3.4) equals the tangent system stepped by the same method on the same grid."""

import pytest
import torch

from pysens.sensitivity import discrete_sample_sensitivity, karras_timesteps, sample_sensitivity

from .conftest import DT, make_oracle


@pytest.mark.parametrize("method", ["Euler", "Heun"])
def test_jvp_of_the_fixed_step_sampler_is_the_tangent_system_on_the_same_grid(method):
    oracle = make_oracle("EDM", 2, seed=3)
    process = oracle.process
    x_T = process.prior_sample((2, 2), generator=torch.Generator().manual_seed(4))
    grid = karras_timesteps(process, 12)
    discrete = discrete_sample_sensitivity(oracle.model, process, x_T, oracle.sigma, timesteps=grid, method=method)
    tangent = sample_sensitivity(
        oracle.model, process, x_T, oracle.sigma, t1=float(grid[-1]), method=method, adaptive=False, timesteps=grid
    )
    scale = float(tangent.sensitivity.abs().max())
    assert scale > 1e-3
    assert float((discrete.sensitivity - tangent.sensitivity).abs().max()) <= 1e-12 * scale
    assert torch.allclose(discrete.x, tangent.x, rtol=0, atol=1e-12)
    assert torch.allclose(discrete.log_density, tangent.log_density, rtol=0, atol=1e-12)
    assert discrete.stats.nf == (12 if method == "Euler" else 24)


def test_discrete_heun_converges_to_the_continuous_sensitivity():
    oracle = make_oracle("VP", 2, seed=5)
    process = oracle.process
    x_T = process.prior_sample((2, 2), generator=torch.Generator().manual_seed(6))
    exact = sample_sensitivity(oracle.model, process, x_T, oracle.sigma, t1=1e-3, method="DP8", rtol=1e-9, atol=1e-9)
    errors = []
    for n in (10, 40):
        grid = karras_timesteps(process, n, t1=1e-3)
        res = discrete_sample_sensitivity(oracle.model, process, x_T, [oracle.sigma], timesteps=grid)
        errors.append(float((res.sensitivity - exact.sensitivity).abs().max()))
    assert errors[1] < errors[0] / 4  # second order: ~16x per 4x steps, allow for the preasymptotic range


def test_karras_grid_and_bad_grids():
    oracle = make_oracle("EDM", 2)
    grid = karras_timesteps(oracle.process, 5)
    assert float(grid[0]) == 80.0 and float(grid[-1]) == 0.002 and bool((grid[1:] < grid[:-1]).all())
    x_T = torch.zeros(1, 2, dtype=DT)
    with pytest.raises(ValueError, match="start at T"):
        discrete_sample_sensitivity(oracle.model, oracle.process, x_T, oracle.sigma, timesteps=[10.0, 1.0])
    with pytest.raises(ValueError, match="decrease"):
        discrete_sample_sensitivity(oracle.model, oracle.process, x_T, oracle.sigma, timesteps=[80.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="method"):
        discrete_sample_sensitivity(oracle.model, oracle.process, x_T, oracle.sigma, n_steps=3, method="RK4")
    with pytest.raises(ValueError, match="t1"):
        karras_timesteps(oracle.process, 4, t1=100.0)
