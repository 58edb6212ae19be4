"""``pysens julia-check``: the conformance problems on the julia backend (needs Julia)."""

from __future__ import annotations

import argparse

from pysens.cli_args import output_file

NAME = "julia-check"
HELP = "run the conformance problems on the julia backend (needs Julia)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=output_file, default=None, help="write the JSON report to this file")


def run(args: argparse.Namespace) -> int:
    from pysens.solvers.backends.julia_backend import selfcheck

    return selfcheck(args.out)
