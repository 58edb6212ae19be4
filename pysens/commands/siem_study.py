"""``pysens siem-study``: the SIEM correlation study on sklearn digits (:mod:`pysens.spde.study`)."""

from __future__ import annotations

import argparse

from pysens.runtime import add_runtime_arguments

NAME = "siem-study"
HELP = (
    "SIEM correlation study on sklearn digits: checkpoints along training, SIEM A/B/C and |mu_t| (full and "
    "first 10%%) vs FID-style, W2 and sliced W2, with bootstrap intervals and a Fig. 2-like plot"
)
DESCRIPTION = (
    "The SIEM correlation study on sklearn digits. Writes report.json, the figures and checkpoints/ into --out "
    "(a rerun overwrites them)."
)
# Spelled out so that the options need no torch; a test keeps them equal to pysens.spde.study.StudyConfig().
DEFAULTS = {
    "out": "runs/siem_study",
    "checkpoints": 12,
    "first_step": 20,
    "train_steps": 3000,
    "widths": (128,),
    "n_particles": 500,
    "n_runs": 3,
    "n_targets": 500,
    "n_boot": 1000,
    "seed": 0,
    "device": "cpu",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``siem-study`` options (shared by the CLI verb and benchmarks/siem_study.py)."""
    d = argparse.Namespace(**DEFAULTS)
    parser.add_argument("--out", default=d.out, help="output folder (report.json, figures, checkpoints/)")
    parser.add_argument("--checkpoints", type=int, default=d.checkpoints, help="checkpoints per width (>= 12 in all)")
    parser.add_argument("--train-steps", type=int, default=d.train_steps, help="training steps of the last checkpoint")
    parser.add_argument("--first-step", type=int, default=d.first_step, help="training steps of the first checkpoint")
    parser.add_argument("--widths", type=int, nargs="+", default=list(d.widths), help="MLP hidden widths")
    parser.add_argument("--particles", type=int, default=d.n_particles, help="particles per sampling run")
    parser.add_argument("--runs", type=int, default=d.n_runs, help="sampling runs (seeds) per configuration")
    parser.add_argument("--targets", type=int, default=d.n_targets, help="held-out real digits for the targets")
    parser.add_argument("--boot", type=int, default=d.n_boot, help="bootstrap resamples for the intervals")
    parser.add_argument("--seed", type=int, default=d.seed)
    add_runtime_arguments(parser, device=d.device)
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test, ~1 minute)")


def run(args: argparse.Namespace) -> int:
    from pysens.spde.study import main_from_args

    return main_from_args(args)
