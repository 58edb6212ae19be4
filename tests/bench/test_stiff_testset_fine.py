"""The finer-grid summary of the stiff test-set suite: K = err / rtol_int^(1/q) and the procedure's c from it."""

import math

import pytest

from pysens.bench.stiff_testset import DIGITS_MARGIN, error_per_tolerance, error_per_tolerance_table
from pysens.solvers.tolerance import CALIBRATION_SAFETY


def _point(setup, rtol, scd, q, c, retcode="Success", required=None):
    rtol_int = c * rtol**q
    need = -math.log10(rtol) - DIGITS_MARGIN if required is None else required
    return {
        "setup": setup,
        "method": "QNDF",
        "reltol": rtol,
        "abstol": rtol,
        "retcode": retcode,
        "scd": scd if retcode == "Success" else None,
        "required_digits": need,
        "wrong": retcode == "Success" and scd < need,
        "tolerance_map": [q, c],
        "rtol_internal": rtol_int,
    }


def _scd_for(k, rtol, q, c):
    """The scd of a global error err = k · rtol_int^(1/q)."""
    return -math.log10(k * (c * rtol**q) ** (1 / q))


def test_k_max_comes_from_the_fit_set_and_gives_the_documented_c():
    q, c = 1.2, 0.5
    problems = {
        "orego": {"points": [_point("s", 1e-4, _scd_for(6.0, 1e-4, q, c), q, c)]},
        "hires": {"points": [_point("s", 2e-5, _scd_for(2.0, 2e-5, q, c), q, c)]},
        # held out of the fit: a larger K here does not calibrate, but its err/rtol and margin count
        "linear": {
            "points": [_point("s", 1e-3, _scd_for(9.0, 1e-3, q, c), q, c), _point("s", 1e-6, 0, q, c, "MaxIters")]
        },
    }
    (row,) = error_per_tolerance(problems)
    k, name, rtol = row["k_max"]
    assert (name, rtol) == ("orego", 1e-4) and k == pytest.approx(6.0, rel=1e-12)
    assert row["c_procedure"] == pytest.approx((CALIBRATION_SAFETY / 6.0) ** q, rel=1e-12)
    ratio, name, rtol = row["ratio_max"]  # err / rtol = K c^(1/q): largest on linear
    assert name == "linear" and ratio == pytest.approx(9.0 * c ** (1 / q), rel=1e-12)
    assert row["margin_min"][1] == "linear" and row["margin_min"][0] == pytest.approx(DIGITS_MARGIN - math.log10(ratio))
    assert (row["success"], row["run"], row["wrong"]) == (3, 4, 0)


def test_a_wrong_success_is_counted_and_atol_dominated_points_stay_out_of_err_per_rtol():
    q, c = 1.0, 1.0
    wrong = _point("s", 1e-4, 2.0, q, c)  # 2 digits where 2.5 are required
    atol_dominated = _point("s", 1e-6, 1.0, q, c, required=0.5)  # err/rtol 1e5, but only 0.5 digits were promised
    (row,) = error_per_tolerance({"e5": {"points": [wrong, atol_dominated]}})
    assert row["wrong"] == 1 and row["k_max"] is None and row["c_procedure"] is None
    (on_fit_set,) = error_per_tolerance({"vdpol": {"points": [wrong]}})  # counted as wrong, not as a calibration K
    assert on_fit_set["wrong"] == 1 and on_fit_set["k_max"] is None
    assert row["ratio_max"][2] == 1e-4 and row["margin_min"][0] == pytest.approx(-0.5)
    data = {"problems": {"e5": {"points": [wrong]}}, "config": {"rtols": [1e-4], "tolerance_model": "x", "maxiters": 9}}
    assert "| s | (1, 1) | 1 / 1 | – | – | 100 (e5 0.0001) | -0.50 (e5 0.0001) | 1 |" in error_per_tolerance_table(data)
