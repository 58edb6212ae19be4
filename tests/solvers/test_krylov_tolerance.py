"""The Krylov solver's stopping rule, and the ESDIRK Newton solves' tolerance (eplifac·κ after the first iteration).

On M = I − hγA with A symmetric negative definite (eigenvalues in [−1e4, −1]) every eigenvalue of M is ≥ 1, so
‖M⁻¹‖₂ ≤ 1: a weighted residual of ``tol`` leaves a weighted solution error of at most ``tol`` (the weights are one
number here, so the weighted norms are the plain ones scaled).
"""

import math

import pytest
import torch

from pysens.solvers import ODEProblem
from pysens.solvers.driver import ErrorNorm, WorkCounts
from pysens.solvers.esdirk import ESDIRK_TABLEAUS, KAPPA, LINEAR_FACTOR, ESDIRKStepper
from pysens.solvers.linalg import KrylovSolver

DT = torch.float64
EPS = torch.finfo(DT).eps


def spd_system(B=2, d=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    A = -(Q @ torch.diag(torch.logspace(0, 4, d, dtype=DT)) @ Q.T)
    u_exact = torch.randn(B, d, generator=g, dtype=DT)
    return A, u_exact


def krylov(A, x, norm, precond=None):
    solver = KrylovSolver(lambda t, y, v: v @ A.T, WorkCounts(), norm, krylov_dim=60, precond=precond)
    solver.set_jacobian(torch.zeros(x.shape[0], dtype=DT), x)
    solver.factor(torch.full((x.shape[0],), 0.1, dtype=DT))
    return solver


def weighted_rms(v, scale):
    return (v / scale).pow(2).mean(1).sqrt()


@pytest.mark.parametrize("tol", [1e-3, 1.25e-4, 1e-5])
@pytest.mark.parametrize("preconditioned", [False, True])
def test_gmres_stops_at_the_stated_weighted_residual(tol, preconditioned):
    A, u_exact = spd_system()
    x = torch.zeros_like(u_exact)
    norm = ErrorNorm(1e-6, 1e-6, x)  # scale 1e-6 everywhere at x = 0
    scale = norm.scale(x)
    M = torch.eye(A.shape[0], dtype=DT) - 0.1 * A
    precond = None
    if preconditioned:  # Jacobi: the diagonal of M, a fixed linear map
        diag = M.diagonal()
        precond = lambda t, y, hg, v: v / diag  # noqa: E731
    r = 1e-3 * (u_exact @ M.T)  # a right-hand side of 1e3 tolerance units
    solver = krylov(A, x, norm, precond)
    u = solver.solve(r, tol=tol)
    res = weighted_rms(r - u @ M.T, scale)
    # the stated residual, up to the rounding of forming it (1e3 units of RHS times eps per entry)
    assert bool((res <= tol * (1 + 1e-9) + 1e3 * 64 * EPS).all()), res
    # and ‖M⁻¹‖ ≤ 1 carries it to the solution
    err = weighted_rms(u - 1e-3 * u_exact, scale)
    assert bool((err <= tol * (1 + 1e-9) + 1e3 * 64 * EPS).all()), err
    # a per-call tol leaves the solver's own default (1e-5) for the calls without one
    assert solver.tol == 1e-5


def test_exact_preconditioner_answers_in_one_product_without_a_final_solve():
    A, u_exact = spd_system(B=3)
    x = torch.zeros_like(u_exact)
    norm = ErrorNorm(1e-6, 1e-6, x)
    M = torch.eye(A.shape[0], dtype=DT) - 0.1 * A
    calls = {"n": 0}

    def precond(t, y, hg, v):
        calls["n"] += 1
        return torch.linalg.solve(M, v.T).T

    solver = krylov(A, x, norm, precond)
    u = solver.solve(u_exact @ M.T)
    # one product, one preconditioner solve: the answer is the kept P z itself
    assert solver.work.nkrylov == 1 and calls["n"] == 1
    # exact to the rounding of one LU solve and one product (κ(M) ≤ 1e3)
    assert float((u - u_exact).abs().max()) <= 1e3 * 64 * EPS * float(u_exact.abs().max())


@pytest.mark.parametrize("name", ["KenCarp4", "TRBDF2"])
def test_newton_solves_after_the_first_use_eplifac_kappa(name):
    # z = ψ + hγ f(z), f = −x² per component (d = 80: GMRES by default), hγ = 1, ψ = 1: z* = (√5 − 1)/2. Jacobian
    # kept at x = 0.3 (contraction ≈ 0.4), predictor half a tolerance unit off: Newton needs several iterations,
    # the first at the solver's 1e-5, the later ones at LINEAR_FACTOR·κ·γ; the stage still ends within κ of z*.
    torch.set_num_threads(1)
    tab = ESDIRK_TABLEAUS[name]
    d = 80
    x = torch.full((1, d), 0.3, dtype=DT)
    prob = ODEProblem(lambda t, y: -y * y, x, (0.0, 1.0))
    norm = ErrorNorm(1e-3, 1e-3, x)
    stepper = ESDIRKStepper(prob, tab, norm, {})
    assert isinstance(stepper.linear, KrylovSolver)
    assert stepper.newton_linear_tol == pytest.approx(LINEAR_FACTOR * KAPPA * tab.gamma)
    asked = []
    solve = stepper.linear.solve
    stepper.linear.solve = lambda r, tol=None: asked.append(tol) or solve(r, tol)
    t = torch.zeros(1, dtype=DT)
    stepper.start(t, x)
    hgamma = torch.ones(1, dtype=DT)
    stepper.linear.set_jacobian(t, x)
    stepper.linear.factor(hgamma)
    z_star = (math.sqrt(5.0) - 1.0) / 2.0
    unit = tab.gamma * float(norm.scale(torch.tensor([[z_star]], dtype=DT)))
    psi = torch.ones(1, d, dtype=DT)
    z0 = torch.full((1, d), z_star + 0.5 * unit, dtype=DT)
    z, ok, _ = stepper._newton(t, psi, z0, hgamma[:, None], x)
    assert bool(ok.all())
    assert len(asked) >= 2 and asked[0] is None and all(tol == stepper.newton_linear_tol for tol in asked[1:])
    assert float((z - z_star).abs().max()) <= 2 * KAPPA * unit


def test_a_users_krylov_tol_applies_to_every_newton_solve():
    x = torch.full((1, 80), 0.3, dtype=DT)
    prob = ODEProblem(lambda t, y: -y * y, x, (0.0, 1.0))
    stepper = ESDIRKStepper(prob, ESDIRK_TABLEAUS["KenCarp4"], ErrorNorm(1e-3, 1e-3, x), {"krylov_tol": 1e-7})
    assert stepper.newton_linear_tol is None and stepper.linear.tol == 1e-7
    dense = ESDIRKStepper(prob, ESDIRK_TABLEAUS["KenCarp4"], ErrorNorm(1e-3, 1e-3, x), {"linsolve": "dense"})
    assert dense.newton_linear_tol is None
