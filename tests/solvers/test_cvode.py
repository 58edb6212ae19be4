"""CVODE_BDF on the scipy backend (SUNDIALS through scikit-sundae) against exact solutions of stiff linear systems.

Oracles (float64): a linear system x' = A x with A = −Q diag(λ) Qᵀ, λ log-spaced over 1..1e6 (exact: the matrix
exponential), and the method-of-lines heat equation u_t = u_xx on (0, 1) with zero Dirichlet values, whose
semi-discrete solution is exact modal decay: sin(kπx_j) is an eigenvector of the second-difference matrix with
eigenvalue −(4/Δx²) sin²(kπΔx/2).
"""

import importlib.util
import math
import sys

import pytest
import torch

from pysens.solvers import BackendNotAvailable, ODEProblem, solve

needs_sundae = pytest.mark.skipif(
    importlib.util.find_spec("sksundae") is None, reason="scikit-sundae not installed (pip install scikit-sundae)"
)

DT = torch.float64


@pytest.fixture(scope="module")
def stiff_linear():
    d = 10
    lam = torch.logspace(0, 6, d, dtype=DT)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=DT, generator=torch.Generator().manual_seed(0)))
    a = -(q * lam) @ q.T
    x0 = torch.randn(3, d, dtype=DT, generator=torch.Generator().manual_seed(1))
    problem = ODEProblem(lambda t, x: x @ a.T.to(x.dtype), x0, (0.0, 1.0))
    return problem, lambda t: x0 @ torch.linalg.matrix_exp(t * a).T


N_HEAT = 63
DX = 1.0 / (N_HEAT + 1)
GRID = torch.arange(1, N_HEAT + 1, dtype=DT) * DX
MODES = torch.tensor([[1.0, 3.0], [2.0, 5.0]], dtype=DT)  # two samples, two modes each
AMPS = torch.tensor([[1.0, 0.5], [1.0, -0.3]], dtype=DT)


def heat_rhs(t, u):
    padded = torch.nn.functional.pad(u, (1, 1))
    return (padded[:, 2:] - 2 * u + padded[:, :-2]) / DX**2


def heat_exact(t: float) -> torch.Tensor:
    rates = -(4 / DX**2) * torch.sin(MODES * math.pi * DX / 2) ** 2
    return sum(
        AMPS[:, i : i + 1] * torch.exp(rates[:, i : i + 1] * t) * torch.sin(MODES[:, i : i + 1] * math.pi * GRID)
        for i in range(2)
    )


SAVE = [0.0, 1e-4, 0.5, 1.0]


@needs_sundae
@pytest.mark.parametrize("linsolve", ["gmres", "dense"])
def test_stiff_linear_system_with_eigenvalues_over_six_decades(stiff_linear, linsolve):
    problem, exact = stiff_linear
    sol = solve(problem, "CVODE_BDF", backend="scipy", rtol=1e-8, atol=1e-10, saveat=SAVE, linsolve=linsolve)
    assert sol.retcode == "Success" and sol.backend == "scipy" and sol.method == "CVODE_BDF"
    for i, t in enumerate(SAVE):
        assert float((sol.x[i] - exact(t)).abs().max()) < 1e-7, t  # measured 7e-9 (GMRES), 5e-9 (dense)
    assert sol.stats.naccept > 0 and sol.stats.nf > 0 and sol.stats.nreject is None
    if linsolve == "gmres":
        assert sol.stats.njvp > 0 and sol.stats.njac == 0  # matrix-free: the torch JVP only
    else:
        assert sol.stats.njac > 0 and sol.stats.njvp == 0
    assert torch.equal(sol.t_final, torch.ones(3, dtype=DT))


@needs_sundae
def test_heat_equation_matches_exact_modal_decay_and_dense_agrees_with_gmres():
    problem = ODEProblem(heat_rhs, heat_exact(0.0), (0.0, 0.1))
    saveat = [0.0, 0.01, 0.1]
    sols = {
        ls: solve(problem, "CVODE_BDF", backend="scipy", rtol=1e-8, atol=1e-10, saveat=saveat, linsolve=ls)
        for ls in ("gmres", "dense")
    }
    for sol in sols.values():
        assert sol.retcode == "Success"
        for i, t in enumerate(saveat):
            assert float((sol.x[i] - heat_exact(t)).abs().max()) < 1e-7  # measured 6e-9
    assert torch.allclose(sols["gmres"].x, sols["dense"].x, atol=2e-8)


@needs_sundae
def test_preconditioner_cuts_the_krylov_work():
    # exact (I - γA)⁻¹ for the second-difference matrix A: GMRES then converges in one iteration
    a = (torch.diag(torch.full((N_HEAT,), -2.0, dtype=DT)) + torch.diag(torch.ones(N_HEAT - 1, dtype=DT), 1)) / DX**2
    a = a + torch.diag(torch.ones(N_HEAT - 1, dtype=DT), -1) / DX**2

    def precond(t, x, gamma, v):
        m = torch.eye(N_HEAT, dtype=DT) - gamma[:, None, None] * a
        return torch.linalg.solve(m, v.unsqueeze(-1)).squeeze(-1)

    problem = ODEProblem(heat_rhs, heat_exact(0.0), (0.0, 0.1))
    plain = solve(problem, "CVODE_BDF", backend="scipy", rtol=1e-8, atol=1e-10)
    pre = solve(problem, "CVODE_BDF", backend="scipy", rtol=1e-8, atol=1e-10, precond=precond)
    assert pre.retcode == "Success" and pre.extra["nprecond"] > 0
    assert float((pre.final - heat_exact(0.1)).abs().max()) < 1e-7
    assert pre.stats.njvp < plain.stats.njvp


@needs_sundae
def test_backward_time_and_float32(stiff_linear):
    problem, exact = stiff_linear
    # x' = -A x from t = 1 down to 0 is x(0) = e^{A} x(1): the same stiff decay, run backwards
    back = ODEProblem(lambda t, x: -problem.f(t, x), problem.x0, (1.0, 0.0))
    sol = solve(back, "CVODE_BDF", backend="scipy", rtol=1e-8, atol=1e-10)
    assert sol.retcode == "Success" and float((sol.final - exact(1.0)).abs().max()) < 1e-7
    # float32 states: CVODE works in float64 but the RHS rounds to float32, so keep the problem mildly stiff
    # (with the 1e6 eigenvalue the RHS noise, 1e-7·1e6, defeats rtol 1e-6 and CVODE grinds on tiny steps)
    heat = ODEProblem(heat_rhs, heat_exact(0.0).float(), (0.0, 0.01))
    sol32 = solve(heat, "CVODE_BDF", backend="scipy", rtol=1e-5, atol=1e-7)
    assert sol32.retcode == "Success" and sol32.final.dtype == torch.float32 and sol32.t.dtype == torch.float32
    assert float((sol32.final.double() - heat_exact(0.01)).abs().max()) < 1e-4


@needs_sundae
def test_nan_rhs_is_unstable_with_the_partial_solution():
    def f(t, x):
        return torch.where((t > 0.5)[:, None], torch.full_like(x, math.nan), -x)

    problem = ODEProblem(f, torch.ones(2, 2, dtype=DT), (0.0, 1.0))
    sol = solve(problem, "CVODE_BDF", backend="scipy", rtol=1e-8, atol=1e-10, saveat=[0.0, 0.25, 1.0])
    assert sol.retcode == "Unstable" and "non-finite right-hand side" in sol.message
    assert torch.allclose(sol.x[1], torch.full((2, 2), math.exp(-0.25), dtype=DT), rtol=1e-6)
    assert torch.isnan(sol.x[2]).all() and bool((sol.t_final <= 0.5).all())


@needs_sundae
def test_maxiters_is_a_retcode(stiff_linear):
    problem, _ = stiff_linear
    sol = solve(problem, "CVODE_BDF", backend="scipy", rtol=1e-8, atol=1e-10, maxiters=20, saveat=[0.0, 1.0])
    assert sol.retcode == "MaxIters" and sol.stats.naccept == 20
    assert torch.equal(sol.x[0], problem.x0) and torch.isnan(sol.x[1]).all()


def test_missing_scikit_sundae_is_a_clear_error(stiff_linear, monkeypatch):
    problem, _ = stiff_linear
    monkeypatch.setitem(sys.modules, "sksundae", None)  # makes `import sksundae` raise ImportError
    with pytest.raises(BackendNotAvailable, match=r"pip install scikit-sundae.*pysens\[sundials\]"):
        solve(problem, "CVODE_BDF", backend="scipy")
    # the other scipy methods do not need it
    assert solve(problem, "BDF", backend="scipy", rtol=1e-6, atol=1e-8).retcode == "Success"


@needs_sundae
def test_bad_cvode_options(stiff_linear):
    problem, _ = stiff_linear
    with pytest.raises(ValueError, match="linsolve"):
        solve(problem, "CVODE_BDF", backend="scipy", linsolve="lu")
    with pytest.raises(ValueError, match="krylov_dim"):
        solve(problem, "CVODE_BDF", backend="scipy", krylov_dim=0)
    with pytest.raises(ValueError, match="linsolve='gmres' only"):
        solve(problem, "CVODE_BDF", backend="scipy", linsolve="dense", krylov_dim=5)
    with pytest.raises(TypeError, match="krylov_tol"):
        solve(problem, "CVODE_BDF", backend="scipy", krylov_tol=1e-4)  # not exposed by scikit-sundae
