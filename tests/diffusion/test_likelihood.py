"""log_likelihood against closed-form mixture log-densities; Hutchinson unbiasedness."""

import math

import pytest
import torch

from pysens.diffusion import VE, VP, GaussianMixtureScore
from pysens.diffusion.likelihood import log_likelihood

DT = torch.float64


def mixture(d, process, seed=0, full=False):
    g = torch.Generator().manual_seed(seed)
    K = 3
    means = 2.0 * torch.randn(K, d, generator=g, dtype=DT)
    if full:
        a = torch.randn(K, d, d, generator=g, dtype=DT)
        cov = a @ a.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=DT)
    else:
        cov = 0.2 + torch.rand(K, d, generator=g, dtype=DT)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=DT)
    return GaussianMixtureScore(means, cov, weights, process=process)


PROCESSES = {"VP": VP(), "VE": VE(sigma_min=0.01, sigma_max=20.0)}


@pytest.mark.parametrize("name", ["VP", "VE"])
@pytest.mark.parametrize("d,full", [(2, True), (10, False)])
def test_exact_divergence_likelihood_matches_mixture_density(name, d, full):
    process = PROCESSES[name]
    model = mixture(d, process, full=full)
    t0 = 1e-3
    x = model.sample_data(6, generator=torch.Generator().manual_seed(1))
    res = log_likelihood(
        model, process, x, t0=t0, rtol=1e-10, atol=1e-10, terminal_log_density=lambda z: model.log_density(z, process.T)
    )
    assert res.retcode == "Success"
    exact = model.log_density(x, t0)
    assert float((res.log_density - exact).abs().max()) < 1e-6
    assert res.stats.njvp == res.stats.nf * d


def test_scipy_backend_likelihood_agrees():
    process = PROCESSES["VP"]
    model = mixture(2, process, full=True)
    x = model.sample_data(4, generator=torch.Generator().manual_seed(2))
    res = log_likelihood(
        model,
        process,
        x,
        t0=1e-3,
        method="DP8",
        backend="scipy",
        rtol=1e-11,
        atol=1e-11,
        terminal_log_density=lambda z: model.log_density(z, process.T),
    )
    assert float((res.log_density - model.log_density(x, 1e-3)).abs().max()) < 1e-6


@pytest.mark.parametrize("name", ["VP", "VE"])
def test_plain_prior_error_is_the_terminal_density_gap(name):
    # with the prior in place of p_T the result shifts by exactly log prior(x_T) - log p_T(x_T)
    process = PROCESSES[name]
    model = mixture(2, process, full=True)
    x = model.sample_data(5, generator=torch.Generator().manual_seed(3))
    exact_T = log_likelihood(
        model, process, x, rtol=1e-10, atol=1e-10, terminal_log_density=lambda z: model.log_density(z, process.T)
    )
    plain = log_likelihood(model, process, x, rtol=1e-10, atol=1e-10)
    gap = process.prior_log_density(plain.latent) - model.log_density(plain.latent, process.T)
    assert torch.allclose(plain.log_density - exact_T.log_density, gap, atol=1e-9)
    if name == "VE":
        # VE's prior N(0, σ_max²) ignores the data spread, far beyond the 1e-6 accuracy of the flow
        assert float(gap.abs().min()) > 1e-4


def test_hutchinson_is_unbiased():
    # every batch row draws its own probes, so 100 copies of each point give 100 independent estimates in
    # one solve
    process = PROCESSES["VP"]
    model = mixture(3, process, full=True)
    x = model.sample_data(2, generator=torch.Generator().manual_seed(4))
    kw = dict(rtol=1e-7, atol=1e-7, terminal_log_density=lambda z: model.log_density(z, process.T))
    exact = log_likelihood(model, process, x, **kw).log_density
    copies = 100
    est = log_likelihood(
        model,
        process,
        x.repeat(copies, 1),
        divergence="hutchinson",
        n_probes=2,
        generator=torch.Generator().manual_seed(100),
        **kw,
    ).log_density.reshape(copies, 2)
    mean, se = est.mean(0), est.std(0) / math.sqrt(copies)
    assert bool((se > 1e-4).all())  # the probes really vary
    assert bool(((mean - exact).abs() < 3 * se).all()), (mean - exact, se)


def test_likelihood_bad_inputs():
    process = PROCESSES["VP"]
    model = mixture(2, process)
    x = model.sample_data(3)
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(model, process, x, divergence="trace")
    with pytest.raises(ValueError, match="n_probes"):
        log_likelihood(model, process, x, divergence="hutchinson", n_probes=0)
    with pytest.raises(ValueError, match="t0"):
        log_likelihood(model, process, x, t0=-1.0)
    with pytest.raises(ValueError, match="x.*non-finite"):
        log_likelihood(model, process, x * math.inf)
    with pytest.raises(TypeError, match="x.*float32"):
        log_likelihood(model, process, x.float())


def test_a_score_closure_rebuilt_per_call_measures_its_divergence_engine_once(monkeypatch):
    # log_likelihood(lambda x, t: model(x, t), ...) in a loop: "auto" is cached by the closure's definition site, so
    # the second call runs the cached engine (keyed by id, every new closure measured every engine again)
    import importlib

    autotune = importlib.import_module("pysens.derivatives.autotune")
    measured = []
    real = autotune.measure_engines
    monkeypatch.setattr(autotune, "measure_engines", lambda k, *a, **kw: measured.append(k) or real(k, *a, **kw))
    process = PROCESSES["VP"]
    model = mixture(3, process)
    x = model.sample_data(4, generator=torch.Generator().manual_seed(2))
    exact = model.log_density(x, 1e-3)
    autotune.clear_engine_cache()
    counts = []
    for _ in range(2):
        res = log_likelihood(
            lambda u, t: model(u, t),  # a plain callable: no closed-form divergence to use
            process,
            x,
            t0=1e-3,
            rtol=1e-8,
            atol=1e-8,
            terminal_log_density=lambda z: model.log_density(z, process.T),
        )
        assert res.retcode == "Success" and float((res.log_density - exact).abs().max()) < 1e-5
        counts.append(len(measured))
    assert counts[0] >= 1 and counts[1] == counts[0]  # (one measurement per batch bucket the solve compacts to)
