"""Command-line verbs over N trajectories: ``pysens sample``, ``pysens likelihood``, ``pysens sensitivity``.

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
# the verbs that run under torchrun (pysens/__main__.py); ode-sde-gap with --part train only
SHARDED_VERBS = ("sample", "likelihood", "sensitivity", "siem-study", "ode-sde-gap")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint written by pysens.save_checkpoint (e.g. demo's)")
    parser.add_argument("--out", required=True, help="folder for shards, manifest, result.pt and report.json")
    parser.add_argument("--batch-size", type=int, default=256, help="trajectories per shard (fixes the results)")
    parser.add_argument("--seed", type=int, default=0, help="trajectory i draws from (seed, i)")
    parser.add_argument("--method", default=None, help="SciML method name (default: Tsit5; EM with --sde)")
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda:LOCAL_RANK when available)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--no-gather", action="store_true", help="keep the shards only (no result.pt on rank 0)")


def add_cli(sub) -> None:
    """Register the verbs on the ``pysens`` subcommand parser."""
    sample = sub.add_parser("sample", help="draw N samples (PF-ODE or reverse SDE) in shards; torchrun-ready")
    _common(sample)
    sample.add_argument("--samples", type=int, required=True, help="number of samples N")
    sample.add_argument("--sde", action="store_true", help="reverse SDE on --n-steps equal steps instead of PF-ODE")
    sample.add_argument("--n-steps", type=int, default=1000, help="SDE steps")
    sample.set_defaults(func=main, verb="sample")
    lik = sub.add_parser("likelihood", help="log-likelihoods of the points in --data in shards; torchrun-ready")
    _common(lik)
    lik.add_argument("--data", required=True, help="a .pt file holding a tensor [N, *event]")
    lik.add_argument("--divergence", choices=["exact", "hutchinson"], default="exact")
    lik.add_argument("--n-probes", type=int, default=1)
    lik.set_defaults(func=main, verb="likelihood")
    sens = sub.add_parser(
        "sensitivity", help="N samples and their sensitivity to removing training points, in shards; torchrun-ready"
    )
    _common(sens)
    sens.add_argument("--samples", type=int, required=True, help="number of samples N")
    sens.add_argument("--data", required=True, help="the training set, a .pt file holding a tensor [M, *event]")
    sens.add_argument("--remove", required=True, help="comma-separated indices of the training points to remove")
    sens.set_defaults(func=main, verb="sensitivity")


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
