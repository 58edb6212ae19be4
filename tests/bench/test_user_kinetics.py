"""The numpy peers of stiff-speed (what scipy/CVODE users write) solve the same problems as the torch test set."""

import numpy as np
import pytest
import torch

from pysens.bench import testset, user_kinetics
from pysens.bench.user_kinetics import PROBLEMS, cvode_solve, scipy_solve


def _states(name: str, n: int = 5) -> np.ndarray:
    x0 = np.array(testset.PROBLEMS[name].x0)
    g = np.random.default_rng(3)
    return x0 * (1 + 0.5 * g.random((n, x0.size))) + 0.1 * g.random((n, x0.size))


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_rhs_is_the_test_sets_torch_rhs(name):
    """Same formulas, same operation order: equal to a couple of ulps of the largest term (here 4 eps relative)."""
    y = _states(name)
    ours = PROBLEMS[name].rhs(y)
    theirs = testset.PROBLEMS[name].rhs(torch.zeros(len(y), dtype=torch.float64), torch.from_numpy(y)).numpy()
    assert ours.shape == y.shape
    np.testing.assert_allclose(ours, theirs, rtol=4 * np.finfo(float).eps, atol=1e-300)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_jacobian_is_the_exact_derivative(name):
    """Against reverse-mode autodiff of the torch right-hand side, row by row; the entries are products of two
    rounded numbers at most, so 4 eps relative to each row's largest entry."""
    y = _states(name)
    ours = PROBLEMS[name].jacobian(y)
    f = testset.PROBLEMS[name].rhs
    for b in range(len(y)):
        row = torch.from_numpy(y[b : b + 1])
        exact = torch.autograd.functional.jacobian(lambda u: f(torch.zeros(1, dtype=torch.float64), u)[0], row)[:, 0]
        scale = np.abs(exact.numpy()).max()
        np.testing.assert_allclose(ours[b], exact.numpy(), rtol=0, atol=4 * np.finfo(float).eps * scale)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_jacobian_entries_are_exact_each_to_1e12_relative(name):
    """Entry by entry (the row-scaled check above lets an entry far below its row's largest, like E5's rate constant
    a = 7.89e-10 next to 1e8, go unchecked): every entry is a sum of at most a dozen products of two rounded numbers,
    summed in a different order than autodiff's, so at these random states (no cancellation beyond a digit or two)
    1e-12 relative holds; structural zeros must be zero in both."""
    y = _states(name, 8)
    ours = PROBLEMS[name].jacobian(y)
    f = testset.PROBLEMS[name].rhs
    for b in range(len(y)):
        row = torch.from_numpy(y[b : b + 1])
        exact = torch.autograd.functional.jacobian(lambda u: f(torch.zeros(1, dtype=torch.float64), u)[0], row)[:, 0]
        np.testing.assert_allclose(ours[b], exact.numpy(), rtol=1e-12, atol=0)


def _rober_solves():
    P = testset.PROBLEMS["rober"]
    yield from (scipy_solve("rober", m, P.tspan, P.atol) for m in user_kinetics.SCIPY_METHODS)
    pytest.importorskip("sksundae", reason="scikit-sundae not installed")
    yield from (cvode_solve("rober", P.tspan, P.atol, ls) for ls in ("dense", "band"))


def test_every_peer_reaches_the_published_rober_values():
    """ROBER to t = 1e11 at rtol 1e-8 (atol 1e-18 by the suite's pairing): each solver's own error control, no
    tolerance map, so ≥ 5 correct digits against the published final values is the bar (their global error runs
    up to ~1-2 digits above rtol on this problem)."""
    P = testset.PROBLEMS["rober"]
    x0 = torch.tensor([P.x0], dtype=torch.float64)
    for solve in _rober_solves():
        x, code, nf = solve(x0, 1e-8)
        assert code == "Success" and nf > 0
        assert float(P.scd(x)[0]) >= 5.0


def test_whole_batch_layout_keeps_rows_apart():
    """Three different rows in one system give what each row gives alone. At rtol 1e-7 both runs are within ~1e-6 of
    the exact answer (HIRES's global error stays within 10× rtol), so 1e-5 relative separates a right layout from
    rows mixed up (errors of order one)."""
    P = testset.PROBLEMS["hires"]
    x0 = torch.from_numpy(_states("hires", 3))
    for solve in (scipy_solve("hires", "Radau", P.tspan, P.atol), scipy_solve("hires", "LSODA", P.tspan, P.atol)):
        batch, code, _ = solve(x0, 1e-7)
        assert code == "Success"
        alone = torch.cat([solve(x0[i : i + 1], 1e-7)[0] for i in range(3)])
        torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-10)


def test_bad_arguments_are_named():
    P = testset.PROBLEMS["rober"]
    with pytest.raises(ValueError, match="method"):
        scipy_solve("rober", "RK45", P.tspan, P.atol)
    pytest.importorskip("sksundae", reason="scikit-sundae not installed")
    with pytest.raises(ValueError, match="linsolver"):
        cvode_solve("rober", P.tspan, P.atol, "gmres")
