"""Checks of the ``pysens`` verbs' options, run before any work: argparse ``type=`` functions, the checks between
options, and the run folder a verb writes (:func:`run_in_folder`).

A mistake costs nothing and reads as one line naming the option, with exit status 2: argparse reports what a
``type=`` function rejects (``argument --steps: expected a positive integer, got '0'``); a verb raises
:class:`CommandLineError` for options that do not fit together, and :mod:`pysens.cli` prints it the same way.
Light to import (no torch): the verbs' option definitions use it, and ``pysens --help`` must stay fast.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from pysens.artifacts import RunFolder

__all__ = [
    "CommandLineError",
    "device",
    "existing_file",
    "existing_folder",
    "int_at_least",
    "non_negative_int",
    "ode_method",
    "output_file",
    "output_folder",
    "positive_float",
    "positive_int",
    "run_in_folder",
    "seed",
]


class CommandLineError(ValueError):
    """Options that do not fit together, found after parsing and before any work; the message names them."""


def int_at_least(low: int, what: str = "an integer") -> Callable[[str], int]:
    """An argparse type: an integer ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = f"int_at_least_{low}"
    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "a non-negative integer")


def seed(text: str) -> int:
    """An argparse type: a random seed, 0 <= seed < 2**63 (what torch and numpy generators both accept)."""
    value = non_negative_int(text)
    if value >= 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed below 2**63, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


_DEVICE = re.compile(r"(cpu|cuda|mps)(?::(\d+))?|auto")


def device(text: str) -> str:
    """An argparse type: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``, and present on this machine (torch is
    imported only to check a CUDA or MPS device)."""
    match = _DEVICE.fullmatch(text)
    if match is None or (match.group(1) == "cpu" and match.group(2) not in (None, "0")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device; use cpu, cuda, cuda:N, mps or auto")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but torch sees no CUDA device; use cpu")
        if index is not None and int(index) >= count:
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but torch sees {count} CUDA device(s)")
    elif kind == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but torch sees no MPS device; use cpu")
    return text


def ode_method(text: str) -> str:
    """An argparse type: an ODE method of the torch backend (SciML name, any case); its canonical name."""
    from pysens.solvers.methods import MethodNotAvailable, resolve_method

    try:
        return resolve_method(text, "torch", "ode").name
    except MethodNotAvailable as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _writable_target(text: str, what: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected {what} path, got an empty string")
    path = Path(text).expanduser()
    ancestor = _nearest_existing(path.parent if path.exists() else path)
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} cannot be created: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r} cannot be written: {ancestor} is not writable")
    return path


def output_folder(text: str) -> str:
    """An argparse type: a folder that exists or can be created, and is not a file."""
    path = _writable_target(text, "a folder")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    return text


def output_file(text: str) -> str:
    """An argparse type: a file path whose folder exists or can be created, and that is not a folder."""
    path = _writable_target(text, "a file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    return text


def existing_folder(text: str) -> str:
    """An argparse type: a folder that exists."""
    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing folder")
    return text


def existing_file(text: str) -> str:
    """An argparse type: a file that exists."""
    if not Path(text).expanduser().is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing file")
    return text


def _secondary_rank() -> bool:
    """Whether this process is a rank other than 0 of a job that a launcher such as torchrun started."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0
    except ValueError:
        return False


def run_in_folder(
    args: argparse.Namespace,
    work: Callable[[], int],
    *,
    kind: str,
    outputs: Sequence[str] = (),
    group: str | None = None,
    option: str = "--out",
) -> int:
    """Run ``work()`` with ``args.out`` pointing into the stage of the run folder ``args.out`` (see
    :class:`pysens.artifacts.RunFolder`): the folder is locked and checked first (a
    :class:`~pysens.artifacts.RunFolderError` before any work), and the stage is moved in whole when ``work``
    returns 0; on another status or an exception the folder keeps what it held. ``outputs``: glob patterns of the
    files ``kind`` writes (a folder written before manifests existed may hold only those)."""
    final = args.out
    if _secondary_rank():
        # a rank other than 0 of a torchrun job: rank 0 holds the run folder and writes the results; this rank's
        # own files (if any) go to a scratch folder that is removed afterwards, never beside rank 0's
        import tempfile

        with tempfile.TemporaryDirectory(prefix="pysens-rank-") as scratch:
            args.out = scratch
            try:
                return work()
            finally:
                args.out = final
    folder = RunFolder(final, kind=kind, outputs=outputs, group=group, option=option, argv=getattr(args, "argv", None))
    args.out = str(folder.open())
    try:
        status = work()
    except BaseException:
        folder.abort()
        raise
    finally:
        args.out = final
    if status:
        folder.abort()
        return status
    folder.commit()
    print(f"pysens {kind}: {final} holds this run's files (run {folder.run_id})")
    return 0
