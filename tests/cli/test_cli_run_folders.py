"""The verbs write through run folders: a live run keeps a second one off its --out, a killed run leaves the
previous folder whole, and ``pysens bench`` commits each suite's files as a whole (its own folder, or its group
of files in the shared results folder)."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pysens.artifacts import RunFolder, verify_run_folder, write_json
from pysens.bench import suites
from pysens.cli import main

REPO = Path(__file__).resolve().parents[2]


def _previous_demo(out: Path) -> str:
    with RunFolder(out, kind="demo") as stage:
        write_json(stage / "report.json", {"previous": True})
        (stage / "model.pt").write_bytes(b"previous model")
    return verify_run_folder(out)["run_id"]


def _wait_for(proc: subprocess.Popen, phase: str) -> None:
    """Read the demo's stderr (phase lines and progress bars) up to the line of ``phase``."""
    for line in proc.stderr:
        if phase in line:
            return
    raise AssertionError(f"the run ended before printing {phase!r}: {proc.wait()}")


def test_a_live_demo_keeps_a_second_off_its_folder_and_a_kill_leaves_the_previous_run(tmp_path, capsys):
    out = tmp_path / "out"
    previous = _previous_demo(out)
    run = subprocess.Popen(
        [sys.executable, "-m", "pysens.cli", "demo", "--out", str(out), "--steps", "20", "--samples", "200"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(run, "[1/4]")  # training into its stage
        assert main(["demo", "--out", str(out), "--steps", "5"]) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is in use by another live run: pysens demo (pid {run.pid}" in err
        _wait_for(run, "[2/4]")  # the model is saved (in the stage), sampling has begun
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=60) == -signal.SIGKILL
    finally:
        run.kill()
        run.stderr.close()
    # the previous run, whole: the killed run's model is not beside the previous report
    assert verify_run_folder(out)["run_id"] == previous
    assert (out / "model.pt").read_bytes() == b"previous model"
    # the next start removes what the killed run left
    assert [p.name for p in tmp_path.iterdir() if p.name != "out"]
    nxt = RunFolder(out, kind="demo")
    nxt.open()
    nxt.abort()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def fake_suite(argv, progress=None):
    """A benchmark suite for the tests: writes ``<label>.json`` (and ``shared.json``) into ``--out``; fails on
    ``--fail``."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--label", default="run")
    p.add_argument("--fail", action="store_true")
    args = p.parse_args(argv)
    write_json(Path(args.out) / f"{args.label}.json", {"label": args.label})
    write_json(Path(args.out) / "shared.json", {"label": args.label})
    return 1 if args.fail else 0


@pytest.fixture
def fake_suites(monkeypatch):
    own = suites.Suite("fake-own", f"{__name__}:fake_suite", "test suite in its own folder", folder="fake_own")
    grouped = suites.Suite("fake-group", f"{__name__}:fake_suite", "test suite in the shared root")
    monkeypatch.setitem(suites.SUITES, own.name, own)
    monkeypatch.setitem(suites.SUITES, grouped.name, grouped)


def test_bench_commits_each_suite_whole_and_keeps_other_files(tmp_path, fake_suites):
    root = tmp_path / "results"
    root.mkdir()
    (root / "stiff.json").write_text("another suite's results")
    bench = ["bench", "fake-own", "fake-group", "--out", str(root), "--no-progress"]
    assert main([*bench, "--", "--label", "first"]) == 0
    assert main([*bench, "--", "--label", "second"]) == 0
    own = verify_run_folder(root / "fake_own")
    assert set(own["files"]) == {"second.json", "shared.json"}  # the first run's file went with its run
    group = verify_run_folder(root, group="fake-group")
    assert set(group["files"]) == {"second.json", "shared.json"}
    assert not (root / "first.json").exists()
    assert (root / "stiff.json").read_text() == "another suite's results"
    # a failing suite changes nothing
    assert main([*bench, "--", "--label", "third", "--fail"]) == 1
    assert verify_run_folder(root / "fake_own")["run_id"] == own["run_id"]
    assert verify_run_folder(root, group="fake-group")["run_id"] == group["run_id"]
    assert json.loads((root / "shared.json").read_text())["label"] == "second"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [".fake-group.pysens-manifest.json"]
