"""Numerical failure is a retcode with the partial solution; misuse is an error naming the argument."""

import math
import time

import pytest
import torch

from pysens.solvers import BackendNotAvailable, MethodNotAvailable, ODEProblem, SDEProblem, solve

DT = torch.float64


def test_max_iters_returns_partial_solution():
    p = ODEProblem(lambda t, x: -x, torch.ones(2, 1, dtype=DT), (0.0, 10.0))
    sol = solve(p, "Tsit5", rtol=1e-12, atol=1e-14, maxiters=5, saveat=[0.0, 5.0, 10.0])
    assert sol.retcode == "MaxIters"
    assert sol.sample_retcodes == ["MaxIters", "MaxIters"]
    assert torch.equal(sol.x[0], p.x0)
    assert torch.isnan(sol.x[2]).all()
    assert bool((sol.t_final < 10.0).all())


def test_blow_up_gives_dt_less_than_min():
    # x' = x^2, x(0) = 1 blows up at t = 1
    p = ODEProblem(lambda t, x: x * x, torch.ones(1, 1, dtype=DT), (0.0, 2.0))
    sol = solve(p, "DP5", rtol=1e-8, atol=1e-10, saveat=[0.0, 0.5, 2.0])
    assert sol.retcode in ("DtLessThanMin", "Unstable")
    assert torch.allclose(sol.x[1], torch.tensor([[2.0]], dtype=DT), rtol=1e-6)
    assert torch.isnan(sol.x[2]).all()
    assert 0.99 < float(sol.t_final[0]) < 1.001


def nan_after_half(t, x):
    return torch.where((t > 0.5)[:, None], torch.full_like(x, math.nan), -x)


@pytest.mark.parametrize("adaptive", [True, False])
def test_nan_rhs_is_unstable_with_partial_solution(adaptive):
    p = ODEProblem(nan_after_half, torch.ones(3, 2, dtype=DT), (0.0, 1.0))
    kw = {"rtol": 1e-6, "atol": 1e-8} if adaptive else {"dt": 0.01}
    sol = solve(p, "Tsit5", saveat=[0.0, 0.25, 1.0], **kw)
    assert sol.retcode == "Unstable"
    assert torch.allclose(sol.x[1], torch.full((3, 2), math.exp(-0.25), dtype=DT), rtol=1e-5)
    assert torch.isnan(sol.x[2]).all()


def test_one_failing_sample_does_not_spoil_the_others():
    def f(t, x):
        bad = (t > 0.5) & (torch.arange(x.shape[0]) == 1)
        return torch.where(bad[:, None], torch.full_like(x, math.nan), -x)

    sol = solve(ODEProblem(f, torch.ones(3, 1, dtype=DT), (0.0, 1.0)), "DP5", rtol=1e-8, atol=1e-10)
    assert sol.sample_retcodes == ["Success", "Unstable", "Success"]
    assert sol.retcode == "Unstable"
    assert torch.allclose(sol.final[[0, 2]], torch.full((2, 1), math.exp(-1.0), dtype=DT), rtol=1e-7)


GOOD = ODEProblem(lambda t, x: -x, torch.ones(2, 3, dtype=DT), (0.0, 1.0))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"method": "Tsit6"}, ValueError, "unknown method 'Tsit6'.*Tsit5"),
        ({"method": "Tsit5", "backend": "scipy"}, MethodNotAvailable, "not provided by backend 'scipy'.*DP5"),
        ({"backend": "jax"}, ValueError, "unknown backend 'jax'.*torch"),
        ({"rtol": -1e-3}, ValueError, "rtol"),
        ({"atol": float("nan")}, ValueError, "atol"),
        ({"atol": torch.ones(5, dtype=DT)}, ValueError, "atol"),
        ({"method": "RK4"}, ValueError, "dt"),
        ({"method": "Euler", "dt": -0.1}, ValueError, "dt"),
        ({"saveat": [0.0, 2.0]}, ValueError, "saveat"),
        ({"saveat": [0.5, 0.2]}, ValueError, "saveat"),
        ({"method": "EM", "dt": 0.1}, MethodNotAvailable, "SDE"),
        ({"maxiters": 0}, ValueError, "maxiters"),
        ({"bogus": 1}, TypeError, "bogus"),
    ],
)
def test_bad_solve_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        solve(GOOD, **kwargs)


@pytest.mark.parametrize(
    "args,exc,match",
    [
        ((lambda t, x: x, [1.0, 2.0], (0, 1)), TypeError, "x0"),
        ((lambda t, x: x, torch.ones(0, 2), (0, 1)), ValueError, "x0"),
        ((lambda t, x: x, torch.tensor([[1.0, math.inf]]), (0, 1)), ValueError, "x0.*non-finite"),
        ((lambda t, x: x, torch.ones(2, 2, dtype=torch.long), (0, 1)), TypeError, "x0.*floating"),
        ((lambda t, x: x, torch.ones(2, 2), (0, 0)), ValueError, "tspan"),
        ((lambda t, x: x, torch.ones(2, 2), (0, math.nan)), ValueError, "tspan"),
        ((None, torch.ones(2, 2), (0, 1)), TypeError, "f must be callable"),
    ],
)
def test_bad_problems(args, exc, match):
    with pytest.raises(exc, match=match):
        ODEProblem(*args)


def test_sde_problem_checks_noise_type():
    with pytest.raises(ValueError, match="noise"):
        SDEProblem(lambda t, x: x, lambda t, x: x, torch.ones(2, 1), (0, 1), noise="general")


def test_julia_backend_fails_fast_and_clearly():
    start = time.perf_counter()
    with pytest.raises(BackendNotAvailable, match="Julia is not installed"):
        solve(GOOD, "Tsit5", backend="julia")
    assert time.perf_counter() - start < 2.0
    # the other backends keep working in the same process
    assert solve(GOOD, "DP5", backend="scipy").success
    assert solve(GOOD, "Tsit5").success
