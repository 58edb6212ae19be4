"""`pysens bench --check`: missed speed targets read from the suites' JSON turn into exit status 1."""

from __future__ import annotations

import json

import pytest

from pysens.bench import suites
from pysens.bench.suites import Suite
from pysens.bench.targets import missed_targets, missed_targets_in
from pysens.cli import main


def test_missed_targets_reads_met_fields_of_every_form():
    report = {
        "targets": [{"target": "A ≥ 2× B", "met": False}, {"target": "C", "met": True}, {"target": "E", "met": None}],
        "workloads": {"w": {"targets": [{"target": "A ≥ 2× B", "met": False}]}},  # the same target twice: once
        "rows": [{"ratio": 0.5, "ratio_met": False}, {"ratio": 2.0, "ratio_met": True}],
        "engines": {"target": "F", "target_met": {"evaluate": True, "backward": False}},
    }
    assert missed_targets(report) == ["A ≥ 2× B", "rows[0].ratio_met", "engines.target_met"]
    assert missed_targets({"targets": [{"target": "x", "met": True}], "met_something": 3}) == []


def test_only_files_written_since_the_start_count(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"met": False}))
    since = old.stat().st_mtime + 1
    assert missed_targets_in(tmp_path, since) == {}
    assert missed_targets_in(tmp_path, 0.0) == {str(old): ["met"]}


def suite_missing_a_target(argv):
    out = argv[argv.index("--out") + 1]
    from pathlib import Path

    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "r.json").write_text(json.dumps({"targets": [{"target": "fast enough", "met": False}]}))
    return 0


@pytest.mark.parametrize("check, status", [(False, 0), (True, 1)])
def test_check_turns_a_missed_target_into_exit_status_1(monkeypatch, tmp_path, capsys, check, status):
    registry = {"slow": Suite("slow", f"{__name__}:suite_missing_a_target", "misses its target", folder="slow")}
    monkeypatch.setattr(suites, "SUITES", registry)
    argv = ["bench", "slow", "--out", str(tmp_path), "--no-progress"] + (["--check"] if check else [])
    assert main(argv) == status
    err = capsys.readouterr().err
    assert ("target NOT met" in err and "fast enough" in err) == check


def test_sensitivity_cost_suite_draws_its_png(tmp_path):
    from pysens.bench.sensitivity_cost import plot_costs

    cases = {"a: sample": 1.0, "b: + likelihood": 2.0, "c: + sensitivity P=1": 2.4, "c: + sensitivity P=8": 5.0}
    rows = [
        {"divergence": d, "case": c, "wall_median_s": w * 1e-3, "nf": 32, "njvp": 0, "retcode": "Success"}
        for d in ("exact", "hutchinson")
        for c, w in cases.items()
    ] + [{"divergence": "exact", "case": "targets", "c1_over_b": 1.2}]
    plot_costs(tmp_path / "sensitivity_cost.png", rows)
    assert (tmp_path / "sensitivity_cost.png").stat().st_size > 10_000
