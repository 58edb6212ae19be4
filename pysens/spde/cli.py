"""The ``siem-study`` command-line verb: ``add_cli(subparsers)`` registers it on the ``pysens`` parser (its options
live in :mod:`pysens.commands.siem_study`, light so that ``--help`` imports no torch)."""

from __future__ import annotations

import argparse


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``siem-study`` (train score networks on digits, SIEM/μ_t vs FID-style, W2, sliced W2 correlations)."""
    from pysens.commands import add_verb, verb_module

    return add_verb(subparsers, verb_module("siem-study"))
