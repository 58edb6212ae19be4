"""``pysens sensitivity``: N samples and their sensitivity to removing training points, in shards; torchrun-ready
(:mod:`pysens.commands.trajectories`)."""

from __future__ import annotations

import argparse

from pysens.cli_args import existing_file, positive_int
from pysens.commands.trajectories import add_common_arguments, run  # noqa: F401  (run: the verb's entry)

NAME = "sensitivity"
HELP = "N samples and their sensitivity to removing training points, in shards; torchrun-ready"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--samples", type=positive_int, required=True, help="number of samples N")
    parser.add_argument(
        "--data", type=existing_file, required=True, help="the training set, a .pt file holding a tensor [M, *event]"
    )
    parser.add_argument("--remove", required=True, help="comma-separated indices of the training points to remove")
    parser.set_defaults(verb=NAME)
