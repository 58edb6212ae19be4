"""NON-NUMERICAL orchestration tests of the julia backend, through ``pysens.solve(..., backend="julia")``.

Julia is replaced by :class:`FakeJuliaSession`, which records each ``PySensSolvers`` call and answers with a
made-up result (see fake_session.py). What is checked: which entry point is called with which positional
arguments and keywords (solver name, Jacobian mode, tolerances, save times, step grids, Brownian grids, seeds),
and how results, return codes and statistics are mapped back. Nothing here checks Julia's numerics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pysens.solvers import BrownianGrid, ODEProblem, SDEProblem, solve
from pysens.solvers.backends import julia_backend as jb
from pysens.solvers.problem import SplitODEProblem, SplitSDEProblem

from .fake_session import FakeJuliaSession


@pytest.fixture
def fake(monkeypatch) -> FakeJuliaSession:
    session = FakeJuliaSession()
    monkeypatch.setattr(jb, "_status", (True, "fake Julia (non-numerical test double)"))
    monkeypatch.setattr(jb, "_session_cache", session)
    return session


def decay_problem(B=3, d=2, dtype=torch.float64, tspan=(0.0, 1.0)):
    x0 = torch.arange(1.0, B * d + 1, dtype=dtype).reshape(B, d)
    return ODEProblem(lambda t, x: -x * (1 + t[:, None]), x0, tspan)


def only_call(session: FakeJuliaSession):
    calls = [c for c in session.calls if c[0] != "seval"]
    assert len(calls) == 1
    return calls[0]


def summary(call) -> dict:
    """A transcript of one call: entry point, positional argument kinds, and the keyword values that are plain."""
    function, args, kwargs = call

    def kind(a):
        if callable(a):
            return "callable"
        if isinstance(a, np.ndarray):
            return f"array{a.shape}"
        return a

    plain = {k: (kind(v) if callable(v) or isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
    return {"function": function, "args": [kind(a) for a in args], "kwargs": plain}


def test_ode_call_transcript_and_result_mapping(fake):
    prob = decay_problem(dtype=torch.float32)
    sol = solve(prob, "Tsit5", backend="julia", rtol=1e-7, atol=1e-9, saveat=[0.0, 0.5, 1.0])
    assert summary(only_call(fake)) == {
        "function": "solve_ode",
        "args": ["callable", "array(6,)", (0.0, 1.0), "Tsit5"],
        "kwargs": {"saveat": "array(3,)", "reltol": 1e-7, "abstol": 1e-9, "maxiters": 100_000},
    }
    _, args, kwargs = only_call(fake)
    np.testing.assert_array_equal(args[1], prob.x0.to(torch.float64).reshape(-1).numpy())
    np.testing.assert_array_equal(kwargs["saveat"], [0.0, 0.5, 1.0])
    # the fake's answer u0 + t f(0, u0), mapped back to [n, B, d] in the caller's dtype
    expected = torch.stack([prob.x0 + tk * prob.f(torch.zeros(3), prob.x0) for tk in (0.0, 0.5, 1.0)])
    assert sol.x.shape == (3, 3, 2) and sol.x.dtype == torch.float32 and sol.t.dtype == torch.float32
    torch.testing.assert_close(sol.x, expected)
    assert sol.backend == "julia" and sol.method == "Tsit5" and sol.retcode == "Success"
    assert sol.sample_retcodes == ["Success"] * 3
    torch.testing.assert_close(sol.t_final, torch.ones(3))
    st = sol.stats
    assert (st.nf, st.njac, st.nlinsolve, st.nfactor, st.naccept, st.nreject) == (1, 2, 5, 3, 7, 1)
    assert sol.extra["julia_stats"]["nf"] == 11 and sol.extra["julia_call"] == "solve_ode"


def test_tensor_atol_becomes_a_flat_vector(fake):
    prob = decay_problem()
    solve(prob, "DP5", backend="julia", atol=torch.tensor([1e-6, 1e-8], dtype=torch.float64))
    abstol = only_call(fake)[2]["abstol"]
    np.testing.assert_array_equal(abstol, np.tile([1e-6, 1e-8], 3))


def test_fixed_step_gives_dt_and_the_grid_as_tstops(fake):
    solve(decay_problem(), "Euler", backend="julia", dt=0.25, saveat=[0.0, 0.5, 1.0])
    kwargs = only_call(fake)[2]
    assert kwargs["adaptive"] is False and kwargs["dt"] == 0.25
    np.testing.assert_allclose(kwargs["tstops"], [0.0, 0.25, 0.5, 0.75, 1.0])


def test_backward_ode_is_handed_over_as_is(fake):
    sol = solve(decay_problem(tspan=(1.0, 0.2)), "Vern7", backend="julia", saveat=[1.0, 0.6, 0.2])
    _, args, kwargs = only_call(fake)
    assert args[2] == (1.0, 0.2)
    np.testing.assert_array_equal(kwargs["saveat"], [1.0, 0.6, 0.2])
    assert not sol.extra["time_flipped"]


@pytest.mark.parametrize(
    ("method", "options", "B", "jac", "has_jvp"),
    [
        ("Rodas5P", {}, 3, "finitediff", False),  # N = 6 <= 64: dense
        ("Rodas5P", {}, 40, "krylov", True),  # N = 80 > 64: matrix-free with the torch JVP
        ("TRBDF2", {"linsolve": "gmres"}, 3, "krylov", True),
        ("FBDF", {"linsolve": "dense"}, 40, "finitediff", False),
        ("CVODE_BDF", {"linsolve": "gmres", "krylov_dim": 12}, 3, "krylov", True),
        ("RadauIIA5", {}, 40, "finitediff", False),  # dense only on the julia backend
    ],
)
def test_jacobian_mode(fake, method, options, B, jac, has_jvp):
    sol = solve(decay_problem(B=B), method, backend="julia", **options)
    kwargs = only_call(fake)[2]
    assert kwargs["jac"] == jac and ("jvp" in kwargs) == has_jvp
    assert sol.extra["jacobian"] == jac
    if "krylov_dim" in options:
        assert kwargs["krylov_dim"] == 12


def test_jvp_callback_is_the_torch_jvp(fake):
    prob = decay_problem(B=40)
    solve(prob, "Rodas5P", backend="julia")
    jvp = only_call(fake)[2]["jvp"]
    u = prob.x0.reshape(-1).numpy().copy()
    v = np.linspace(-1, 1, u.size)
    out = np.zeros_like(u)
    jvp(out, v, u, None, 0.5)
    expected = prob.rhs_jvp(torch.full((40,), 0.5, dtype=torch.float64), prob.x0, torch.from_numpy(v).reshape(40, 2))
    np.testing.assert_allclose(out, expected.reshape(-1).numpy())


def test_options_julia_cannot_honour_are_refused(fake):
    with pytest.raises(ValueError, match="precond"):
        solve(decay_problem(), "Rodas5P", backend="julia", linsolve="gmres", precond=lambda t, x, h, v: v)
    with pytest.raises(ValueError, match="dense Jacobian"):
        solve(decay_problem(), "RadauIIA5", backend="julia", linsolve="gmres")
    with pytest.raises(ValueError, match="CVODE_BDF always adapts"):
        solve(decay_problem(), "CVODE_BDF", backend="julia", dt=0.1, adaptive=False)
    assert not fake.calls


def split_heat(B=2, n=5):
    f64 = torch.float64
    lap = torch.diag(torch.full((n,), -2.0, dtype=f64)) + torch.diag(torch.ones(n - 1, dtype=f64), 1)
    return SplitODEProblem(lambda t, x: x @ lap.T, lambda t, x: -0.5 * x, torch.ones(B, n, dtype=f64), (0, 1))


def test_split_ode_with_imex_method_goes_to_solve_split_ode(fake):
    prob = split_heat()
    sol = solve(prob, "KenCarp4", backend="julia", linsolve="gmres")
    function, args, kwargs = only_call(fake)
    assert function == "solve_split_ode" and args[4] == "KenCarp4"
    assert kwargs["jac"] == "krylov" and "jvp1" in kwargs and "jvp" not in kwargs
    # jvp1 is J(f1) v (the implicit part), not J(f1 + f2) v
    u, v, out = np.ones(10), np.arange(10.0), np.zeros(10)
    kwargs["jvp1"](out, v, u, None, 0.0)
    expected = prob.implicit_jvp(torch.zeros(2), prob.x0, torch.arange(10.0, dtype=torch.float64).reshape(2, 5))
    np.testing.assert_allclose(out, expected.reshape(-1).numpy())
    assert sol.extra["split"] and sol.stats.nf == 1 and sol.extra["nf2"] == 1


def test_split_ode_with_a_non_imex_method_solves_the_sum(fake):
    prob = split_heat()
    solve(prob, "Rodas5P", backend="julia")
    function, args, _ = only_call(fake)
    assert function == "solve_ode"
    out = np.zeros(10)
    args[0](out, np.ones(10), None, 0.0)
    np.testing.assert_allclose(out, prob.f(torch.zeros(2), prob.x0).reshape(-1).numpy())


def ou(B=4, tspan=(0.0, 1.0), steps=8, noise="additive", seed=0, split=False):
    x0 = torch.ones(B, 1, dtype=torch.float64)
    grid = BrownianGrid.sample(tspan, steps, x0.shape, generator=torch.Generator().manual_seed(seed))
    g = lambda t, x: 0.5 * torch.ones_like(x)  # noqa: E731
    if split:
        return SplitSDEProblem(lambda t, x: -x, lambda t, x: 0.1 * x, g, x0, tspan, noise, grid), grid
    return SDEProblem(lambda t, x: -x, g, x0, tspan, noise, grid), grid


def test_sde_replays_the_brownian_grid(fake):
    prob, grid = ou()
    sol = solve(prob, "EM", backend="julia", dt=0.25, saveat=[0.0, 0.5, 1.0])
    function, args, kwargs = only_call(fake)
    assert function == "solve_sde" and args[4] == "EM"
    t_grid, w_grid = args[5], args[6]
    np.testing.assert_array_equal(t_grid, grid.times.numpy())
    np.testing.assert_array_equal(w_grid, grid.path.reshape(9, -1).numpy())
    assert "Z_grid" not in kwargs and "seed" not in kwargs
    assert kwargs["adaptive"] is False and kwargs["dt"] == 0.25
    # fake answer: x0 + t f + g W(t), so the replayed path shows up in the result
    for k, tk in enumerate([0.0, 0.5, 1.0]):
        expected = prob.x0 - tk * prob.x0 + 0.5 * grid.path[grid.index_of(tk)]
        torch.testing.assert_close(sol.x[k], expected)
    assert sol.extra["ng"] == 1


def test_methods_needing_z_get_a_second_path_from_the_generator(fake):
    prob, grid = ou()
    solve(prob, "SOSRA", backend="julia", generator=torch.Generator().manual_seed(3))
    z1 = only_call(fake)[2]["Z_grid"]
    assert z1.shape == (9, 4) and np.all(z1[0] == 0)
    kwargs = only_call(fake)[2]
    np.testing.assert_array_equal(kwargs["tstops"], kwargs["saveat"])  # adaptive SDE steps onto save times
    fake.calls.clear()
    solve(prob, "SOSRA", backend="julia", generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(only_call(fake)[2]["Z_grid"], z1)  # same seed, same Z
    # Z is a Brownian path on the grid: increments of variance |dt| (loose check on 8 x 4 draws)
    assert 0.2 < float(np.var(np.diff(z1, axis=0)) / (1 / 8)) < 3.0


def test_sde_without_a_grid_passes_a_seed_from_the_generator(fake):
    x0 = torch.ones(2, 1, dtype=torch.float64)
    prob = SDEProblem(lambda t, x: -x, lambda t, x: torch.ones_like(x), x0, (0.0, 1.0), "additive")
    solve(prob, "SRA1", backend="julia", generator=torch.Generator().manual_seed(5))
    _, args, kwargs = only_call(fake)
    assert args[5] is None and args[6] is None and "Z_grid" not in kwargs
    seed = kwargs["seed"]
    fake.calls.clear()
    solve(prob, "SRA1", backend="julia", generator=torch.Generator().manual_seed(5))
    assert only_call(fake)[2]["seed"] == seed and 0 < seed < 2**62


def test_backward_sde_runs_in_flipped_time(fake):
    prob, grid = ou(tspan=(1.0, 0.0))
    sol = solve(prob, "EM", backend="julia", dt=0.125, saveat=[1.0, 0.5, 0.0])
    _, args, kwargs = only_call(fake)
    assert args[3] == (-1.0, -0.0)
    np.testing.assert_array_equal(args[5], -grid.times.numpy())
    np.testing.assert_array_equal(kwargs["saveat"], [-1.0, -0.5, -0.0])
    np.testing.assert_allclose(kwargs["tstops"], -np.linspace(1.0, 0.0, 9))
    # mapped back to t: the fake's answer x0 + (t - t0) f + g W(t) in the original time
    for k, tk in enumerate([1.0, 0.5, 0.0]):
        expected = prob.x0 + (tk - 1.0) * (-prob.x0) + 0.5 * grid.path[grid.index_of(tk)]
        torch.testing.assert_close(sol.x[k], expected)
    torch.testing.assert_close(sol.t, torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))
    assert sol.extra["time_flipped"]


def test_split_sde_routing(fake):
    prob, _ = ou(split=True)
    solve(prob, "SKenCarp", backend="julia")
    function, args, kwargs = only_call(fake)
    assert function == "solve_split_sde" and args[5] == "SKenCarp" and "Z_grid" in kwargs
    fake.calls.clear()
    # ImplicitEM is IMEX on torch only; StochasticDiffEq's ImplicitEM takes the whole drift implicitly
    solve(prob, "ImplicitEM", backend="julia", dt=0.25, theta=0.5)
    function, args, kwargs = only_call(fake)
    assert function == "solve_sde" and kwargs["theta"] == 0.5
    out = np.zeros(4)
    args[0](out, np.ones(4), None, 0.0)
    np.testing.assert_allclose(out, np.full(4, -0.9))


@pytest.mark.parametrize(
    ("julia", "ours"),
    [
        ("Success", "Success"),
        ("MaxIters", "MaxIters"),
        ("DtLessThanMin", "DtLessThanMin"),
        ("DtNaN", "Unstable"),
        ("Unstable", "Unstable"),
        ("ConvergenceFailure", "ConvergenceFailure"),
        ("InitialFailure", "Failure"),
    ],
)
def test_retcodes_and_partial_solutions(monkeypatch, julia, ours):
    session = FakeJuliaSession(retcode=julia, reach=None if julia == "Success" else 2)
    monkeypatch.setattr(jb, "_status", (True, "fake"))
    monkeypatch.setattr(jb, "_session_cache", session)
    sol = solve(decay_problem(), "Tsit5", backend="julia", saveat=[0.0, 0.25, 0.5, 1.0])
    assert sol.retcode == ours and sol.sample_retcodes == [ours] * 3
    if julia == "Success":
        assert not torch.isnan(sol.x).any() and sol.message == ""
    else:
        assert not torch.isnan(sol.x[:2]).any() and torch.isnan(sol.x[2:]).all()
        torch.testing.assert_close(sol.t_final, torch.full((3,), 0.25, dtype=torch.float64))
        assert julia in sol.message


def test_an_error_in_the_torch_function_is_raised_as_itself(fake):
    def broken(t, x):
        raise ArithmeticError("score model failed")

    prob = ODEProblem(broken, torch.ones(2, 1, dtype=torch.float64), (0.0, 1.0))

    class JuliaError(Exception):
        pass

    def wrapping_call(function, *args, **kwargs):  # what juliacall does with a Python error inside Julia
        try:
            return FakeJuliaSession.call(fake, function, *args, **kwargs)
        except Exception as exc:
            raise JuliaError("PyException from a callback") from exc

    fake.call = wrapping_call
    with pytest.raises(ArithmeticError, match="score model failed"):
        solve(prob, "Tsit5", backend="julia")


def test_unavailable_backend_is_a_clear_error_and_nothing_is_called(monkeypatch):
    monkeypatch.setattr(jb, "_status", (False, "Julia is not installed: test"))
    session = FakeJuliaSession()
    monkeypatch.setattr(jb, "_session_cache", session)
    from pysens.solvers import BackendNotAvailable

    with pytest.raises(BackendNotAvailable, match="Julia is not installed"):
        solve(decay_problem(), "Tsit5", backend="julia")
    assert session.calls == []
    assert math.isclose(float(solve(decay_problem(), "Tsit5").final[0, 0]), math.exp(-1.5), rel_tol=1e-3)
