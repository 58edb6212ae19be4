"""A small run for the SIGKILL tests: lock a run folder, write a few files into its stage, commit.

    python run_writer.py OUT LABEL [--group G] [--no-exchange] [--die-after-file K] [--die-at-op K] [--hold]

It prints ``run <id>`` once the folder is open and ``file <k>`` after each file. ``--die-after-file K`` SIGKILLs the
process after its K-th file; ``--die-at-op K`` just before the K-th file-system step of the commit (rename, replace,
exchange, rmtree, unlink), so every moment of the commit can be hit; ``--hold`` waits for stdin to close before
committing (a live run for the concurrency tests). Loads ``pysens/artifacts.py`` by path: no torch import, so a
case takes a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "pysens_artifacts_under_test", Path(__file__).resolve().parents[2] / "pysens" / "artifacts.py"
)
artifacts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(artifacts)

FILES = ("report.json", "model.bin", "figures/a.png")


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _count_ops(die_at: int) -> None:
    """Wrap the commit's file-system steps so that the ``die_at``-th one is never reached."""
    count = [0]

    def wrap(owner, name):
        real = getattr(owner, name)

        def step(*args, **kwargs):
            count[0] += 1
            if count[0] == die_at:
                _die()
            return real(*args, **kwargs)

        setattr(owner, name, step)

    for owner, name in ((os, "rename"), (os, "replace"), (os, "unlink"), (shutil, "rmtree"), (artifacts, "_exchange")):
        wrap(owner, name)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("label")
    p.add_argument("--group", default=None)
    p.add_argument("--no-exchange", action="store_true")
    p.add_argument("--die-after-file", type=int, default=None)
    p.add_argument("--die-at-op", type=int, default=None)
    p.add_argument("--hold", action="store_true")
    args = p.parse_args()
    folder = artifacts.RunFolder(
        args.out, kind="writer", outputs=FILES, group=args.group, exchange=not args.no_exchange, argv=sys.argv
    )
    try:
        stage = folder.open()
    except artifacts.RunFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run {folder.run_id}", flush=True)
    for k, name in enumerate(FILES, 1):
        artifacts.atomic_write(stage / name, lambda h, k=k: h.write(f"{args.label} {k}\n".encode() * 1000))
        print(f"file {k}", flush=True)
        if args.die_after_file == k:
            _die()
    if args.hold:
        sys.stdin.read()
    if args.die_at_op is not None:
        _count_ops(args.die_at_op)
    folder.commit()
    print("committed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
