"""Throughput of sharded runs on 1 and 2 ranks of this machine (``pysens bench distributed``).

Each workload is the command a user runs, launched by torchrun exactly as documented (README, "Running on many
GPUs or nodes"): ``python -m torch.distributed.run --standalone --nproc_per_node=K -m pysens VERB …`` with one CPU
thread per rank:

* ``sample``: PF-ODE samples (Tsit5) of an ``MLPScore`` on the 8×8 digits event shape (d = 64);
* ``likelihood``: Hutchinson log-likelihoods (one probe per point) of digits images under the same model.

For K = 1 and 2 it records the job's own wall time (from ``report.json``: joining the group to gathering the
result, without interpreter start-up) and the launcher's total, in ``--runs`` rounds interleaved 1, 2, 1, 2, …
(medians reported, after an untimed warm-up job), the throughput (trajectories per second of job time), the
speed-up over one rank and the efficiency = speed-up / ranks. It checks that the 2-rank ``result.pt`` equals the
1-rank one bit for bit.

Honesty about the machine: CI and development machines here have 2 CPU cores shared with other jobs (the load
average before and after is recorded), so 2 ranks compete with the rest of the machine and efficiency well below 1
is expected. On GPUs every rank has its own device and the only shared work is the final gather, so the expected
scaling for shards of equal cost is near linear (efficiency ≈ 1 − start-up/job time); that is an expectation written
in the JSON as such, not a measurement (no GPU here).

    python -m pysens.cli bench distributed [-- --samples 1024 --runs 3 --quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pysens.artifacts import write_json

EXPECTED_GPU_SCALING = (
    "expected, not measured: on K GPUs (one rank each, NCCL) shards of equal cost scale near linearly, efficiency "
    "≈ 1 − (start-up + gather)/(job time); the gather moves N rows of the result to rank 0 once"
)


def _launch(verb_args: list[str], ranks: int, out: Path) -> tuple[float, dict]:
    """Run one torchrun job; returns (launcher wall seconds, report.json)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd += ["-m", "pysens", *verb_args, "--out", str(out), "--threads", "1", "--device", "cpu"]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, json.loads((out / "report.json").read_text())


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results", help="folder for distributed.json")
    parser.add_argument("--samples", type=int, default=1024, help="trajectories per workload")
    parser.add_argument("--batch-size", type=int, default=128, help="trajectories per shard")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds (medians reported)")
    parser.add_argument("--quick", action="store_true", help="256 trajectories, one round (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.batch_size, args.runs = min(args.samples, 256), min(args.batch_size, 64), 1
    if min(args.samples, args.batch_size, args.runs) < 1:
        parser.error("--samples, --batch-size and --runs must be positive")
    from pysens.diffusion import VP, MLPScore, digits, save_checkpoint

    say = progress or (lambda msg: None)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pysens-bench-distributed-") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        save_checkpoint(MLPScore((1, 8, 8), VP(), hidden=256, depth=3), tmp / "model.pt")
        torch.save(digits()[: args.samples].clone(), tmp / "data.pt")
        common = ["--model", str(tmp / "model.pt"), "--batch-size", str(args.batch_size), "--rtol", "1e-3"]
        common += ["--atol", "1e-3"]
        workloads = {
            "sample": ["sample", "--samples", str(args.samples), *common],
            "likelihood": ["likelihood", "--data", str(tmp / "data.pt"), "--divergence", "hutchinson", *common],
        }
        rows = []
        for name, verb_args in workloads.items():
            job: dict[int, list[float]] = {1: [], 2: []}
            launcher: dict[int, list[float]] = {1: [], 2: []}
            results = {}
            say(f"{name}: warm-up")
            _launch(verb_args, 1, tmp / f"{name}-warm-up")  # file caches and first-call costs, untimed
            for r in range(args.runs):
                for ranks in (1, 2):
                    say(f"{name}: {ranks} rank(s), round {r + 1}/{args.runs}")
                    out = tmp / f"{name}-{ranks}-{r}"
                    wall, report = _launch(verb_args, ranks, out)
                    job[ranks].append(report["wall_time"])
                    launcher[ranks].append(wall)
                    results[ranks] = torch.load(out / "result.pt", weights_only=True)
            identical = all(torch.equal(results[1][k], results[2][k]) for k in results[1])
            base = statistics.median(job[1])
            for ranks in (1, 2):
                t = statistics.median(job[ranks])
                rows.append(
                    {
                        "workload": name,
                        "ranks": ranks,
                        "job_wall_s": t,
                        "launcher_wall_s": statistics.median(launcher[ranks]),
                        "throughput_per_s": args.samples / t,
                        "speedup": base / t,
                        "efficiency": base / t / ranks,
                        "job_wall_runs_s": job[ranks],
                        "bit_identical_to_1_rank": identical,
                    }
                )
    data = {
        "config": {
            "samples": args.samples,
            "batch_size": args.batch_size,
            "runs": args.runs,
            "threads_per_rank": 1,
            "model": "MLPScore d=64 hidden 256 depth 3",
            "method": "Tsit5 rtol=atol=1e-3",
            "dtype": "float32",
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "device": "cpu",
            "torch": torch.__version__,
        },
        "rows": rows,
        "expected_gpu_scaling": EXPECTED_GPU_SCALING,
    }
    out = Path(args.out)
    write_json(out / "distributed.json", data)
    for row in rows:
        print(
            f"{row['workload']:10s} {row['ranks']} rank(s): job {row['job_wall_s']:.1f} s, "
            f"{row['throughput_per_s']:.1f} traj/s, speed-up {row['speedup']:.2f}, efficiency {row['efficiency']:.2f}, "
            f"bit-identical {row['bit_identical_to_1_rank']}"
        )
    print(f"wrote {out / 'distributed.json'}")
    return 0 if all(r["bit_identical_to_1_rank"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
