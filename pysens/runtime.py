"""The run-time options every command-line verb shares: ``--device`` and ``--threads``.

Light on purpose: the verbs' argument definitions use it, and ``pysens --help`` must not import torch, so torch
is imported only when the options are applied.
"""

from __future__ import annotations

import argparse
import sys

from pysens.cli_args import device, positive_int

# One torch CPU thread by default, in every verb. Measured on a 2-core machine with a second CPU-bound process
# running, the demo took 618 s with torch's default (one thread per core: the threads spin-wait for each other
# whenever the other process holds a core) and 72 s with one thread; on an idle machine one thread costs the
# small models here little. `--threads N` asks for more (worth it for the digits models on an idle machine).
DEFAULT_THREADS = 1

THREADS_HELP = (
    f"torch CPU threads (default {DEFAULT_THREADS}: stays fast when other processes share the cores; "
    "raise it on an idle machine with many cores)"
)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads`` with the shared default :data:`DEFAULT_THREADS`."""
    parser.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS, help=THREADS_HELP)


def add_device_argument(parser: argparse.ArgumentParser, default: str = "cpu") -> None:
    """``--device``: ``cpu``, ``cuda``, ``cuda:N``, or ``auto`` (CUDA when torch sees a device, else CPU)."""
    parser.add_argument(
        "--device",
        type=device,
        default=default,
        help=f"cpu, cuda, cuda:N or auto (CUDA if present; default {default})",
    )


def add_runtime_arguments(parser: argparse.ArgumentParser, device: str = "cpu") -> None:
    """``--device`` (default ``device``) and ``--threads``."""
    add_device_argument(parser, device)
    add_threads_argument(parser)


def apply_runtime_options(args: argparse.Namespace) -> int:
    """Resolve ``args.device`` (``auto``), check it, and apply ``args.threads``; 0 to go on, 2 (with a message on
    stderr) for a CUDA device that torch cannot see. ``args`` may lack ``device`` (verbs that run on the CPU)."""
    import torch

    device = getattr(args, "device", None)
    if device == "auto":
        args.device = device = "cuda" if torch.cuda.is_available() else "cpu"
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return 0
