"""Command line: ``pysens VERB ...``; ``pysens --help`` lists the verbs.

Every verb is a light module of :mod:`pysens.commands` (its options there, its implementation imported only when
it runs), so ``--help`` answers without importing torch.
"""

from __future__ import annotations

import argparse
import sys

from pysens.artifacts import RunFolderError
from pysens.cli_args import CommandLineError
from pysens.commands import register


def build_parser() -> argparse.ArgumentParser:
    """The ``pysens`` parser with every verb registered."""
    parser = argparse.ArgumentParser(prog="pysens", description="Sensitivity analysis of score-based diffusion models")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the verb; the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if argv[:1] == ["bench"] and "--" in argv:  # `pysens bench SUITE ... -- SUITE-OPTIONS`
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a bad option (2, its one-line message already printed)
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = ["pysens", *argv, *(["--", *extra] if extra else [])]
    if extra:
        args.extra = extra
    try:
        return args.func(args)
    except (CommandLineError, RunFolderError) as err:  # raised before any work: the options, or the --out folder
        print(f"pysens {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
