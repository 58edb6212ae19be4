"""The stiff test-set problems (Bari test set): definitions, the scd measure, and a CI-sized sample of the suite."""

import json
import math

import pytest
import torch

from pysens.bench import tables
from pysens.bench.stiff_testset import DIGITS_MARGIN, run_problem
from pysens.bench.testset import PROBLEMS, scd
from pysens.bench.work_precision import Setup
from pysens.solvers import solve

DT = torch.float64


def test_scd_is_minus_log10_of_the_worst_relative_error():
    ref = (2.0, -4.0, 1e-20)
    x = torch.tensor([[2.0 * (1 + 1e-5), -4.0, 1e-20], [2.0, -4.0 * (1 - 1e-3), 0.0]], dtype=DT)
    got = scd(x, ref)
    assert abs(float(got[0]) - 5.0) < 1e-9 and float(got[1]) == 0.0  # y3 = 0 against 1e-20: 100% off
    assert abs(float(scd(x, ref, absolute=(2,))[1]) - 3.0) < 1e-9  # absolute error of y3 (1e-20) is negligible
    assert math.isinf(float(scd(torch.tensor([ref], dtype=DT), ref)[0]))


def test_every_problem_is_batched_row_independent_and_matches_its_reference_shape():
    for p in PROBLEMS.values():
        prob = p.problem(3)
        assert prob.x0.shape == (3, p.dim) and len(p.reference) == p.dim
        x = prob.x0 * torch.tensor([[1.0], [1.1], [0.9]], dtype=DT)
        f = prob.f(torch.zeros(3, dtype=DT), x)
        for b in range(3):
            assert torch.equal(f[b : b + 1], prob.f(torch.zeros(1, dtype=DT), x[b : b + 1]))
        assert p.atol(1e-6) > 0


def test_e5_measure_keeps_the_invariant_and_the_mean():
    p = PROBLEMS["e5"]
    m = 0.5 * (p.reference[1] + p.reference[2])
    consistent = torch.tensor([[0.0, m * (1 + 1e-6), m * (1 + 1e-6), 0.0]], dtype=DT)
    assert abs(float(p.scd(consistent)[0]) - 6.0) < 1e-6
    drifted = torch.tensor([[0.0, m * (1 + 1e-2), m * (1 - 1e-2), 0.0]], dtype=DT)  # mean right, invariant 2% off
    assert float(p.scd(drifted)[0]) < 2.0


def test_e5s_requirement_is_capped_at_the_float64_floor_of_its_mean():
    # E5s's mean carries the rounding drift of the invariant: scipy BDF/LSODA/Radau stop at 5.5-7.7 digits for any
    # per-step rtol below 2e-10 (module docstring). The literal rule stands where it is below that floor (rtol 1e-4:
    # 2.5 digits, 1e-6: 4.5) and is capped at float64_digits where it asks for more (1e-8: 6.5 -> 5.4)
    p = PROBLEMS["e5s"]
    m = 0.5 * (p.reference[1] + p.reference[2])
    x = torch.tensor([[0.0, m * (1 + 1e-3), m * (1 + 1e-3), 0.0]], dtype=DT)  # 3 digits
    need = {r: float(p.required_digits(x, r, p.atol(r), DIGITS_MARGIN)[0]) for r in (1e-4, 1e-6, 1e-8)}
    assert abs(need[1e-4] - 2.5) < 1e-9 and abs(need[1e-6] - 4.5) < 1e-9 and need[1e-8] == p.float64_digits == 5.4
    assert all(q.float64_digits is None for name, q in PROBLEMS.items() if name != "e5s")


@pytest.mark.parametrize(
    "name,method,backend,rtol", [("hires", "Rodas5P", "torch", 1e-6), ("rober", "Rodas5P", "torch", 1e-6)]
)
def test_test_set_sample_is_right_to_its_tolerance(name, method, backend, rtol):
    # the acceptance rule of the suite on a CI-sized sample: Success means at least -log10(rtol) - 1.5 digits
    p = PROBLEMS[name]
    sol = solve(p.problem(1), method, backend, rtol=rtol, atol=p.atol(rtol))
    assert sol.retcode == "Success"
    assert float(p.scd(sol.final)[0]) >= -math.log10(rtol) - DIGITS_MARGIN


def test_suite_sweep_marks_points_and_renders(tmp_path):
    p = PROBLEMS["hires"]
    wp = run_problem(p, [1e-4], [Setup("torch Rodas5P", "Rodas5P", options={"linsolve": "dense"})])
    (point,) = wp.points
    assert point["retcode"] == "Success" and point["scd"] >= 4 - DIGITS_MARGIN and point["wrong"] is False
    data = {
        "problems": {"hires": wp.as_dict() | {"title": p.title, "dim": p.dim}},
        "wrong": [],
        "config": {"rtols": [1e-4], "runs": 1, "warmup": 0, "quick": True, "digits_margin": 1.5, "maxiters": 100},
    }
    (tmp_path / "stiff_testset.json").write_text(json.dumps(data))
    text = tables.render("stiff-testset", tmp_path)
    assert "| torch Rodas5P |" in text and f"{point['scd']:.1f} ·" in text and "**0**" in text


def test_merge_caps_points_run_before_the_float64_floor_was_stated():
    from pysens.bench.stiff_testset import _capped

    old = {"setup": "scipy LSODA", "reltol": 1e-8, "retcode": "Success", "scd": 6.01, "required_digits": 6.5}
    old["wrong"] = True
    assert _capped(old, "e5s")["wrong"] is False and _capped(old, "e5s")["required_digits"] == 5.4
    below = old | {"scd": 5.0}
    assert _capped(below, "e5s")["wrong"] is True  # below the floor itself: still a wrong answer
    assert _capped(old, "e5") is old  # no floor stated: untouched
    loose = old | {"reltol": 1e-4, "scd": 1.83, "required_digits": 2.5}
    assert _capped(loose, "e5s") is loose  # a requirement under the floor stands
