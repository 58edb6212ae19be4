"""Euler–Maruyama on replayable Brownian paths, against the exact Ornstein–Uhlenbeck law."""

import math

import pytest
import torch

from pysens.solvers import BrownianGrid, SDEProblem, solve

DT = torch.float64


def ou(x0, tspan=(0.0, 1.0), brownian=None, theta=1.5, s=0.8):
    return SDEProblem(
        lambda t, x: -theta * x, lambda t, x: torch.full_like(x, s), x0, tspan, noise="additive", brownian=brownian
    )


def test_em_matches_ou_mean_and_variance():
    n = 20000
    x0 = torch.full((n, 1), 2.0, dtype=DT)
    sol = solve(ou(x0), "EM", dt=1 / 200, generator=torch.Generator().manual_seed(1))
    theta, s = 1.5, 0.8
    mean = 2.0 * math.exp(-theta)
    var = s * s * (1 - math.exp(-2 * theta)) / (2 * theta)
    x = sol.final[:, 0]
    se_mean = math.sqrt(var / n)
    assert abs(float(x.mean()) - mean) < 3 * se_mean + 2e-3  # + EM bias O(dt)
    assert abs(float(x.var()) - var) < 3 * var * math.sqrt(2 / n) + 5e-3


def test_same_path_replays_and_coarse_steps_sum_increments():
    x0 = torch.randn(4, 3, dtype=DT)
    grid = BrownianGrid.sample((0.0, 1.0), 64, x0.shape, generator=torch.Generator().manual_seed(3))
    p = ou(x0, brownian=grid)
    a = solve(p, "EM", dt=1 / 16)
    b = solve(p, "EM", dt=1 / 16)
    assert torch.equal(a.final, b.final)
    # by hand: 16 steps with increments summed over 4 fine intervals
    x = x0.clone()
    for k in range(16):
        dw = grid.increments[4 * k : 4 * k + 4].sum(0)
        x = x + (-1.5 * x) / 16 + 0.8 * dw
    assert torch.allclose(a.final, x, atol=1e-14)


def test_refining_dt_on_one_path_converges_pathwise():
    # exact OU solution on the fine grid: x(t+δ) = e^{-θδ} x(t) + s ∫ e^{-θ(t+δ-u)} dW(u); on a very fine
    # grid this is the reference; EM with additive noise converges at strong order 1
    x0 = torch.randn(64, 1, dtype=DT)
    fine = 4096
    grid = BrownianGrid.sample((0.0, 1.0), fine, x0.shape, generator=torch.Generator().manual_seed(7))
    ref = solve(ou(x0, brownian=grid), "EM", dt=1 / fine).final
    errs = [float((solve(ou(x0, brownian=grid), "EM", dt=1 / n).final - ref).abs().mean()) for n in (32, 64, 128, 256)]
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[0] / errs[3] > 4.0  # roughly first order: 8x in step


def test_reverse_time_sde():
    x0 = torch.zeros(3, 2, dtype=DT)
    grid = BrownianGrid.sample((1.0, 0.0), 10, x0.shape, generator=torch.Generator().manual_seed(0))
    p = SDEProblem(
        lambda t, x: torch.zeros_like(x),
        lambda t, x: torch.ones_like(x),
        x0,
        (1.0, 0.0),
        noise="additive",
        brownian=grid,
    )
    sol = solve(p, "EM", dt=0.1)
    assert torch.allclose(sol.final, grid.increments.sum(0), atol=1e-14)


def test_bad_brownian_grid():
    x0 = torch.zeros(3, 2, dtype=DT)
    short = BrownianGrid.sample((0.0, 0.5), 10, x0.shape)
    with pytest.raises(ValueError, match="brownian grid spans"):
        ou(x0, brownian=short)
    wrong = BrownianGrid.sample((0.0, 1.0), 10, (3, 5))
    with pytest.raises(ValueError, match="shaped"):
        ou(x0, brownian=wrong)
    grid = BrownianGrid.sample((0.0, 1.0), 10, x0.shape)
    with pytest.raises(ValueError, match="not a point of the Brownian grid"):
        solve(ou(x0, brownian=grid), "EM", dt=1 / 7)
