"""Decisions the bad-input work took, tested: [B] states, case-insensitive backends, one retcode for a NaN
right-hand side on every backend, per-sample retcodes through the exact mixture score."""

from __future__ import annotations

import math

import pytest
import torch

from pysens.diffusion import GaussianMixtureScore
from pysens.solvers import BrownianGrid, ODEProblem, SDEProblem, solve

RATES = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)


def scalar_decay(t, x):
    assert x.shape == (3,), "user callables see the [B] state they were written for"
    return -RATES * x


@pytest.mark.parametrize(
    "backend, method", [("torch", "Tsit5"), ("torch", "Rodas5P"), ("scipy", "DP8"), ("scipy", "RadauIIA5")]
)
def test_state_without_event_axes_is_solved_as_written(backend, method):
    """x0 shaped [B] (event shape ()) solves x' = -r x per sample; x comes back [n_save, B]; error within 100 atol."""
    x0 = torch.ones(3, dtype=torch.float64)
    sol = solve(
        ODEProblem(scalar_decay, x0, (0.0, 1.0)), method, backend, rtol=1e-10, atol=1e-12, saveat=[0.0, 0.5, 1.0]
    )
    assert sol.retcode == "Success" and sol.x.shape == (3, 3)
    exact = torch.exp(-RATES[None, :] * torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)[:, None])
    assert float((sol.x - exact).abs().max()) < 1e-9


def test_state_without_event_axes_with_jacobian_and_brownian_grid():
    x0 = torch.ones(3, dtype=torch.float64)
    jac = lambda t, x: -RATES[:, None, None].expand(3, 1, 1)  # noqa: E731
    sol = solve(ODEProblem(scalar_decay, x0, (0.0, 1.0), jac=jac), "Rodas5P", rtol=1e-10, atol=1e-12)
    assert float((sol.final - torch.exp(-RATES)).abs().max()) < 1e-9
    grid = BrownianGrid.sample((0.0, 1.0), 16, (3,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    prob = SDEProblem(lambda t, x: torch.zeros_like(x), lambda t, x: torch.ones_like(x), x0, (0.0, 1.0), brownian=grid)
    sol = solve(prob, "EM", dt=1 / 16)
    # x' = dW: the state is x0 + W(1) exactly (EM sums the increments)
    assert sol.x.shape == (2, 3) and torch.allclose(sol.final, x0 + grid.path[-1], atol=1e-12)


def test_backend_names_ignore_case_like_method_names():
    prob = ODEProblem(lambda t, x: -x, torch.ones(2, 2, dtype=torch.float64), (0.0, 1.0))
    a = solve(prob, "tsit5", "TORCH", rtol=1e-8, atol=1e-10)
    b = solve(prob, "DP5", "SciPy", rtol=1e-8, atol=1e-10)
    assert a.backend == "torch" and b.backend == "scipy" and a.retcode == b.retcode == "Success"


def nan_after_half(t, x):
    return torch.where((t > 0.5)[:, None], x * math.nan, -x)


def nan_everywhere(t, x):
    return x * math.nan


NAN_CASES = [
    ("torch", "Tsit5"),
    ("torch", "DP8"),
    ("torch", "Rodas5P"),
    ("torch", "KenCarp4"),
    ("torch", "TRBDF2"),
    ("scipy", "DP5"),
    ("scipy", "DP8"),
    ("scipy", "RadauIIA5"),
    ("scipy", "BDF"),
    ("scipy", "LSODA"),
]


@pytest.mark.parametrize("f", [nan_after_half, nan_everywhere], ids=["nan-later", "nan-at-start"])
@pytest.mark.parametrize("backend, method", NAN_CASES)
def test_nan_right_hand_side_is_unstable_on_every_backend(backend, method, f):
    """SciML's semantics (a NaN state or step is Unstable / DtNaN; the julia backend maps DtNaN to Unstable): the
    same retcode everywhere, with the partial solution, never an exception or an endless loop."""
    sol = solve(ODEProblem(f, torch.ones(2, 2, dtype=torch.float64), (0.0, 1.0)), method, backend)
    assert sol.retcode == "Unstable"
    assert bool(torch.isfinite(sol.x[0]).all())  # the initial state is kept


def test_nan_right_hand_side_is_unstable_on_cvode():
    pytest.importorskip("sksundae")
    sol = solve(ODEProblem(nan_after_half, torch.ones(2, 2, dtype=torch.float64), (0.0, 1.0)), "CVODE_BDF", "scipy")
    assert sol.retcode == "Unstable"


def test_exact_mixture_score_fails_one_sample_not_the_batch():
    """A stage that goes NaN for one sample gives that sample Unstable and the others Success (it used to raise)."""
    model = GaussianMixtureScore(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64), process="VP")
    poison = torch.tensor([math.nan, 0.0, 0.0], dtype=torch.float64)[:, None]

    def f(t, x):
        return -model(x + torch.where((t > 0.5)[:, None], poison, torch.zeros_like(poison)), t)

    sol = solve(ODEProblem(f, torch.zeros(3, 2, dtype=torch.float64), (0.2, 0.8)), "Tsit5")
    assert sol.sample_retcodes == ["Unstable", "Success", "Success"]
