"""The stiff test-set suite: every stiff method on every backend against the Bari test set's published answers.

Problems: :data:`pysens.bench.testset.PROBLEMS` (HIRES, OREGO, ROBER to 1e11, VDPOL with ε = 1e−6, E5 to 1e13,
POLLU), one sample each, float64, CPU, one thread. Setups: torch Rosenbrock23, Rodas4, Rodas5P, TRBDF2 and KenCarp4
(dense per-sample linear solves), scipy Radau, BDF and LSODA, and SUNDIALS CVODE (scikit-sundae, dense) when
installed. Each runs at rtol 1e−4 … 1e−8 with the problem's absolute tolerance (``problem.atol(rtol)``), default
options otherwise (no dtmin, no first step). The error is measured against the published final values, as the
test set's scd (significant correct digits); the harness's error is ``10^−scd``.

The **accuracy check** of the suite: a point is *wrong* when it returns ``Success`` with
``scd < −log10(rtol) − 1.5``; the table marks those and ``wrong`` in the JSON lists them (the target is none).

Every solve is capped at ``--maxiters`` step attempts (default 20000): a setup that needs more ends with ``MaxIters``.

    pysens bench stiff-testset [--out benchmarks/results] [--quick] [--problems hires,rober] [--runs 1]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pysens.artifacts import write_json
from pysens.bench.testset import PROBLEMS, StiffTestProblem
from pysens.bench.work_precision import Setup, work_precision
from pysens.solvers import backend_status
from pysens.solvers.methods import METHODS

RTOLS = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
QUICK_RTOLS = (1e-4, 1e-6)
DIGITS_MARGIN = 1.5  # a Success with fewer than -log10(rtol) - this many correct digits is a wrong answer
MAXITERS = 20_000  # per solve: a setup that needs more steps ends with MaxIters (bounded suite time)


def setups() -> list[Setup]:
    """The compared setups: torch stiff methods with dense per-sample solves, scipy's stiff methods and CVODE."""
    out = [Setup(f"torch {m}", m, options={"linsolve": "dense"}) for m in ("Rosenbrock23", "Rodas4", "Rodas5P")]
    out += [Setup(f"torch {m}", m, options={"linsolve": "dense"}) for m in ("TRBDF2", "KenCarp4")]
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


def _relative_error(problem: StiffTestProblem) -> Callable:
    """The harness's error metric: ``10^−scd`` of the state at the final time (``x [n_times, B, d]``)."""

    def max_relative_error(x) -> float:
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
    progress: Callable[[str], None] | None = None,
):
    """One problem's work-precision sweep; every point gets ``scd`` and ``wrong`` (Success below the margin)."""
    wp = work_precision(
        problem.problem(1),
        setups_,
        [problem.atol(r) for r in rtols],
        list(rtols),
        error=_relative_error(problem),
        solve_kwargs={"maxiters": maxiters},
        runs=runs,
        warmup=warmup,
        name=problem.name,
        progress=progress,
    )
    for p in wp.points:
        err = p["error"]
        p["scd"] = -math.log10(err) if isinstance(err, float) and math.isfinite(err) and err > 0 else None
        need = -math.log10(p["reltol"]) - DIGITS_MARGIN
        p["wrong"] = p["retcode"] == "Success" and (p["scd"] is None or p["scd"] < need)
    return wp


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pysens bench stiff-testset", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs", type=int, default=1, help="timed runs per point (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="rtol 1e-4 and 1e-6 only")
    parser.add_argument("--json", default="stiff_testset.json", help="file name of the JSON written into --out")
    parser.add_argument("--maxiters", type=int, default=MAXITERS, help="step attempts per solve (MaxIters beyond)")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma-separated, from {', '.join(PROBLEMS)}")
    args = parser.parse_args(argv)
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
    started = time.perf_counter()
    compared = setups()
    results, wrong = {}, []
    for name in names:
        problem = PROBLEMS[name]
        say = (lambda msg, n=name: progress(f"{n}: {msg}")) if progress else (lambda msg, n=name: print(f"  {n}:", msg))
        wp = run_problem(
            problem, rtols, compared, runs=args.runs, warmup=args.warmup, maxiters=args.maxiters, progress=say
        )
        results[name] = wp
        print()
        print(wp.table())
        wp.plot(out / f"stiff_testset_{name}.png", title=f"{problem.title}: time vs error (10^-scd)")
        keys = ("setup", "reltol", "scd", "retcode")
        wrong += [{k: p[k] for k in keys} | {"problem": name} for p in wp.points if p["wrong"]]
        _write(out / args.json, results, wrong, args, rtols, started)  # after every problem: partial runs count
    print(f"\nwrong answers returned as Success: {len(wrong)}")
    for w in wrong:
        print(f"  {w['problem']} {w['setup']} rtol={w['reltol']:.0e}: scd {w['scd']}")
    print(f"wrote {out / args.json} and PNGs in {time.perf_counter() - started:.0f} s")
    return 0


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
                "torch": torch.__version__,
            },
            "wall_time": time.perf_counter() - started,
        },
    )


if __name__ == "__main__":
    raise SystemExit(main())
