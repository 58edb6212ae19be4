"""The scipy backend against exact solutions and the torch backend."""

import math

import pytest
import torch

from pysens.solvers import ODEProblem, solve

DT = torch.float64


def rotation_decay(t, x):
    a = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=x.dtype)
    return x @ a.T


def exact(x0, t):
    a = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=DT)
    return x0 @ torch.linalg.matrix_exp(t * a).T


X0 = torch.tensor([[1.0, 0.0], [0.3, -2.0], [4.0, 1.0]], dtype=DT)


@pytest.mark.parametrize("method", ["DP5", "DP8", "RadauIIA5", "BDF", "LSODA"])
def test_scipy_methods_hit_exact_solution(method):
    p = ODEProblem(rotation_decay, X0, (0.0, 5.0))
    sol = solve(p, method, backend="scipy", rtol=1e-11, atol=1e-12, saveat=[0.0, 2.5, 5.0])
    assert sol.retcode == "Success" and sol.backend == "scipy"
    tol = 1e-6 if method in ("BDF", "LSODA") else 1e-8
    for i, s in enumerate([0.0, 2.5, 5.0]):
        assert float((sol.x[i] - exact(X0, s)).abs().max()) < tol
    assert sol.stats.nf > 0 and sol.stats.naccept > 0


def test_scipy_aliases_and_backward_time():
    p = ODEProblem(rotation_decay, X0, (5.0, 0.0))
    sol = solve(p, "RK45", backend="scipy", rtol=1e-10, atol=1e-12)
    assert sol.method == "DP5"
    assert float((sol.final - exact(X0, -5.0)).abs().max()) < 1e-7


def test_block_diagonal_jacobian_matches_dense():
    def f(t, x):
        return torch.sin(x) * t[:, None] + x.roll(1, dims=1) ** 2

    x = torch.randn(3, 4, dtype=DT)
    t = torch.full((3,), 0.7, dtype=DT)
    p = ODEProblem(f, x, (0.0, 1.0))
    blocks = p.rhs_jacobian(t, x)
    for b in range(3):
        dense = torch.autograd.functional.jacobian(lambda y: f(t[:1], y[None])[0], x[b])
        assert torch.allclose(blocks[b], dense, atol=1e-14)


def test_results_keep_callers_dtype_and_implicit_jacobian_is_used():
    x0 = X0.float()
    p = ODEProblem(rotation_decay, x0, (0.0, 1.0))
    sol = solve(p, "RadauIIA5", backend="scipy", rtol=1e-8, atol=1e-10)
    assert sol.x.dtype == torch.float32 and sol.t.dtype == torch.float32
    assert sol.stats.njac >= 1
    assert float((sol.final.double() - exact(X0, 1.0)).abs().max()) < 1e-5


def test_scipy_failure_is_a_retcode():
    p = ODEProblem(lambda t, x: x * x, torch.ones(1, 1, dtype=DT), (0.0, 2.0))
    sol = solve(p, "DP5", backend="scipy", rtol=1e-8, atol=1e-10, saveat=[0.0, 0.5, 2.0])
    assert sol.retcode in ("DtLessThanMin", "Unstable", "MaxIters")
    assert math.isclose(float(sol.x[1, 0, 0]), 2.0, rel_tol=1e-6)
    assert torch.isnan(sol.x[2]).all()
