"""``pysens julia-check``: the conformance problems on the julia backend (needs Julia)."""

from __future__ import annotations

import argparse

NAME = "julia-check"
HELP = "run the conformance problems on the julia backend (needs Julia)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="write the JSON report here")


def run(args: argparse.Namespace) -> int:
    from pysens.solvers.backends.julia_backend import selfcheck

    return selfcheck(args.out)
