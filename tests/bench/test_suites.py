"""`pysens bench`: the suite registry, argument passing, progress, failures; README tables from the JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pysens.bench import suites, tables
from pysens.bench.suites import SUITES, Suite, run_suite
from pysens.cli import main

ROOT = Path(__file__).resolve().parents[2]
CALLS: list[tuple[list[str], object]] = []


def fake_suite(argv, progress=None):
    CALLS.append((list(argv), progress))
    if progress is not None:
        progress("step 1")
    return 0


def failing_suite(argv):
    raise SystemExit(3)


@pytest.fixture
def fakes(monkeypatch):
    CALLS.clear()
    registry = {
        "fake": Suite("fake", f"{__name__}:fake_suite", "records its arguments", folder="fake"),
        "broken": Suite("broken", f"{__name__}:failing_suite", "exits 3", quick=False),
    }
    monkeypatch.setattr(suites, "SUITES", registry)
    return registry


def test_every_registered_suite_resolves_to_a_callable():
    for suite in SUITES.values():
        if suite.name in ("diffusion", "fp-residual"):
            pytest.importorskip(suite.target.split(":")[0])
        assert callable(suite.load()), suite.name


def test_list_names_every_suite(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in SUITES:
        assert name in out


def test_suite_gets_its_folder_quick_extra_options_and_progress(fakes, tmp_path):
    messages = []
    assert run_suite("fake", tmp_path, quick=True, extra=["--runs", "2"], progress=messages.append) == 0
    argv, progress = CALLS[0]
    assert argv == ["--out", str(tmp_path / "fake"), "--runs", "2", "--quick"]
    assert messages == ["step 1"]


def test_cli_passes_options_after_double_dash(fakes, tmp_path):
    assert main(["bench", "fake", "--out", str(tmp_path), "--no-progress", "--", "--runs", "1"]) == 0
    flag, stage, *rest = CALLS[0][0]
    # the suite writes into the stage of its run folder tmp_path/fake, moved in whole when it succeeds
    assert (flag, rest) == ("--out", ["--runs", "1"])
    assert Path(stage).parent == tmp_path and Path(stage).name.startswith(".fake.pysens-stage-")
    assert (tmp_path / "fake").is_dir() and not Path(stage).exists()


def test_failing_suite_is_reported_and_the_others_still_run(fakes, tmp_path, capsys):
    assert main(["bench", "broken", "fake", "--out", str(tmp_path), "--no-progress"]) == 1
    assert len(CALLS) == 1
    assert "failed: {'broken': 3}" in capsys.readouterr().out


def test_bad_suite_names_and_quick_without_support(fakes, tmp_path, capsys):
    assert main(["bench", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown suite(s) nope" in capsys.readouterr().err
    assert main(["bench", "broken", "--quick", "--out", str(tmp_path)]) == 2
    assert "argument --quick: not available for broken" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown benchmark suite 'nope'"):
        run_suite("nope", tmp_path)


def test_readme_tables_are_the_rendering_of_the_committed_json():
    _, changed = tables.update_readme(ROOT / "benchmarks" / "README.md", ROOT / "benchmarks" / "results", write=False)
    assert changed == [], f"benchmarks/README.md is stale for {changed}: run `pysens bench --tables`"


def test_readme_regions_cover_every_renderer():
    text = (ROOT / "benchmarks" / "README.md").read_text()
    for name in tables.RENDERERS:
        assert f"<!-- bench-table: {name} -->" in text, name


def test_update_readme_rewrites_only_the_marked_region(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "retraining_study.json").write_text(
        json.dumps(
            {
                "config": {"edit": "remove", "count": 4, "digit": 1, "mode": "finetune", "seeds": [0]},
                "summary": {
                    "mean_cosine": 0.5,
                    "ot_mean_cosine": 0.25,
                    "near_edit_mean_cosine": 0.75,
                    "near_edit_ot_mean_cosine": 0.125,
                },
            }
        )
    )
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench-table: retraining -->\nold\n<!-- /bench-table -->\noutro\n")
    _, changed = tables.update_readme(readme, results)
    text = readme.read_text()
    assert changed == ["retraining"]
    assert text.startswith("intro\n<!-- bench-table: retraining -->\nremove 4 images of digit 1")
    assert "| all samples | 0.500 | 0.250 |" in text and "old" not in text and text.endswith("outro\n")
    assert tables.update_readme(readme, results)[1] == []


def test_missing_json_and_unknown_table_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="stiff.json is missing"):
        tables.render("stiff", tmp_path)
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        tables.render("nope", tmp_path)
