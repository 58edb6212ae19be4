"""Misuse raises errors that name the argument (CONVENTIONS.md: misuse is an exception, failure a retcode)."""

import numpy as np
import pytest
import torch

from pysens.sensitivity import (
    EmpiricalMeasure,
    discrete_sample_sensitivity,
    sample_sensitivity,
    score_derivative,
    sde_sample_sensitivity,
)

from .conftest import DT, make_oracle


@pytest.fixture(scope="module")
def oracle():
    return make_oracle("VP", 2, seed=0)


def x_T(n=2, d=2):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=DT)


SAMPLERS = {
    "ode": lambda o, x, p, **kw: sample_sensitivity(o.model, o.process, x, p, **kw),
    "sde": lambda o, x, p, **kw: sde_sample_sensitivity(o.model, o.process, x, p, n_steps=2, **kw),
    "discrete": lambda o, x, p, **kw: discrete_sample_sensitivity(o.model, o.process, x, p, n_steps=2, **kw),
}


@pytest.mark.parametrize("mode", SAMPLERS)
def test_perturbation_in_the_wrong_dimension(oracle, mode):
    wrong = EmpiricalMeasure(torch.zeros(3, 5, dtype=DT))
    with pytest.raises(ValueError, match=r"perturbations\[0\].*d = 5.*d = 2"):
        SAMPLERS[mode](oracle, x_T(), [wrong])


@pytest.mark.parametrize("mode", SAMPLERS)
@pytest.mark.parametrize("t1", [0.0, -0.1, 1.0, 2.0])
def test_cutoff_outside_zero_to_T(oracle, mode, t1):
    with pytest.raises(ValueError, match="t1"):
        SAMPLERS[mode](oracle, x_T(), oracle.sigma, **({"t1": t1} if mode != "discrete" else {"timesteps": [1.0, t1]}))


def test_not_a_perturbation(oracle):
    with pytest.raises(TypeError, match=r"perturbations\[1\]"):
        sample_sensitivity(oracle.model, oracle.process, x_T(), [oracle.sigma, torch.zeros(2)])
    with pytest.raises(TypeError, match="perturbations must be"):
        sample_sensitivity(oracle.model, oracle.process, x_T(), 3.0)


def test_score_model_without_forward_mode_derivatives(oracle):
    def numpy_score(x, t):  # leaves torch: no JVP can pass through it
        return torch.as_tensor(-np.asarray(x.detach().numpy()))

    with pytest.raises(TypeError, match="score must be differentiable in x by torch.func.jvp"):
        sample_sensitivity(numpy_score, oracle.process, x_T(), oracle.sigma)
    with pytest.raises(TypeError, match="score must be differentiable"):
        sde_sample_sensitivity(numpy_score, oracle.process, x_T(), oracle.sigma, n_steps=2)

    def wrong_shape(x, t):
        return x.sum(1)

    with pytest.raises(TypeError, match="shaped like x"):
        sample_sensitivity(wrong_shape, oracle.process, x_T(), oracle.sigma)


def test_bad_options_are_named(oracle):
    with pytest.raises(ValueError, match="divergence"):
        sample_sensitivity(oracle.model, oracle.process, x_T(), oracle.sigma, divergence="trace")
    with pytest.raises(ValueError, match="parameterization"):
        sample_sensitivity(oracle.model, oracle.process, x_T(), oracle.sigma, parameterization="v")
    with pytest.raises(ValueError, match="milstein_trace"):
        sde_sample_sensitivity(oracle.model, oracle.process, x_T(), n_steps=2, milstein_trace="none")
    with pytest.raises(ValueError, match="n_steps"):
        sde_sample_sensitivity(oracle.model, oracle.process, x_T(), n_steps=0)
    with pytest.raises(TypeError, match="terminal_log_density"):
        sample_sensitivity(oracle.model, oracle.process, x_T(), oracle.sigma, terminal_log_density=1.0)
    with pytest.raises(ValueError, match="x_T"):
        sample_sensitivity(oracle.model, oracle.process, torch.full((2, 2), float("nan"), dtype=DT), oracle.sigma)
    with pytest.raises(TypeError, match="x_T"):
        sample_sensitivity(oracle.model, oracle.process, x_T().float(), oracle.sigma)
    with pytest.raises(ValueError, match="brownian grid spans"):
        from pysens.solvers import BrownianGrid

        path = BrownianGrid.sample((1.0, 0.5), 4, (2, 2))
        sde_sample_sensitivity(oracle.model, oracle.process, x_T(), n_steps=4, brownian=path)
    with pytest.raises(ValueError, match="perturbations must hold"):
        discrete_sample_sensitivity(oracle.model, oracle.process, x_T(), [], n_steps=2)


def test_score_derivative_inputs(oracle):
    x = x_T()
    with pytest.raises(ValueError, match="t must be positive"):
        score_derivative(oracle.model, oracle.process, x, 0.0, oracle.sigma, log_density=torch.zeros(2, dtype=DT))
    with pytest.raises(ValueError, match="t must lie in"):
        score_derivative(oracle.model, oracle.process, x, 1.5, oracle.sigma, log_density=torch.zeros(2, dtype=DT))
    with pytest.raises(ValueError, match="log_density must give one value per sample"):
        score_derivative(oracle.model, oracle.process, x, 0.5, oracle.sigma, log_density=torch.zeros(3, dtype=DT))
    with pytest.raises(ValueError, match=r"perturbations\[0\]"):
        score_derivative(oracle.model, oracle.process, x, 0.5, EmpiricalMeasure(torch.zeros(1, 3, dtype=DT)))
