"""The study's CLI wiring and its trend bookkeeping (the runs themselves live in benchmarks/ode_sde_gap.py)."""

import argparse

from pysens.commands.ode_sde_gap import run
from pysens.fokker_planck.experiment import add_cli
from pysens.fokker_planck.train_study import _trends


def test_add_cli_registers_the_verb_with_configurable_sizes():
    parser = argparse.ArgumentParser(prog="pysens")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = parser.parse_args(["ode-sde-gap", "--part", "train", "--train-steps", "10", "--gap-samples", "200000"])
    assert args.func is run and args.part == "train" and args.train_steps == 10 and args.gap_samples == 200_000
    assert args.datasets == ["blob", "circles2", "checker"] and args.train_datasets == ["blob"]


def test_trends_compare_against_the_floor():
    def row(gap, ode, sde, floor=0.001):
        return {"gap": {"ode_sde": gap, "ode_truth": ode, "sde_truth": sde, "floor": floor}}

    # the authors' blob numbers (seed001 §5.3): all three trends hold, beyond a 0.001 floor
    rows = {
        "0.0": row(0.0116, 0.0110, 0.0022),
        "0.1": row(0.0031, 0.0060, 0.0029),
        "1.0": row(0.0029, 0.0053, 0.0043),
        "10.0": row(0.0022, 0.0172, 0.0160),
    }
    trends = _trends(rows, [0.0, 0.1, 1.0, 10.0])
    assert (
        trends["gap_shrinks"]["holds"] and trends["gap_shrinks"]["monotone"] and trends["gap_shrinks"]["beyond_floor"]
    )
    assert trends["ode_improves_at_moderate_w"]["holds"] and trends["sde_degrades"]["beyond_floor"]
    # a difference below the floor is reported as not beyond it
    flat = {k: row(0.0030, 0.0050, 0.0040, floor=0.01) for k in rows}
    flat["10.0"] = row(0.0029, 0.0050, 0.0041, floor=0.01)
    trends = _trends(flat, [0.0, 0.1, 1.0, 10.0])
    assert trends["gap_shrinks"]["holds"] and not trends["gap_shrinks"]["beyond_floor"]
    # a model whose samples all left the grid (grid W2 undefined: NaN or missing) is worse than any on the grid
    gone = dict(rows)
    gone["10.0"] = row(float("nan"), None, float("nan"))
    trends = _trends(gone, [0.0, 0.1, 1.0, 10.0])
    assert trends["sde_degrades"]["holds"] and trends["sde_degrades"]["beyond_floor"]
    assert not trends["gap_shrinks"]["holds"] and trends["ode_improves_at_moderate_w"]["holds"]


def test_tiny_digits_study_has_finite_gaps_and_counts_out_of_range_samples(tmp_path):
    import math

    import torch

    from pysens.fokker_planck.train_study import _digits_study

    torch.set_num_threads(1)
    res = _digits_study(
        tmp_path,
        [0.0, 1.0],
        steps=20,
        seed=0,
        device="cpu",
        progress=False,
        log=lambda _: None,
        n_samples=64,
        sampler_steps=30,
        hidden=16,
        dsm_batch=32,
        residual_batch=8,
    )
    for row in res["models"].values():
        assert all(math.isfinite(v) for v in row["gap_sliced"].values())
        assert set(row["out_of_range"]) == {"ode", "sde"}
        # the Gaussian base keeps even an untrained model's samples in range (pixels in [-1, 1])
        assert row["out_of_range"] == {"ode": 0, "sde": 0} and max(row["max_abs"].values()) < 10
    assert res["sanity"]["all_in_range"] and math.isfinite(res["sanity"]["first_w_sde_truth_over_floor"])
    assert set(res["trends"]) >= {"gap_shrinks", "ode_improves_at_moderate_w", "sde_degrades"}
    assert (tmp_path / "models" / "digits_w1.0.pt").exists()


def test_geometric_schedule_is_log_spaced_down_to_t_end():
    import pytest

    from pysens.fokker_planck.gap import geometric_schedule

    s = geometric_schedule(10.0, 1e-3, 4)
    assert s.times[0] == 10.0 and s.times[-1] == 1e-3 and s.n_steps == 4 and s.final_noise_free
    ratios = [b / a for a, b in zip(s.times, s.times[1:], strict=False)]
    assert max(ratios) - min(ratios) < 1e-12
    with pytest.raises(ValueError):
        geometric_schedule(10.0, 0.0, 4)


def test_count_out_of_range_flags_non_finite_and_large_samples():
    import torch

    from pysens.fokker_planck.train_study import _count_out_of_range

    x = torch.zeros(5, 64)
    x[1, 3] = float("nan")
    x[2, 0] = float("inf")
    x[3, 7] = -11.0
    x[4, 2] = 9.9
    assert _count_out_of_range(x) == 3
