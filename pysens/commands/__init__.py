"""The ``pysens`` verbs. Each lives in a light module of this package that defines

* ``NAME`` and ``HELP`` (the line in ``pysens --help``), optionally ``DESCRIPTION``;
* ``add_arguments(parser)``: the verb's options (importing no torch, scipy or study module, so that
  ``pysens --help`` and ``pysens VERB --help`` answer at once);
* ``run(args) -> int``: imports the implementation and runs it; the return value is the exit status.

:func:`register` adds every verb of :data:`VERBS` to an argparse subparsers object.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

# verb name -> module under pysens.commands, in the order of `pysens --help`
VERBS = {
    "demo": "demo",
    "backends": "backends",
    "julia-check": "julia_check",
    "ode-sde-gap": "ode_sde_gap",
    "retraining-study": "retraining_study",
    "siem-study": "siem_study",
    "sample": "sample",
    "likelihood": "likelihood",
    "sensitivity": "sensitivity",
    "bench": "bench",
}


def verb_module(name: str) -> ModuleType:
    """The light module of verb ``name`` (a key of :data:`VERBS`)."""
    return importlib.import_module(f"pysens.commands.{VERBS[name]}")


def add_verb(subparsers: argparse._SubParsersAction, module: ModuleType) -> argparse.ArgumentParser:
    """Register one verb module on ``subparsers``; its ``run`` becomes ``args.func``."""
    parser = subparsers.add_parser(
        module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
    )
    module.add_arguments(parser)
    parser.set_defaults(func=module.run)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Register every verb of :data:`VERBS` on ``subparsers``."""
    for name in VERBS:
        add_verb(subparsers, verb_module(name))
