"""Parameterisation adapters: round trips and Tweedie's formula for a single Gaussian."""

import pytest
import torch

from pysens.diffusion.adapters import DenoiserToScore, EpsilonToScore, ScoreToDenoiser, ScoreToEpsilon
from pysens.diffusion.processes import EDM, VE, VP, SubVP
from pysens.diffusion.scores import GaussianMixtureScore

PROCESSES = [VP(), SubVP(), VE(), EDM()]


def _mixture(process):
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    return GaussianMixtureScore(means, 0.2 * torch.ones(3, dtype=torch.float64), process=process)


@pytest.mark.parametrize("process", PROCESSES, ids=[p.name for p in PROCESSES])
def test_round_trips_reproduce_the_score(process):
    score = _mixture(process)
    x = torch.randn(5, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64) * process.T
    s = score(x, t)
    via_eps = EpsilonToScore(ScoreToEpsilon(score, process), process)(x, t)
    via_denoiser = DenoiserToScore(ScoreToDenoiser(score, process), process)(x, t)
    # Exact up to the rounding of one multiply-divide pair (and x + β²s − x for the denoiser).
    torch.testing.assert_close(via_eps, s, rtol=1e-14, atol=0)
    torch.testing.assert_close(via_denoiser, s, rtol=1e-11, atol=1e-11)
    for scalar_t in (0.5 * process.T, torch.tensor(0.5 * process.T, dtype=torch.float64)):
        torch.testing.assert_close(
            EpsilonToScore(ScoreToEpsilon(score, process), process)(x, scalar_t), score(x, scalar_t), rtol=1e-14, atol=0
        )


@pytest.mark.parametrize("process", PROCESSES, ids=[p.name for p in PROCESSES])
def test_denoiser_is_the_posterior_mean_of_a_gaussian(process):
    # Data N(m, c I): E[X_0 | X_t = x] = m + α c (x − α m) / (α² c + β²).
    m = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    c = 0.7
    score = GaussianMixtureScore(m, torch.tensor([c], dtype=torch.float64), process=process)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.6, 1.0], dtype=torch.float64) * process.T
    a, b = process.scale(t)[:, None], process.sigma(t)[:, None]
    expected = m + a * c * (x - a * m) / (a**2 * c + b**2)
    torch.testing.assert_close(ScoreToDenoiser(score, process)(x, t), expected, rtol=1e-12, atol=1e-12)


def test_edm_denoiser_gives_the_edm_score():
    # EDM: s = (D − x)/t² with a user's plain-function denoiser.
    def denoiser(x, t):
        return 0.5 * x

    x = torch.randn(3, 4, dtype=torch.float64)
    t = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    s = DenoiserToScore(denoiser, EDM())(x, t)
    torch.testing.assert_close(s, (0.5 * x - x) / t[:, None] ** 2, rtol=1e-15, atol=0)
    assert isinstance(DenoiserToScore(_mixture("EDM"), "EDM").model, torch.nn.Module)
