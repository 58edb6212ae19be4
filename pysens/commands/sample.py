"""``pysens sample``: draw N samples (PF-ODE or reverse SDE) in shards; torchrun-ready
(:mod:`pysens.commands.trajectories`)."""

from __future__ import annotations

import argparse

from pysens.cli_args import positive_int
from pysens.commands.trajectories import add_common_arguments, run  # noqa: F401  (run: the verb's entry)

NAME = "sample"
HELP = "draw N samples (PF-ODE or reverse SDE) in shards; torchrun-ready"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--samples", type=positive_int, required=True, help="number of samples N")
    parser.add_argument("--sde", action="store_true", help="reverse SDE on --n-steps equal steps instead of PF-ODE")
    parser.add_argument("--n-steps", type=positive_int, default=1000, help="SDE steps")
    parser.set_defaults(verb=NAME)
