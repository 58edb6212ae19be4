"""The ``siem-study`` command-line verb: ``add_cli(subparsers)`` registers it on the ``pysens`` parser."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from .study import main_from_args

    return main_from_args(args)


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``siem-study`` (train score networks on digits, SIEM/μ_t vs FID-style, W2, sliced W2 correlations)."""
    from .study import add_arguments

    parser = subparsers.add_parser(
        "siem-study",
        help="SIEM correlation study on sklearn digits: checkpoints along training, SIEM A/B/C and |mu_t| (full and "
        "first 10%%) vs FID-style, W2 and sliced W2, with bootstrap intervals and a Fig. 2-like plot",
    )
    add_arguments(parser)
    parser.set_defaults(func=_run)
    return parser
