"""Matrix-free GMRES against the dense LU in one stiff solve (issue 13): Rodas5P on HIRES (8 species, the Bari test
set's reference values), ``linsolve="dense"`` vs ``linsolve="gmres"`` (difference JVPs, the default Krylov
tolerance), float64, B = 1, one thread.

Per rtol: every setup is solved ``--runs`` times interleaved (after one warm-up each); time is the minimum of the
solving thread's CPU seconds (``time.thread_time``, robust to other processes on a shared machine) with wall
seconds alongside; accuracy is the scd (significant correct digits) against the reference; work is RHS calls,
JVPs and linear solves. **Target**: gmres within 3× of dense at rtol 1e-6 (atol = 1e-4 · rtol, as the test set).

    python -m pysens.cli bench gmres-speed [--out benchmarks/results] [--quick] [--runs 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pysens.artifacts import write_json
from pysens.bench.testset import PROBLEMS
from pysens.solvers import solve

TARGET_RTOL = 1e-6
TARGET_RATIO = 3.0
LINSOLVES = ("dense", "gmres")


def _solve_once(problem, ode, rtol: float, linsolve: str) -> dict:
    start_cpu, start_wall = time.thread_time(), time.perf_counter()
    sol = solve(ode, "Rodas5P", rtol=rtol, atol=problem.atol(rtol), linsolve=linsolve)
    cpu, wall = time.thread_time() - start_cpu, time.perf_counter() - start_wall
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "retcode": sol.retcode,
        "scd": float(problem.scd(sol.final).min()),
        "nf": sol.stats.nf,
        "njvp": sol.stats.njvp,
        "nlinsolve": sol.stats.nlinsolve,
        "njac": sol.stats.njac,
        "naccept": sol.stats.naccept,
    }


def run(rtols: list[float], runs: int, say: Callable[[str], None]) -> list[dict]:
    problem = PROBLEMS["hires"]
    ode = problem.problem()
    out = []
    for rtol in rtols:
        say(f"HIRES Rodas5P rtol {rtol:g}: dense vs gmres, {runs} interleaved runs")
        for ls in LINSOLVES:  # warm-up
            _solve_once(problem, ode, rtol, ls)
        samples: dict[str, list[dict]] = {ls: [] for ls in LINSOLVES}
        for _ in range(runs):
            for ls in LINSOLVES:
                samples[ls].append(_solve_once(problem, ode, rtol, ls))
        row: dict = {"rtol": rtol, "atol": problem.atol(rtol)}
        for ls, rs in samples.items():
            first = rs[0]
            row[ls] = {
                **{k: v for k, v in first.items() if k not in ("cpu_s", "wall_s")},
                "cpu_min": min(r["cpu_s"] for r in rs),
                "wall_min": min(r["wall_s"] for r in rs),
                "cpu_all": [r["cpu_s"] for r in rs],
            }
        row["gmres_over_dense_cpu"] = row["gmres"]["cpu_min"] / row["dense"]["cpu_min"]
        row["gmres_over_dense_wall"] = row["gmres"]["wall_min"] / row["dense"]["wall_min"]
        ratios = [g / d for g, d in zip(row["gmres"]["cpu_all"], row["dense"]["cpu_all"], strict=True)]
        row["gmres_over_dense_cpu_per_round"] = ratios
        out.append(row)
    return out


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pysens bench gmres-speed", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", default="benchmarks/results", help="folder for gmres_speed.json")
    p.add_argument("--quick", action="store_true", help="rtol 1e-6 only, 2 runs")
    p.add_argument("--runs", type=int, default=None, help="interleaved timed runs per setup (default 5; quick 2)")
    cfg = p.parse_args(argv)
    torch.set_num_threads(1)
    runs = cfg.runs or (2 if cfg.quick else 5)
    rtols = [TARGET_RTOL] if cfg.quick else [1e-4, TARGET_RTOL, 1e-8]
    say = progress or (lambda s: print(s, flush=True))
    rows = run(rtols, runs, say)
    at = next(r for r in rows if r["rtol"] == TARGET_RTOL)
    result = {
        "config": {"quick": cfg.quick, "runs": runs, "rtols": rtols, "problem": "hires", "method": "Rodas5P"},
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "rows": rows,
        "target": f"gmres within {TARGET_RATIO:g}× of dense at rtol {TARGET_RTOL:g} (CPU seconds, min over runs)",
        "met": bool(at["gmres_over_dense_cpu"] <= TARGET_RATIO and at["gmres"]["retcode"] == "Success"),
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gmres_speed.json", result)
    for r in rows:
        d, g = r["dense"], r["gmres"]
        print(
            f"rtol {r['rtol']:g}: dense {d['cpu_min']:.3f} s (scd {d['scd']:.2f}, nf {d['nf']}), "
            f"gmres {g['cpu_min']:.3f} s (scd {g['scd']:.2f}, nf {g['nf']}, njvp {g['njvp']}): "
            f"gmres/dense {r['gmres_over_dense_cpu']:.2f}×"
        )
    print(f"target: {result['target']}: {'met' if result['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
