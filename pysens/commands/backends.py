"""``pysens backends``: list the solver backends, whether they run here, and their methods."""

from __future__ import annotations

import argparse

NAME = "backends"
HELP = "list solver backends, whether they run here, and their methods"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    from pysens.solvers import backend_status, methods_for

    for name, (ok, reason) in backend_status().items():
        methods = ", ".join(methods_for(name)) or "-"
        print(f"{name:6s} {'available' if ok else 'unavailable':12s} {reason}\n       methods: {methods}")
    return 0
