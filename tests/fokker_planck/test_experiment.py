"""The study's CLI wiring and its trend bookkeeping (the runs themselves live in benchmarks/ode_sde_gap.py)."""

import argparse

from pysens.fokker_planck.experiment import _trends, add_cli, run


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
