"""Save times and step floors on long spans: both are relative to the time in question, never to the span."""

import math

import pytest
import torch

from pysens.solvers import ODEProblem, solve
from pysens.solvers.options import fixed_grid

DT = torch.float64
SAVEAT = [0.0, 1e-3, 0.25, 0.5, 0.99, 2.0, 1e13]
ODE_RUNS = [
    ("torch", "Tsit5"),
    ("torch", "DP5"),
    ("torch", "DP8"),
    ("torch", "Rosenbrock23"),
    ("torch", "Rodas4"),
    ("torch", "Rodas5P"),
    ("torch", "TRBDF2"),
    ("torch", "KenCarp4"),
    ("scipy", "DP5"),
    ("scipy", "DP8"),
    ("scipy", "RadauIIA5"),
    ("scipy", "BDF"),
    ("scipy", "LSODA"),
    ("scipy", "CVODE_BDF"),
]


def _clock():
    """x' = 1, x(0) = 0 over (0, 1e13): x(t) = t exactly, and every method integrates a constant exactly."""
    return ODEProblem(lambda t, x: torch.ones_like(x), torch.zeros(2, 1, dtype=DT), (0.0, 1e13))


@pytest.mark.parametrize("backend,method", ODE_RUNS)
def test_saveat_on_a_span_of_1e13_is_the_time_itself(backend, method):
    if method == "CVODE_BDF":
        pytest.importorskip("sksundae", reason="CVODE_BDF needs scikit-sundae")
    sol = solve(_clock(), method, backend, saveat=SAVEAT, rtol=1e-8, atol=1e-10)
    assert sol.retcode == "Success"
    want = torch.tensor(SAVEAT, dtype=DT)[:, None, None].expand_as(sol.x)
    # the solution is t; dense output and interpolation of a straight line are exact up to the rounding of
    # t itself (a few ulp of the larger of t and the step's ends, the step being up to 1e13 long)
    tol = 1e-12 * want.abs() + 64 * 2.2e-16 * 1e13 * (want == 1e13) + 1e-2 * 2.2e-16 * 1e13
    assert bool(((sol.x - want).abs() <= tol).all()), (sol.x.flatten().tolist(), SAVEAT)


def test_saveat_close_to_each_other_on_long_span_fixed_grid_are_kept():
    grid = fixed_grid((0.0, 1e13), 1e12, None, torch.tensor(SAVEAT, dtype=DT))
    for s in SAVEAT:
        assert bool((grid == s).any()), s


def _kinetics_with_fast_transient():
    """y1' = -k y1 (k = 1e6), y2' = k y1 - 1e-10 y2: a 1e-6 transient, then a decay on 1e10, to t = 1e11.

    Exact: y1 = e^{-kt}, y2 = k/(k - c) (e^{-ct} - e^{-kt}) with c = 1e-10."""
    k, c = 1e6, 1e-10

    def f(t, y):
        return torch.stack([-k * y[:, 0], k * y[:, 0] - c * y[:, 1]], 1)

    T = 1e11
    exact = torch.tensor([0.0, k / (k - c) * math.exp(-c * T)], dtype=DT)
    return ODEProblem(f, torch.tensor([[1.0, 0.0]], dtype=DT), (0.0, T)), exact


@pytest.mark.parametrize("method", ["Rosenbrock23", "Rodas4", "Rodas5P", "TRBDF2", "KenCarp4"])
def test_stiff_methods_take_the_early_transient_of_a_1e11_span_with_default_options(method):
    p, exact = _kinetics_with_fast_transient()
    rtol = 1e-6
    # the bound below is the per-step (local) contract summed over the steps: solve under that model
    sol = solve(p, method, rtol=rtol, atol=1e-10, tolerance_model="local")
    assert sol.retcode == "Success", sol.retcode
    # the transient needs steps near 1e-7 (the old span-relative floor was 1.4e-3). Local error control bounds
    # each step's error by ~rtol·|y| (atol is 1e-10 here, far below y2), and on a smooth decay those errors add
    # up with one sign: the global error is at most about (number of steps)·rtol·|y|
    err = (sol.final[0] - exact).abs()
    assert float(err[1]) <= 2 * sol.stats.naccept * rtol * float(exact[1]) and float(err[0]) <= 1e-9


def test_step_floor_follows_the_clock():
    from pysens.solvers.driver import step_floor

    t = torch.tensor([0.0, 1e-6, 1.0, 1e11], dtype=DT)
    floor = step_floor(t, 1e11)
    # near the origin the floor is 16 ulp of eps·span (~8e-20 here): far below the 1e-12 steps a 1e-6 transient needs
    assert float(floor[0]) < 1e-18 and float(floor[1]) < 1e-18 and float(floor[2]) < 1e-14 and float(floor[3]) < 1e-3
    assert bool((t + floor > t).all())  # a step at the floor still moves every clock


@pytest.mark.parametrize("method", ["TRBDF2", "KenCarp4"])
def test_esdirk_sample_takes_the_same_steps_alone_and_in_a_batch(method):
    # HIRES from two initial states: their Newton rates, Jacobian refreshes and retries fall on different steps.
    # Each row's decisions must be its own, so row 0 alone is row 0 of the batch, bit for bit (before the
    # decisions were per-sample, the batch refreshed everyone's Jacobian: row 0 differed by 2e-8..1.5e-7)
    from pysens.bench.testset import PROBLEMS

    p = PROBLEMS["hires"]
    x0 = torch.tensor(p.x0, dtype=DT)[None] * torch.tensor([[1.0], [1.3]], dtype=DT)
    # the steps themselves are the subject: the per-step tolerance this test was built with (local model)
    opts = dict(rtol=1e-5, atol=p.atol(1e-5), linsolve="dense", tolerance_model="local")
    both = solve(ODEProblem(p.rhs, x0, p.tspan), method, **opts)
    alone = solve(ODEProblem(p.rhs, x0[:1], p.tspan), method, **opts)
    assert both.retcode == "Success" and alone.retcode == "Success"
    assert alone.stats.sample_naccept[0] == both.stats.sample_naccept[0]
    assert alone.stats.sample_nreject[0] == both.stats.sample_nreject[0]
    assert torch.equal(alone.final[0], both.final[0])


def test_trbdf2_float32_at_a_tolerance_near_its_rounding_does_not_creep():
    # rtol 1e-6 is ~8 ulp of float32; TRBDF2's error estimate has a rounding floor of ~eps/γ (stage derivatives
    # are (z − ψ)/(hγ)), so the estimate was noise, every step shrank and the solve crept (t = 2.6e-5 after
    # 2000 steps). The tolerance is raised to 100 ulp with a warning, and the solve ends normally.
    x0 = torch.randn(1, 3, generator=torch.Generator().manual_seed(0)).float()
    p = ODEProblem(lambda t, x: -x, x0, (0.0, 1.0))
    with pytest.warns(UserWarning, match="rtol"):
        sol = solve(p, "TRBDF2", rtol=1e-6, atol=1e-8, maxiters=2000)
    assert sol.retcode == "Success" and sol.stats.naccept < 200
    assert float((sol.final - x0 * math.exp(-1.0)).abs().max()) < 1e-3


@pytest.mark.parametrize(
    "backend,method", [("torch", "Rodas5P"), ("torch", "KenCarp4"), ("scipy", "RadauIIA5"), ("scipy", "CVODE_BDF")]
)
def test_a_hopeless_solve_ends_with_a_failure_retcode(backend, method):
    # x' = −1e3·sign(x): after x reaches 0 at t = 1e-3 every method chatters around 0 with steps ~atol/1e3;
    # the solve must end within maxiters attempts with a non-Success retcode and the partial solution
    if method == "CVODE_BDF":
        pytest.importorskip("sksundae", reason="CVODE_BDF needs scikit-sundae")
    p = ODEProblem(lambda t, x: -1e3 * torch.sign(x), torch.ones(1, 1, dtype=DT), (0.0, 1.0))
    sol = solve(p, method, backend, rtol=1e-6, atol=1e-8, maxiters=200)
    assert sol.retcode != "Success"
    assert float(sol.t_final[0]) < 1.0 and sol.stats.naccept <= 200


def test_kencarp4_solves_e5_to_1e13_with_default_options():
    # E5 (stiff DETEST pyrolysis) to t = 1e13 at the test set's atol: KenCarp4 needs ~300 steps. Its stage Newton used
    # to stop on a contraction rate measured on the fast y4 mode, which a kept Jacobian resolves in one iteration, and
    # leave ~1.5 tolerance units of Newton error in y2, y3 at t ~ 1e8; the error estimate saw that error and the
    # steps crept (h/t ~ 1e-4, MaxIters after 2e4 attempts). The default maxiters is 1e5; the cap here only keeps a
    # regression from running for minutes.
    from pysens.bench.testset import PROBLEMS

    torch.set_num_threads(1)
    p = PROBLEMS["e5"]
    rtol = 1e-4
    sol = solve(p.problem(1), "KenCarp4", rtol=rtol, atol=p.atol(rtol), maxiters=1500)
    assert sol.retcode == "Success", (sol.retcode, float(sol.t_final[0]))
    # right to its tolerance: the test set's measure against the published values (E5's required digits follow
    # from its atol, which dominates the ~1e-22 components; pysens.bench.testset.StiffTestProblem.required_digits)
    need = float(p.required_digits(sol.final, rtol, p.atol(rtol), 1.5)[0])
    assert float(p.scd(sol.final)[0]) >= need, (float(p.scd(sol.final)[0]), need)
