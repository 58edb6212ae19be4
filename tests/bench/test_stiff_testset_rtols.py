"""The stiff test-set suite on a custom rtol grid (``--rtols``): parsed, validated and run as given."""

import json

import pytest
import torch

from pysens.bench.stiff_testset import main, parse_rtols
from pysens.solvers.tolerance import internal_tolerances, tolerance_map

torch.set_num_threads(1)


def _refuse(message):
    raise ValueError(message)


def test_rtols_are_parsed_tightest_last_without_repeats():
    assert parse_rtols("1e-4, 2e-5,1e-3,1e-4", _refuse) == (1e-3, 1e-4, 2e-5)


@pytest.mark.parametrize("bad", ["0", "1", "-1e-4", "abc", "1e-4,,1e-5", "nan"])
def test_rtols_outside_zero_one_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="--rtols"):
        parse_rtols(bad, _refuse)


def test_suite_runs_the_given_grid_and_records_it(tmp_path):
    argv = ["--rtols", "1e-3,3e-4", "--problems", "linear", "--setups", "torch QNDF", "--warmup", "0"]
    assert main(argv + ["--out", str(tmp_path), "--json", "grid.json"]) == 0
    data = json.loads((tmp_path / "grid.json").read_text())
    assert data["config"]["rtols"] == [1e-3, 3e-4] and data["config"]["quick"] is False
    points = data["problems"]["linear"]["points"]
    assert [p["reltol"] for p in points] == [1e-3, 3e-4]
    assert all(p["retcode"] == "Success" and not p["wrong"] for p in points)
    qndf = tolerance_map("QNDF")  # each point records the map it ran with (K = err / rtol_int^(1/q) needs it)
    assert all(p["tolerance_map"] == [qndf.q, qndf.c] for p in points)
    assert [p["rtol_internal"] for p in points] == [internal_tolerances("QNDF", r, r * 1e-3)[0] for r in (1e-3, 3e-4)]
    # the figures are named after the JSON, so a finer or partial sweep leaves the committed sweep's PNGs alone
    assert (tmp_path / "grid_linear.png").is_file() and not (tmp_path / "stiff_testset_linear.png").exists()
    assert main(["--merge", str(tmp_path / "grid.json"), "--out", str(tmp_path), "--json", "merged.json"]) == 0
    assert (tmp_path / "merged_linear.png").is_file() and not (tmp_path / "stiff_testset_linear.png").exists()


def test_rtols_and_quick_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--rtols", "1e-3", "--quick", "--out", str(tmp_path)])
    assert "--rtols and --quick" in capsys.readouterr().err
