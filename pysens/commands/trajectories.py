"""``pysens sample``, ``pysens likelihood``, ``pysens sensitivity``: N trajectories in shards, torchrun-ready.

The options of the three verbs (light: no torch); the implementation is :mod:`pysens.ensemble.cli`. The same command
runs in one process or, unchanged, under ``torchrun --nproc_per_node=N -m pysens …``: every rank computes its shards
into ``--out/shards`` and rank 0 writes ``--out/result.pt`` and ``--out/report.json``. A rerun with the same arguments
resumes from the shards already written, so these verbs write into ``--out`` itself (shard by shard, each file
atomic, with a manifest) rather than through a run folder swapped in at the end.
"""

from __future__ import annotations

import argparse

from pysens.cli_args import existing_file, output_folder, positive_float, positive_int, seed
from pysens.runtime import add_threads_argument

# the verbs that split their work across the ranks of a torchrun job (pysens/__main__.py refuses the others);
# ode-sde-gap with --part train only
SHARDED_VERBS = ("sample", "likelihood", "sensitivity", "siem-study", "ode-sde-gap")
DTYPE_NAMES = ("float32", "float64")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every trajectory verb shares."""
    parser.add_argument(
        "--model", type=existing_file, required=True, help="checkpoint written by pysens.save_checkpoint (e.g. demo's)"
    )
    parser.add_argument(
        "--out", type=output_folder, required=True, help="folder for shards, manifest, result.pt and report.json"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=256, help="trajectories per shard (fixes the results)"
    )
    parser.add_argument("--seed", type=seed, default=0, help="trajectory i draws from (seed, i)")
    parser.add_argument("--method", default=None, help="SciML method name (default: Tsit5; EM with --sde)")
    parser.add_argument("--rtol", type=positive_float, default=1e-5)
    parser.add_argument("--atol", type=positive_float, default=1e-5)
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda:LOCAL_RANK when available)")
    add_threads_argument(parser)  # per process
    parser.add_argument("--no-gather", action="store_true", help="keep the shards only (no result.pt on rank 0)")


def run(args: argparse.Namespace) -> int:
    """Import the implementation and run the verb."""
    from pysens.ensemble.cli import main

    return main(args)
