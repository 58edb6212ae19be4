"""The authors' OU forward process (seed001 §2.1): α = e^{−t}, β² = ½(1 − e^{−2t}), f = −1, g² = 1, prior N(0, ½I)."""

import math

import pytest
import scipy.stats
import torch

from pysens.diffusion.processes import OU, PROCESSES, make_process, process_from_config

TIMES = torch.tensor([1e-5, 0.01, 0.3, 1.0, 4.0, 9.99], dtype=torch.float64)


@pytest.mark.parametrize("process", [OU(), OU(rate=0.5, g2=2.0, T=3.0)], ids=["authors", "general"])
def test_coefficient_identities(process):
    t = (TIMES * process.T / 10).requires_grad_(True)
    # f = d log α/dt and g² = dβ²/dt − 2fβ², both by autograd
    (dlog,) = torch.autograd.grad(process.log_scale(t).sum(), t)
    (dbeta2,) = torch.autograd.grad((process.sigma(t) ** 2).sum(), t)
    with torch.no_grad():
        torch.testing.assert_close(process.drift_coef(t), dlog, rtol=1e-12, atol=1e-12)
        expected = dbeta2 - 2 * process.drift_coef(t) * process.sigma(t) ** 2
        torch.testing.assert_close(process.g2(t), expected, rtol=1e-10, atol=1e-12)


def test_authors_closed_forms_and_prior():
    ou = OU()
    assert (ou.T, ou.t_eps, ou.prior_std) == (10.0, 1e-5, math.sqrt(0.5))
    assert ou.scale(0.7).item() == pytest.approx(math.exp(-0.7), rel=1e-15)
    assert ou.sigma(0.7).item() ** 2 == pytest.approx(0.5 * (1 - math.exp(-1.4)), rel=1e-14)
    # expm1 keeps β accurate at t_eps: β² = ½(1 − e^{−2e-5}) = 1e-5 (1 − 1e-5 + …)
    assert ou.sigma(1e-5).item() ** 2 == pytest.approx(0.5 * -math.expm1(-2e-5), rel=1e-14)
    assert ou.drift_coef(3.0).item() == -1.0 and ou.g2(3.0).item() == 1.0 and ou.diffusion(3.0).item() == 1.0
    x = ou.prior_sample((4, 2), generator=torch.Generator().manual_seed(0))
    oracle = scipy.stats.multivariate_normal(mean=[0, 0], cov=0.5).logpdf(x.numpy())
    torch.testing.assert_close(ou.prior_log_density(x), torch.from_numpy(oracle), rtol=1e-13, atol=0)
    # the stationary law: β_T² → ½ as T grows (e^{−20} away at T = 10)
    assert ou.sigma(10.0).item() ** 2 == pytest.approx(0.5, abs=1e-8)


def test_registry_config_and_bad_parameters():
    assert PROCESSES["OU"] is OU
    ou = OU(rate=2.0, g2=0.5, T=4.0)
    assert process_from_config(ou.config()) == ou and make_process("OU") == OU()
    torch.testing.assert_close(ou.drift_coef(torch.tensor([0.1, 0.2])), torch.tensor([-2.0, -2.0]))
    with pytest.raises(ValueError, match="rate"):
        OU(rate=0.0)
    with pytest.raises(ValueError, match="T must be positive"):
        OU(T=-1.0)
