"""Stiff speed to 6 correct digits: torch QNDF and Rodas5P against scipy (BDF, Radau, LSODA) and CVODE, B = 1 and 64.

Problems: HIRES and ROBER of the Bari test set (:data:`pysens.bench.testset.PROBLEMS`; OREGO, VDPOL, POLLU with
``--problems``), float64, CPU, one thread. ``B = 1`` solves the published problem and measures the test set's scd
against the published final values. ``B = 64`` solves 64 copies with initial states perturbed by up to ±1% (seeded),
each measured against its own reference, the copy solved alone by CVODE at rtol 1e−13 (10+ digits, see
``_reference``), on the problem's measured quantities (the minimum scd over the copies counts). E5 (the test set's
fixed atol) and E5s (float64 floor 5.4 digits) run no setups: 6 digits are no meaningful target there
(:func:`unmeasurable` says why).

Setups (the peers as a user calls them, their defaults otherwise; the right-hand side is the problem's torch function
and the Jacobian its exact torch Jacobian, as pysens's scipy backend passes them):

* ``torch QNDF`` / ``torch Rodas5P``: the whole batch in one call, per-sample steps (pysens's torch backend);
* ``torch QNDF coupled``: QNDF with ``batch="coupled"``, the batch as one system (one step size and order, the largest
  per-sample error norm, per-sample LUs; at B = 1 the same algorithm as ``torch QNDF`` with its control on Python
  floats, in other arithmetic: W⁻¹ with the scale folded in, other norm kernels and summation orders, so its values
  agree to rounding and its steps on about half of the test set's points, and elsewhere part after a rounding-level
  difference flips an accept or order decision);
* ``scipy BDF``, ``scipy Radau``, ``scipy LSODA``, ``CVODE`` (scikit-sundae, dense): one solve per sample, the loop a
  user writes for independent problems (at B = 64 timed on ``--loop-samples`` of the copies and scaled to 64:
  the solves are independent; the table says so);
* ``... whole batch``: scipy BDF / Radau (sparse block-diagonal Jacobian) and CVODE (dense) on the batch flattened
  into one ``64·d`` system, one step size for all (score_sde's layout).
* ``user ...``: the same libraries as their users run them (:mod:`pysens.bench.user_kinetics`): the kinetics and
  their analytic Jacobian written in numpy, the solver called directly with its native (per-step) tolerances, per
  sample in a loop and, at B > 1, as one whole-batch system (BDF/Radau sparse, LSODA dense, CVODE dense or banded).
  A numpy right-hand side of these 3- and 8-species problems costs a few microseconds a call where the torch one costs
  tens, so these are the peers a user would actually compare against; the summary states both verdicts.

Each setup runs at the loosest rtol of ``RTOL_LADDER`` whose solution reaches 6 correct digits (atol paired as the
test set suite does, ``problem.atol(rtol)``), found in a calibration pass. Then ``--runs`` timed rounds interleave the
setups; the time is the minimum over rounds of the process's CPU time (every setup is single-threaded and in-process;
on a shared machine wall time also counts the waits for a core, so it is recorded but not compared), and the ratios
(the fastest torch setup over each peer) are taken within the same run. numpy/scipy's BLAS is held to one thread
for the run (threadpoolctl), as torch is.

Each round also times the torch right-hand side alone on the batch: at the fewest calls any setup needed for one solve
of the batch (a per-sample loop's calls counted per solve) it is a floor under every torch engine that makes no fewer
calls, and the table compares it with the fastest user peer's whole solve (where it is beyond the bound, no torch
solver on that right-hand side can meet it, however lean its own steps).

``--large-batch N`` adds, per problem, a case at B = N with only the coupled torch QNDF and user CVODE's banded
whole-batch solve (the fastest peer at B = 64), digits measured on ``CHECKED_ROWS`` evenly spaced copies.

    pysens bench stiff-speed [--out benchmarks/results] [--runs 3] [--quick] [--problems hires,rober]
                             [--large-batch 4096]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import pysens
from pysens.artifacts import write_json
from pysens.bench import user_kinetics
from pysens.bench.testset import PROBLEMS, StiffTestProblem
from pysens.solvers import ODEProblem

DIGITS = 6.0
RHS_TIMING_CALLS = 200  # back-to-back calls of the torch right-hand side per timing round (its floor, below)
RTOL_LADDER = (1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8, 3e-9, 1e-9)
MAXITERS = 200_000
BATCH = 64
REFERENCE_RTOL = 1e-13  # the per-copy reference solves (_reference)
CHECKED_ROWS = 16  # copies whose digits are measured in the large-batch case (--large-batch)


@dataclass
class Run:
    """One setup: ``solve(x0 [n, d], rtol) -> (x_final [n, d], retcode, nf)``; ``per_sample`` setups are looped."""

    name: str
    solve: Callable[[Tensor, float], tuple]
    per_sample: bool = False
    peer: bool = True  # a setup users would otherwise run (scipy/CVODE), not pysens's own torch engine
    user_code: bool = False  # the peer runs its users' own numpy code, not pysens's torch right-hand side


Tensor = torch.Tensor


def _pysens(problem: StiffTestProblem, method: str, backend: str = "torch", **options) -> Callable:
    def solve(x0: Tensor, rtol: float):
        p = ODEProblem(problem.rhs, x0, problem.tspan)
        sol = pysens.solve(p, method, backend=backend, rtol=rtol, atol=problem.atol(rtol), maxiters=MAXITERS, **options)
        return sol.x[-1], sol.retcode, sol.stats.nf

    return solve


def unmeasurable(problem: StiffTestProblem) -> str | None:
    """Why ``DIGITS`` correct digits are no meaningful target for ``problem``, or None: a float64 floor below them
    (``float64_digits``: rounding, not the tolerance, would decide), or a fixed atol that promises fewer digits on
    the measured quantities at every rtol of the ladder (E5: the test set's atol 1.7e-24 on ~1e-22 components
    promises 1.7; CVODE at rtol 1e-13 under atol 1.7e-26 still returns only 2.6 scd)."""
    floor = problem.float64_digits
    if floor is not None and floor < DIGITS:
        return (
            f"{DIGITS:g} correct digits not meaningful: float64 computes its measured quantities to {floor:g} at most"
        )
    if problem.atol_fixed is not None:
        promised = float(problem.tolerance_digits(min(RTOL_LADDER), problem.atol_fixed).min())
        if promised < DIGITS:
            return (
                f"{DIGITS:g} correct digits not meaningful: its fixed atol {problem.atol_fixed:g} promises "
                f"{promised:.1f} digits at most, whatever the rtol"
            )
    return None


def setups(problem: StiffTestProblem, batch: int, cvode: bool) -> list[Run]:
    """The setups of a case (module docstring; :func:`bench_case` runs none where :func:`unmeasurable`)."""
    runs = [
        Run("torch QNDF", _pysens(problem, "QNDF"), peer=False),
        Run("torch QNDF coupled", _pysens(problem, "QNDF", batch="coupled"), peer=False),
        Run("torch Rodas5P", _pysens(problem, "Rodas5P", linsolve="dense"), peer=False),
        Run("scipy BDF", _pysens(problem, "BDF", "scipy"), per_sample=True),
        Run("scipy Radau", _pysens(problem, "RadauIIA5", "scipy"), per_sample=True),
        Run("scipy LSODA", _pysens(problem, "LSODA", "scipy"), per_sample=True),
    ]
    if cvode:
        runs.append(Run("CVODE", _pysens(problem, "CVODE_BDF", "scipy", linsolve="dense"), per_sample=True))
    if batch > 1:
        runs += [
            Run("scipy BDF whole batch", _pysens(problem, "BDF", "scipy")),
            Run("scipy Radau whole batch", _pysens(problem, "RadauIIA5", "scipy")),
        ]
        if cvode:
            runs.append(Run("CVODE whole batch", _pysens(problem, "CVODE_BDF", "scipy", linsolve="dense")))
    return runs + user_setups(problem, batch, cvode)


def user_setups(problem: StiffTestProblem, batch: int, cvode: bool) -> list[Run]:
    """The peers in their users' own code (numpy kinetics, solver called directly; module docstring)."""
    if problem.name not in user_kinetics.PROBLEMS:
        return []
    span, atol = problem.tspan, problem.atol
    runs = [
        Run(f"user {m}", user_kinetics.scipy_solve(problem.name, m, span, atol), per_sample=True, user_code=True)
        for m in user_kinetics.SCIPY_METHODS
    ]
    if cvode:
        dense = user_kinetics.cvode_solve(problem.name, span, atol, "dense")
        runs.append(Run("user CVODE", dense, per_sample=True, user_code=True))
    if batch > 1:
        runs += [
            Run(f"user {m} whole batch", user_kinetics.scipy_solve(problem.name, m, span, atol), user_code=True)
            for m in user_kinetics.SCIPY_METHODS
        ]
        if cvode:
            runs += [
                Run(
                    f"user CVODE {ls} whole batch",
                    user_kinetics.cvode_solve(problem.name, span, atol, ls),
                    user_code=True,
                )
                for ls in ("dense", "band")
            ]
    return runs


def _has_cvode() -> bool:
    try:
        import sksundae  # noqa: F401
    except ImportError:
        return False
    return True


def _initial_states(problem: StiffTestProblem, batch: int) -> Tensor:
    x0 = torch.tensor(problem.x0, dtype=torch.float64)[None].expand(batch, -1).clone()
    if batch == 1:
        return x0
    g = torch.Generator().manual_seed(13)
    return x0 * (1 + 0.01 * (2 * torch.rand(batch, x0.shape[1], generator=g, dtype=torch.float64) - 1))


def _reference(problem: StiffTestProblem, x0: Tensor) -> Tensor:
    """Final states ``[B, d]``: the published values (B = 1), else each copy solved alone by CVODE (dense, the
    problem's analytic numpy Jacobian, :mod:`pysens.bench.user_kinetics`) at rtol ``REFERENCE_RTOL`` and atol
    ``problem.atol(REFERENCE_RTOL) · 1e-2``: 10–12 correct digits against the published values on HIRES, ROBER, OREGO,
    VDPOL and POLLU, four or more beyond the 6 measured (``tests/bench/test_stiff_speed_reference.py``). Each copy
    alone because the copies are independent and one shared step sequence must resolve every copy's own fast
    transitions: scipy Radau at rtol 1e-12 on VDPOL's 64 copies as one system runs out of 200 000 steps, where one copy
    alone takes ~0.4 s in CVODE. Without scikit-sundae (or numpy kinetics for the problem): scipy Radau at rtol 1e-12
    on the batch as one system (the shared steps hold every copy to the tight tolerance; not enough for VDPOL)."""
    if x0.shape[0] == 1:
        return torch.tensor(problem.reference, dtype=torch.float64)[None]
    if _has_cvode() and problem.name in user_kinetics.PROBLEMS:
        solve = user_kinetics.cvode_solve(problem.name, problem.tspan, lambda r: problem.atol(r) * 1e-2, "dense")
        rows = [solve(x0[i : i + 1], REFERENCE_RTOL) for i in range(x0.shape[0])]
        failed = next((code for _, code, _ in rows if code != "Success"), None)
        if failed is not None:
            raise RuntimeError(f"{problem.name}: the CVODE reference failed ({failed})")
        return torch.cat([x for x, _, _ in rows])
    p = ODEProblem(problem.rhs, x0, problem.tspan)
    sol = pysens.solve(p, "RadauIIA5", backend="scipy", rtol=1e-12, atol=problem.atol(1e-12) * 1e-2, maxiters=MAXITERS)
    if sol.retcode != "Success":
        raise RuntimeError(f"{problem.name}: the Radau reference failed ({sol.retcode})")
    return sol.x[-1]


def _digits(problem: StiffTestProblem, x: Tensor, ref: Tensor) -> float:
    """The smallest scd over the rows (the published measure at B = 1; against each copy's reference otherwise, on
    the problem's measured quantities: E5's mean and invariant, not its raw ~1e-290 and 0 components)."""
    if x.shape[0] == 1:
        return float(problem.scd(x)[0])
    return float(problem.scd_against(x, ref).min())


def _call(run: Run, x0: Tensor, rtol: float, loop_samples: int) -> tuple[Tensor, str, int, float, int]:
    """Solve once; returns ``(x_final, retcode, nf, seconds, rows_solved)`` (a looped setup solves the first
    ``loop_samples`` rows only; its time is scaled by the caller)."""
    start = time.perf_counter()
    if run.per_sample:
        rows = x0[:loop_samples]
        outs = [run.solve(rows[i : i + 1], rtol) for i in range(rows.shape[0])]
        elapsed = time.perf_counter() - start
        code = next((o[1] for o in outs if o[1] != "Success"), "Success")
        return torch.cat([o[0] for o in outs]), code, sum(o[2] for o in outs), elapsed, rows.shape[0]
    x, code, nf = run.solve(x0, rtol)
    return x, code, nf, time.perf_counter() - start, x0.shape[0]


def large_batch_setups(problem: StiffTestProblem, cvode: bool) -> list[Run]:
    """The large-batch case: the coupled torch QNDF against the fastest whole-batch peer of the B = 64 rows, user
    CVODE with its banded solver (the dense and sparse whole-batch setups factor a B·d system and per-sample loops
    scale linearly: minutes at B = 4096, and far behind at B = 64 already)."""
    runs = [Run("torch QNDF coupled", _pysens(problem, "QNDF", batch="coupled"), peer=False)]
    if cvode and problem.name in user_kinetics.PROBLEMS:
        solve = user_kinetics.cvode_solve(problem.name, problem.tspan, problem.atol, "band")
        runs.append(Run("user CVODE band whole batch", solve, user_code=True))
    return runs


def _rhs_seconds(problem: StiffTestProblem, x0: Tensor, calls: int = RHS_TIMING_CALLS) -> float:
    """CPU seconds of one call of the problem's torch right-hand side on the whole batch ``x0`` (the mean of
    ``calls`` back-to-back calls; the caller takes the minimum over rounds)."""
    t = torch.zeros(x0.shape[0], dtype=x0.dtype)
    problem.rhs(t, x0)  # first-call costs out of the measurement
    cpu = time.process_time()
    for _ in range(calls):
        problem.rhs(t, x0)
    return (time.process_time() - cpu) / calls


def _rhs_floor(rows: dict, rhs_seconds: float) -> dict | None:
    """What the torch right-hand side alone costs at the fewest calls any setup of the case needed for one solve of
    the batch to 6 digits (a per-sample loop's calls are counted per solve: a torch engine evaluates the batch's
    copies in one call): a lower bound on any torch engine's time that makes no fewer calls than the best of these
    solvers. ``None`` when no setup reached the digits."""
    calls = {}
    for name, row in rows.items():
        if row.get("time") is None:
            continue
        calls[name] = row["nf"] / row["solves"]
    if not calls:
        return None
    fewest = min(calls, key=calls.get)
    return {
        "rhs_call_cpu": rhs_seconds,
        "fewest_calls": calls[fewest],
        "fewest_calls_setup": fewest,
        "seconds": rhs_seconds * calls[fewest],
    }


def bench_case(
    problem: StiffTestProblem, batch: int, runs: int, loop_samples: int, cvode: bool, progress, large: bool = False
) -> dict:
    """One problem at one batch size; ``large``: only :func:`large_batch_setups`, digits measured on
    ``CHECKED_ROWS`` evenly spaced copies (each against its own reference, :func:`_reference`: the copies are
    independent). A problem whose digits target is :func:`unmeasurable` gives a case with no setups and the reason."""
    note = unmeasurable(problem)
    if note:
        return {"problem": problem.name, "batch": batch, "setups": {}, "summary": {}, "note": note}
    x0 = _initial_states(problem, batch)
    checked = torch.linspace(0, batch - 1, CHECKED_ROWS).round().long() if large else torch.arange(batch)
    ref = _reference(problem, x0[checked])
    rows = {}
    chosen = {}
    runs_here = large_batch_setups(problem, cvode) if large else setups(problem, batch, cvode)
    for run in runs_here:
        for rtol in RTOL_LADDER:
            x, code, nf, _, n = _call(run, x0, rtol, loop_samples)
            digits = _digits(problem, x[checked[checked < n]], ref[checked < n])
            progress(f"{problem.name} B={batch} {run.name} rtol={rtol:g}: {code}, scd {digits:.2f}")
            if code == "Success" and digits >= DIGITS:
                chosen[run.name] = (run, rtol)
                solves = n if run.per_sample else 1  # a loop's nf sums its n solves
                rows[run.name] = {
                    "rtol": rtol,
                    "scd": digits,
                    "nf": nf,
                    "solves": solves,
                    "retcode": code,
                    "times": [],
                    "cpu_times": [],
                }
                break
        else:
            rows[run.name] = {"rtol": None, "scd": None, "retcode": "not reached", "times": [], "cpu_times": []}
    rhs_seconds = []
    for _ in range(runs):  # interleaved: every setup once per round, and the torch right-hand side's own cost
        rhs_seconds.append(_rhs_seconds(problem, x0))
        for name, (run, rtol) in chosen.items():
            cpu = time.process_time()
            _, _, _, seconds, n = _call(run, x0, rtol, loop_samples)
            rows[name]["cpu_times"].append((time.process_time() - cpu) * batch / n)
            rows[name]["times"].append(seconds * batch / n)
            rows[name]["scaled_from"] = n if n != batch else None
    for row in rows.values():
        row["time"] = min(row["cpu_times"]) if row["cpu_times"] else None  # the compared measure: CPU seconds
        row["wall"] = min(row["times"]) if row["times"] else None
    for run in runs_here:
        rows[run.name]["user_code"] = run.user_code
    timed = {k: v["time"] for k, v in rows.items() if v["time"] is not None}
    engines = {k: v for k, v in timed.items() if k.startswith("torch")}
    backend_peers = {k: v for k, v in timed.items() if k not in engines and not rows[k]["user_code"]}
    user_peers = {k: v for k, v in timed.items() if rows[k]["user_code"]}
    summary = _verdict(engines, backend_peers, batch)
    summary["user_code"] = _verdict(engines, user_peers, batch)
    floor = _rhs_floor(rows, min(rhs_seconds)) if rhs_seconds else None
    if floor is not None and user_peers:
        fastest = summary["user_code"]["fastest_peer"]
        floor["over_fastest_user_peer"] = floor["seconds"] / user_peers[fastest]
        floor["reachable"] = floor["seconds"] <= _target(batch) * user_peers[fastest]
    summary["rhs_floor"] = floor
    case = {"problem": problem.name, "batch": batch, "setups": rows, "summary": summary}
    if large:
        case["checked_rows"] = CHECKED_ROWS
    return case


def _target(batch: int) -> float:
    """Issue 13's bound on the fastest torch setup over the fastest peer: 1.5× at B = 1, 1.0× (faster) for a batch."""
    return 1.5 if batch == 1 else 1.0


def _verdict(engines: dict[str, float], peers: dict[str, float], batch: int) -> dict:
    """The fastest torch setup against the fastest of ``peers`` (CPU seconds by setup name)."""
    fastest = min(peers, key=peers.get) if peers else None
    best = min(engines, key=engines.get) if engines else None
    summary = {"fastest_peer": fastest, "fastest_torch": best}
    if best is not None and fastest is not None:
        ours = engines[best]
        summary["torch_over_fastest_peer"] = ours / peers[fastest]
        summary["torch_over_each"] = {k: ours / v for k, v in peers.items()}
        target = _target(batch)
        summary["target"] = f"fastest torch ≤ {target}× the fastest peer"
        summary["met"] = ours <= target * peers[fastest]
    return summary


def table(results: dict) -> str:
    """The Markdown table of ``stiff_speed.json`` (self-contained: the README renderer calls this)."""
    lines = [
        "| problem | B | setup | rtol | min scd | RHS calls | CPU time (s) | wall (s) | fastest torch / this (CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in results["cases"]:
        best = case["summary"].get("fastest_torch")
        ours = case["setups"][best]["time"] if best else None
        for name, row in case["setups"].items():
            t = row["time"]
            n = row.get("scaled_from")
            scaled = f" (loop of {n}, ×{case['batch'] // n})" if n else ""
            ratio = f"{ours / t:.2f}" if (t and ours) else "—"
            digits = "—" if row["scd"] is None else f"{row['scd']:.2f}"
            seconds = "—" if t is None else f"{t:.3g}"
            wall = "—" if row.get("wall") is None else f"{row['wall']:.3g}"
            lines.append(
                f"| {case['problem']} | {case['batch']} | {name} | {row['rtol'] or '—'} | {digits} | "
                f"{row.get('nf', '—')} | {seconds}{scaled} | {wall} | {ratio} |"
            )
    lines.append("")
    for case in results["cases"]:
        if "note" in case:
            lines.append(f"- {case['problem']}, B = {case['batch']}: not measured: {case['note']}")
        verdicts = (("peer on pysens's torch right-hand side", case["summary"]),)
        if "user_code" in case["summary"]:
            verdicts += (("peer in its users' numpy code", case["summary"]["user_code"]),)
        for label, s in verdicts:
            if "met" in s:
                lines.append(
                    f"- {case['problem']}, B = {case['batch']}, {label}: fastest torch ({s['fastest_torch']}) / "
                    f"fastest peer ({s['fastest_peer']}) = {s['torch_over_fastest_peer']:.2f} ({s['target']}: "
                    f"{'met' if s['met'] else 'not met'})"
                )
        floor = case["summary"].get("rhs_floor")
        if floor and "over_fastest_user_peer" in floor:
            lines.append(
                f"  - {case['problem']}, B = {case['batch']}: the torch right-hand side alone "
                f"({floor['rhs_call_cpu'] * 1e6:.0f} µs a call) at the fewest calls any setup needed "
                f"({floor['fewest_calls']:.0f}, {floor['fewest_calls_setup']}) costs {floor['seconds']:.3g} s, "
                f"{floor['over_fastest_user_peer']:.2f}× the fastest user peer's whole solve ("
                + (
                    "within the target"
                    if floor["reachable"]
                    else "beyond the target: out of reach for a torch engine "
                    "on this right-hand side that makes no fewer calls"
                )
                + ")"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--problems", default="hires,rober")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--loop-samples", type=int, default=8, help="samples a per-sample loop is timed on at B > 1")
    parser.add_argument("--quick", action="store_true", help="one timed round, 4 looped samples (smoke run)")
    parser.add_argument(
        "--large-batch", type=int, default=0, help="also this batch size, coupled QNDF vs banded CVODE only (0: off)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = progress or (lambda msg: print(" ", msg, flush=True))
    runs, loop = (1, 4) if args.quick else (args.runs, args.loop_samples)
    cvode = _has_cvode()
    started = time.perf_counter()
    cases = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with _one_blas_thread() as blas_threads:  # the numpy peers' dense LUs, like torch, on one thread
        for name in args.problems.split(","):
            for batch in (1, args.batch):
                cases.append(bench_case(PROBLEMS[name], batch, runs, min(loop, batch), cvode, report))
                _write(out, cases, runs, loop, cvode, started, blas_threads)
                print(table({"cases": cases}), flush=True)
            if args.large_batch > 1:
                cases.append(bench_case(PROBLEMS[name], args.large_batch, runs, 1, cvode, report, large=True))
                _write(out, cases, runs, loop, cvode, started, blas_threads)
                print(table({"cases": cases}), flush=True)
    return 0


@contextlib.contextmanager
def _one_blas_thread():
    """numpy/scipy's BLAS and LAPACK held to one thread (threadpoolctl) for the run, as torch is: the user peers'
    dense whole-batch solves otherwise take a second core and their CPU time counts both. Yields the BLAS thread
    limit in force (``None`` without threadpoolctl: the library's own default, recorded as such)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield None
        return
    with threadpool_limits(limits=1):
        yield 1


def _write(out: Path, cases: list, runs: int, loop: int, cvode: bool, started: float, blas_threads) -> None:
    results = {
        "cases": cases,
        "config": {
            "digits": DIGITS,
            "rtol_ladder": list(RTOL_LADDER),
            "runs": runs,
            "loop_samples": loop,
            "threads": 1,
            "blas_threads": blas_threads,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cvode": cvode,
        },
        "wall_time": time.perf_counter() - started,
    }
    write_json(out / "stiff_speed.json", results)


if __name__ == "__main__":
    raise SystemExit(main())
