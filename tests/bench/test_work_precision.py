"""The work-precision harness: errors against the reference, NaN for failures, counted runs, outputs, SDE strong
and weak errors on shared Brownian paths, and the peer libraries run through it."""

import json
import math
import sys

import numpy as np
import pytest
import torch

from pysens.bench import Setup, work_precision
from pysens.bench.peers import (
    available_peers,
    cvode_setup,
    julia_setup,
    solve_ivp_setup,
    torchdiffeq_setup,
    torchsde_setup,
)
from pysens.solvers import BrownianGrid, ODEProblem, SDEProblem, solve

DT = torch.float64
LAM, T = -2.0, 1.0


def decay():
    return ODEProblem(lambda t, x: LAM * x, torch.ones(1, 1, dtype=DT), (0.0, T), name="decay")


def exact(ts):
    return torch.exp(LAM * ts)[:, None, None]


def test_fixed_step_error_is_the_known_truncation_error():
    # Euler with n steps gives (1 + λh)^n exactly; the harness must report |that − e^{λT}|
    setups = [Setup(f"Euler n={n}", "Euler", options={"dt": T / n}) for n in (10, 20, 40)]
    wp = work_precision(decay(), setups, [1e-6], [1e-3], reference=exact, runs=2, warmup=0)
    for p, n in zip(wp.points, (10, 20, 40), strict=True):
        truth = abs((1 + LAM * T / n) ** n - math.exp(LAM * T))
        assert math.isclose(p["error"], truth, rel_tol=1e-12), (p["error"], truth)
        assert p["runs"] == 2 and p["time_min"] <= p["time_median"]


def test_reference_setup_and_dense_errors():
    wp = work_precision(
        decay(),
        [Setup("Tsit5", "Tsit5")],
        [1e-6, 1e-9],
        [1e-4, 1e-7],
        reference=Setup("DP8 scipy", "DP8", "scipy"),
        error="L2",
        runs=1,
    )
    assert wp.reference["setup"] == "DP8 scipy"
    e_loose, e_tight = (p["error"] for p in wp.points)
    assert e_tight < e_loose < 1e-3


def test_failing_setups_give_nan_and_the_sweep_goes_on(tmp_path):
    setups = [
        Setup("starved", "Tsit5", options={"maxiters": 2}),
        Setup("bogus", "NoSuchMethod"),
        Setup("good", "DP5"),
    ]
    wp = work_precision(decay(), setups, [1e-8], [1e-6], reference=exact, runs=3)
    starved, bogus, good = wp.points
    assert starved["retcode"] == "MaxIters" and math.isnan(starved["error"]) and math.isnan(starved["time_min"])
    assert bogus["retcode"].startswith("error: MethodNotAvailable") and math.isnan(bogus["error"])
    assert good["retcode"] == "Success" and good["error"] < 1e-6 and good["runs"] == 3
    assert "nan" in wp.table()
    wp.to_json(tmp_path / "wp.json")
    wp.plot(tmp_path / "wp.png")
    data = json.loads((tmp_path / "wp.json").read_text())
    assert data["points"][0]["error"] is None and data["points"][2]["error"] > 0
    assert (tmp_path / "wp.png").stat().st_size > 5000


# ---------------------------------------------------------------------------------------------------------------
# timing runs, sweep pairing, callable metrics


def test_timed_runs_are_counted_and_warmup_is_not():
    calls = 0

    def f(t, x):
        nonlocal calls
        calls += 1
        return LAM * x

    problem = ODEProblem(f, torch.ones(1, 1, dtype=DT), (0.0, T))
    wp = work_precision(problem, [Setup("Euler", "Euler")], dts=[T / 8], reference=exact, runs=3, warmup=2)
    (p,) = wp.points
    assert p["runs"] == 3 and p["nf"] > 0
    assert calls == (3 + 2) * p["nf"]  # two untimed warm-ups, three timed runs, nothing else


def test_dts_pair_with_tolerances_and_adaptive_setups_keep_tolerances():
    setups = [
        Setup("Euler", "Euler"),  # steps with the sweep's dts
        Setup("Tsit5 adaptive", "Tsit5", options={"adaptive": True}),  # ignores dts, uses the paired tolerances
        Setup("Heun own dts", "Heun", dts=[T / 4, T / 8]),
    ]
    wp = work_precision(decay(), setups, [1e-5, 1e-9], [1e-3, 1e-7], dts=[T / 10, T / 20], reference=exact, runs=1)
    euler, tsit = wp.points[:2], wp.points[2:4]
    for p, n in zip(euler, (10, 20), strict=True):
        assert p["dt"] == T / n
        assert math.isclose(p["error"], abs((1 + LAM * T / n) ** n - math.exp(LAM * T)), rel_tol=1e-12)
    assert [p["dt"] for p in tsit] == [None, None] and tsit[1]["error"] < tsit[0]["error"] < 1e-4
    assert [p["dt"] for p in wp.points[4:]] == [T / 4, T / 8]
    with pytest.raises(ValueError, match="paired"):
        work_precision(decay(), setups[:1], [1e-6], [1e-3], dts=[0.1, 0.05], reference=exact)
    with pytest.raises(ValueError, match="reference is required"):
        work_precision(decay(), setups[:1], dts=[0.1])


def test_callable_metric_needs_no_reference_and_is_named():
    def log_final_error(x):  # e.g. a log-likelihood error against a closed form
        return float((x[-1].log() - LAM * T).abs().mean())

    wp = work_precision(decay(), [Setup("Euler", "Euler")], dts=[T / 10], error=log_final_error, runs=1, warmup=0)
    assert wp.error == "log_final_error" and wp.reference["metric"] == "log_final_error"
    n = 10
    assert math.isclose(wp.points[0]["error"], abs(n * math.log(1 + LAM * T / n) - LAM * T), rel_tol=1e-12)
    with pytest.raises(ValueError, match="leave reference=None"):
        work_precision(decay(), [Setup("Euler", "Euler")], dts=[0.1], error=log_final_error, reference=exact)


# ---------------------------------------------------------------------------------------------------------------
# SDE mode: strong and weak errors on shared Brownian paths

MU, SIG = 0.5, 0.8  # geometric Brownian motion dX = μX dt + σX dW


def gbm(batch: int = 2):
    x0 = torch.linspace(0.5, 1.5, batch, dtype=DT)[:, None]
    return SDEProblem(lambda t, x: MU * x, lambda t, x: SIG * x, x0, (0.0, T), name="gbm")


def gbm_exact(problem, paths):
    x0 = problem.x0.repeat(paths, 1)

    def ref(ts, w):  # the pathwise solution X0 exp((μ − σ²/2) t + σ W_t)
        return x0 * torch.exp((MU - SIG**2 / 2) * ts[:, None, None] + SIG * w)

    return ref


def test_strong_error_of_em_on_gbm_has_order_half_and_matches_a_direct_solve_on_the_same_path():
    paths, problem = 400, gbm()
    counts = [2**k for k in range(3, 9)]
    grid = BrownianGrid.sample(
        problem.tspan, counts[-1], (paths * problem.batch_size, 1), generator=torch.Generator().manual_seed(1)
    )
    wp = work_precision(
        problem,
        [Setup("EM", "EM")],
        dts=[T / n for n in counts],
        reference=gbm_exact(problem, paths),
        paths=paths,
        brownian=grid,
        runs=1,
        warmup=0,
    )
    assert wp.mode == "strong" and wp.paths == paths and wp.brownian is grid
    errors = [p["error"] for p in wp.points]
    slope = _slope([T / n for n in counts], errors)
    assert abs(slope - 0.5) < 0.2, (slope, errors)
    assert all(0 < p["stderr"] < p["error"] for p in wp.points)
    # the same number from a direct solve driven by the same path
    direct = SDEProblem(problem.f, problem.g, problem.x0.repeat(paths, 1), problem.tspan, brownian=grid)
    ref_T = gbm_exact(problem, paths)(torch.tensor([T], dtype=DT), grid.path[-1:])[0]
    for p, n in zip(wp.points, counts, strict=True):
        x_T = solve(direct, "EM", timesteps=torch.linspace(0.0, T, n + 1, dtype=DT)).x[-1]
        assert math.isclose(p["error"], float((x_T - ref_T).abs().mean()), rel_tol=1e-12, abs_tol=1e-15)


def test_strong_error_against_a_finer_reference_setup_on_the_same_paths():
    # additive noise: EM has strong order 1; the reference is EM itself 64× finer on the same fine grid
    problem = SDEProblem(
        lambda t, x: -1.5 * x,
        lambda t, x: 0.5 * torch.ones_like(x),
        torch.ones(1, 1, dtype=DT),
        (0.0, T),
        noise="additive",
    )
    dts = [T / 2**k for k in range(2, 6)]
    wp = work_precision(problem, [Setup("EM", "EM")], dts=dts, reference=Setup("EM fine", "EM"), paths=200, runs=1)
    assert wp.reference["dt"] == T / (32 * 64) and wp.reference["brownian_steps"] == 32 * 64
    slope = _slope(dts, [p["error"] for p in wp.points])
    assert abs(slope - 1.0) < 0.2, slope


def test_weak_error_of_em_on_ou_is_the_closed_form_of_its_moment_recursions(tmp_path):
    # dX = −θX dt + σ dW: EM's mean obeys m ← (1 − θh) m, its second moment s ← (1 − θh)² s + σ² h
    theta, sigma, x0 = 1.5, 0.6, 1.0
    problem = SDEProblem(
        lambda t, x: -theta * x,
        lambda t, x: sigma * torch.ones_like(x),
        torch.full((1, 1), x0, dtype=DT),
        (0.0, T),
        noise="additive",
    )
    exact_mean = x0 * math.exp(-theta * T)
    exact_m2 = x0**2 * math.exp(-2 * theta * T) + sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta * T))
    counts = (4, 8, 16)
    wp = work_precision(
        problem,
        [Setup("EM", "EM")],
        dts=[T / n for n in counts],
        reference={"x": exact_mean, "x^2": exact_m2},  # the default test functions x and x²
        weak=True,
        paths=20_000,
        runs=1,
        warmup=0,
    )
    assert wp.mode == "weak" and wp.reference["phi"] == ["x", "x^2"]
    for p, n in zip(wp.points, counts, strict=True):
        h, m, s = T / n, x0, x0**2
        for _ in range(n):
            m, s = (1 - theta * h) * m, (1 - theta * h) ** 2 * s + sigma**2 * h
        for phi, truth in (("x", abs(m - exact_mean)), ("x^2", abs(s - exact_m2))):
            got = p["weak"][phi]
            assert abs(got["error"] - truth) < 3 * got["stderr"], (n, phi, got, truth)
        assert p["error"] == max(v["error"] for v in p["weak"].values())
    wp.to_json(tmp_path / "weak.json")
    data = json.loads((tmp_path / "weak.json").read_text())
    assert data["mode"] == "weak" and data["paths"] == 20_000 and set(data["points"][0]["weak"]) == {"x", "x^2"}
    assert "stderr" in wp.table()


def test_sde_mode_rejects_dense_errors_and_steps_off_the_grid():
    with pytest.raises(ValueError, match="dense output"):
        work_precision(gbm(), [Setup("EM", "EM")], dts=[0.1], reference=gbm_exact(gbm(), 1), error="L2")
    grid = BrownianGrid.sample((0.0, T), 8, (2, 1), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="not a point of the Brownian grid"):
        work_precision(gbm(), [Setup("EM", "EM")], dts=[T / 3], reference=gbm_exact(gbm(), 1), brownian=grid)


def _slope(hs, errors):
    lx, ly = torch.tensor(hs, dtype=DT).log(), torch.tensor(errors, dtype=DT).log()
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


# ---------------------------------------------------------------------------------------------------------------
# peers

HAVE = available_peers()
needs_torchdiffeq = pytest.mark.skipif(not HAVE["torchdiffeq"], reason="torchdiffeq not installed")
needs_torchsde = pytest.mark.skipif(not HAVE["torchsde"], reason="torchsde not installed")


def decay_batch():
    return ODEProblem(lambda t, x: -x, torch.tensor([[1.0], [2.0], [3.0]], dtype=DT), (0.0, T), name="y' = -y")


def decay_exact(ts):
    return torch.exp(-ts)[:, None, None] * torch.tensor([[1.0], [2.0], [3.0]], dtype=DT)


TOLS = ([1e-5, 1e-8], [1e-3, 1e-6])


@needs_torchdiffeq
def test_torchdiffeq_dopri5_matches_a_direct_odeint_call():
    from torchdiffeq import odeint

    wp = work_precision(decay_batch(), [torchdiffeq_setup()], *TOLS, reference=decay_exact, runs=1)
    loose, tight = wp.points
    assert loose["retcode"] == tight["retcode"] == "Success" and tight["error"] < loose["error"] < 1e-3
    assert loose["backend"] == "torchdiffeq" and loose["nf"] > 0 and loose["naccept"] is None
    x0, ts = decay_batch().x0, torch.tensor([0.0, T], dtype=DT)
    for p, atol, rtol in zip(wp.points, *TOLS, strict=True):
        direct = odeint(lambda t, x: -x, x0, ts, rtol=rtol, atol=atol, method="dopri5")
        truth = float((direct[-1] - decay_exact(ts)[-1]).abs().mean())
        assert math.isclose(p["error"], truth, rel_tol=1e-12)


def test_solve_ivp_rk45_matches_a_direct_call_on_the_flattened_batch():
    from scipy.integrate import solve_ivp

    wp = work_precision(decay_batch(), [solve_ivp_setup(method="RK45")], *TOLS, reference=decay_exact, runs=1)
    loose, tight = wp.points
    assert tight["error"] < loose["error"] < 1e-3
    y0 = np.array([1.0, 2.0, 3.0])
    for p, atol, rtol in zip(wp.points, *TOLS, strict=True):
        direct = solve_ivp(lambda t, y: -y, (0.0, T), y0, method="RK45", t_eval=[0.0, T], atol=atol, rtol=rtol)
        truth = float(np.abs(direct.y[:, -1] - y0 * math.exp(-T)).mean())
        assert math.isclose(p["error"], truth, rel_tol=1e-12)
        assert p["nf"] == direct.nfev


@needs_torchdiffeq
def test_peer_failures_are_retcodes_and_nan():
    blowup = ODEProblem(lambda t, x: x * x, torch.ones(1, 1, dtype=DT), (0.0, 2.0))  # x = 1/(1 − t) blows up at 1
    wp = work_precision(
        blowup, [torchdiffeq_setup(), solve_ivp_setup()], [1e-8], [1e-6], error=lambda x: 0.0, runs=1, warmup=0
    )
    for p in wp.points:
        assert p["retcode"] == "DtLessThanMin" and math.isnan(p["error"]) and math.isnan(p["time_min"])


@needs_torchsde
@pytest.mark.parametrize("tspan", [(0.0, T), (T, 0.0)], ids=["forward", "reverse-time"])
def test_torchsde_on_the_shared_path_equals_pysens(tspan):
    # diagonal noise: torchsde euler is pysens EM; additive noise: torchsde srk is SRA1 (same tableau, same ΔZ)
    def f(t, x):
        return -x * t[:, None] + torch.sin(x)

    def g(t, x):
        return 0.3 * (1 + t[:, None]) * torch.cos(x)

    x0 = torch.randn(3, 2, dtype=DT, generator=torch.Generator().manual_seed(4))
    diag = SDEProblem(f, g, x0, tspan)
    wp = work_precision(
        diag,
        [Setup("EM", "EM"), torchsde_setup()],
        dts=[T / 8, T / 32],
        reference=Setup("EM fine", "EM"),
        paths=20,
        runs=1,
        warmup=0,
    )
    ours, theirs = wp.points[:2], wp.points[2:]
    for a, b in zip(ours, theirs, strict=True):
        assert b["retcode"] == "Success" and math.isclose(a["error"], b["error"], rel_tol=1e-12)
    # the solutions themselves, on the sweep's ensemble path
    ens = SDEProblem(f, g, x0.repeat(20, 1), tspan, brownian=wp.brownian)
    saveat = torch.tensor(tspan, dtype=DT)
    x_em = solve(ens, "EM", dt=T / 8, saveat=saveat).x
    x_sde = torchsde_setup().solve(ens, dt=T / 8, saveat=saveat).x
    assert torch.allclose(x_em, x_sde, rtol=0, atol=1e-12)
    additive = SDEProblem(
        lambda t, x: -1.5 * x + t[:, None],
        lambda t, x: 0.4 * (1 + t[:, None]) * torch.ones_like(x),
        x0.repeat(20, 1),
        tspan,
        noise="additive",
        brownian=wp.brownian,
    )
    x_sra = solve(additive, "SRA1", dt=T / 8, saveat=saveat).x
    x_srk = torchsde_setup(method="srk", noise_type="additive").solve(additive, dt=T / 8, saveat=saveat).x
    assert torch.allclose(x_sra, x_srk, rtol=0, atol=1e-12)


def test_missing_peer_packages_raise_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # `import torchdiffeq` now fails
    monkeypatch.setitem(sys.modules, "torchsde", None)
    assert available_peers()["torchdiffeq"] is False and available_peers()["torchsde"] is False
    with pytest.raises(ImportError, match=r"torchdiffeq.*bench"):
        torchdiffeq_setup()
    with pytest.raises(ImportError, match=r"torchsde.*bench"):
        torchsde_setup()


@pytest.mark.skipif(HAVE["julia"], reason="juliacall installed: the julia backend would start Julia")
def test_julia_setup_without_julia_is_a_nan_point():
    wp = work_precision(decay(), [julia_setup("Tsit5"), Setup("DP5", "DP5")], [1e-8], [1e-6], reference=exact, runs=1)
    julia, dp5 = wp.points
    assert julia["retcode"].startswith("error: BackendNotAvailable") and math.isnan(julia["error"])
    assert dp5["retcode"] == "Success"
    assert available_peers()["solve_ivp"] is True
    if HAVE["cvode"]:
        assert (cvode_setup().method, cvode_setup().backend) == ("CVODE_BDF", "scipy")
