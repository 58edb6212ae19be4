"""The log-ratio equation behind the derived bound (seed001 §3.3a/b) solved on a grid: the R ≡ 0 case, the §6.2
linear-score oracle, second-order grid convergence, and misuse."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from pysens.diffusion.processes import OU
from pysens.fokker_planck import (
    blob_mixture,
    estimate_derived_bound,
    linear_score_oracle,
    linear_score_residual,
    log_fp_residual,
    log_ratio_bound,
    solve_log_ratio,
    uniform_schedule,
)
from pysens.fokker_planck.bound import derived_w2_bound

DT = torch.float64
SIGMA0 = 0.3


def _a(t):
    """The digest's perturbed variance curve a = v_true (1 + 0.3 e^{−t}) (§6.2, check 3c), numpy or torch."""
    lib = torch if isinstance(t, torch.Tensor) else np
    return (SIGMA0**2 * lib.exp(-2 * t) + 0.5 * (1 - lib.exp(-2 * t))) * (1 + 0.3 * lib.exp(-t))


def _linear_potential(dim):
    # φ = −|x|²/(2a) + c with the gauge c = −(d/2) log(2πa): a normalised Gaussian log-density. Any other c(t) shifts
    # R by c'(t), hence h by a function of t only: ∇h, and so the mismatch and the bound, do not see it.
    def phi(x, t):
        a = _a(torch.as_tensor(t, dtype=x.dtype))
        return -(x * x).sum(1) / (2 * a) - 0.5 * dim * torch.log(2 * math.pi * a)

    return phi


def _linear_score(x, t):
    a = _a(torch.as_tensor(t, dtype=x.dtype))
    return -x / (a[:, None] if a.dim() == 1 else a)


def _v_sde(times):
    """The SDE variance V_S(t) of §6.2 (V_S' = (−2 + 2/a) V_S − 1, V_S(T) = ½), at ``times``."""
    sol = solve_ivp(
        lambda t, y: [(-2 + 2 / _a(t)) * y[0] - 1], (10.0, 0.0), [0.5], rtol=1e-12, atol=1e-14, dense_output=True
    )
    return sol.sol(times)[0]


def test_exact_log_density_has_no_score_mismatch():
    # φ = log p_t of the OU-noised blob mixture: R ≡ 0, so h stays constant in x up to the prior mismatch
    # log π − log p_T = O(e^{−2T}) (the blob is symmetric, so the O(e^{−T}) term cancels). Every spatial constant is
    # exact on the grid (the Neumann ghost cells keep it), so ∇h vanishes to round-off: no grid error at all.
    blob = blob_mixture(OU())
    # the noised law's std has an infinite t-derivative at t = 0, where R would be NaN: end at t = 1e-3
    est = estimate_derived_bound(
        blob,
        OU(),
        mismatch="log_ratio",
        potential=blob.log_density,
        half_width=4.5,
        points=36,
        n_times=40,
        schedule=uniform_schedule(10.0, 1e-3, 1),
    )
    assert est.retcode == "Success" and est.method == "log_ratio" and est.n_samples == 0
    assert est.times[0] == pytest.approx(1e-3) and est.times[-1] == pytest.approx(10.0)
    assert est.mismatch.max() < 1e-7
    assert est.bound < 1e-6
    assert est.edge_mass.max() < 1e-5  # the box holds the law
    # the sup-Lipschitz constant of a multimodal law is large at small t (the valleys between components): t = 1e-3
    # sees the valley curvature ≈ (Δm/2)²/v² of neighbouring components, far above the in-component 1/(2v) − 1
    assert est.lipschitz[0] > 20 and est.lipschitz[-1] < 0.05


def test_log_ratio_mismatch_and_bound_match_the_linear_score_oracle():
    # §6.2: s = −x/a, every law Gaussian, h = |x|²(1/a − 1/V_S)/2 + c(t), so ‖∇h‖ = |1/a − 1/V_S| √(d V_S).
    # h is quadratic, on which central differences are exact; the grid density's moments are midpoint sums of
    # Gaussians, exact up to e^{−2π² V/Δx²}. So the grid error decays faster than any power of Δx (max abs error
    # 3e-5 → 1e-8 from 24 to 32 cells here), down to the solver tolerance; the second-order rate shows on a
    # non-quadratic h (next test).
    d = 2
    oracle = linear_score_oracle(_a, OU(), dim=d)
    phi = _linear_potential(d)
    x = torch.randn(64, d, generator=torch.Generator().manual_seed(0), dtype=DT)
    t = torch.rand(64, generator=torch.Generator().manual_seed(1), dtype=DT) * 10
    a = _a(t)
    a_dot = torch.func.jvp(_a, (t,), (torch.ones_like(t),))[1]
    # the residual the solver tabulates is the closed form of linear_score_residual with c' = −(d/2) a'/a
    expected = linear_score_residual(x, t, a, a_dot, -0.5 * d * a_dot / a, OU())
    torch.testing.assert_close(log_fp_residual(phi, OU(), x, t), expected, rtol=1e-10, atol=1e-10)

    errors = {}
    for points in (24, 32):
        est = estimate_derived_bound(
            _linear_score, OU(), mismatch="log_ratio", potential=phi, half_width=5.5, points=points, n_times=200
        )
        assert est.retcode == "Success" and est.edge_mass.max() < 1e-10
        v_s = _v_sde(est.times)
        exact = np.abs(1 / _a(est.times) - 1 / v_s) * np.sqrt(d * v_s)
        errors[points] = np.abs(est.mismatch - exact).max()
        # L(t) = |f + g²/(2a)|: the linear score's Jacobian is the same in every cell
        np.testing.assert_allclose(est.lipschitz, np.abs(-1 + 0.5 / _a(est.times)), rtol=1e-12, atol=1e-14)
    assert errors[24] < 1e-4 and errors[32] < 1e-7 and errors[32] < errors[24] / 100
    # on its own save times the solved ingredients give the exact-ingredient bound; the oracle's 0.22110 (200k-point
    # quadrature) differs from it by the trapezoid rule on 200 graded times, 1.7e-4 relative
    on_grid = derived_w2_bound(est.times, np.abs(-1 + 0.5 / _a(est.times)), np.ones_like(est.times), exact)
    assert est.bound == pytest.approx(on_grid, rel=1e-6)
    assert est.bound == pytest.approx(oracle.bound, rel=5e-4)
    assert est.bound == pytest.approx(0.22110, abs=1e-4) and est.bound >= oracle.w2 == pytest.approx(0.10915, abs=5e-6)


def test_log_ratio_grid_solution_converges_at_second_order():
    # d = 1, a two-component mixture whose component variances are perturbed like §6.2's: R ≠ 0 and h is not
    # quadratic. The mismatch on 32, 64 and 128 cells: successive differences shrink ×4 per halving of Δx.
    weights = torch.tensor([0.6, 0.4], dtype=DT)

    def phi(x, t):
        e = torch.exp(-torch.as_tensor(t, dtype=DT))[..., None]
        v = (0.2 * e * e + 0.5 * (1 - e * e)) * (1 + 0.3 * e)
        means = torch.cat([e, -0.5 * e], -1)
        log_comp = -((x - means) ** 2) / (2 * v) - 0.5 * torch.log(2 * math.pi * v) + torch.log(weights)
        return torch.logsumexp(log_comp, -1)

    times = [0.1, 0.5]
    mism = [
        solve_log_ratio(phi, OU(), 4.0, n, times, dim=1, rtol=1e-6, atol=1e-8).score_mismatch().numpy()
        for n in (32, 64, 128)
    ]
    ratio = (mism[0] - mism[1]) / (mism[1] - mism[2])
    assert np.all((ratio > 3.5) & (ratio < 4.6)), ratio
    assert np.all(mism[2] > 0.05)  # a real mismatch, not round-off


def test_log_ratio_solution_and_bound_from_it():
    # the solve alone: h at the requested times (ascending), the normalised density, and the bound recomputed from
    # it with another mass floor; d = 1 is the same oracle with ‖∇h‖ = |1/a − 1/V_S| √V_S
    times = np.array([0.0, 0.5, 2.0, 10.0])
    sol = solve_log_ratio(_linear_potential(1), OU(), 5.0, 48, times, dim=1, rtol=1e-7, atol=1e-9)
    assert sol.retcode == "Success" and sol.h.shape == (4, 48) and sol.log_density.shape == (4, 48)
    np.testing.assert_allclose(sol.times.numpy(), times)
    np.testing.assert_allclose(sol.weights().sum(1).numpy(), 1.0, rtol=1e-12)
    v_s = _v_sde(times)
    np.testing.assert_allclose(sol.score_mismatch().numpy(), np.abs(1 / _a(times) - 1 / v_s) * np.sqrt(v_s), atol=1e-6)
    bound = log_ratio_bound(sol, _linear_score, OU(), mass_floor=1e-3)
    assert bound.mass_floor == 1e-3 and bound.as_dict()["grid"]["cells"] == (48,)
    np.testing.assert_allclose(bound.lipschitz, np.abs(-1 + 0.5 / _a(times)), rtol=1e-12)


def test_log_ratio_misuse_is_refused():
    phi = _linear_potential(2)
    with pytest.raises(ValueError, match=r"one of \('kde', 'gaussian', 'log_ratio'\)"):
        estimate_derived_bound(_linear_score, OU(), mismatch="exact")
    with pytest.raises(ValueError, match="d = 1 or 2"):
        estimate_derived_bound(
            _linear_score, OU(), dim=3, mismatch="log_ratio", potential=phi, half_width=4.0, points=16
        )
    with pytest.raises(ValueError, match="half_width"):
        estimate_derived_bound(_linear_score, OU(), mismatch="log_ratio", potential=phi, points=16)
    with pytest.raises(ValueError, match="potential"):
        estimate_derived_bound(_linear_score, OU(), mismatch="log_ratio", half_width=4.0, points=16)
    with pytest.raises(ValueError, match="d = 1 or 2"):
        solve_log_ratio(phi, OU(), 4.0, 16, [0.0], dim=3)
    with pytest.raises(ValueError, match="points"):
        solve_log_ratio(phi, OU(), 4.0, 4, [0.0])
    with pytest.raises(ValueError, match="times"):
        solve_log_ratio(phi, OU(), 4.0, 16, [11.0])
    with pytest.raises(ValueError, match="not finite"):  # the noised law at t = 0: ∂_t of its std is infinite
        blob = blob_mixture(OU())
        solve_log_ratio(blob.log_density, OU(), 4.0, 16, [0.0])
