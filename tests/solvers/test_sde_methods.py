"""The torch SDE methods (EM, EulerHeun, SRA1, SOSRA, ImplicitEM) against exact pathwise solutions.

Oracles, all on one replayable Brownian path per test, float64:

* Ornstein–Uhlenbeck dX = −θX dt + s dW (additive): per fine interval of length δ, sampling
  (ΔW, J = ∫ e^{−θ(t_{k+1}−u)} dW(u)) jointly gives the exact X_{k+1} = e^{−θδ} X_k + s J on the fine grid. The
  time integrals Z = ∫ (W(s) − W(t_k)) ds are sampled jointly too and stored in the BrownianGrid with the ΔW, so
  the SRA methods see the same Brownian path as the oracle (with ΔW alone the grid is the piecewise-linear path,
  which floors pathwise errors near θ s δ / √12 ≈ 1e-4 here).
* Geometric Brownian motion dX = μX dt + σX dW (diagonal): Itô solution X0 exp((μ − σ²/2)t + σW_t), Stratonovich
  solution X0 exp(μt + σW_t).

Strong order = slope of log(mean |X_N − X(T)|) against log h over ≥ 4 step sizes, many paths batched.
"""

import math

import numpy as np
import pytest
import torch

from pysens.solvers import BrownianGrid, MethodNotAvailable, SDEProblem, SplitSDEProblem, solve
from pysens.solvers.noise import sample_increments
from pysens.solvers.stochastic import SRA_TABLEAUS

DT = torch.float64
THETA, S = 1.5, 0.8  # OU drift rate and noise scale
MU, SIGMA = 0.5, 0.6  # GBM
FINE = 2**12
SDE_METHODS = ["EM", "EulerHeun", "SRA1", "SOSRA", "ImplicitEM"]


def ou_exact_path(n_paths: int, n_fine: int = FINE, seed: int = 0, x0: float = 1.0, T: float = 1.0):
    """(BrownianGrid on [0, T] with its time integrals, exact X(t) at the fine grid points [n_fine + 1, n_paths, 1]).

    Per fine interval of length δ, (ΔW, Z, J) = ∫ (1, δ - u, e^{-θ(δ-u)}) dW(u) are jointly Gaussian; their
    covariance is ∫ of the products of the kernels. J is nearly ΔW - θZ for small δ, so the matrix square root
    is taken by eigh (a Cholesky factor would meet round-off negative pivots).
    """
    d, th = T / n_fine, THETA
    e1, e2 = math.exp(-th * d), math.exp(-2 * th * d)
    cov = torch.tensor(
        [
            [d, d**2 / 2, (1 - e1) / th],
            [d**2 / 2, d**3 / 3, (1 - e1 * (1 + th * d)) / th**2],
            [(1 - e1) / th, (1 - e1 * (1 + th * d)) / th**2, (1 - e2) / (2 * th)],
        ],
        dtype=DT,
    )
    vals, vecs = torch.linalg.eigh(cov)
    root = vecs * vals.clamp_min(0).sqrt()
    z = torch.randn(n_fine, n_paths, 1, 3, generator=torch.Generator().manual_seed(seed), dtype=DT) @ root.T
    dw, dz, j = z[..., 0], z[..., 1], z[..., 2]
    xs = [torch.full((n_paths, 1), x0, dtype=DT)]
    for k in range(n_fine):
        xs.append(e1 * xs[-1] + S * j[k])
    return BrownianGrid(torch.linspace(0.0, T, n_fine + 1, dtype=DT), dw, dz), torch.stack(xs)


def ou_problem(grid: BrownianGrid, x0: torch.Tensor, **kw) -> SDEProblem:
    return SDEProblem(
        lambda t, x: -THETA * x,
        lambda t, x: torch.full_like(x, S),
        x0,
        (0.0, 1.0),
        noise="additive",
        brownian=grid,
        **kw,
    )


def gbm_problem(grid: BrownianGrid, x0: torch.Tensor) -> SDEProblem:
    return SDEProblem(lambda t, x: MU * x, lambda t, x: SIGMA * x, x0, (0.0, 1.0), noise="diagonal", brownian=grid)


def strong_order(problem: SDEProblem, method: str, exact: torch.Tensor, steps) -> tuple[float, list[float]]:
    errors = [float((solve(problem, method, dt=1.0 / n).final - exact).abs().mean()) for n in steps]
    return float(np.polyfit(np.log([1.0 / n for n in steps]), np.log(errors), 1)[0]), errors


@pytest.fixture(scope="module")
def ou_many():
    """1000 OU paths on a 4096-step grid with their exact values at T = 1."""
    grid, xs = ou_exact_path(1000)
    return ou_problem(grid, torch.ones(1000, 1, dtype=DT)), xs[-1]


@pytest.fixture(scope="module")
def gbm_many():
    n = 1000
    grid = BrownianGrid.sample((0.0, 1.0), FINE, (n, 1), generator=torch.Generator().manual_seed(1))
    w1 = grid.path[-1]
    ito, strat = torch.exp((MU - SIGMA**2 / 2) + SIGMA * w1), torch.exp(MU + SIGMA * w1)
    return gbm_problem(grid, torch.ones(n, 1, dtype=DT)), ito, strat


# -- strong orders on exact pathwise solutions ---------------------------------------------------------------


@pytest.mark.parametrize(
    "method,steps,order",
    [
        ("EM", (8, 16, 32, 64), 1.0),  # additive noise: EM is strong order 1
        ("EulerHeun", (8, 16, 32, 64), 1.0),
        ("ImplicitEM", (8, 16, 32, 64), 1.0),
        # SRA methods are order 1.5; on OU the 1.5 error term (∝ f'' g²) vanishes and the next one is O(h²)
        # (measured: SRA1 2.08, SOSRA 2.03); the 1.5 itself is measured on a nonlinear drift below
        ("SRA1", (4, 8, 16, 32), 2.0),
        ("SOSRA", (4, 8, 16, 32), 2.0),
    ],
)
def test_strong_order_on_ou(ou_many, method, steps, order):
    problem, exact = ou_many
    slope, errors = strong_order(problem, method, exact, steps)
    assert abs(slope - order) < 0.2, (slope, errors)


def test_sra_strong_order_one_and_a_half_on_nonlinear_additive_noise():
    # dX = -sin(2X) dt + dW: no closed form, so the reference is SOSRA at the fine-grid step on the same path (its
    # own error ~1e-8, against 3e-4 for the coarsest error fitted here); measured slopes SRA1 1.60, SOSRA 1.55
    n, fine = 1000, 2**11
    grid = BrownianGrid.sample((0.0, 1.0), fine, (n, 1), generator=torch.Generator().manual_seed(2))
    p = SDEProblem(
        lambda t, x: -torch.sin(2 * x),
        lambda t, x: torch.ones_like(x),
        torch.full((n, 1), 0.5, dtype=DT),
        (0.0, 1.0),
        noise="additive",
        brownian=grid,
    )
    reference = solve(p, "SOSRA", dt=1.0 / fine).final
    for method in ("SRA1", "SOSRA"):
        slope, errors = strong_order(p, method, reference, (8, 16, 32, 64))
        assert abs(slope - 1.5) < 0.2, (method, slope, errors)


@pytest.mark.parametrize("method", ["EM", "ImplicitEM"])
def test_strong_order_half_on_gbm(gbm_many, method):
    problem, ito, _ = gbm_many
    slope, errors = strong_order(problem, method, ito, (16, 32, 64, 128, 256))
    assert abs(slope - 0.5) < 0.2, (slope, errors)


def test_euler_heun_converges_to_the_stratonovich_solution(gbm_many):
    problem, ito, strat = gbm_many
    slope, errors = strong_order(problem, "EulerHeun", strat, (16, 32, 64, 128))
    assert abs(slope - 1.0) < 0.2, (slope, errors)
    # and not to the Itô one: the gap X0 e^{μ+σW}(1 - e^{-σ²/2}) does not shrink with h
    far = float((solve(problem, "EulerHeun", dt=1 / 128).final - ito).abs().mean())
    assert far > 10 * errors[-1]


# -- one Brownian path, refined ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SDE_METHODS)
def test_refining_dt_on_one_path_converges_to_the_exact_solution(method):
    grid, xs = ou_exact_path(8, seed=5, x0=0.7)
    p = ou_problem(grid, torch.full((8, 1), 0.7, dtype=DT))
    saveat = [0.0, 0.5, 1.0]
    exact = xs[[0, FINE // 2, FINE]]
    errors = []
    for n in (8, 32, 128, 512):
        sol = solve(p, method, dt=1.0 / n, saveat=saveat)
        assert sol.retcode == "Success" and torch.equal(sol.t, torch.tensor(saveat, dtype=DT))
        errors.append(float((sol.x - exact).abs().max()))  # worst sample, worst save time
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < {"SRA1": 1e-5, "SOSRA": 1e-5}.get(method, 5e-3), errors


@pytest.mark.parametrize("method", SDE_METHODS)
def test_reverse_time_is_a_relabelling_of_forward_time(method):
    # dx = f(t, x) dt + g(t) dW run from t = 1 down to 0 equals, step for step and on the same increments, the
    # forward SDE in elapsed time s = 1 - t with drift -f(1 - s, x) and diffusion g(1 - s)
    def f(t, x):
        return -(1 + t)[:, None] * x + torch.cos(3 * t)[:, None]

    def g(t, x):
        return (0.5 + t)[:, None].expand_as(x)

    x0 = torch.randn(4, 2, dtype=DT, generator=torch.Generator().manual_seed(0))
    fine = 64
    back = BrownianGrid.sample((1.0, 0.0), fine, x0.shape, generator=torch.Generator().manual_seed(1))
    fwd = BrownianGrid(torch.linspace(0.0, 1.0, fine + 1, dtype=DT), back.increments)
    rev = solve(SDEProblem(f, g, x0, (1.0, 0.0), noise="additive", brownian=back), method, dt=1 / 16)
    flip = SDEProblem(
        lambda s, x: -f(1 - s, x), lambda s, x: g(1 - s, x), x0, (0.0, 1.0), noise="additive", brownian=fwd
    )
    ref = solve(flip, method, dt=1 / 16)
    assert rev.retcode == ref.retcode == "Success"
    assert torch.allclose(rev.final, ref.final, rtol=1e-12, atol=1e-13)
    assert torch.allclose(rev.t_final, torch.zeros(4, dtype=DT))


# -- noise: iterated integrals and fresh draws ------------------------------------------------------------------


def test_sra_tableaus_satisfy_the_order_conditions():
    # Rößler (2010), Thm 6.3: the eight conditions for strong order 1.5 with additive noise
    for tab in SRA_TABLEAUS.values():
        a, b1, b2, c1 = (np.array(v) for v in (tab.alpha, tab.beta1, tab.beta2, tab.c1))
        A0 = np.array([list(row) + [0.0] * (tab.stages - len(row)) for row in tab.A0])
        B0 = np.array([list(row) + [0.0] * (tab.stages - len(row)) for row in tab.B0])
        e = np.ones(tab.stages)
        checks = [a @ e - 1, b1 @ e - 1, b2 @ e, a @ B0 @ e - 1, a @ A0 @ e - 0.5, a @ (B0 @ e) ** 2 - 1.5]
        checks += [b1 @ c1 - 1, b2 @ c1 + 1]
        assert np.abs(checks).max() < 1e-12, (tab.name, checks)
        assert np.allclose(A0 @ e, tab.c0)  # stage times consistent with the drift weights


def test_iterated_integral_is_the_trapezoid_of_the_fine_path():
    times = torch.tensor([0.0, 0.1, 0.3, 0.35, 0.6], dtype=DT)  # non-uniform on purpose
    inc = torch.randn(4, 2, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    grid = BrownianGrid(times, inc)
    w = grid.path
    by_hand = sum(float(times[k + 1] - times[k]) * 0.5 * (w[k] + w[k + 1] - 2 * w[1]) for k in (1, 2, 3))
    assert torch.allclose(grid.iterated_integral(0.1, 0.6), by_hand, atol=1e-15)
    assert torch.allclose(grid.increment(0.1, 0.6), w[4] - w[1], atol=1e-15)
    # one fine interval: the linear path gives ΔZ = δ ΔW / 2
    assert torch.allclose(grid.iterated_integral(0.3, 0.35), 0.025 * inc[2], atol=1e-15)
    # backward grids measure elapsed time: ΔZ keeps the sign relation E[ΔZ ΔW] = |h|²/2
    back = BrownianGrid(times.flip(0), inc)
    assert torch.allclose(back.iterated_integral(0.35, 0.3), 0.025 * inc[1], atol=1e-15)


def test_joint_increments_have_the_law_of_w_and_its_time_integral():
    h, n = -0.3, 400_000
    dw, dz = sample_increments(h, (n,), iterated=True, generator=torch.Generator().manual_seed(0))
    cov = torch.cov(torch.stack([dw, dz]))
    expected = torch.tensor([[0.3, 0.3**2 / 2], [0.3**2 / 2, 0.3**3 / 3]], dtype=DT)
    assert torch.allclose(cov, expected, rtol=0.01), cov
    # and the grid's ΔZ over coarse steps has the same law up to the bridge term h δ²/12 (here 0.4%)
    grid = BrownianGrid.sample((0.0, 1.0), 1024, (2000,), generator=torch.Generator().manual_seed(1))
    zs = torch.stack([grid.iterated_integral(k / 8, (k + 1) / 8) for k in range(8)]).reshape(-1)
    assert abs(float(zs.var()) / (0.125**3 / 3) - 1) < 0.05


def test_fresh_noise_replays_with_the_same_seed():
    x0 = torch.randn(5, 3, dtype=DT)
    p = SDEProblem(lambda t, x: -x, lambda t, x: torch.ones_like(x), x0, (0.0, 1.0), noise="additive")
    for method in ("SRA1", "EulerHeun"):
        a = solve(p, method, dt=0.05, generator=torch.Generator().manual_seed(3))
        b = solve(p, method, dt=0.05, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.final, b.final)
    # EM draws exactly one N(0, |h|) tensor per step, as it always has
    gen = torch.Generator().manual_seed(4)
    x = x0.clone()
    for _ in range(20):
        x = x - x * 0.05 + torch.randn(x.shape, generator=gen, dtype=DT) * 0.05**0.5
    assert torch.allclose(solve(p, "EM", dt=0.05, generator=torch.Generator().manual_seed(4)).final, x, atol=1e-14)


def test_work_counts():
    x0 = torch.zeros(2, 1, dtype=DT)
    grid = BrownianGrid.sample((0.0, 1.0), 16, x0.shape)
    p = ou_problem(grid, x0)
    for method, calls in (("EM", 1), ("EulerHeun", 2), ("SRA1", 2), ("SOSRA", 3)):
        sol = solve(p, method, dt=1 / 16)
        assert sol.stats.nf == calls * 16 and sol.extra["ng"] == calls * 16, method
        assert sol.stats.naccept == 2 * 16 and sol.stats.sample_naccept.tolist() == [16, 16]


@pytest.mark.parametrize("method", SDE_METHODS)
def test_timesteps_grid_on_the_brownian_grid(method):
    # a uniform timesteps grid is the dt grid; a non-uniform one just has to land on Brownian grid points
    x0 = torch.randn(3, 2, dtype=DT)
    grid = BrownianGrid.sample((0.0, 1.0), 16, x0.shape, generator=torch.Generator().manual_seed(6), iterated=True)
    p = ou_problem(grid, x0)
    uniform = solve(p, method, timesteps=torch.linspace(0.0, 1.0, 9, dtype=DT))
    assert torch.equal(uniform.final, solve(p, method, dt=1 / 8).final)
    uneven = solve(p, method, timesteps=[0.0, 0.0625, 0.25, 0.5, 0.5625, 1.0], saveat=[0.0, 0.5, 1.0])
    assert uneven.retcode == "Success" and uneven.stats.sample_naccept.tolist() == [5, 5, 5]
    assert torch.isfinite(uneven.x).all()


# -- ImplicitEM: stiffness, IMEX, Newton ------------------------------------------------------------------------

LAM = -1.0e4


def stiff_problem(x0: torch.Tensor, grid: BrownianGrid | None = None, T: float = 2.0) -> SDEProblem:
    return SDEProblem(lambda t, x: LAM * x, lambda t, x: torch.full_like(x, S), x0, (0.0, T), "additive", grid)


def test_implicit_em_is_stable_where_em_blows_up():
    x0 = torch.ones(3, 1, dtype=DT)
    grid = BrownianGrid.sample((0.0, 2.0), 400, x0.shape, generator=torch.Generator().manual_seed(0))
    p = stiff_problem(x0, grid)
    h = 0.01  # hλ = -100: EM multiplies by -99 per step and overflows within 200 steps
    em = solve(p, "EM", dt=h, saveat=[0.0, 0.01, 2.0])
    assert em.retcode == "Unstable" and em.sample_retcodes == ["Unstable"] * 3
    assert torch.equal(em.x[0], x0) and torch.isfinite(em.x[1]).all() and torch.isnan(em.x[2]).all()
    for theta in (1.0, 0.5):
        sol = solve(p, "ImplicitEM", dt=h, theta=theta)
        assert sol.retcode == "Success"
        # linear drift: the θ-method is the recursion x ← ((1 + (1-θ)hλ) x + s ΔW) / (1 - θhλ), exactly
        x = x0.clone()
        for k in range(200):
            x = ((1 + (1 - theta) * h * LAM) * x + S * grid.increment(k * h, (k + 1) * h)) / (1 - theta * h * LAM)
        assert torch.allclose(sol.final, x, rtol=1e-10, atol=1e-14)
        assert sol.stats.njac == 200 and sol.extra["newton_iters"] == 400  # linear: one Jacobian, one correction


def test_implicit_trapezoid_keeps_the_stationary_variance_at_any_step():
    # for dX = λX dt + s dW the θ = 1/2 recursion has stationary variance s²h / (-2hλ) = s² / (2|λ|) exactly,
    # whatever h|λ| (here 100); θ = 1 shrinks it by about 1/(1 - hλ/2)
    n = 4000
    p = stiff_problem(torch.zeros(n, 1, dtype=DT), T=1.0)
    sol = solve(p, "ImplicitEM", dt=0.01, theta=0.5, generator=torch.Generator().manual_seed(1))
    var = S**2 / (2 * abs(LAM))
    assert abs(float(sol.final.var()) / var - 1) < 4 * math.sqrt(2 / n)


def test_imex_step_agrees_with_fully_implicit_when_f2_is_zero():
    x0 = torch.randn(4, 3, dtype=DT)
    grid = BrownianGrid.sample((0.0, 1.0), 100, x0.shape, generator=torch.Generator().manual_seed(2))

    def g(t, x):
        return 0.3 * x  # diagonal noise, so IMEX is exercised beyond additive noise

    full = SDEProblem(lambda t, x: LAM * x, g, x0, (0.0, 1.0), noise="diagonal", brownian=grid)
    split = SplitSDEProblem(
        lambda t, x: LAM * x, lambda t, x: torch.zeros_like(x), g, x0, (0.0, 1.0), noise="diagonal", brownian=grid
    )
    a, b = solve(full, "ImplicitEM", dt=0.01), solve(split, "ImplicitEM", dt=0.01)
    assert a.retcode == b.retcode == "Success"
    assert torch.allclose(a.final, b.final, rtol=1e-12, atol=1e-300)
    assert b.extra["nf2"] == 100  # the explicit part: once per step


def test_imex_step_treats_f2_explicitly():
    x0 = torch.ones(2, 1, dtype=DT)
    grid = BrownianGrid.sample((0.0, 1.0), 50, x0.shape, generator=torch.Generator().manual_seed(3))

    def forcing(t, x):
        return torch.sin(5 * t)[:, None] * (1 + x**2)  # nonlinear, time-dependent, explicit

    p = SplitSDEProblem(
        lambda t, x: LAM * x, forcing, lambda t, x: torch.full_like(x, S), x0, (0.0, 1.0), "additive", grid
    )
    sol = solve(p, "ImplicitEM", dt=0.02)
    x, h = x0.clone(), 0.02
    for k in range(50):
        t = torch.full((2,), k * h, dtype=DT)
        x = (x + h * forcing(t, x) + S * grid.increment(k * h, (k + 1) * h)) / (1 - h * LAM)
    assert torch.allclose(sol.final, x, rtol=1e-10, atol=1e-14)


def test_implicit_em_gmres_agrees_with_dense():
    a = torch.tensor([[-1e3, 10.0, 0.0], [5.0, -2e3, 1.0], [0.0, 3.0, -50.0]], dtype=DT)
    x0 = torch.randn(3, 3, dtype=DT)
    grid = BrownianGrid.sample((0.0, 1.0), 50, x0.shape, generator=torch.Generator().manual_seed(4))
    p = SDEProblem(lambda t, x: x @ a.T - x**3, lambda t, x: 0.2 * x, x0, (0.0, 1.0), noise="diagonal", brownian=grid)
    dense = solve(p, "ImplicitEM", dt=0.02, linsolve="dense")
    krylov = solve(p, "ImplicitEM", dt=0.02, linsolve="gmres", rtol=1e-10, atol=1e-12)
    assert dense.retcode == krylov.retcode == "Success"
    assert dense.stats.njac > 0 and krylov.stats.njvp > 0 and krylov.stats.njac == 0
    assert torch.allclose(dense.final, krylov.final, rtol=1e-9, atol=1e-12)


def test_newton_failure_is_a_per_sample_retcode_with_the_partial_solution():
    # y = x + h (y² + 1) with h = 0.5 has real roots only for x <= 0: sample 0 (x = -1) steps on, sample 1
    # (x = 1) has no solution; sample 2's drift 2x makes I - hJ = 0 exactly (singular)
    def f(t, x):
        k = torch.tensor([[1.0], [1.0], [0.0]], dtype=x.dtype)
        return k * (x * x + 1) + (1 - k) * 2 * x

    x0 = torch.tensor([[-1.0], [1.0], [1.0]], dtype=DT)
    p = SDEProblem(f, lambda t, x: torch.zeros_like(x), x0, (0.0, 1.0), noise="diagonal")
    sol = solve(p, "ImplicitEM", dt=0.5, saveat=[0.0, 0.5, 1.0], generator=torch.Generator().manual_seed(0))
    assert sol.sample_retcodes == ["Success", "ConvergenceFailure", "ConvergenceFailure"]
    assert sol.retcode == "ConvergenceFailure"
    assert math.isclose(float(sol.x[1, 0, 0]), 1 - math.sqrt(2), rel_tol=1e-9)  # Newton tol 1.5e-10
    assert torch.equal(sol.x[0], x0) and torch.isnan(sol.x[1:, 1:]).all()
    assert sol.t_final.tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("method", SDE_METHODS)
def test_nan_drift_is_unstable_with_the_partial_solution(method):
    def f(t, x):
        return torch.where((t > 0.5)[:, None], torch.full_like(x, math.nan), -x)

    p = SDEProblem(f, lambda t, x: torch.zeros_like(x), torch.ones(2, 1, dtype=DT), (0.0, 1.0), noise="additive")
    sol = solve(p, method, dt=0.125, saveat=[0.0, 0.5, 1.0], generator=torch.Generator().manual_seed(0))
    assert sol.retcode == "Unstable" or (method == "ImplicitEM" and sol.retcode == "ConvergenceFailure")
    assert bool(torch.isfinite(sol.x[1]).all()) and torch.isnan(sol.x[2]).all()


@pytest.mark.parametrize("method", SDE_METHODS)
def test_float32_state_stays_float32(method):
    x0 = torch.ones(3, 2, dtype=torch.float32)
    grid = BrownianGrid.sample(
        (0.0, 1.0), 32, x0.shape, dtype=torch.float32, generator=torch.Generator().manual_seed(0)
    )
    p = ou_problem(grid, x0)
    sol = solve(p, method, dt=1 / 32)
    ref = solve(ou_problem(BrownianGrid(grid.times, grid.increments.double()), x0.double()), method, dt=1 / 32)
    assert sol.final.dtype == torch.float32 and sol.retcode == "Success"
    assert torch.allclose(sol.final.double(), ref.final, atol=1e-5)  # float32 round-off only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method", SDE_METHODS)
def test_cuda_matches_cpu(method):
    x0 = torch.randn(4, 3, dtype=DT)
    grid = BrownianGrid.sample((0.0, 1.0), 32, x0.shape, generator=torch.Generator().manual_seed(0))
    cpu = solve(ou_problem(grid, x0), method, dt=1 / 16)
    gpu_grid = BrownianGrid(grid.times, grid.increments.cuda())
    gpu = solve(ou_problem(gpu_grid, x0.cuda()), method, dt=1 / 16)
    assert gpu.final.is_cuda and torch.allclose(gpu.final.cpu(), cpu.final, rtol=1e-12, atol=1e-14)


# -- misuse -----------------------------------------------------------------------------------------------------


def test_bad_input_is_a_clear_error():
    x0 = torch.ones(2, 1, dtype=DT)
    grid = BrownianGrid.sample((0.0, 1.0), 8, x0.shape)
    additive = ou_problem(grid, x0)
    diagonal = gbm_problem(grid, x0)
    with pytest.raises(MethodNotAvailable, match="SRA1.*additive.*'diagonal'"):
        solve(diagonal, "SRA1", dt=0.125)
    with pytest.raises(ValueError, match="fixed grid.*dt.*timesteps"):
        solve(additive, "SOSRA")  # adaptive by default without dt: not on torch
    with pytest.raises(ValueError, match="fixed grid"):
        solve(additive, "SRA1", dt=0.125, adaptive=True)
    with pytest.raises(ValueError, match="not a point of the Brownian grid"):
        solve(additive, "SRA1", dt=1 / 12)  # 12 steps do not divide an 8-step grid
    with pytest.raises(ValueError, match="not a point of the Brownian grid"):
        solve(additive, "EulerHeun", dt=0.125, saveat=[0.0, 0.3, 1.0])
    additive.brownian = BrownianGrid.sample((0.0, 0.5), 8, x0.shape)  # replaced after construction
    with pytest.raises(ValueError, match="brownian grid spans"):
        solve(additive, "EM", dt=0.125)
    with pytest.raises(ValueError, match="theta"):
        solve(diagonal, "ImplicitEM", dt=0.125, theta=1.5)
    with pytest.raises(ValueError, match="linsolve"):
        solve(diagonal, "ImplicitEM", dt=0.125, linsolve="lu")
    with pytest.raises(TypeError, match="unknown solve options for EM: theta"):
        solve(diagonal, "EM", dt=0.125, theta=0.5)
