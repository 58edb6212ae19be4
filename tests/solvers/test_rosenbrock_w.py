"""ROS34PW2 (Rosenbrock–W 3(2), pysens.solvers.rosenbrock_w) against exact answers, and its Jacobian reuse.

The W-property: the order conditions hold for any W in place of ∂f/∂x, so a deliberately wrong Jacobian (frozen at
the initial point, or perturbed) keeps order 3, where a classical Rosenbrock method (Rodas4) loses its order. The
reuse: J is kept over steps, per sample, and a sample takes the same steps alone and in a batch.
"""

import math

import pytest
import torch
from torch import Tensor

from pysens.bench.testset import PROBLEMS
from pysens.solvers import ODEProblem, rosenbrock, solve
from pysens.solvers.conformance import fitted_slope
from pysens.solvers.conformance_cases import stiff_linear, van_der_pol
from pysens.solvers.rosenbrock_w import ROS34PW2

DT = torch.float64
EPS = torch.finfo(DT).eps
STEPS = (32, 48, 64, 96)  # the conformance harness's order-3 ladder on the manufactured problem
ORDER_SLACK = 0.3  # the harness's band around the expected fixed-step slope


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _slope(errors) -> float:
    """The harness's least-squares slope of log error against log h over :data:`STEPS`."""
    return fitted_slope(STEPS, errors, SPAN)


PHASE = 0.5 * torch.arange(4, dtype=DT)  # four samples, as the conformance harness's manufactured case
SPAN = 3.0


def _path(tau: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x*(τ) = (1 + ½ sin(2τ + φ), 1 + 0.3 cos(3τ + φ)) per sample and its first and second derivatives."""
    a, b = 2 * tau + PHASE, 3 * tau + PHASE
    x = torch.stack([1 + 0.5 * torch.sin(a), 1 + 0.3 * torch.cos(b)], 1)
    dx = torch.stack([torch.cos(a), -0.9 * torch.sin(b)], 1)
    ddx = torch.stack([-2 * torch.sin(a), -2.7 * torch.cos(b)], 1)
    return x, dx, ddx


def _lv(x: Tensor) -> Tensor:
    return torch.stack([x[:, 0] * (1 - x[:, 1]), x[:, 1] * (x[:, 0] - 1)], 1)


def _lv_jacobian(x: Tensor) -> Tensor:
    a, b = x[:, 0], x[:, 1]
    return torch.stack([torch.stack([1 - b, -a], -1), torch.stack([b, a - 1], -1)], -2)


def _field(t: Tensor, y: Tensor) -> Tensor:
    """The conformance harness's manufactured problem x' = g(x) + x*'(τ) − g(x*(τ)) (g Lotka–Volterra) made
    autonomous with τ' = 1 as a third component, so that only the Jacobian (no ∂f/∂t) carries the W-property."""
    xs, dxs, _ = _path(y[:, 2])
    return torch.cat([_lv(y[:, :2]) + dxs - _lv(xs), torch.ones_like(y[:, 2:])], 1)


def _jacobian(t: Tensor, y: Tensor) -> Tensor:
    """∂f/∂y in closed form: [[J_g(x), x*'' − J_g(x*) x*'], [0, 0, 0]]."""
    xs, dxs, ddxs = _path(y[:, 2])
    J = torch.zeros(y.shape[0], 3, 3, dtype=y.dtype)
    J[:, :2, :2] = _lv_jacobian(y[:, :2])
    J[:, :2, 2] = ddxs - (_lv_jacobian(xs) @ dxs[:, :, None])[:, :, 0]
    return J


def _start() -> Tensor:
    return torch.cat([_path(torch.zeros(4, dtype=DT))[0], torch.zeros(4, 1, dtype=DT)], 1)


def _fixed_step_errors(method: str, jac=_jacobian) -> list[float]:
    exact = torch.cat([_path(torch.full((4,), SPAN, dtype=DT))[0], torch.full((4, 1), SPAN, dtype=DT)], 1)
    problem = ODEProblem(_field, _start(), (0.0, SPAN), jac=jac)
    errors = []
    for n in STEPS:
        sol = solve(problem, method, adaptive=False, dt=SPAN / n, rtol=1e-6, atol=1e-6)
        assert sol.retcode == "Success"
        errors.append(float((sol.final - exact).abs().max()))
    return errors


def test_tableau_is_the_published_method_in_transformed_variables():
    tab = ROS34PW2
    gamma = 0.435866521508459
    assert tab.gamma == gamma and tab.stages == 4 and tab.order == 3
    # nodes c_i = Σ_j α_ij: 2γ, α31 + α32, and 1 (the last stage at t + h)
    assert tab.c[1] == 2 * gamma and abs(tab.c[2] - 0.73157995778885237526) <= EPS and tab.c[3] == 1.0
    # a_21 = α21 / γ = 2 exactly (α21 = 2γ); stiffly accurate (b_j = α_4j + Γ_4j): the solution is the last stage's
    # input plus its increment, m = (a_41, a_42, a_43, 1), each a float64 rounding of the same exact rational
    assert tab.a[1] == (2.0,)
    assert tab.m[3] == 1.0
    for got, want in zip(tab.m[:3], tab.a[3], strict=True):
        assert abs(got - want) <= EPS * abs(want)
    # d_i = Σ_{j<=i} Γ_ij: d_1 = γ, and d_4 = 0 up to the rounding of the published 17-digit decimals
    assert tab.d[0] == gamma and abs(tab.d[3]) <= 2 * EPS
    # the stage equations' C = −Γ⁻¹ below the diagonal: (Γ⁻¹)_21 = −Γ21/γ², so C_21 = Γ21/γ²
    gamma21 = -0.87173304301691801
    assert abs(tab.C[1][0] - gamma21 / gamma**2) <= 4 * EPS * abs(tab.C[1][0])


def test_order_three_with_the_exact_jacobian_on_the_manufactured_problem():
    errors = _fixed_step_errors("ROS34PW2")
    assert abs(_slope(errors) - 3.0) <= ORDER_SLACK, errors
    # the harness's bound at the finest step (relative to max(1, |x*|) <= 1.5)
    assert errors[-1] <= 1e-5, errors
    assert abs(_slope(_fixed_step_errors("Rodas4")) - 4.0) <= ORDER_SLACK  # the contrast below: its own order here


@pytest.mark.parametrize("which", ["frozen", "perturbed"])
def test_w_property_order_three_survives_a_wrong_jacobian_that_rodas4_does_not(which):
    y0 = _start()
    if which == "frozen":  # J evaluated once, at the initial state, and never again

        def jac(t, y):
            return _jacobian(t, y0)
    else:  # the exact J plus a fixed O(1) perturbation

        def jac(t, y):
            return _jacobian(t, y) + torch.tensor([[0.7, -0.4, 0.2], [0.3, 0.9, -0.5], [0.0, 0.0, 0.0]], dtype=DT)

    w_errors = _fixed_step_errors("ROS34PW2", jac)
    assert abs(_slope(w_errors) - 3.0) <= ORDER_SLACK, w_errors
    # a classical Rosenbrock method needs the exact J beyond order 1 (its order-2 condition Σ b_j β_j = 1/2 − γ is a
    # condition on J's terms): with this W Rodas4 is a first-order method (measured slopes 1.00 frozen, 0.81 perturbed;
    # ROS34PW2 3.24 and 3.03)
    r_errors = _fixed_step_errors("Rodas4", jac)
    assert abs(_slope(r_errors) - 1.0) <= ORDER_SLACK, r_errors


def test_adaptive_stiff_linear_system_meets_its_matrix_exponential():
    case = stiff_linear(batch=1)  # x' = -A x, eigenvalues 1 .. 1e6; exact exp(-A t) x0
    for rtol in (1e-4, 1e-6, 1e-8):
        sol = solve(case.problem, "ROS34PW2", rtol=rtol, atol=rtol)
        assert sol.retcode == "Success"
        error = float((sol.final - case.exact).abs().max())
        # the tolerance model's promise (global error tracks rtol) within the project's acceptance margin 10^1.5
        scale = max(1.0, float(case.exact.abs().max()))
        assert error <= 10**1.5 * rtol * scale, (rtol, error)
        assert sol.stats.njac <= sol.stats.naccept + sol.stats.nreject  # at most one Jacobian per attempt


def test_van_der_pol_meets_its_reference_with_fewer_jacobians_than_steps():
    case = van_der_pol(batch=1)  # mu = 1e3 over one relaxation jump; exact: a tight Radau reference
    sol = solve(case.problem, "ROS34PW2", rtol=1e-6, atol=1e-8)
    assert sol.retcode == "Success"
    error = float((sol.final - case.exact).abs().max() / max(1.0, float(case.exact.abs().max())))
    assert error <= 10**1.5 * 1e-6, error
    fresh = solve(case.problem, "ROS34PW2", rtol=1e-6, atol=1e-8, max_jac_age=1)  # a Jacobian on every step
    assert fresh.retcode == "Success"
    assert sol.stats.njac == sol.extra["jac_rows"]  # one sample: one Jacobian per linearisation pass
    # measured: about a fifth of the steps get a fresh J; with max_jac_age=1 every attempt not retried at the same
    # point does
    assert sol.stats.njac < 0.5 * sol.stats.naccept, sol.stats
    assert fresh.stats.njac >= fresh.stats.naccept, fresh.stats


@pytest.mark.parametrize("fused", [True, False])
def test_a_sample_takes_the_same_steps_alone_and_in_a_batch(monkeypatch, fused):
    # per-sample decisions: which samples refresh J is the sample's own history, so J counts add up too
    monkeypatch.setattr(rosenbrock, "FUSED_MARGIN", math.inf if fused else 0.0)
    case = van_der_pol(batch=2)
    f = case.problem.f

    def forced(t, x):  # non-autonomous: dJ/dt != 0 and the stale ∂f/∂t is kept with J
        return f(t, x) + torch.stack([torch.zeros_like(t), 0.5 * torch.sin(0.01 * t)], 1)

    x0 = torch.cat([case.problem.x0, torch.tensor([[0.5, -0.2]], dtype=DT)])
    span = (0.0, 150.0)
    opts = dict(rtol=1e-5, atol=1e-7)
    both = solve(ODEProblem(forced, x0, span), "ROS34PW2", **opts)
    assert both.retcode == "Success"
    rows = 0
    for b in range(x0.shape[0]):
        alone = solve(ODEProblem(forced, x0[b : b + 1], span), "ROS34PW2", **opts)
        assert alone.retcode == "Success"
        assert alone.stats.sample_naccept[0] == both.stats.sample_naccept[b]
        assert alone.stats.sample_nreject[0] == both.stats.sample_nreject[b]
        assert torch.equal(alone.final[0], both.final[b])
        rows += alone.extra["jac_rows"]
    assert rows == both.extra["jac_rows"]
    assert both.stats.njac < both.extra["jac_rows"]  # passes shared by samples whose refreshes coincided


def test_e5_invariant_survives_refinement_on_a_stale_jacobian():
    # E5 keeps y2 - y3 - y4 = 0 by construction; the dense solves are refined with J k along f's own arithmetic at
    # the point where the (possibly stale) J was evaluated, so the invariant sees only rounding of its terms
    e5 = PROBLEMS["e5"]
    sol = solve(
        ODEProblem(e5.rhs, torch.tensor([e5.x0], dtype=DT), (0.0, 1e5)),
        "ROS34PW2",
        rtol=1e-4,
        atol=e5.atol(1e-4),
        saveat=torch.logspace(0, 5, 20, dtype=DT),
    )
    assert sol.retcode == "Success"
    assert sol.stats.njac < sol.stats.naccept  # the reuse did happen
    x = sol.x[:, 0]
    invariant = (x[:, 1] - x[:, 2] - x[:, 3]).abs().max().item()
    scale = (x[:, 1].abs() + x[:, 2].abs() + x[:, 3].abs()).max().item()
    # as for Rodas4 (tests/solvers/test_invariants.py): a couple of ulp of the terms' scale per step
    assert invariant <= 2 * EPS * scale * sol.stats.naccept, (invariant, scale, sol.stats.naccept)


def test_max_jac_age_is_checked_and_belongs_to_the_w_method():
    p = ODEProblem(lambda t, x: -x, torch.ones(1, 1, dtype=DT), (0.0, 1.0))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_jac_age must be a positive integer"):
            solve(p, "ROS34PW2", max_jac_age=bad)
    with pytest.raises(TypeError, match="unknown solve options for Rodas5P: max_jac_age"):
        solve(p, "Rodas5P", max_jac_age=5)
