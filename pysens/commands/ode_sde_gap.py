"""``pysens ode-sde-gap``: the ODE–SDE gap through the Fokker–Planck equation (:mod:`pysens.fokker_planck`)."""

from __future__ import annotations

import argparse

from pysens.cli_args import CommandLineError, non_negative_int, output_folder, positive_int, run_in_folder, seed
from pysens.runtime import add_runtime_arguments

NAME = "ode-sde-gap"
HELP = "reproduce the authors' ODE-SDE gap table and residuals; train regularised models"
DESCRIPTION = (
    "ODE-SDE gap through the Fokker-Planck equation: the authors' table and residuals from their checkpoints "
    "(needs ../shared/data/odesdegap or $PYSENS_ODESDEGAP_DATA), and regularised models trained here. Writes "
    "report.json and PNGs into --out (a rerun replaces the folder whole)."
)
# the same tuples as pysens.fokker_planck.potential.AUTHORS_DATASETS and .data.TOY_DATASETS (a test keeps them equal;
# they are spelled out so that the options need no torch)
AUTHORS_DATASETS = ("blob", "circles2", "checker")
TOY_DATASETS = ("blob", "circles2", "checker")
OUTPUTS = ("report.json", "*.png", "models")  # what the study writes (a pre-manifest folder may hold these)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=output_folder, default="runs/ode_sde_gap", help="output folder (report.json and PNGs)"
    )
    parser.add_argument("--part", choices=["all", "reproduce", "train"], default="all")
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=AUTHORS_DATASETS,
        default=list(AUTHORS_DATASETS),
        help="datasets for the authors' table and residuals",
    )
    parser.add_argument(
        "--residual-points", type=positive_int, default=200_000, help="R̃ points per checkpoint (uniform)"
    )
    parser.add_argument(
        "--gap-samples",
        type=positive_int,
        default=5000,
        help="samples per set for our sampler on the authors' blob checkpoints (>= 200000 for the "
        "acceptance check; ~20 min per checkpoint on one core)",
    )
    parser.add_argument("--gap-datasets", nargs="*", choices=AUTHORS_DATASETS, default=["blob"])
    parser.add_argument(
        "--bound-datasets",
        nargs="*",
        choices=AUTHORS_DATASETS,
        default=["blob"],
        help="checkpoints whose derived bound is computed with the log-ratio PDE (~20 s each on one core)",
    )
    parser.add_argument("--train-datasets", nargs="+", choices=TOY_DATASETS, default=["blob"])
    parser.add_argument(
        "--train-steps", type=positive_int, default=1500, help="training (or fine-tuning) steps per w_R"
    )
    parser.add_argument(
        "--pretrain-steps", type=non_negative_int, default=0, help="shared DSM pretraining (0: from scratch)"
    )
    parser.add_argument(
        "--residual-t",
        choices=["uniform", "stratified"],
        default="uniform",
        help="time sampling of the residual's collocation points",
    )
    parser.add_argument("--train-gap-samples", type=positive_int, default=5000)
    parser.add_argument("--digits", action="store_true", help="also train on sklearn digits (Hutchinson Laplacian)")
    parser.add_argument("--digits-steps", type=positive_int, default=1500, help="training steps per w_R on digits")
    parser.add_argument("--seed", type=seed, default=0)
    add_runtime_arguments(parser, device="auto")
    parser.add_argument("--quiet", action="store_true")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """A stand-alone parser (or ``parser``) with the verb's options, for ``benchmarks/ode_sde_gap.py``."""
    parser = parser or argparse.ArgumentParser(description="ODE-SDE gap through the Fokker-Planck equation")
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from pysens.fokker_planck.experiment import run as run_study
    from pysens.fokker_planck.potential import DATA_ENV_VAR, authors_data_dir

    if args.part in ("all", "reproduce") and authors_data_dir() is None:
        raise CommandLineError(
            f"argument --part: --part {args.part} needs the authors' artefacts (../shared/data/odesdegap or "
            f"${DATA_ENV_VAR}), which are absent; --part train runs without them"
        )
    return run_in_folder(args, lambda: run_study(args), kind=NAME, outputs=OUTPUTS)
