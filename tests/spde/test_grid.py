"""The grid SPDE (seed002 §3.2, §9.4; tests T5, T6, T9): conservation, positivity, exact OU answers, backends."""

import math

import pytest
import torch

from pysens.diffusion import VP, GaussianMixtureScore
from pysens.solvers import BrownianGrid
from pysens.spde import (
    AdditiveNoise,
    ColoredTransportNoise,
    CommonNoise,
    DilationNoise,
    FokkerPlanckOperator,
    Grid,
    GridSPDE,
    GridTooCoarseWarning,
    SmoothBrownianPath,
    ou_common_noise_expected_kl,
    sampling_drift,
)

LAM, SIGMA = 1.0, 0.6  # OU drift −λx, D = g²/2 = 1, common noise σ (digest §9.4)


def ou(grid: Grid, noise=None, **kw) -> GridSPDE:
    return GridSPDE(grid, lambda t, x: -LAM * x, 1.0, noise, time_dependent=False, **kw)


def gaussian(grid: Grid, mean: float, std: float, batch: int) -> torch.Tensor:
    x = grid.points()[:, 0]
    u = torch.exp(-((x - mean) ** 2) / (2 * std**2)).expand(batch, -1).clone()
    return u / grid.mass(u)[:, None]


def test_mass_positivity_and_pathwise_mean_against_the_exact_ou_mean():
    # O4 (§9.4): exact-shift splitting; the exact conditional mean μ_T = e^{−λT}μ_0 + σ∫e^{−λ(T−r)}dB_r is taken on a
    # Brownian grid 20x finer than the solver's steps, with the same increments
    grid = Grid(-10.0, 10.0, 160)
    spde = ou(grid, CommonNoise(SIGMA))
    B, T, fine = 64, 1.0, 800
    u0 = gaussian(grid, 1.0, 1.0, B)
    path = BrownianGrid.sample((0.0, T), fine, (B, 1), generator=torch.Generator().manual_seed(3))
    delta = T / fine
    exact = grid.mean(u0)[:, 0].clone()
    for j in range(fine):  # midpoint rule for the stochastic integral over each fine interval
        exact = (
            math.exp(-LAM * delta) * exact + SIGMA * math.exp(-LAM * delta / 2) * path.increment_between(j, j + 1)[:, 0]
        )
    errors = []
    for stride in (20, 5):
        sol = spde.solve(
            u0, (0.0, T), brownian=path, stride=stride, method="TRBDF2", adaptive=False, dt=stride * delta, saveat="all"
        )
        assert sol.retcode == "Success" and sol.scheme == "split_exact_shift"
        assert float((sol.mass - 1.0).abs().max()) < 1e-10
        assert float(sol.min_value.min()) > -1e-12
        errors.append(float((sol.mean()[-1, :, 0] - exact).pow(2).mean().sqrt()))
    assert errors[1] < 1e-3  # RMS over paths at Δτ = 6.25e-3
    assert 3.0 < errors[0] / errors[1] < 5.5  # first order in Δτ: 4x smaller steps, ~4x smaller error


def test_expected_kl_tends_to_sigma2_d_over_4():
    # Theorem A is sharp for Gaussian π: E KL(u_T | π) → σ²d/4 (d = 1); 300 paths, 3 standard errors
    grid = Grid(-8.0, 8.0, 128)
    spde = ou(grid, CommonNoise(SIGMA))
    B, T, steps = 300, 4.0, 200
    u0 = gaussian(grid, 0.0, 1.0, B)
    path = BrownianGrid.sample((0.0, T), steps, (B, 1), generator=torch.Generator().manual_seed(4))
    sol = spde.solve(u0, (0.0, T), brownian=path, method="TRBDF2", adaptive=False, dt=T / steps)
    x = grid.points()[:, 0]
    log_pi = -LAM * x**2 / 2
    log_pi = log_pi - torch.logsumexp(log_pi, 0) - math.log(grid.h[0])  # the grid-normalised stationary law
    kl = grid.kl(sol.final, log_pi)
    exact = ou_common_noise_expected_kl(LAM, 2.0, SIGMA, [0.0], 1.0, T)
    assert exact == pytest.approx(SIGMA**2 / 4, rel=1e-3)
    assert abs(float(kl.mean()) - exact) < 3 * float(kl.std()) / math.sqrt(B)


def test_exact_score_fokker_planck_preserves_p_with_first_order_l1_error():
    # T6 (§3.2): drift ½βy + βs(y, 1−τ) with the exact score of Gaussian data keeps u = p_{1−τ}; implicit Euler
    # (ImplicitEM, θ = 1, no noise) makes the L1 error first order in Δτ
    proc = VP()
    m0, s0 = 0.5, 0.3
    score = GaussianMixtureScore(
        torch.tensor([[m0]], dtype=torch.float64), torch.tensor([s0**2], dtype=torch.float64), process=proc
    )
    drift, diffusion = sampling_drift(score, proc)

    def p(t: float, x: torch.Tensor) -> torch.Tensor:
        a = float(proc.scale(t))
        v = a * a * s0 * s0 + 1 - a * a
        return torch.exp(-((x - a * m0) ** 2) / (2 * v)) / math.sqrt(2 * math.pi * v)

    grid = Grid(-6.0, 6.0, 400)
    x = grid.points()[:, 0]
    spde = GridSPDE(grid, drift, diffusion, flux="scharfetter_gummel")
    u0, tau = p(1.0, x)[None], 0.5
    errors = []
    for dt in (0.02, 0.01):
        # an exact (LU) linear solve keeps the M-matrix property, hence u ≥ 0; GMRES would leave ~1e-11 in the tails
        sol = spde.solve(u0, (0.0, tau), scheme="sde", method="ImplicitEM", dt=dt, linsolve="dense")
        assert float((sol.mass - grid.mass(u0)).abs().max()) < 1e-12 and float(sol.min_value.min()) > -1e-12
        errors.append(float((sol.final[0] - p(1.0 - tau, x)).abs().sum() * grid.h[0]))
    assert 1.8 < errors[0] / errors[1] < 2.2
    assert errors[1] < 2e-3


def test_torch_and_scipy_agree_to_the_solver_tolerance_on_the_same_noise():
    grid = Grid(-8.0, 8.0, 64)
    spde = ou(grid, CommonNoise(SIGMA))
    u0 = gaussian(grid, 1.0, 1.0, 2)
    path = SmoothBrownianPath((0.0, 0.5), 6, (2, 1), generator=torch.Generator().manual_seed(6))
    tol = 1e-8
    sols = {
        (m, b): spde.solve(u0, (0.0, 0.5), path=path, method=m, backend=b, rtol=tol, atol=tol)
        for m, b in (("KenCarp4", "torch"), ("BDF", "scipy"), ("CVODE_BDF", "scipy"))
    }
    ref = sols[("KenCarp4", "torch")].final
    for key, sol in sols.items():
        assert sol.retcode == "Success", key
        assert float((sol.final - ref).abs().max()) < 100 * tol, key
    # the same on a Brownian grid, step by step (Wong–Zakai with the constant rate ΔB/Δτ per step)
    bg = BrownianGrid.sample((0.0, 0.2), 4, (2, 1), generator=torch.Generator().manual_seed(7))
    a = spde.solve(u0, (0.0, 0.2), scheme="wong_zakai", brownian=bg, method="KenCarp4", rtol=tol, atol=tol)
    b = spde.solve(u0, (0.0, 0.2), scheme="wong_zakai", brownian=bg, method="BDF", backend="scipy", rtol=tol, atol=tol)
    assert float((a.final - b.final).abs().max()) < 100 * tol


def test_ito_and_stratonovich_forms_agree_for_constant_sigma():
    # T9 (§4.2): for N1 the Itô form (ImplicitEM with the ½L² correction, convention "ito") and the Stratonovich form
    # (exact shift, convention "strat") are the same SPDE: on the same paths both match the exact second moment
    # E⟨u, x²⟩_T = e^{−2λT}(Φ_0 − c/2λ) + c/2λ, c = d(g² + σ²), and each other up to the schemes' O(Δτ) weak error
    grid = Grid(-8.0, 8.0, 128)
    B, T, steps = 64, 0.5, 200
    u0 = gaussian(grid, 1.0, 1.0, B)
    path = BrownianGrid.sample((0.0, T), steps, (B, 1), generator=torch.Generator().manual_seed(8))
    x2 = {"x2": lambda p: p[:, 0] ** 2}
    ito = ou(grid, CommonNoise(SIGMA), convention="ito").solve(
        u0, (0.0, T), scheme="sde", brownian=path, method="ImplicitEM", observe=x2
    )
    strat = ou(grid, CommonNoise(SIGMA), convention="strat").solve(
        u0, (0.0, T), brownian=path, method="TRBDF2", adaptive=False, dt=T / steps, observe=x2
    )
    a, b = ito.projections["x2"][-1], strat.projections["x2"][-1]
    c = 2.0 + SIGMA**2
    exact = math.exp(-2 * LAM * T) * (2.0 - c / (2 * LAM)) + c / (2 * LAM)
    for phi in (a, b):
        assert abs(float(phi.mean()) - exact) < 3 * float(phi.std()) / math.sqrt(B)
    diff = a - b
    assert abs(float(diff.mean())) < 3 * float(diff.std()) / math.sqrt(B) + 2e-3
    assert float(diff.abs().max()) < 0.05  # pathwise: EM's strong order ½ on the Itô form


def test_scharfetter_gummel_and_chang_cooper_coincide_and_stay_positive_at_high_peclet():
    grid = Grid(-4.0, 4.0, 40)
    u = torch.rand(3, 40, dtype=torch.float64)
    t = torch.zeros(3, dtype=torch.float64)
    drift = lambda t, x: -8.0 * x  # noqa: E731 - cell Péclet up to 8·4·0.2/(2·0.1) = 32
    with pytest.warns(GridTooCoarseWarning):
        sg = FokkerPlanckOperator(grid, drift, 0.1, flux="scharfetter_gummel")
        sg.check_peclet(0.0)
    cc = FokkerPlanckOperator(grid, drift, 0.1, flux="chang_cooper", peclet="ignore")
    torch.testing.assert_close(sg.apply(t, u), cc.apply(t, u), rtol=1e-12, atol=1e-12)
    # M-matrix: off-diagonal entries of the operator are non-negative, so implicit steps keep u ≥ 0
    eye = torch.eye(40, dtype=torch.float64)
    A = sg.apply(torch.zeros(40, dtype=torch.float64), eye).T
    assert float((A - torch.diag(torch.diag(A))).min()) >= 0.0
    assert float(A.sum(0).abs().max()) < 1e-12  # columns sum to zero: mass conservation


def test_grid_too_coarse_for_the_drift_is_an_error_with_the_central_flux():
    grid = Grid(-4.0, 4.0, 20)
    spde = GridSPDE(grid, lambda t, x: -20.0 * x, 0.5)
    with pytest.raises(ValueError, match="Péclet"):
        spde.solve(gaussian(grid, 0.0, 1.0, 1), (0.0, 0.1), method="KenCarp4")
    with pytest.warns(GridTooCoarseWarning, match="Péclet"):
        GridSPDE(grid, lambda t, x: -20.0 * x, 0.5, peclet="warn").fp.check_peclet(0.0)


def test_periodic_boundaries_conserve_mass_under_coloured_transport_noise():
    grid = Grid(-4.0, 4.0, 64, bc="periodic")
    noise = ColoredTransportNoise(-4.0, 4.0, 3, alpha=1.0, amplitude=0.5)
    spde = GridSPDE(grid, lambda t, x: torch.sin(x), 0.3, noise, flux="scharfetter_gummel")
    u0 = gaussian(grid, 0.5, 1.0, 2)
    path = BrownianGrid.sample((0.0, 0.2), 10, (2, spde.n_modes), generator=torch.Generator().manual_seed(9))
    sol = spde.solve(u0, (0.0, 0.2), brownian=path, method="KenCarp4", rtol=1e-6, atol=1e-9)
    assert sol.scheme == "wong_zakai" and sol.retcode == "Success"
    assert float((sol.mass - 1.0).abs().max()) < 1e-12


def test_additive_noise_keeps_mass_but_not_positivity():
    grid = Grid(-6.0, 6.0, 96)
    spde = ou(grid, AdditiveNoise(-6.0, 6.0, 4, amplitude=0.02))
    u0 = gaussian(grid, 0.0, 1.0, 2)
    path = BrownianGrid.sample((0.0, 0.5), 10, (2, spde.n_modes), generator=torch.Generator().manual_seed(10))
    sol = spde.solve(u0, (0.0, 0.5), brownian=path, method="TRBDF2", adaptive=False, dt=0.05)
    assert sol.scheme == "wong_zakai" and sol.retcode == "Success"
    assert float((sol.mass - 1.0).abs().max()) < 1e-12
    assert float(sol.min_value.min()) < 0.0  # an additive source is not a law of particles: reported, not hidden


def test_two_dimensional_grid_conserves_mass_and_positivity():
    # 2-D, N1 (K = 2 independent common translations): the mean follows the Strang recursion
    # m_{n+1} = e^{−λΔτ}(m_n + σΔB/2) + σΔB/2 exactly when the Fokker–Planck substep is solved accurately
    grid = Grid((-8.0, -8.0), (8.0, 8.0), (64, 64))
    p = grid.points()
    u0 = torch.exp(-((p - 0.5) ** 2).sum(1) / 2).reshape(1, 64, 64)
    u0 = u0 / grid.mass(u0)[:, None, None]
    spde = GridSPDE(grid, lambda t, x: -x, 1.0, CommonNoise(0.5), time_dependent=False)
    steps, T = 6, 0.3
    path = BrownianGrid.sample((0.0, T), steps, (1, 2), generator=torch.Generator().manual_seed(11))
    sol = spde.solve(u0, (0.0, T), brownian=path, method="KenCarp4", rtol=1e-8, atol=1e-11)
    assert float((sol.mass - 1.0).abs().max()) < 1e-10 and float(sol.min_value.min()) > -1e-12
    m, a = grid.mean(u0)[0], math.exp(-T / steps)
    for n in range(steps):
        half = 0.25 * path.increment_between(n, n + 1)[0]
        m = a * (m + half) + half
    torch.testing.assert_close(sol.mean()[-1, 0], m, rtol=0, atol=1e-6)


def test_bad_inputs_are_clear_errors():
    grid = Grid(-4.0, 4.0, 32)
    with pytest.raises(ValueError, match="density"):
        ou(grid).solve(torch.zeros(2, 31, dtype=torch.float64), (0.0, 1.0))
    with pytest.raises(ValueError, match="exact-shift"):
        ou(grid, DilationNoise(0.3)).solve(
            gaussian(grid, 0, 1, 1),
            (0.0, 1.0),
            scheme="split_exact_shift",
            brownian=BrownianGrid.sample((0.0, 1.0), 4, (1, 1)),
        )
    with pytest.raises(ValueError, match="needs its common noise"):
        ou(grid, CommonNoise(0.3)).solve(gaussian(grid, 0, 1, 1), (0.0, 1.0))
    g2 = Grid((-4.0, -4.0), (4.0, 4.0), (8, 8))
    with pytest.raises(ValueError, match="K = 1"):
        ou(g2, CommonNoise(0.3)).sde_problem(
            torch.ones(1, 8, 8), (0.0, 1.0), BrownianGrid.sample((0.0, 1.0), 4, (1, 2))
        )
    with pytest.raises(ValueError, match="noise-step time"):
        ou(grid, CommonNoise(0.3)).solve(
            gaussian(grid, 0, 1, 1), (0.0, 1.0), saveat=[0.3], brownian=BrownianGrid.sample((0.0, 1.0), 4, (1, 1))
        )
    with pytest.raises(ValueError, match="flux"):
        Grid(-1, 1, 8) and GridSPDE(Grid(-1, 1, 8), None, 1.0, flux="upwind")


@pytest.mark.parametrize("method", ["KenCarp4", "SKenCarp"])
def test_julia_backend_solves_the_same_problems(method):
    # the grid SPDE is a plain pysens problem: KenCarp4 takes the random ODE, SKenCarp the additive-noise (N4) SDE
    from pysens.solvers import backend_status

    if not backend_status()["julia"][0]:
        pytest.skip("julia not installed")
    grid = Grid(-6.0, 6.0, 48)
    u0 = gaussian(grid, 0.0, 1.0, 1)
    if method == "KenCarp4":
        spde = ou(grid, CommonNoise(SIGMA))
        path = SmoothBrownianPath((0.0, 0.2), 4, (1, 1), generator=torch.Generator().manual_seed(12))
        ref = spde.solve(u0, (0.0, 0.2), path=path, method="KenCarp4", rtol=1e-8, atol=1e-8)
        sol = spde.solve(u0, (0.0, 0.2), path=path, method="KenCarp4", backend="julia", rtol=1e-8, atol=1e-8)
        assert float((sol.final - ref.final).abs().max()) < 1e-6
    else:
        spde = ou(grid, AdditiveNoise(-6.0, 6.0, 3, amplitude=0.01))
        bg = BrownianGrid.sample((0.0, 0.2), 20, (1, spde.n_modes), generator=torch.Generator().manual_seed(13))
        sol = spde.solve(u0, (0.0, 0.2), scheme="sde", brownian=bg, method="SKenCarp", backend="julia")
        assert sol.retcode == "Success" and float((sol.mass - 1.0).abs().max()) < 1e-10


@pytest.mark.parametrize("bc", ["noflux", "periodic"])
@pytest.mark.parametrize("cells", [[37], [12, 9]])
def test_shifted_laplacian_solve_inverts_the_diffusion_operator(bc, cells):
    # (I − c Δ_h) w = v with Δ_h the operator's own diffusion part at D = 1: the FFT solve (eigenvalues built once
    # per grid and dtype) must invert it to the rounding of the transforms, per row with its own c, in both dtypes
    dim = len(cells)
    grid = Grid([-2.0] * dim, [3.0] * dim, cells, bc=bc)
    op = FokkerPlanckOperator(grid, None, 1.0)
    for dtype in (torch.float64, torch.float32, torch.float64):
        g = torch.Generator().manual_seed(3)
        v = torch.randn(3, *cells, generator=g, dtype=torch.float64).to(dtype)
        c = torch.tensor([0.0, 0.01, 1.0], dtype=dtype)
        w = grid.solve_shifted_laplacian(v, c)
        lap = op.apply(torch.zeros((), dtype=dtype), w, "diffusion")
        back = w - c.reshape(-1, *([1] * dim)) * lap
        # cond(I − cΔ_h) ≤ 1 + 4·dim·c/h²; the transforms' rounding is eps·log(n) of |w| ~ |v|
        bound = (1 + 4 * dim * float(c.max()) / min(grid.h) ** 2) * 100 * torch.finfo(dtype).eps
        assert float((back - v).abs().max()) <= bound * float(v.abs().max())
        # no-flux on the CPU solves by the DCT; under autograd by the reflected FFT: the same map to rounding
        traced = grid.solve_shifted_laplacian(v.clone().requires_grad_(), c).detach()
        assert float((traced - w).abs().max()) <= bound * float(v.abs().max())


def test_diffusion_part_needs_no_drift_and_matches_the_full_operator_split():
    # the diffusion coefficients D/h at every face are built without the drift (none is evaluated), per row on
    # its own clock, and the diffusion + advection parts add up to the full central-flux operator
    grid = Grid([-4.0], [4.0], [64])
    calls = {"n": 0}

    def drift(t, x):
        calls["n"] += 1
        return -x * (1.0 + t.reshape(-1, 1) if t.dim() else 1.0 + t)

    op = FokkerPlanckOperator(grid, drift, lambda t: 0.5 + t)
    u = torch.exp(-(grid.points().reshape(1, 64) ** 2)).expand(3, 64).contiguous()
    t = torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64)
    diff = op.apply(t, u, "diffusion")
    assert calls["n"] == 0
    for b in range(3):
        D, h = 0.5 + float(t[b]), grid.h[0]
        flux = D / h * (u[b, :-1] - u[b, 1:])
        expect = -(torch.cat([flux, flux.new_zeros(1)]) - torch.cat([flux.new_zeros(1), flux])) / h
        assert torch.allclose(
            diff[b], expect, rtol=0, atol=64 * torch.finfo(torch.float64).eps * float(expect.abs().max())
        )
    full = op.apply(t, u, "full")
    assert torch.allclose(diff + op.apply(t, u, "advection"), full, rtol=0, atol=1e-12 * float(full.abs().max()))
