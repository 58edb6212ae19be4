"""``pysens likelihood``: log-likelihoods of the points in ``--data`` in shards; torchrun-ready
(:mod:`pysens.commands.trajectories`)."""

from __future__ import annotations

import argparse

from pysens.cli_args import existing_file, positive_int
from pysens.commands.trajectories import add_common_arguments, run  # noqa: F401  (run: the verb's entry)

NAME = "likelihood"
HELP = "log-likelihoods of the points in --data in shards; torchrun-ready"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--data", type=existing_file, required=True, help="a .pt file holding a tensor [N, *event]")
    parser.add_argument("--divergence", choices=["exact", "hutchinson"], default="exact")
    parser.add_argument("--n-probes", type=positive_int, default=1)
    parser.set_defaults(verb=NAME)
