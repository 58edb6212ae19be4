"""The SPDE benchmark suite: every solve of its work-precision sweeps reads rtol/atol natively (under the
proportional default the order-2 TRBDF2 got per-step tolerances ~rtol^1.5 and the full suite ran for hours)."""

import argparse
from types import SimpleNamespace

import torch

from pysens.bench import spde


def test_work_precision_sweeps_use_native_tolerances(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    calls = []

    def fake_work_precision(problem, setups, abstols, reltols, **kwargs):
        calls.append({"setups": [s.method for s in setups], **kwargs})
        return SimpleNamespace(
            points=[],
            table=lambda: "",
            plot=lambda path: None,
            as_dict=lambda: {"problem": problem.name, "points": []},
        )

    monkeypatch.setattr(spde, "work_precision", fake_work_precision)
    results = spde.work_precision_section(argparse.Namespace(quick=True, runs=1, progress=None), tmp_path)
    assert len(calls) == 3 and set(results) == {"1d", "1d_batch", "2d"}
    for call in calls:
        assert "TRBDF2" in call["setups"] and "KenCarp4" in call["setups"]
        assert call["solve_kwargs"] == {"tolerance_model": "local"}
    assert all(entry["tolerance_model"] == "local" for entry in results.values())
