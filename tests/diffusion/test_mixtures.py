"""Noised Gaussian mixtures: the closed-form kernel against scipy, autograd, and its own special cases."""

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from pysens.diffusion.mixtures import mixture_covariance, noised_mixture_log_density_and_score
from pysens.diffusion.processes import VE, VP
from pysens.diffusion.scores import GaussianMixtureScore

KINDS = ["point", "isotropic", "diagonal", "full"]


def _random_mixture(kind, K, d, seed):
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(K, d, generator=g, dtype=torch.float64)
    weights = torch.rand(K, generator=g, dtype=torch.float64) + 0.1
    if kind == "point":
        cov = None
    elif kind == "isotropic":
        cov = 0.1 + torch.rand(K, generator=g, dtype=torch.float64)
    elif kind == "diagonal":
        cov = 0.05 + 2.0 * torch.rand(K, d, generator=g, dtype=torch.float64)
    else:
        a = torch.randn(K, d, d, generator=g, dtype=torch.float64) / d**0.5
        cov = a @ a.mT + 0.1 * torch.eye(d, dtype=torch.float64)
    return means, cov, weights


def _full_covariances(kind, cov, K, d):
    """[K, d, d] matrices of any covariance kind, for the scipy oracle."""
    if kind == "point":
        return np.zeros((K, d, d))
    if kind == "isotropic":
        return cov.numpy()[:, None, None] * np.eye(d)
    if kind == "diagonal":
        return np.stack([np.diag(c) for c in cov.numpy()])
    return cov.numpy()


def _scipy_log_density(x, alpha, beta, means, full_covs, weights):
    """log Σ_k w_k N(x_b; α_b m_k, α_b² C_k + β_b² I) sample by sample, with scipy."""
    w = weights.numpy() / weights.numpy().sum()
    d = means.shape[1]
    out = []
    for xb, a, b in zip(x.numpy(), alpha.numpy(), beta.numpy(), strict=True):
        logs = [
            scipy.stats.multivariate_normal(mean=a * m, cov=a**2 * c + b**2 * np.eye(d)).logpdf(xb)
            for m, c in zip(means.numpy(), full_covs, strict=True)
        ]
        out.append(scipy.special.logsumexp(np.array(logs), b=w))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("process", [VP(), VE()], ids=["VP", "VE"])
@pytest.mark.parametrize("d", [2, 10])
@pytest.mark.parametrize("kind", KINDS)
def test_log_density_matches_scipy_with_per_sample_times(kind, d, process):
    K, B = 4, 6
    means, cov, weights = _random_mixture(kind, K, d, seed=d)
    model = GaussianMixtureScore(means, cov, weights, process=process)
    g = torch.Generator().manual_seed(11)
    t = torch.tensor([0.01, 0.05, 0.2, 0.4, 0.7, 1.0], dtype=torch.float64)
    alpha, beta = process.scale(t), process.sigma(t)
    x = alpha[:, None] * means[torch.arange(B) % K] + (beta[:, None] + 0.5) * torch.randn(
        B, d, generator=g, dtype=torch.float64
    )
    expected = _scipy_log_density(x, alpha, beta, means, _full_covariances(kind, cov, K, d), weights)
    torch.testing.assert_close(model.log_density(x, t), expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("process", [VP(), VE()], ids=["VP", "VE"])
@pytest.mark.parametrize("kind", KINDS)
def test_score_is_the_autograd_gradient_of_log_density(kind, process):
    K, d, B = 5, 10, 7
    means, cov, weights = _random_mixture(kind, K, d, seed=3)
    model = GaussianMixtureScore(means, cov, weights, process=process)
    g = torch.Generator().manual_seed(5)
    t = torch.linspace(0.02, 1.0, B, dtype=torch.float64)
    x = torch.randn(B, d, generator=g, dtype=torch.float64) * 2.0
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(model.log_density(x, t).sum(), x)
    torch.testing.assert_close(model(x.detach(), t), grad, rtol=1e-10, atol=1e-10)


def test_full_covariances_that_are_diagonal_agree_with_the_diagonal_path():
    K, d, B = 3, 10, 8
    means, diag, weights = _random_mixture("diagonal", K, d, seed=8)
    full = torch.diag_embed(diag)
    t = torch.linspace(0.01, 0.9, B, dtype=torch.float64)
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for process in (VP(), VE()):
        a = GaussianMixtureScore(means, diag, weights, process=process).log_density_and_score(x, t)
        b = GaussianMixtureScore(means, full, weights, process=process).log_density_and_score(x, t)
        torch.testing.assert_close(b.log_density, a.log_density, rtol=1e-13, atol=1e-12)
        torch.testing.assert_close(b.score, a.score, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_evaluation_equals_one_pass(kind):
    # A tiny memory budget forces one component per chunk, exercising the streaming logsumexp.
    K, d, B = 6, 4, 5
    means, cov, weights = _random_mixture(kind, K, d, seed=4)
    log_w = torch.log(weights / weights.sum())
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    alpha, beta = torch.rand(B, dtype=torch.float64), 0.1 + torch.rand(B, dtype=torch.float64)
    whole = noised_mixture_log_density_and_score(x, alpha, beta, means, log_w, cov)
    chunked = noised_mixture_log_density_and_score(x, alpha, beta, means, log_w, cov, max_chunk_bytes=1)
    torch.testing.assert_close(chunked.log_density, whole.log_density, rtol=1e-14, atol=1e-13)
    torch.testing.assert_close(chunked.score, whole.score, rtol=1e-13, atol=1e-13)


def test_zero_weight_components_are_ignored_even_in_the_first_chunk():
    K, d, B = 5, 3, 4
    means, cov, weights = _random_mixture("diagonal", K, d, seed=6)
    weights[:2] = 0.0
    log_w = torch.log(weights / weights.sum())
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alpha, beta = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    with_zeros = noised_mixture_log_density_and_score(x, alpha, beta, means, log_w, cov, max_chunk_bytes=1)
    without = noised_mixture_log_density_and_score(x, alpha, beta, means[2:], log_w[2:], cov[2:])
    torch.testing.assert_close(with_zeros.log_density, without.log_density, rtol=1e-14, atol=1e-13)
    torch.testing.assert_close(with_zeros.score, without.score, rtol=1e-13, atol=1e-13)


def test_sample_data_matches_the_mixture_moments():
    means, cov, weights = _random_mixture("full", 3, 2, seed=12)
    model = GaussianMixtureScore(means, cov, weights)
    n = 200_000
    samples = model.sample_data(n, generator=torch.Generator().manual_seed(0))
    w = weights / weights.sum()
    mean = (w[:, None] * means).sum(0)
    second = (w[:, None, None] * (cov + means[:, :, None] * means[:, None, :])).sum(0)
    covariance = second - mean[:, None] * mean[None, :]
    # Standard errors of the sample mean / covariance entries are below 0.01 for these spreads (5-sigma bound).
    torch.testing.assert_close(samples.mean(0), mean, rtol=0, atol=0.03)
    torch.testing.assert_close(torch.cov(samples.T), covariance, rtol=0, atol=0.06)


def test_covariance_validation_names_the_argument():
    eye = torch.eye(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="covariances.*symmetric"):
        mixture_covariance(torch.tensor([[[1.0, 0.5], [0.0, 1.0]]], dtype=torch.float64), 1, 2)
    with pytest.raises(ValueError, match="covariances.*positive semi-definite"):
        mixture_covariance((-eye)[None], 1, 2)
    with pytest.raises(ValueError, match="covariances.*non-negative"):
        mixture_covariance(torch.tensor([-1.0, 1.0], dtype=torch.float64), 2, 2)
    with pytest.raises(ValueError, match="covariances must be None"):
        mixture_covariance(torch.ones(3, 2, dtype=torch.float64), 2, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_score_jacobian_under_functorch_is_the_symmetric_hessian(kind):
    # vmap(jacrev(score)) must run (input checks that read values are skipped inside transforms), agree with
    # reverse-mode autograd, and be symmetric: it is the Hessian of log p_t.
    K, d, B = 3, 4, 5
    means, cov, weights = _random_mixture(kind, K, d, seed=13)
    model = GaussianMixtureScore(means, cov, weights, process=VP())
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.linspace(0.05, 0.8, B, dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(lambda xi, ti: model(xi[None], ti[None])[0]))(x, t)
    xr = x.clone().requires_grad_(True)
    s = model(xr, t)
    rows = [torch.autograd.grad(s[:, i].sum(), xr, retain_graph=True)[0] for i in range(d)]
    torch.testing.assert_close(jac, torch.stack(rows, dim=1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jac, jac.mT, rtol=1e-10, atol=1e-10)
