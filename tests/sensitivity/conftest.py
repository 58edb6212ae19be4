"""Exact oracles for the sensitivity tests: Gaussian-mixture data laws ρ and perturbations σ whose perturbed score
(1 − ε)ρ + εσ is again a mixture, so every derivative has a float64 finite-difference or closed-form answer."""

from dataclasses import dataclass

import pytest
import torch

from pysens.diffusion import EDM, VE, VP, GaussianMixtureScore
from pysens.diffusion.sampling import sample_pf_ode
from pysens.sensitivity import GaussianMixtureMeasure

DT = torch.float64

PROCESSES = {"VP": VP(), "VE": VE(sigma_min=0.01, sigma_max=20.0), "EDM": EDM(sigma_min=0.002, sigma_max=80.0)}


@dataclass
class Oracle:
    """ρ (``model``, exact score and log-density), σ (``sigma``) and their raw parameters."""

    process: object
    model: GaussianMixtureScore
    sigma: GaussianMixtureMeasure
    means: torch.Tensor
    cov: torch.Tensor
    weights: torch.Tensor
    s_means: torch.Tensor
    s_cov: torch.Tensor
    s_weights: torch.Tensor

    def perturbed(self, eps: float) -> GaussianMixtureScore:
        """The exact model of (1 − ε)ρ + εσ."""
        return GaussianMixtureScore(
            torch.cat([self.means, self.s_means]),
            torch.cat([self.cov, self.s_cov]),
            torch.cat([(1 - eps) * self.weights, eps * self.s_weights]),
            process=self.process,
        )

    def terminal(self, z):
        return self.model.log_density(z, self.process.T)

    def perturbed_sample(self, eps: float, x_T, t1: float, **kw):
        kw = {"rtol": 1e-12, "atol": 1e-12, "method": "DP8", **kw}
        return sample_pf_ode(self.perturbed(eps), self.process, x_T, t1=t1, **kw).x


def make_oracle(process_name: str, d: int, seed: int = 0) -> Oracle:
    process = PROCESSES[process_name]
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(3, d, generator=g, dtype=DT)
    cov = 0.2 + torch.rand(3, d, generator=g, dtype=DT)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=DT)
    s_means = 2.0 * torch.randn(2, d, generator=g, dtype=DT)
    s_cov = 0.3 + torch.rand(2, d, generator=g, dtype=DT)
    s_weights = torch.tensor([0.6, 0.4], dtype=DT)
    model = GaussianMixtureScore(means, cov, weights, process=process)
    sigma = GaussianMixtureMeasure(s_means, s_cov, s_weights)
    return Oracle(process, model, sigma, means, cov, weights, s_means, s_cov, s_weights)


@pytest.fixture(scope="session")
def vp3() -> Oracle:
    return make_oracle("VP", 3)


@pytest.fixture(scope="session")
def ve3() -> Oracle:
    return make_oracle("VE", 3)


def richardson(fn, h: float):
    """y ≈ d/dε fn(ε) at 0 from one-sided differences at h, h/2, h/4 with two Richardson levels (O(h³))."""
    f0 = fn(0.0)
    d = [(fn(step) - f0) / step for step in (h, h / 2, h / 4)]
    r1 = [2 * d[1] - d[0], 2 * d[2] - d[1]]
    return (4 * r1[1] - r1[0]) / 3
