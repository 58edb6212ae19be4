"""``pysens siem-study``: the SIEM correlation study on sklearn digits (:mod:`pysens.spde.study`)."""

from __future__ import annotations

import argparse

from pysens.cli_args import CommandLineError, int_at_least, output_folder, positive_int, run_in_folder, seed
from pysens.runtime import add_runtime_arguments

NAME = "siem-study"
HELP = (
    "SIEM correlation study on sklearn digits: checkpoints along training, SIEM A/B/C and |mu_t| (full and "
    "first 10%%) vs FID-style, W2 and sliced W2, with bootstrap intervals and a Fig. 2-like plot"
)
DESCRIPTION = (
    "The SIEM correlation study on sklearn digits. Writes report.json, the figures and checkpoints/ into --out "
    "(a rerun replaces the folder whole)."
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


OUTPUTS = ("report.json", "*.png", "checkpoints")  # what the study writes (a pre-manifest folder may hold these)
MIN_CONFIGURATIONS = 3  # a rank correlation over fewer configurations is undefined (the report would be all NaN)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``siem-study`` options (shared by the CLI verb and benchmarks/siem_study.py)."""
    d = argparse.Namespace(**DEFAULTS)
    parser.add_argument(
        "--out", type=output_folder, default=d.out, help="output folder (report.json, figures, checkpoints/)"
    )
    parser.add_argument(
        "--checkpoints",
        type=positive_int,
        default=d.checkpoints,
        help=f"checkpoints per width (>= {MIN_CONFIGURATIONS} in all; >= 12 for useful intervals)",
    )
    parser.add_argument(
        "--train-steps", type=positive_int, default=d.train_steps, help="training steps of the last checkpoint"
    )
    parser.add_argument(
        "--first-step", type=positive_int, default=d.first_step, help="training steps of the first checkpoint"
    )
    parser.add_argument("--widths", type=positive_int, nargs="+", default=list(d.widths), help="MLP hidden widths")
    parser.add_argument(
        "--particles", type=int_at_least(2, "an integer >= 2"), default=d.n_particles, help="particles per sampling run"
    )
    parser.add_argument("--runs", type=positive_int, default=d.n_runs, help="sampling runs (seeds) per configuration")
    parser.add_argument(
        "--targets",
        type=int_at_least(2, "an integer >= 2"),
        default=d.n_targets,
        help="held-out real digits for the targets",
    )
    parser.add_argument("--boot", type=positive_int, default=d.n_boot, help="bootstrap resamples for the intervals")
    parser.add_argument("--seed", type=seed, default=d.seed)
    add_runtime_arguments(parser, device=d.device)
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test, ~1 minute)")


def check_options(args: argparse.Namespace) -> None:
    """The checks between options (after ``--quick`` has set its sizes): :class:`CommandLineError` naming them."""
    from pysens.spde.study import config_from_args, training_milestones

    cfg = config_from_args(args)
    if cfg.first_step > cfg.train_steps:
        raise CommandLineError(
            f"argument --first-step: {cfg.first_step} is beyond --train-steps {cfg.train_steps} (the last checkpoint)"
        )
    total = cfg.checkpoints * len(cfg.widths)
    if total < MIN_CONFIGURATIONS:
        raise CommandLineError(
            f"argument --checkpoints: the correlations need at least {MIN_CONFIGURATIONS} checkpoints in all "
            f"(--checkpoints {cfg.checkpoints} x {len(cfg.widths)} width(s) = {total})"
        )
    try:
        training_milestones(cfg.first_step, cfg.train_steps, cfg.checkpoints)
    except ValueError as err:
        raise CommandLineError(f"argument --checkpoints: {err}") from None


def run(args: argparse.Namespace) -> int:
    from pysens.spde.study import main_from_args

    check_options(args)
    return run_in_folder(args, lambda: main_from_args(args), kind=NAME, outputs=OUTPUTS)
