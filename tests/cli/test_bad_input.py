"""Bad command-line input: every verb refuses it before any work, in one line that names the option, with exit
status 2, no traceback, and no file changed.

Each case runs against a folder that already holds a complete run (and a file and a folder for path mistakes);
the snapshot of everything under ``tmp_path`` must be the same afterwards.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pysens.artifacts import RunFolder, write_json
from pysens.cli import main

NO_CUDA = not torch.cuda.is_available()

# (verb argv with {out} {file} {dir} {foreign} placeholders, the option the message must name)
CASES = [
    ("demo --steps 0", "--steps"),
    ("demo --steps -5", "--steps"),
    ("demo --steps ten", "--steps"),
    ("demo --samples 0", "--samples"),
    ("demo --samples -1", "--samples"),
    ("demo --threads -1", "--threads"),
    ("demo --threads 0", "--threads"),
    ("demo --device gpu", "--device"),
    ("demo --device cuda:x", "--device"),
    ("demo --dataset cifar", "--dataset"),
    ("demo --seed -1", "--seed"),
    ("demo --out {file}", "--out"),
    ("demo --out {file}/sub", "--out"),
    ("demo --out {foreign}", "--out"),
    ("demo --out .", "--out"),
    ("ode-sde-gap --part train --train-steps 0", "--train-steps"),
    ("ode-sde-gap --part train --train-gap-samples -1", "--train-gap-samples"),
    ("ode-sde-gap --residual-points 0", "--residual-points"),
    ("ode-sde-gap --pretrain-steps -1", "--pretrain-steps"),
    ("ode-sde-gap --device gpu", "--device"),
    ("ode-sde-gap --threads -2", "--threads"),
    ("ode-sde-gap --out {file}", "--out"),
    ("siem-study --checkpoints 1", "--checkpoints"),
    ("siem-study --checkpoints 0", "--checkpoints"),
    ("siem-study --checkpoints 50 --first-step 10 --train-steps 40", "--checkpoints"),
    ("siem-study --first-step 500 --train-steps 100", "--first-step"),
    ("siem-study --widths 0", "--widths"),
    ("siem-study --particles 1", "--particles"),
    ("siem-study --runs 0", "--runs"),
    ("siem-study --boot 0", "--boot"),
    ("siem-study --device gpu", "--device"),
    ("siem-study --seed -3", "--seed"),
    ("siem-study --out {file}/sub", "--out"),
    ("retraining-study --method Tsit6", "--method"),
    ("retraining-study --method EulerHeun", "--method"),
    ("retraining-study --steps 0", "--steps"),
    ("retraining-study --finetune-steps -1", "--finetune-steps"),
    ("retraining-study --digit 12", "--digit"),
    ("retraining-study --count 0", "--count"),
    ("retraining-study --digit 1 --count 500", "--count"),
    ("retraining-study --t1 1.5", "--t1"),
    ("retraining-study --lr -1", "--lr"),
    ("retraining-study --rtol 0", "--rtol"),
    ("retraining-study --t1 nan", "--t1"),
    ("retraining-study --seeds -1", "--seeds"),
    ("retraining-study --threads 0", "--threads"),
    ("retraining-study --out {file}", "--out"),
    ("bench stiff --threads -1", "--threads"),
    ("bench nosuch", "suites"),
    ("bench retraining --quick", "--quick"),
    ("bench --tables --results {file}", "--results"),
    ("bench --tables --results {dir} --readme {dir}", "--readme"),
    ("bench stiff --out {file}", "--out"),
    ("julia-check --out {dir}", "--out"),
    ("julia-check --out {file}/sub/report.json", "--out"),
]
if Path("/sys/kernel").is_dir():  # Linux: sysfs takes no new files, not even from root
    CASES.append(("demo --out /sys/pysens-out", "--out"))
if NO_CUDA:
    CASES += [("demo --device cuda", "--device"), ("siem-study --device cuda:0", "--device")]


def _snapshot(root: Path) -> dict:
    """Every entry below ``root``: (size, mtime, SHA-256) for files, None for folders."""
    found = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in names:
            path = Path(folder) / name
            stat = path.stat()
            found[str(path.relative_to(root))] = (
                stat.st_size,
                stat.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return found


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A complete previous run in ``out``, a plain file, a plain folder and a folder of someone else's files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYSENS_ODESDEGAP_DATA", str(tmp_path / "no-such-data"))
    with RunFolder(tmp_path / "out", kind="demo") as stage:
        write_json(stage / "report.json", {"previous": True})
    (tmp_path / "a_file.txt").write_text("not a folder")
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("precious")
    return {
        "out": str(tmp_path / "out"),
        "file": str(tmp_path / "a_file.txt"),
        "dir": str(tmp_path / "a_dir"),
        "foreign": str(tmp_path / "theirs"),
    }


def _argv(template: str, world: dict) -> list[str]:
    """The case's argv; ``--out`` is the folder of the previous run unless the case names its own."""
    argv = template.format(**world).split()
    return argv if "--out" in argv else [*argv, "--out", world["out"]]


@pytest.mark.parametrize(("template", "option"), CASES, ids=[c[0].split(" {")[0] for c in CASES])
def test_bad_option_is_refused_before_any_work(template, option, world, tmp_path, capsys):
    before = _snapshot(tmp_path)
    status = main(_argv(template, world))
    captured = capsys.readouterr()
    assert status == 2, captured
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and option in errors[0], captured.err
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("template", "option"),
    [
        ("demo --steps 0", "--steps"),
        ("demo --out {file}/sub", "--out"),
        ("siem-study --widths 0", "--widths"),
    ],
)
def test_the_installed_command_prints_no_traceback(template, option, world, tmp_path):
    before = _snapshot(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pysens.cli", *_argv(template, world)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and option in proc.stderr.strip().splitlines()[-1]
    assert _snapshot(tmp_path) == before
