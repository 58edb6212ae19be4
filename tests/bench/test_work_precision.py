"""The work-precision harness: errors against the reference, NaN for failures, counted runs, outputs."""

import json
import math

import torch

from pysens.bench import Setup, work_precision
from pysens.solvers import ODEProblem

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
