"""The stiff-speed suite's bookkeeping: verdicts against issue 13's bounds, the torch right-hand side's floor (calls
counted per solve of the batch), and the rendered table (no timing is asserted: speed lives in the suite's runs)."""

from __future__ import annotations

import math

import pytest
import torch

from pysens.bench import stiff_speed
from pysens.bench.testset import PROBLEMS

torch.set_num_threads(1)


def _row(nf: int, solves: int, time: float | None, user_code: bool = False) -> dict:
    return {"rtol": 1e-6, "scd": 6.2, "nf": nf, "solves": solves, "time": time, "wall": time, "user_code": user_code}


def test_verdict_bounds_are_issue_13s():
    engines = {"torch QNDF coupled": 0.15}
    peers = {"user CVODE": 0.1, "user LSODA": 0.2}
    one = stiff_speed._verdict(engines, peers, batch=1)
    assert one["fastest_peer"] == "user CVODE"
    assert one["torch_over_fastest_peer"] == pytest.approx(1.5)
    assert one["met"]  # 1.5× is within the B = 1 bound
    batch = stiff_speed._verdict(engines, peers, batch=64)
    assert not batch["met"]  # a batch must be faster than every peer
    assert batch["torch_over_each"]["user LSODA"] == pytest.approx(0.75)


def test_rhs_floor_counts_a_loops_calls_per_solve():
    rows = {
        "torch QNDF coupled": _row(2800, 1, 0.2),
        "user CVODE": _row(8 * 2100, 8, 1.6, user_code=True),  # a loop of 8 solves, 2100 calls each
        "user CVODE band whole batch": _row(2200, 1, 0.04, user_code=True),
        "never reached": {"rtol": None, "scd": None, "time": None},
    }
    floor = stiff_speed._rhs_floor(rows, rhs_seconds=2e-5)
    assert floor["fewest_calls_setup"] == "user CVODE"
    assert floor["fewest_calls"] == 2100
    assert floor["seconds"] == pytest.approx(2100 * 2e-5)
    assert stiff_speed._rhs_floor({"x": {"time": None}}, 1e-5) is None


def test_rhs_seconds_is_one_calls_cpu_time():
    problem = PROBLEMS["rober"]
    x0 = stiff_speed._initial_states(problem, 4)
    seconds = stiff_speed._rhs_seconds(problem, x0, calls=20)
    assert math.isfinite(seconds) and 0 < seconds < 0.1


def test_table_states_both_verdicts_and_the_floor():
    rows = {
        "torch QNDF coupled": _row(2794, 1, 0.19),
        "CVODE": _row(2087, 1, 0.19),
        "user LSODA": _row(2260, 1, 0.025, user_code=True),
    }
    engines = {"torch QNDF coupled": 0.19}
    summary = stiff_speed._verdict(engines, {"CVODE": 0.19}, 1)
    summary["user_code"] = stiff_speed._verdict(engines, {"user LSODA": 0.025}, 1)
    floor = stiff_speed._rhs_floor(rows, 2.7e-5)
    floor["over_fastest_user_peer"] = floor["seconds"] / 0.025
    floor["reachable"] = floor["over_fastest_user_peer"] <= stiff_speed._target(1)
    summary["rhs_floor"] = floor
    text = stiff_speed.table({"cases": [{"problem": "rober", "batch": 1, "setups": rows, "summary": summary}]})
    on_torch_rhs = "peer on pysens's torch right-hand side: fastest torch (torch QNDF coupled) / fastest peer (CVODE)"
    assert f"{on_torch_rhs} = 1.00" in text
    assert "= 7.60 (fastest torch ≤ 1.5× the fastest peer: not met)" in text
    # 2087 calls (CVODE's, the fewest) at 27 µs: 0.0563 s, 2.25× user LSODA's 0.025 s, beyond the 1.5× bound
    assert "(2087, CVODE) costs 0.0563 s, 2.25× the fastest user peer's whole solve (beyond the target" in text


def test_the_numpy_peers_blas_runs_on_one_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed (a bench/test extra)")
    with stiff_speed._one_blas_thread() as limit:
        assert limit == 1
        blas = [pool for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
        assert blas and all(pool["num_threads"] == 1 for pool in blas)


def test_an_unmeasurable_problem_is_a_case_with_its_reason():
    case = stiff_speed.bench_case(PROBLEMS["e5"], 1, runs=1, loop_samples=1, cvode=False, progress=lambda msg: None)
    assert case["setups"] == {} and case["note"] == stiff_speed.unmeasurable(PROBLEMS["e5"])
    assert f"- e5, B = 1: not measured: {case['note']}" in stiff_speed.table({"cases": [case]})
