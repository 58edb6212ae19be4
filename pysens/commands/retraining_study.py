"""``pysens retraining-study``: predicted sample changes ε·y against real fine-tuning or retraining
(:mod:`pysens.sensitivity.retraining`)."""

from __future__ import annotations

import argparse

from pysens.runtime import add_threads_argument

NAME = "retraining-study"
HELP = "predict how samples change when training data change, and compare with fine-tuning/retraining"
DESCRIPTION = (
    "The retraining study on sklearn digits: predict the change of PF-ODE samples when training images are removed "
    "or added, and compare it with the change fine-tuning (or retraining) actually makes. Writes "
    "retraining_study.json and retraining_study.png into --out (a rerun overwrites them)."
)
# Spelled out so that the options need no torch; a test keeps them equal to pysens.sensitivity.retraining
# (EDITS, MODES, RetrainingConfig()), pysens.sensitivity.measures.EDIT_CONVENTIONS and .tangents.DIVERGENCES.
EDITS = ("remove", "add")
MODES = ("finetune", "retrain")
EDIT_CONVENTIONS = ("mixture", "additive")
DIVERGENCES = ("exact", "hutchinson")
DEFAULTS = {
    "edit": "remove",
    "digit": 3,
    "count": 40,
    "mode": "finetune",
    "convention": "mixture",
    "bandwidth": None,
    "seeds": [0, 1, 2],
    "steps": 10000,
    "finetune_steps": 1500,
    "batch_size": 128,
    "lr": 2e-3,
    "finetune_lr": 5e-4,
    "hidden": 256,
    "depth": 3,
    "samples": 32,
    "t1": 1e-3,
    "method": "Tsit5",
    "rtol": 1e-5,
    "atol": 1e-5,
    "divergence": "exact",
    "denoise": True,
    "ot_reg": 0.05,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The study's options, shared by the CLI verb and ``benchmarks/retraining_study.py``."""
    d = argparse.Namespace(**DEFAULTS)
    parser.add_argument("--out", default="runs/retraining_study", help="output folder (JSON + PNG)")
    parser.add_argument("--edit", choices=EDITS, default=d.edit, help="remove images of a class, or add them back")
    parser.add_argument("--digit", type=int, default=d.digit, help="class whose images are edited")
    parser.add_argument("--count", type=int, default=d.count, help="number of images edited")
    parser.add_argument("--mode", choices=MODES, default=d.mode, help="fine-tune (with a control) or retrain")
    parser.add_argument("--convention", choices=EDIT_CONVENTIONS, default=d.convention, help="how ε is read off")
    parser.add_argument(
        "--bandwidth", type=float, default=d.bandwidth, help="pre-smooth the edited images (data units; default none)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=d.seeds, help="training seeds")
    parser.add_argument("--steps", type=int, default=d.steps, help="base training steps")
    parser.add_argument("--finetune-steps", type=int, default=d.finetune_steps)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--finetune-lr", type=float, default=d.finetune_lr)
    parser.add_argument("--hidden", type=int, default=d.hidden, help="MLP width")
    parser.add_argument("--depth", type=int, default=d.depth, help="MLP hidden layers")
    parser.add_argument("--samples", type=int, default=d.samples, help="noise seeds per training seed")
    parser.add_argument("--t1", type=float, default=d.t1, help="sampler cut-off")
    parser.add_argument("--method", default=d.method, help="ODE method (SciML name)")
    parser.add_argument("--rtol", type=float, default=d.rtol)
    parser.add_argument("--atol", type=float, default=d.atol)
    parser.add_argument("--divergence", choices=DIVERGENCES, default=d.divergence)
    parser.add_argument("--no-denoise", dest="denoise", action="store_false", help="no final Tweedie denoising step")
    parser.add_argument("--ot-reg", type=float, default=d.ot_reg, help="entropic regularisation / mean cost")
    add_threads_argument(parser)
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from pysens.sensitivity.retraining import run_from_args

    return run_from_args(args)
