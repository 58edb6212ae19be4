"""``pysens bench``: run benchmark suites (tables, JSON and PNGs), or re-render the benchmarks README's tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pysens.cli_args import CommandLineError
from pysens.runtime import add_threads_argument

NAME = "bench"
HELP = "run benchmark suites (tables, JSON and PNGs); `pysens bench --list` shows them"
DESCRIPTION = (
    "Run benchmark suites. Options after `--` go to every chosen suite (see its --help). Exit status: 0 when every "
    "suite ran (and, with --check, met its targets); 1 when a suite failed or, with --check, missed a target; 2 for "
    "bad arguments. Without --check a missed target is reported in the tables ('NOT met') but does not change the "
    "exit status."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suites", nargs="*", help="suite names, or `all`")
    parser.add_argument("--out", default="runs/bench", help="output root (the README numbers: benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    add_threads_argument(parser)
    parser.add_argument("--check", action="store_true", help="exit 1 when a suite misses one of its speed targets")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--tables", action="store_true", help="re-render the README's tables from --results and exit")
    parser.add_argument("--results", default="benchmarks/results", help="JSON folder for --tables")
    parser.add_argument("--readme", default="benchmarks/README.md", help="README rewritten by --tables")
    parser.set_defaults(extra=[])


def run(args: argparse.Namespace) -> int:
    import time

    import torch
    from tqdm.auto import tqdm

    from pysens.bench.suites import SUITES, run_suite
    from pysens.bench.targets import missed_targets_in

    if args.tables:
        from pysens.bench.tables import update_readme

        if not Path(args.results).is_dir():
            raise CommandLineError(f"argument --results: {args.results!r} is not an existing folder of results")
        if not Path(args.readme).is_file():
            raise CommandLineError(f"argument --readme: {args.readme!r} is not an existing file")
        from pysens.artifacts import settle_run_folders

        settle_run_folders(args.results)  # a suite killed while moving its files in: finish that first
        _, changed = update_readme(args.readme, args.results)
        print(f"{args.readme}: " + (f"updated {', '.join(changed)}" if changed else "up to date"))
        return 0
    if args.list or not args.suites:
        for suite in SUITES.values():
            quick = "" if suite.quick else "  (no --quick)"
            print(f"{suite.name:12s} {suite.about}{quick}")
        return 0 if args.list else 2
    names = list(SUITES) if args.suites == ["all"] else args.suites
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise CommandLineError(
            f"argument suites: unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)} or all"
        )
    if args.quick:
        slow = [n for n in names if not SUITES[n].quick]
        if slow:
            raise CommandLineError(f"argument --quick: not available for {', '.join(slow)}")
    folders = _open_run_folders(args, names)  # all of them before any suite runs: a busy folder costs nothing
    torch.set_num_threads(args.threads)
    status, missed = {}, {}
    try:
        with tqdm(names, desc="pysens bench", unit="suite", disable=args.no_progress) as bar:
            for name in bar:
                bar.set_description(f"pysens bench {name}")
                started = time.time()
                status[name] = run_suite(
                    name,
                    args.out,
                    quick=args.quick,
                    extra=args.extra,
                    progress=lambda msg: bar.set_postfix_str(msg),
                    into=folders[name].stage,
                )
                if status[name] == 0:
                    folders[name].commit()
                else:  # a failed suite leaves its previous results as they were
                    folders[name].abort()
                missed.update(missed_targets_in(args.out, started) if args.check else {})
    finally:
        for folder in folders.values():
            if folder.stage is not None:  # an exception ended the run: the suites not done keep their old files
                folder.abort()
    failed = {n: rc for n, rc in status.items() if rc}
    print(f"wrote results under {args.out}" + (f"; failed: {failed}" if failed else ""))
    for path, targets in missed.items():
        print(f"target NOT met ({path}): " + "; ".join(targets), file=sys.stderr)
    return 1 if failed or missed else 0


def _open_run_folders(args: argparse.Namespace, names: list[str]) -> dict:
    """Each suite's run folder, locked and checked: its own folder below ``--out`` whole, or its group of files in
    ``--out`` (the suites that share it); see :class:`pysens.artifacts.RunFolder`."""
    from pysens.artifacts import RunFolder
    from pysens.bench.suites import SUITES
    from pysens.commands import ode_sde_gap, siem_study

    outputs = {"diffusion": ("diffusion.json", "*.png"), "ode-sde-gap": ode_sde_gap.OUTPUTS, "siem": siem_study.OUTPUTS}
    argv = getattr(args, "argv", None)
    folders: dict = {}
    try:
        for name in names:
            suite, kind = SUITES[name], f"bench {name}"
            if suite.folder:
                folder = RunFolder(
                    Path(args.out) / suite.folder, kind=kind, outputs=outputs.get(name, ("*.json", "*.png")), argv=argv
                )
            else:
                folder = RunFolder(args.out, kind=kind, group=name, argv=argv)
            folder.open()
            folders[name] = folder
    except BaseException:
        for folder in folders.values():
            folder.abort()
        raise
    return folders
