"""The run-time options every command-line study shares: ``--device`` and ``--threads``."""

from __future__ import annotations

import argparse
import sys

import torch


def apply_runtime_options(args: argparse.Namespace) -> int:
    """Check ``args.device`` and apply ``args.threads``; 0 to go on, 2 (with a message on stderr) for a CUDA device
    that torch cannot see."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    return 0
