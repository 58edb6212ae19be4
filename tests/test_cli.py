"""The command line: the demo writes a complete report; the backends verb lists what runs here."""

import json

import pytest

from pysens.artifacts import atomic_write, write_json
from pysens.cli import main


def test_mixture_demo_writes_report_png_and_checkpoint(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "300", "--samples", "300", "--quiet"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert (tmp_path / "samples.png").stat().st_size > 10_000
    assert (tmp_path / "model.pt").exists()
    assert report["sampling"]["pf_ode"]["retcode"] == "Success"
    assert report["sampling"]["sde"]["retcode"] == "Success"
    # the float64 solve of the exact mixture reproduces the closed-form density
    assert report["likelihood"]["solver_check_max_abs_error"] < 1e-6
    # standard errors of what the report averages
    assert all(0 < se < 0.2 for se in report["sampling"]["moments"]["pf_ode"]["mean_standard_error"])
    assert 0 < report["likelihood"]["model_excess_nll_standard_error"] < 0.2
    # even a short training run learns most of the score
    assert report["training"]["score_relative_mse"] < 0.2
    assert "held-out NLL" in capsys.readouterr().out


def test_digits_demo_runs_small(tmp_path):
    assert (
        main(["demo", "--dataset", "digits", "--out", str(tmp_path), "--steps", "30", "--samples", "4", "--quiet"]) == 0
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["sampling"]["pf_ode"]["retcode"] == "Success"
    assert report["sampling"]["sde"]["retcode"] == "Success"
    lik = report["likelihood"]
    assert lik["bits_per_dim"] > 0 and 0 < lik["bits_per_dim_standard_error"] < lik["bits_per_dim"]
    # float64 flow of the fitted Gaussian (d = 64, exact divergence, rtol = atol = 1e-9) vs its closed-form density
    assert lik["solver_check"]["stats"]["retcode"] == "Success" and lik["solver_check_max_abs_error"] < 1e-6


def test_backends_verb(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "torch  available" in out and "julia  unavailable" in out


def test_cuda_demo_without_cuda_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["demo", "--out", str(tmp_path), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": 1.0, "b": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1.0, "b": None}

    def broken(handle):
        handle.write(b"{partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1.0, "b": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_julia_check_says_julia_is_absent_and_fails(capsys):
    from pysens.solvers.backends.julia_backend import available

    if available()[0]:
        pytest.skip("Julia is installed here: the self-check would run for real")
    assert main(["julia-check"]) != 0
    captured = capsys.readouterr()
    assert "Julia is not installed" in captured.out + captured.err
