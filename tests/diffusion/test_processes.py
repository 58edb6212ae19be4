"""Forward processes: the §1.3 identities f = d log α/dt, g² = dβ²/dt − 2fβ², closed forms, prior, checks."""

import math

import pytest
import scipy.stats
import torch

from pysens.diffusion.processes import (
    EDM,
    PROCESSES,
    VE,
    VP,
    SubVP,
    expand_as_batch,
    make_process,
    process_from_config,
    time_like,
)

ALL_PROCESSES = [VP(), SubVP(), VE(), EDM(), VP(beta_min=0.5, beta_max=10.0, T=2.0), VE(0.05, 20.0, T=3.0)]
IDS = [repr(p) for p in ALL_PROCESSES]
FRACTIONS = [0.003, 0.05, 0.2, 0.5, 0.8, 0.97]


def _times(process):
    return torch.tensor([process.t_eps + f * (process.T - process.t_eps) for f in FRACTIONS], dtype=torch.float64)


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=IDS)
def test_drift_is_derivative_of_log_scale(process):
    # f = d log α/dt, by a central difference (log α is at most quadratic in t, so the difference is exact up
    # to round-off, h = 1e-6 T).
    t = _times(process)
    h = 1e-6 * process.T
    fd = (process.log_scale(t + h) - process.log_scale(t - h)) / (2 * h)
    torch.testing.assert_close(process.drift_coef(t), fd, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=IDS)
def test_g2_matches_variance_identity_by_autograd(process):
    # g² = d(β²)/dt − 2 f β², with d(β²)/dt from autograd.
    t = _times(process).requires_grad_(True)
    beta2 = process.sigma(t) ** 2
    (dbeta2,) = torch.autograd.grad(beta2.sum(), t)
    with torch.no_grad():
        expected = dbeta2 - 2 * process.drift_coef(t) * beta2
        torch.testing.assert_close(process.g2(t), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=IDS)
def test_g2_matches_variance_identity_by_finite_differences(process):
    t = _times(process)
    h = 1e-6 * process.T
    dbeta2 = (process.sigma(t + h) ** 2 - process.sigma(t - h) ** 2) / (2 * h)
    expected = dbeta2 - 2 * process.drift_coef(t) * process.sigma(t) ** 2
    torch.testing.assert_close(process.g2(t), expected, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(process.diffusion(t) ** 2, process.g2(t), rtol=1e-14, atol=0)


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=IDS)
def test_transition_starts_at_data(process):
    assert process.sigma(0.0).item() == 0.0
    assert process.scale(0.0).item() == 1.0


def test_closed_forms():
    vp = VP()
    big_b = 0.1 * 0.7 + 0.5 * 0.7**2 * 19.9
    assert vp.scale(0.7).item() == pytest.approx(math.exp(-0.5 * big_b), rel=1e-14)
    assert vp.sigma(0.7).item() == pytest.approx(math.sqrt(1 - math.exp(-big_b)), rel=1e-14)
    # expm1 keeps β accurate at t = t_eps, where 1 − α² would lose half the digits.
    # β² = 1 − e^{−B} = B (1 − B/2 + O(B²)) with B = 1e-9 + 0.5e-16 · 19.9.
    small_b = 1e-9 + 0.5e-16 * 19.9
    assert vp.sigma(1e-8).item() == pytest.approx(math.sqrt(small_b * (1 - small_b / 2)), rel=1e-14)
    sub = SubVP()
    assert sub.sigma(0.7).item() == pytest.approx(1 - math.exp(-big_b), rel=1e-14)
    ve = VE()
    assert ve.sigma(1.0).item() == pytest.approx(math.sqrt(50.0**2 - 0.01**2), rel=1e-14)
    assert ve.g2(0.3).item() == pytest.approx(2 * (0.01 * 5000**0.3) ** 2 * math.log(5000), rel=1e-13)
    edm = EDM()
    assert (edm.T, edm.t_eps) == (80.0, 0.002)
    assert edm.sigma(3.5).item() == 3.5 and edm.g2(3.5).item() == 7.0 and edm.drift_coef(3.5).item() == 0.0


def test_coefficient_dtype_and_device_follow_t():
    vp = VP()
    c = vp.sigma(0.3)
    assert c.dtype == torch.float64 and c.dim() == 0
    t32 = torch.tensor([0.1, 0.5], dtype=torch.float32)
    for method in (vp.scale, vp.sigma, vp.drift_coef, vp.g2, vp.diffusion):
        out = method(t32)
        assert out.dtype == torch.float32 and out.shape == (2,)
    assert VE().g2(torch.tensor(0.5, dtype=torch.float32)).dtype == torch.float32


@pytest.mark.parametrize("process", [VP(), VE(), EDM()], ids=["VP", "VE", "EDM"])
def test_prior_log_density_is_the_gaussian(process):
    x = process.prior_sample((5, 3, 2), generator=torch.Generator().manual_seed(3))
    assert x.shape == (5, 3, 2) and x.dtype == torch.float64
    oracle = scipy.stats.multivariate_normal(mean=[0.0] * 6, cov=process.prior_std**2).logpdf(x.reshape(5, 6).numpy())
    torch.testing.assert_close(process.prior_log_density(x), torch.from_numpy(oracle), rtol=1e-13, atol=0)


def test_prior_sample_is_seeded_and_scaled():
    ve = VE()
    a = ve.prior_sample((4, 2), generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    z = torch.randn((4, 2), generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, 50.0 * z, rtol=0, atol=0)


@pytest.mark.parametrize(
    "bad", [-0.1, 1.01, float("nan"), float("inf"), torch.tensor([0.5, 1.5]), torch.tensor([0.2, float("nan")])]
)
def test_check_time_rejects_and_names_the_argument(bad):
    with pytest.raises(ValueError, match="t1"):
        VP().check_time(bad, name="t1")


def test_check_time_accepts_the_closed_interval_with_round_off():
    vp = VP()
    vp.check_time(0.0)
    vp.check_time(1.0)
    vp.check_time(1.0 + 1e-15)
    vp.check_time(torch.linspace(0, 1, 11, dtype=torch.float32))
    EDM().check_time(80.0)


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=IDS)
def test_config_round_trip(process):
    rebuilt = process_from_config(process.config())
    assert rebuilt == process and type(rebuilt) is type(process)
    t = _times(process)
    torch.testing.assert_close(rebuilt.sigma(t), process.sigma(t), rtol=0, atol=0)


def test_unknown_process_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="VP.*SubVP.*VE.*EDM.*OU"):
        make_process("Brownian")
    assert set(PROCESSES) == {"VP", "SubVP", "VE", "EDM", "OU"}
    assert make_process("VE", sigma_max=10.0) == VE(sigma_max=10.0)


def test_expand_as_batch_and_time_like():
    x = torch.zeros(3, 2, 5)
    assert expand_as_batch(torch.tensor(2.0), x).shape == ()
    assert expand_as_batch(torch.ones(3), x).shape == (3, 1, 1)
    with pytest.raises(ValueError):
        expand_as_batch(torch.ones(4), x)
    t = time_like(0.5, x)
    assert t.dtype == torch.float32 and t.dim() == 0
    with pytest.raises(ValueError, match="t must be"):
        time_like(torch.ones(2), x)
