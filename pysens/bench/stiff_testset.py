"""The stiff test-set suite: every stiff method on every backend against the Bari test set's published answers.

Problems: :data:`pysens.bench.testset.PROBLEMS` (HIRES, OREGO, ROBER to 1e11, VDPOL with ε = 1e−6, E5 to 1e13,
POLLU), one sample each, float64, CPU, one thread. Setups: torch Rosenbrock23, Rodas4, Rodas5P, TRBDF2 and KenCarp4
(dense per-sample linear solves), scipy Radau, BDF and LSODA, and SUNDIALS CVODE (scikit-sundae, dense) when
installed. Each runs at rtol 1e−4 … 1e−8 with the problem's absolute tolerance (``problem.atol(rtol)``), default
options otherwise (no dtmin, no first step). The error is measured against the published final values, as the
test set's scd (significant correct digits); the harness's error is ``10^−scd``.

Every solve runs under ``--tolerance-model`` (default ``proportional``, :mod:`pysens.solvers.tolerance`: the
global error at the end should track rtol); ``local`` gives the backends' native per-step semantics for comparison.

The **accuracy check** of the suite: a point is *wrong* when it returns ``Success`` with fewer correct digits than
its tolerance promises: ``scd < required_digits``, where ``required_digits`` is the issue's
``−log10(rtol) − 1.5`` whenever rtol dominates the tolerance contract and lower only for measured quantities whose
contract is absolute-dominated (``atol > rtol·|ref|``: E5 under the test set's atol); see
:meth:`pysens.bench.testset.StiffTestProblem.required_digits`. The table marks wrong points and ``wrong`` in the
JSON lists them (the target is none).

Every solve is capped at ``--maxiters`` step attempts (default 20000): a setup that needs more ends with ``MaxIters``.
Long sweeps can be split (``--problems``, ``--setups``) into several processes writing separate ``--json`` files and
joined with ``--merge a.json b.json ...`` (points of the same problem are concatenated; a later file's point for
the same setup and rtol replaces an earlier one). ``--rtols 1e-3,3e-4,...`` runs any other grid (e.g. a finer one,
to find tolerances between the calibration's grid points where a method's global error per tolerance peaks).

    pysens bench stiff-testset [--out benchmarks/results] [--quick | --rtols 1e-3,2e-5] [--problems hires,rober]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pysens.artifacts import write_json
from pysens.bench.testset import PROBLEMS, StiffTestProblem
from pysens.bench.work_precision import Setup, WorkPrecision, work_precision
from pysens.solvers import backend_status
from pysens.solvers.methods import METHODS
from pysens.solvers.tolerance import (
    DEFAULT_TOLERANCE_MODEL,
    TOLERANCE_MODELS,
    ToleranceMap,
    calibrated_factor,
    internal_tolerances,
    tolerance_map,
)

RTOLS = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
QUICK_RTOLS = (1e-4, 1e-6, 1e-8)
DIGITS_MARGIN = 1.5  # a Success with fewer than -log10(rtol) - this many correct digits is a wrong answer
FIT_SET = ("hires", "orego", "vdpol", "rober")  # the tolerance model's calibration problems (pysens.solvers.tolerance)
MAXITERS = 20_000  # per solve: a setup that needs more steps ends with MaxIters (bounded suite time)


def setups() -> list[Setup]:
    """The compared setups: torch stiff methods with dense per-sample solves, scipy's stiff methods and CVODE."""
    out = [
        Setup(f"torch {m}", m, options={"linsolve": "dense"}) for m in ("Rosenbrock23", "Rodas4", "Rodas5P", "ROS34PW2")
    ]
    out += [Setup(f"torch {m}", m, options={"linsolve": "dense"}) for m in ("TRBDF2", "KenCarp4")]
    out.append(Setup("torch QNDF", "QNDF"))
    out += [Setup("scipy Radau", "RadauIIA5", "scipy"), Setup("scipy BDF", "BDF", "scipy")]
    out.append(Setup("scipy LSODA", "LSODA", "scipy"))
    ok = {name: status[0] for name, status in backend_status().items()}
    if "scipy" in METHODS["CVODE_BDF"].backends and ok.get("scipy"):
        try:
            import sksundae  # noqa: F401
        except ImportError:
            pass
        else:
            out.append(Setup("sksundae CVODE_BDF", "CVODE_BDF", "scipy", {"linsolve": "dense"}))
    return out


def _relative_error(problem: StiffTestProblem, finals: list) -> Callable:
    """The harness's error metric: ``10^−scd`` of the state at the final time (``x [n_times, B, d]``); every
    measured final state is appended to ``finals`` (the harness measures exactly the ``Success`` points, in order)."""

    def max_relative_error(x) -> float:
        finals.append(x[-1])
        return float(10.0 ** (-problem.scd(x[-1]).min()))

    return max_relative_error


def run_problem(
    problem: StiffTestProblem,
    rtols,
    setups_: list[Setup],
    *,
    runs: int = 1,
    warmup: int = 0,
    maxiters: int = MAXITERS,
    tolerance_model: str = DEFAULT_TOLERANCE_MODEL,
    progress: Callable[[str], None] | None = None,
):
    """One problem's work-precision sweep; every point gets ``scd``, ``required_digits`` and ``wrong`` (a Success
    below its required digits)."""
    finals: list = []
    points, wp = [], None
    for setup in setups_:
        capped = None
        for rtol in sorted(rtols, reverse=True):  # loosest first: work grows as rtol shrinks
            if capped is not None:
                points.append(_not_run(setup, rtol, problem.atol(rtol), capped))
                continue
            wp = work_precision(
                problem.problem(1),
                [setup],
                [problem.atol(rtol)],
                [rtol],
                error=_relative_error(problem, finals),
                solve_kwargs={"maxiters": maxiters, "tolerance_model": tolerance_model},
                runs=runs,
                warmup=warmup,
                name=problem.name,
                progress=progress,
            )
            points += wp.points
            if wp.points[0]["retcode"] == "MaxIters":
                capped = rtol
    wp.points = points
    measured = iter(finals)
    for p in wp.points:
        err = p["error"]
        p["scd"] = -math.log10(err) if isinstance(err, float) and math.isfinite(err) and err > 0 else None
        literal = -math.log10(p["reltol"]) - DIGITS_MARGIN
        x_final = next(measured) if p["retcode"] == "Success" else None
        need = literal
        if x_final is not None and p["scd"] is not None:
            need = float(problem.required_digits(x_final, p["reltol"], p["abstol"], DIGITS_MARGIN)[0])
        p["required_digits"] = need if math.isfinite(need) else literal
        p["wrong"] = p["retcode"] == "Success" and (p["scd"] is None or p["scd"] < p["required_digits"])
        entry = tolerance_map(p["method"]) if tolerance_model == "proportional" else None
        p["tolerance_map"] = [entry.q, entry.c] if entry is not None else [1.0, 1.0]  # the (q, c) this point ran with
        p["rtol_internal"] = internal_tolerances(p["method"], p["reltol"], p["abstol"], tolerance_model)[0]
    return wp


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pysens bench stiff-testset", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs", type=int, default=1, help="timed runs per point (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="rtol 1e-4, 1e-6 and 1e-8 only")
    parser.add_argument("--rtols", default="", help="comma-separated rtols to run instead (each in (0, 1))")
    parser.add_argument("--tolerance-model", default=DEFAULT_TOLERANCE_MODEL, choices=TOLERANCE_MODELS)
    parser.add_argument("--setups", default="", help="comma-separated setup names to run (default: all)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="join these result files into --out/--json")
    parser.add_argument("--json", default="stiff_testset.json", help="file name of the JSON written into --out")
    parser.add_argument("--maxiters", type=int, default=MAXITERS, help="step attempts per solve (MaxIters beyond)")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma-separated, from {', '.join(PROBLEMS)}")
    args = parser.parse_args(argv)
    if args.merge:
        return merge_results([Path(p) for p in args.merge], Path(args.out) / args.json)
    names = [n.strip() for n in args.problems.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown or not names:
        parser.error(f"--problems: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(PROBLEMS)}")
    if args.runs < 1 or args.warmup < 0 or args.maxiters < 1:
        parser.error("--runs and --maxiters must be >= 1 and --warmup >= 0")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rtols = QUICK_RTOLS if args.quick else RTOLS
    if args.rtols:
        if args.quick:
            parser.error("--rtols and --quick: give one of them")
        rtols = parse_rtols(args.rtols, parser.error)
    started = time.perf_counter()
    compared = setups()
    if args.setups:
        chosen = [n.strip() for n in args.setups.split(",") if n.strip()]
        missing = sorted(set(chosen) - {c.name for c in compared})
        if missing:
            parser.error(f"--setups: unknown {', '.join(missing)}; known: {', '.join(c.name for c in compared)}")
        compared = [c for c in compared if c.name in chosen]
    results, wrong = {}, []
    for name in names:
        problem = PROBLEMS[name]
        say = (lambda msg, n=name: progress(f"{n}: {msg}")) if progress else (lambda msg, n=name: print(f"  {n}:", msg))
        wp = run_problem(
            problem,
            rtols,
            compared,
            runs=args.runs,
            warmup=args.warmup,
            maxiters=args.maxiters,
            tolerance_model=args.tolerance_model,
            progress=say,
        )
        results[name] = wp
        print()
        print(wp.table())
        wp.plot(plot_path(out / args.json, name), title=_plot_title(name))
        wrong += [_wrong_entry(p, name) for p in wp.points if p["wrong"]]
        _write(out / args.json, results, wrong, args, rtols, started)  # after every problem: partial runs count
    print(f"\nwrong answers returned as Success: {len(wrong)}")
    for w in wrong:
        print(f"  {w['problem']} {w['setup']} rtol={w['reltol']:.0e}: scd {w['scd']} < {w['required_digits']}")
    print(f"wrote {out / args.json} and PNGs in {time.perf_counter() - started:.0f} s")
    return 0


def parse_rtols(text: str, error: Callable[[str], None]) -> tuple[float, ...]:
    """The rtols of a comma-separated list, tightest last and without repeats; ``error`` (the parser's) on a value
    that is not a number in (0, 1)."""
    values = []
    for item in (t.strip() for t in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not 0.0 < value < 1.0:
            error(f"--rtols: expected comma-separated numbers in (0, 1), got {item!r}")
        values.append(value)
    return tuple(sorted(set(values), reverse=True))


def error_per_tolerance(problems: dict) -> list[dict]:
    """Per setup of a sweep (``problems``: the JSON's ``"problems"``), the tolerance model's calibration quantities.

    ``K = err / rtol_int^(1/q)`` at every ``Success`` (the global error per internal tolerance, the constant of the
    model ``err = K·tol^(1/q)`` of :mod:`pysens.solvers.tolerance`, with the ``(q, c)`` the point ran with);
    ``k_max`` its largest value on the fit set (:data:`FIT_SET`) over the points that are not wrong (a wrong
    ``Success`` there is counted in ``wrong`` and analysed: a calibration miss or a solver defect),
    ``c_procedure = min(1, (S/k_max)^q)`` the factor the documented calibration gives from it; ``ratio_max`` the
    largest ``err / rtol`` over every rtol-dominated point (its required digits the literal
    ``−log10(rtol) − margin``), ``margin_min`` the least ``scd − required_digits`` (negative: a wrong ``Success``),
    and ``wrong`` the count of wrong ``Success``.
    Extremes are ``(value, problem, rtol)``.
    """
    rows: dict[str, dict] = {}

    def keep(row: dict, key: str, value: float, where: tuple, largest: bool = True) -> None:
        old = row[key]
        if old is None or (value > old[0] if largest else value < old[0]):
            row[key] = (value, *where)

    for name, wp in problems.items():
        for p in wp["points"]:
            row = rows.setdefault(
                p["setup"],
                {"setup": p["setup"], "run": 0, "success": 0, "wrong": 0, "k_max": None, "ratio_max": None}
                | {"margin_min": None, "q": None, "c": None},
            )
            row["run"] += p["retcode"] != "NotRun"
            row["wrong"] += bool(p["wrong"])
            if p["retcode"] != "Success" or p["scd"] is None:
                continue
            row["success"] += 1
            entry = tolerance_map(p["method"])
            row["q"], row["c"] = q, c = p.get("tolerance_map") or (entry.q, entry.c)
            err, rtol, where = 10.0 ** -p["scd"], p["reltol"], (name, p["reltol"])
            rtol_int = p.get("rtol_internal") or rtol * ToleranceMap(q, c, "").factor(rtol)  # files before it
            if name in FIT_SET and not p["wrong"]:  # a wrong Success is a defect to find, not a calibration datum
                keep(row, "k_max", err / rtol_int ** (1.0 / q), where)
            if p["required_digits"] >= -math.log10(rtol) - DIGITS_MARGIN - 1e-9:  # rtol-dominated: the literal rule
                keep(row, "ratio_max", err / rtol, where)
            keep(row, "margin_min", p["scd"] - p["required_digits"], where, largest=False)
    for row in rows.values():
        k = row["k_max"]
        row["c_procedure"] = None if k is None else calibrated_factor(k[0], row["q"])
    return list(rows.values())


def error_per_tolerance_table(data: dict) -> str:
    """The markdown table of :func:`error_per_tolerance` for a sweep's JSON ``data``."""

    def at(v, spec: str) -> str:
        return "–" if v is None else f"{v[0]:{spec}} ({v[1]} {v[2]:.2g})"

    head = ["setup", "(q, c)", "Success / run", "K_max, fit set", "c by the procedure", "largest err/rtol"]
    lines = ["| " + " | ".join(head + ["least scd − required", "wrong"]) + " |", "|" + "---|" * 8]
    for r in error_per_tolerance(data["problems"]):
        qc = "–" if r["q"] is None else f"({r['q']:g}, {r['c']:g})"
        c_proc = "–" if r["c_procedure"] is None else f"{r['c_procedure']:.2g}"
        cells = [r["setup"], qc, f"{r['success']} / {r['run']}", at(r["k_max"], ".3g"), c_proc]
        cells += [at(r["ratio_max"], ".3g"), at(r["margin_min"], "+.2f"), str(r["wrong"])]
        lines.append("| " + " | ".join(cells) + " |")
    cfg = data["config"]
    rtols = ", ".join(f"{r:.2g}" for r in cfg["rtols"])
    return (
        f"rtols {rtols}; tolerance model `{cfg['tolerance_model']}`, maxiters {cfg['maxiters']} per solve; fit set "
        f"{', '.join(FIT_SET)}, S = 10^0.5.\n\n" + "\n".join(lines) + "\n"
    )


def _plot_title(name: str) -> str:
    return f"{PROBLEMS[name].title}: time vs error (10^-scd)"


def _not_run(setup: Setup, rtol: float, atol: float, capped: float) -> dict:
    """The point of a tolerance tighter than one that already ran out of ``maxiters`` (it cannot need fewer steps)."""
    return {
        "setup": setup.name,
        "method": setup.method,
        "backend": setup.backend,
        "abstol": atol,
        "reltol": rtol,
        "dt": None,
        "error": math.nan,
        "time_min": math.nan,
        "time_median": math.nan,
        "retcode": "NotRun",
        "runs": 0,
        "not_run": f"MaxIters already at rtol {capped:.0e}",
    }


def _capped(point: dict, problem: str) -> dict:
    """``point`` with its requirement capped at the problem's float64 floor (``StiffTestProblem.float64_digits``), so
    that files run before the floor was stated merge under the current rule (the cap only ever lowers it)."""
    floor = PROBLEMS[problem].float64_digits if problem in PROBLEMS else None
    if floor is None or point.get("required_digits") is None or point["required_digits"] <= floor:
        return point
    scd = point.get("scd")
    wrong = point["retcode"] == "Success" and (scd is None or scd < floor)
    return point | {"required_digits": floor, "wrong": wrong}


def _wrong_entry(point: dict, problem: str) -> dict:
    keys = ("setup", "reltol", "scd", "required_digits", "retcode")
    return {k: point.get(k) for k in keys} | {"problem": problem}


def _write(path: Path, results: dict, wrong: list, args, rtols, started: float) -> None:
    write_json(
        path,
        {
            "problems": {
                k: wp.as_dict() | {"title": PROBLEMS[k].title, "source": PROBLEMS[k].source, "dim": PROBLEMS[k].dim}
                for k, wp in results.items()
            },
            "wrong": wrong,
            "config": {
                "rtols": list(rtols),
                "runs": args.runs,
                "warmup": args.warmup,
                "quick": args.quick,
                "threads": 1,
                "digits_margin": DIGITS_MARGIN,
                "maxiters": args.maxiters,
                "tolerance_model": args.tolerance_model,
                "torch": torch.__version__,
            },
            "wall_time": time.perf_counter() - started,
        },
    )


def plot_path(json_path: Path, problem: str) -> Path:
    """The PNG of ``problem`` beside the sweep's JSON, named after it (``stiff_testset.json`` →
    ``stiff_testset_hires.png``), so that a partial or finer sweep never overwrites the committed sweep's figures."""
    return json_path.parent / f"{json_path.stem}_{problem}.png"


def merge_results(paths: list[Path], out: Path) -> int:
    """Join result files of one configuration (split by problem or setup) into ``out``; a problem's points are
    concatenated in file order (a later file's point for the same setup and rtol replaces an earlier one: a rerun),
    ``wrong`` is recomputed, ``wall_time`` is the sum (CPU time spent by the parts)."""
    parts = [json.loads(p.read_text()) for p in paths]
    configs = {json.dumps({k: v for k, v in d["config"].items() if k != "rtols"}, sort_keys=True) for d in parts}
    if len(configs) > 1:
        raise SystemExit(f"--merge: the files were run with different configurations: {sorted(configs)}")
    problems: dict = {}
    for d in parts:
        for name, wp in d["problems"].items():
            if name not in problems:
                problems[name] = wp | {"points": []}
            points = problems[name]["points"]
            for p in wp["points"]:  # a later file's point for the same setup and rtol replaces the earlier one
                key = (p["setup"], p["reltol"])
                points[:] = [q for q in points if (q["setup"], q["reltol"]) != key] + [_capped(p, name)]
    rtols = sorted({r for d in parts for r in d["config"]["rtols"]}, reverse=True)
    wrong = [_wrong_entry(p, name) for name, wp in problems.items() for p in wp["points"] if p["wrong"]]
    merged = {
        "problems": problems,
        "wrong": wrong,
        "config": parts[0]["config"] | {"rtols": rtols},
        "wall_time": sum(d["wall_time"] for d in parts),
        "note": f"merged from {len(parts)} processes run side by side: " + ", ".join(p.name for p in paths),
    }
    write_json(out, merged)
    for name, wp in problems.items():
        fields = {k: wp[k] for k in ("problem", "error", "points", "reference", "mode", "paths")}
        WorkPrecision(**fields).plot(plot_path(out, name), title=_plot_title(name))
    print(f"merged {len(parts)} files into {out}: {len(wrong)} wrong Success")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
