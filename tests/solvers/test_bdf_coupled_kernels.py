"""The step pieces of QNDF's coupled layout (pysens.solvers.bdf_coupled) against their definitions, and their batch-size
independence: every piece computes a sample's numbers with the same operations in the same order whatever the batch
is, so B copies of one state take the steps of that state alone (test_bdf.py checks that end to end)."""

from __future__ import annotations

import pytest
import torch

from pysens.solvers import ODEProblem
from pysens.solvers.bdf import MAX_ORDER
from pysens.solvers.bdf_coupled import CoupledQNDFSolver
from pysens.solvers.options import build_options

DT = torch.float64
EPS = torch.finfo(DT).eps


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _solver(x0: torch.Tensor, jac: torch.Tensor) -> CoupledQNDFSolver:
    """A coupled solver on x' = J_b x (per-sample J_b), with its tables and differences set up but not run."""
    problem = ODEProblem(lambda t, x: (jac @ x[:, :, None])[:, :, 0], x0, (0.0, 1.0), jac=lambda t, x: jac)
    opts = build_options(
        (0.0, 1.0), rtol=1e-6, atol=1e-9, dt=None, saveat=None, adaptive=None, method_adaptive=True,
        method_name="QNDF", timesteps=None, maxiters=100, dtmin=None, dtmax=None, generator=None,
        extra={"batch": "coupled"},
    )  # fmt: skip
    solver = CoupledQNDFSolver(problem, opts)
    solver._setup_coupled()
    solver._eye = None
    solver._alloc_differences()
    return solver


def _data(B: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    jac = -torch.randn(B, d, d, generator=g, dtype=DT) * 10.0 ** torch.randint(-2, 4, (B, d, 1), generator=g)
    x0 = torch.randn(B, d, generator=g, dtype=DT) * 10.0 ** torch.randint(-8, 1, (B, d), generator=g)
    diffs = torch.randn(B, d, MAX_ORDER + 3, generator=g, dtype=DT) * torch.logspace(0, -7, MAX_ORDER + 3, dtype=DT)
    return x0, jac, diffs


@pytest.mark.parametrize("d", [3, 8, 24])
def test_newton_solve_against_torch_linalg_solve(d):
    """W⁻¹ r with W = I − c J from the folded-scale inverse (bmm below d² = 400, a broadcast product above) equals
    torch.linalg.solve's LU solve to the rounding of two O(d)-term products with W⁻¹ (the rows of W are scaled: the
    system is well conditioned relative to each component's scale, so cond(W) enters through W's own entries)."""
    x0, jac, _ = _data(16, d)
    solver = _solver(x0, jac)
    solver._set_jacobian(0.0, x0)
    c = 0.37
    assert not solver._factor(c)
    W = torch.eye(d, dtype=DT) - c * jac
    r = torch.randn(16, d, dtype=DT, generator=torch.Generator().manual_seed(1))
    got = solver._solve(r)
    want = torch.linalg.solve(W, r)
    # residual bound: |W x - r| <= 4 d eps cond(W) (|W||x| + |r|), cond measured per sample
    cond = torch.linalg.cond(W)[:, None]
    resid = ((W @ got[:, :, None])[:, :, 0] - r).abs()
    bound = 4 * d * EPS * cond * ((W.abs() @ got.abs()[:, :, None])[:, :, 0] + r.abs())
    assert bool((resid <= bound).all()), float((resid / bound).max())
    assert torch.allclose(got, want, rtol=4 * d * EPS * float(cond.max()), atol=0.0)


def test_singular_newton_matrix_is_reported():
    x0, jac, _ = _data(4, 3)
    jac[2] = torch.eye(3, dtype=DT)  # W = I − 1·I = 0 for sample 2 at c = 1
    solver = _solver(x0, jac)
    solver._set_jacobian(0.0, x0)
    assert solver._factor(1.0)
    assert not solver._factor(0.5)


@pytest.mark.parametrize("k", range(1, MAX_ORDER + 1))
def test_update_and_predictor_against_their_definitions(k):
    """After an accepted step of order k: D'_i = Σ_{i≤j≤k} D_j + d (i ≤ k), D'_{k+1} = d, D'_{k+2} = d − D_{k+1},
    the rest unchanged (to k+1 additions' rounding); y⁰ = Σ_{j≤k} D_j and ψ = Σ_{1≤j≤k} γ_j D_j / α_k likewise."""
    x0, jac, diffs = _data(8, 3)
    solver = _solver(x0, jac)
    D = solver._alloc_differences()
    D.copy_(diffs)
    y_pred, psi = solver._predict(k)
    tab = solver.tab
    pp = torch.einsum("rj,bij->rbi", tab.pred_psi[k], diffs[..., : MAX_ORDER + 1])
    gross = torch.einsum("rj,bij->rbi", tab.pred_psi[k].abs(), diffs[..., : MAX_ORDER + 1].abs())
    assert bool(((y_pred - pp[0]).abs() <= (k + 1) * EPS * gross[0]).all())
    assert bool(((psi - pp[1]).abs() <= 2 * (k + 1) * EPS * gross[1]).all())

    corr = torch.randn(8, 3, dtype=DT, generator=torch.Generator().manual_seed(2)) * 1e-3
    want = torch.einsum("ij,bcj->bci", tab.update[k], diffs) + tab.update_corr[k] * corr[..., None]
    gross = torch.einsum("ij,bcj->bci", tab.update[k].abs(), diffs.abs()) + tab.update_corr[k] * corr.abs()[..., None]
    solver._update(k, corr)
    assert bool(((D - want).abs() <= (k + 2) * EPS * gross).all())
    assert torch.equal(D[..., k + 3 :], diffs[..., k + 3 :])


@pytest.mark.parametrize("d", [3, 8, 24])
def test_step_pieces_do_not_depend_on_the_batch_size(d):
    """Each piece run on a batch of 257 distinct samples gives, for samples at the start, middle and end, the bits it
    gives on that sample alone."""
    B = 257
    x0, jac, diffs = _data(B, d, seed=d)
    corr = torch.randn(B, d, dtype=DT, generator=torch.Generator().manual_seed(3)) * 1e-3

    def pieces(rows):
        solver = _solver(x0[rows], jac[rows])
        solver._set_jacobian(0.0, x0[rows])
        solver._factor(0.29)
        D = solver._alloc_differences()
        D.copy_(diffs[rows])
        out = [solver._winv.clone(), solver._solve(corr[rows]), *solver._predict(4)]
        solver._update(4, corr[rows])
        out.append(D.clone())
        solver._rescale(5, 0.61)
        out.append(D.clone())
        return out

    whole = pieces(slice(None))
    for b in (0, B // 2, B - 1):
        alone = pieces(slice(b, b + 1))
        for w, a in zip(whole, alone, strict=True):
            assert torch.equal(w[b : b + 1], a)
