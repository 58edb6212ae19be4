"""The implementation of the verbs over N trajectories: ``pysens sample``, ``pysens likelihood``, ``pysens sensitivity``
(their options: :mod:`pysens.commands.trajectories`).

The same command runs in one process or, unchanged, under ``torchrun --nproc_per_node=N -m pysens …`` (or
``srun … torchrun``): every rank joins the process group torchrun set up, computes its shards into ``--out/shards``
and rank 0 writes ``--out/result.pt`` (the gathered tensors) and ``--out/report.json``. A rerun with the same
arguments resumes from the shards already written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _load_tensor(path: str, name: str) -> torch.Tensor:
    if not Path(path).is_file():
        raise ValueError(f"--{name}: no file {path}")
    value = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(value, torch.Tensor) or value.dim() < 2:
        raise ValueError(f"--{name}: {path} must hold a tensor [N, *event]")
    return value


def _run_verb(args: argparse.Namespace, group) -> object:
    from pysens.diffusion.networks import load_checkpoint
    from pysens.ensemble.verbs import (
        sharded_log_likelihood,
        sharded_sample_pf_ode,
        sharded_sample_sde,
        sharded_sample_sensitivity,
    )

    dtype = DTYPES[args.dtype]
    model = load_checkpoint(args.model, map_location=group.device).to(dtype)
    model.eval()
    process = model.process
    common = {"batch_size": args.batch_size, "seed": args.seed, "out": args.out, "gather": not args.no_gather}
    tol = {"rtol": args.rtol, "atol": args.atol}
    if args.verb == "sample" and args.sde:
        return sharded_sample_sde(
            model,
            process,
            args.samples,
            n_steps=args.n_steps,
            method=args.method or "EM",
            dtype=dtype,
            group=group,
            **common,
        )
    if args.verb == "sample":
        return sharded_sample_pf_ode(
            model, process, args.samples, method=args.method or "Tsit5", dtype=dtype, group=group, **common, **tol
        )
    if args.verb == "likelihood":
        x = _load_tensor(args.data, "data").to(dtype)
        return sharded_log_likelihood(
            model,
            process,
            x,
            divergence=args.divergence,
            n_probes=args.n_probes,
            method=args.method or "Tsit5",
            group=group,
            **common,
            **tol,
        )
    from pysens.sensitivity.measures import data_edit

    data = _load_tensor(args.data, "data").to(dtype)
    try:
        removed = [int(i) for i in args.remove.split(",") if i.strip()]
    except ValueError:
        raise ValueError(f"--remove must be comma-separated integers, got {args.remove!r}") from None
    if not removed or min(removed) < 0 or max(removed) >= data.shape[0]:
        raise ValueError(f"--remove indices must lie in [0, {data.shape[0]}), got {args.remove!r}")
    edit = data_edit(data.shape[0], removed=data[removed].to(group.device))
    return sharded_sample_sensitivity(
        model, process, args.samples, [edit], method=args.method or "Tsit5", dtype=dtype, group=group, **common, **tol
    )


def main(args: argparse.Namespace) -> int:
    from pysens.artifacts import atomic_write, write_json
    from pysens.ensemble.distributed import ShardFailure, join_process_group

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size < 1:
        print(f"error: --batch-size must be a positive integer, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        group = join_process_group(args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        result = _run_verb(args, group)
    except ShardFailure as err:
        if group.rank == 0:
            for failure in err.failures:
                print(f"rank {failure['rank']}: {failure['traceback']}", file=sys.stderr)
            print(f"error: {err}", file=sys.stderr)
        group.leave()
        return 1
    except ValueError as err:
        print(f"error (rank {group.rank}): {err}", file=sys.stderr)
        group.leave()
        return 2
    wall = time.perf_counter() - start
    group.leave()
    if result is None:
        return 0
    out = Path(args.out)
    if result.values:
        import io

        buffer = io.BytesIO()
        torch.save(result.values, buffer)
        atomic_write(out / "result.pt", lambda handle: handle.write(buffer.getvalue()))
    report = {
        "verb": args.verb,
        "world_size": group.world_size,
        "device": str(group.device),
        "retcode": result.retcode,
        "n_failed": sum(c != "Success" for c in result.retcodes),
        "stats": result.stats,
        "wall_time": wall,
        "resumed_shards": result.resumed,
        "shards": result.shards,
    }
    write_json(out / "report.json", report)
    print(
        f"{args.verb}: {len(result.retcodes) or 'all'} trajectories on {group.world_size} rank(s), retcode "
        f"{result.retcode}, {len(result.resumed)} shard(s) resumed, {wall:.1f} s; wrote {out}"
    )
    return 0
