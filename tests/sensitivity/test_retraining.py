"""The retraining study end to end at toy size, through the CLI verb that ``add_cli`` registers."""

import argparse
import json

import pytest

from pysens.sensitivity import add_cli
from pysens.sensitivity.retraining import RetrainingConfig


def parse(argv):
    parser = argparse.ArgumentParser(prog="pysens")
    add_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.mark.parametrize("mode, edit", [("finetune", "remove"), ("retrain", "add")])
def test_study_writes_json_and_png(tmp_path, mode, edit):
    options = {
        "--out": str(tmp_path), "--mode": mode, "--edit": edit, "--seeds": "0", "--steps": "30",
        "--finetune-steps": "10", "--samples": "3", "--count": "5", "--hidden": "32", "--depth": "1",
        "--rtol": "1e-3", "--atol": "1e-3",
    }  # fmt: skip
    args = parse(["retraining-study", *(item for pair in options.items() for item in pair), "--quiet"])
    assert args.func(args) == 0
    report = json.loads((tmp_path / "retraining_study.json").read_text())
    assert (tmp_path / "retraining_study.png").stat().st_size > 5_000
    run = report["runs"][0]
    assert run["sensitivity"]["retcode"] == "Success"
    assert len(run["correlation"]["cosine"]) == 3 and len(run["ot_correlation"]["pearson"]) == 3
    n = 1797 if edit == "remove" else 1792
    expected_eps = 5 / (n - 5) if edit == "remove" else 5 / (n + 5)
    assert run["epsilon"] == pytest.approx(expected_eps)
    assert set(report["summary"]) >= {"mean_cosine", "mean_pearson", "ot_mean_cosine", "ot_mean_pearson"}


def test_bad_config_is_rejected(capsys):
    args = parse(["retraining-study", "--count", "0", "--quiet"])
    assert args.func(args) == 2
    assert "count must be positive" in capsys.readouterr().err
    with pytest.raises(ValueError, match="digit"):
        RetrainingConfig(digit=11).validate()
