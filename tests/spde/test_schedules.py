"""DDPM schedules, the explicit DDPM → continuous time map, and windows (digest seed002 §3.1, §5.2; oracle T1)."""

import math

import pytest
import torch

from pysens.diffusion import VE, VP
from pysens.spde import DDPMSchedule, eps_to_score, linear_betas, score_to_eps, window, window_steps


def test_window_1000_first_10_percent_is_timesteps_999_to_900():
    w = window(1000, 0.1)
    assert w.tolist() == list(range(999, 899, -1))


def test_window_variants():
    assert window(1000, 0.1, "end_of_sampling").tolist() == list(range(99, -1, -1))
    assert window(10, 1.0, "full").tolist() == list(range(9, -1, -1))
    assert list(window_steps(50, 0.1)) == [0, 1, 2, 3, 4]
    assert len(window(1000, 0.25)) == 250


@pytest.mark.parametrize("frac", [0.0, -0.1, 1.5, float("nan")])
def test_window_outside_the_trajectory_is_an_error(frac):
    with pytest.raises(ValueError, match="frac"):
        window(1000, frac)


def test_window_full_needs_frac_one():
    with pytest.raises(ValueError, match="frac must be 1"):
        window(1000, 0.5, "full")


def test_schedule_quantities():
    s = DDPMSchedule.linear()
    assert s.T == 1000
    torch.testing.assert_close(s.betas, linear_betas())
    assert math.isclose(float(s.alpha_bars[-1]), 4.0358e-5, rel_tol=1e-3)
    # the first-10% window's γ range quoted in digest §3.1
    g = s.gamma()[900:]
    assert 0.0181 < float(g.min()) < 0.0183 and 0.0201 < float(g.max()) < 0.0203
    small, large = s.posterior_variance("fixedsmall"), s.posterior_variance("fixedlarge")
    assert float(small[0]) == 0.0 and bool((small[1:] < large[1:]).all())


def test_exact_time_map_matches_the_discrete_marginals():
    s = DDPMSchedule.linear()
    proc = s.vp_process()
    t = s.continuous_times(proc)
    torch.testing.assert_close(proc.scale(t) ** 2, s.alpha_bars, rtol=1e-12, atol=0)
    assert math.isclose(float(t[-1]), proc.T, rel_tol=1e-12)
    assert bool((torch.diff(t) > 0).all())


def test_exact_time_map_refuses_a_too_short_horizon_and_non_vp_processes():
    s = DDPMSchedule.linear()
    with pytest.raises(ValueError, match="beyond the horizon"):
        s.continuous_times(VP())  # VP(0.1, 20) ends at t = 1 < t_999 ≈ 1.0034
    with pytest.raises(ValueError, match="variance-preserving"):
        s.continuous_times(VE())
    lin = s.continuous_times(VP(), "linear")
    assert float(lin[0]) == pytest.approx(1e-3) and float(lin[-1]) == pytest.approx(1.0)


def test_eps_score_round_trip():
    eps = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(score_to_eps(eps_to_score(eps, 0.3), 0.3), eps)
