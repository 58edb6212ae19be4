"""The Rosenbrock steppers' per-step linearisation (f, J and ∂f/∂t at the step's start), against exact answers.

The fused pass (one evaluation of f on d stacked copies of the rows, one reverse pass) and the separate one (f, the
Jacobian engine, forward-mode ∂f/∂t) are exact alternatives: each is checked against closed forms, and a solve on
either path against the exact solution. The choice between them is a timing; ``FUSED_MARGIN`` forces it here.
"""

import math

import numpy as np
import pytest
import torch

from pysens.solvers import ODEProblem, rosenbrock, solve
from pysens.solvers.driver import ErrorNorm
from pysens.solvers.rosenbrock import RosenbrockStepper

DT = torch.float64
EPS = torch.finfo(DT).eps


def _forced(monkeypatch, fused: bool) -> None:
    # the fused pass is taken when its time is at most FUSED_MARGIN times the separate one's
    monkeypatch.setattr(rosenbrock, "FUSED_MARGIN", math.inf if fused else 0.0)


def _nonautonomous():
    """f(t, x) = (−2 x₀ + sin(t) x₁, x₀ x₁ − t² x₁): J = [[−2, sin t], [x₁, x₀ − t²]], ∂f/∂t = (cos(t) x₁, −2 t x₁)."""

    def f(t, x):
        x0, x1 = x.unbind(1)
        return torch.stack([-2.0 * x0 + torch.sin(t) * x1, x0 * x1 - t * t * x1], 1)

    return f


def test_fused_linearisation_is_f_its_jacobian_and_time_derivative():
    f = _nonautonomous()
    x = torch.tensor([[0.3, -1.2], [2.0, 0.7], [-0.5, 0.25]], dtype=DT)
    t = torch.tensor([0.1, 1.3, 2.9], dtype=DT)
    stepper = RosenbrockStepper(ODEProblem(f, x, (0.0, 1.0)), "Rodas5P", ErrorNorm(1e-6, 1e-8, x), {})
    f0, J, T = stepper._linearise_fused(t, x)
    x0, x1 = x.unbind(1)
    J_exact = torch.stack(
        [torch.stack([torch.full_like(x0, -2.0), torch.sin(t)], 1), torch.stack([x1, x0 - t * t], 1)], 1
    )
    T_exact = torch.stack([torch.cos(t) * x1, -2.0 * t * x1], 1)
    # each entry is one or two roundings of products of O(1) numbers (sin/cos to 1 ulp): 4 ulp of the magnitudes
    assert torch.equal(f0, f(t, x))  # copy 0 of the stacked rows is f itself, bit for bit
    assert float((J - J_exact).abs().max()) <= 4 * EPS * 4.0
    assert float((T - T_exact).abs().max()) <= 4 * EPS * 4.0


def test_fused_linearisation_of_an_autonomous_field_has_no_time_derivative():
    x = torch.tensor([[1.0, 2.0]], dtype=DT)
    stepper = RosenbrockStepper(ODEProblem(lambda t, y: -y * y, x, (0.0, 1.0)), "Rodas5P", ErrorNorm(1e-6, 1e-8, x), {})
    f0, J, T = stepper._linearise_fused(torch.zeros(1, dtype=DT), x)
    assert T is None  # f does not read t: ∂f/∂t = 0 exactly, and the stages skip it
    assert torch.equal(J, torch.diag_embed(-2.0 * x)) and torch.equal(f0, -x * x)


def _forced_oscillator():
    """x' = −50 (x − cos t) ⇒ x(t) = (2500 cos t + 50 sin t)/2501 + C e^{−50 t}, C = x(0) − 2500/2501."""
    lam = 50.0

    def f(t, x):
        return -lam * (x - torch.cos(t)[:, None])

    def exact(t, x0=1.0):
        return (lam * lam * math.cos(t) + lam * math.sin(t)) / (lam * lam + 1) + (
            x0 - lam * lam / (lam * lam + 1)
        ) * math.exp(-lam * t)

    return f, exact


@pytest.mark.parametrize("fused", [True, False])
def test_rodas5p_on_a_forced_stiff_equation_meets_the_exact_solution_on_either_path(monkeypatch, fused):
    _forced(monkeypatch, fused)
    calls = []
    original = RosenbrockStepper._linearise_fused
    monkeypatch.setattr(RosenbrockStepper, "_linearise_fused", lambda self, *a: calls.append(1) or original(self, *a))
    f, exact = _forced_oscillator()
    sol = solve(ODEProblem(f, torch.ones(2, 1, dtype=DT), (0.0, 2.0)), "Rodas5P", rtol=1e-8, atol=1e-10)
    assert sol.retcode == "Success"
    # the solve ran on the path forced (the first step measures both: FUSED_TIMING_ROUNDS fused calls)
    assert (len(calls) > rosenbrock.FUSED_TIMING_ROUNDS) == fused
    assert float((sol.final - exact(2.0)).abs().max()) < 100 * 1e-8


def test_a_field_not_differentiable_in_t_keeps_the_finite_difference_and_the_separate_path(monkeypatch):
    _forced(monkeypatch, True)
    lam = 50.0

    def f(t, x):  # numpy inside: neither forward nor reverse mode can see t
        return -lam * (x - torch.from_numpy(np.cos(t.detach().numpy()))[:, None])

    _, exact = _forced_oscillator()
    calls = []
    original = RosenbrockStepper._linearise_fused
    monkeypatch.setattr(RosenbrockStepper, "_linearise_fused", lambda self, *a: calls.append(1) or original(self, *a))
    sol = solve(ODEProblem(f, torch.ones(1, 1, dtype=DT), (0.0, 2.0)), "Rodas5P", rtol=1e-8, atol=1e-10)
    assert sol.retcode == "Success" and not calls
    assert float((sol.final - exact(2.0)).abs().max()) < 100 * 1e-8


def test_fused_path_keeps_a_sample_bit_identical_alone_and_in_a_batch(monkeypatch):
    _forced(monkeypatch, True)
    f = _nonautonomous()
    x0 = torch.tensor([[1.0, 0.5], [0.2, -0.3], [2.0, 1.0]], dtype=DT)
    opts = dict(rtol=1e-7, atol=1e-9)
    both = solve(ODEProblem(f, x0, (0.0, 3.0)), "Rodas5P", **opts)
    alone = solve(ODEProblem(f, x0[:1], (0.0, 3.0)), "Rodas5P", **opts)
    assert both.retcode == "Success" and alone.retcode == "Success"
    assert alone.stats.sample_naccept[0] == both.stats.sample_naccept[0]
    assert torch.equal(alone.final[0], both.final[0])


def test_a_step_rejected_for_every_sample_reuses_its_linearisation_exactly(monkeypatch):
    # the start of a rate-50 transient of size 99 costs rejected steps; the retries at the same (t, x) keep J and
    # ∂f/∂t instead of evaluating them again, which must change nothing but the work
    f, exact = _forced_oscillator()
    p = ODEProblem(f, torch.full((1, 1), 100.0, dtype=DT), (0.0, 2.0))
    kept = solve(p, "Rodas5P", rtol=1e-8, atol=1e-10)
    original = RosenbrockStepper.commit

    def commit_without_reuse(self, *args):
        original(self, *args)
        self._same_point = False

    monkeypatch.setattr(RosenbrockStepper, "commit", commit_without_reuse)
    fresh = solve(p, "Rodas5P", rtol=1e-8, atol=1e-10)
    assert kept.retcode == "Success" and kept.stats.nreject > 0
    assert torch.equal(kept.x, fresh.x) and kept.stats.naccept == fresh.stats.naccept
    assert kept.stats.njac == fresh.stats.njac - kept.stats.nreject
    assert float((kept.final - exact(2.0, 100.0)).abs().max()) < 100 * 1e-8
