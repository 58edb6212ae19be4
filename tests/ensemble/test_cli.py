"""The torchrun-ready verbs, run in one process (``torchrun`` only changes how many ranks run them)."""

from __future__ import annotations

import json

import torch

import pysens
from pysens.cli import main
from pysens.ensemble import sharded_sample_pf_ode
from tests.ensemble import workloads


def _setup(tmp_path):
    model = workloads.small_model().float()
    pysens.save_checkpoint(model, tmp_path / "model.pt")
    torch.save(torch.randn(5, 2, generator=torch.Generator().manual_seed(2)), tmp_path / "data.pt")
    return model


def test_sample_verb_writes_the_sharded_result_and_resumes(tmp_path, capsys):
    model = _setup(tmp_path)
    args = ["sample", "--model", str(tmp_path / "model.pt"), "--samples", "6", "--batch-size", "4", "--seed", "3"]
    args += ["--rtol", "1e-3", "--atol", "1e-3", "--device", "cpu", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    result = torch.load(tmp_path / "run" / "result.pt", weights_only=True)
    direct = sharded_sample_pf_ode(model, model.process, 6, batch_size=4, seed=3, method="Tsit5", rtol=1e-3, atol=1e-3)
    assert torch.equal(result["x"], direct["x"]) and torch.equal(result["x_T"], direct["x_T"])
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["world_size"] == 1 and report["retcode"] == "Success" and report["resumed_shards"] == []
    assert main(args) == 0  # the rerun loads both shards
    assert json.loads((tmp_path / "run" / "report.json").read_text())["resumed_shards"] == [0, 1]
    assert "2 shard(s) resumed" in capsys.readouterr().out


def test_likelihood_and_sensitivity_verbs(tmp_path):
    _setup(tmp_path)
    common = ["--model", str(tmp_path / "model.pt"), "--batch-size", "3", "--rtol", "1e-3", "--atol", "1e-3"]
    lik = [
        "likelihood",
        "--data",
        str(tmp_path / "data.pt"),
        "--divergence",
        "hutchinson",
        "--out",
        str(tmp_path / "l"),
    ]
    assert main(lik + common) == 0
    assert torch.load(tmp_path / "l" / "result.pt", weights_only=True)["log_density"].shape == (5,)
    sens = ["sensitivity", "--samples", "4", "--data", str(tmp_path / "data.pt"), "--remove", "0,3"]
    assert main(sens + common + ["--out", str(tmp_path / "s")]) == 0
    assert torch.load(tmp_path / "s" / "result.pt", weights_only=True)["sensitivity"].shape == (1, 4, 2)


def test_verbs_refuse_bad_input(tmp_path, capsys):
    _setup(tmp_path)
    common = ["--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "x")]
    assert main(["sensitivity", "--samples", "2", "--data", str(tmp_path / "data.pt"), "--remove", "7", *common]) == 2
    assert "--remove indices must lie in [0, 5)" in capsys.readouterr().err
    assert main(["likelihood", "--data", str(tmp_path / "missing.pt"), *common]) == 2
    assert "argument --data" in (err := capsys.readouterr().err) and "is not an existing file" in err
    assert main(["sample", "--samples", "2", "--batch-size", "0", *common]) == 2
    assert "argument --batch-size" in capsys.readouterr().err


def test_unsharded_verbs_are_refused_under_a_multi_process_launcher():
    import os
    import subprocess
    import sys

    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pysens", "backends"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "`pysens backends` does not split its work across ranks" in done.stderr
