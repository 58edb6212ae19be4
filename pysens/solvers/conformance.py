"""Conformance suite: one table of problems with exact answers, run on every backend and every method that
claims the problem's class.

Each :class:`ConformanceCase` of :data:`CASES` poses a small problem whose final state is known exactly (closed
form, or a tight reference stored here), with the settings of its rows: tolerances and an error bound for
adaptive methods, and step ladders (with their own bounds) for fixed-step runs and order measurements.
:func:`run_conformance` runs every (case, method) pair that the method table (:data:`~pysens.solvers.methods.METHODS`)
says a backend supports for the case's class and returns one row per pair; ``tests/conformance`` asserts the same
rows, and a machine with Julia checks the julia backend against the same answers with
``python -m pysens.solvers.conformance julia``.

Classes (``ConformanceCase.tags``) and the methods that claim them:

* ``"nonstiff"``: every ODE method (non-stiff and stiff);
* ``"stiff"``: stiff ODE methods (``MethodInfo.stiff``);
* ``"split"``: a :class:`~pysens.solvers.problem.SplitODEProblem` (f1 stiff, f2 explicit), also tagged ``"stiff"``;
  IMEX methods (``MethodInfo.imex``) treat f1 implicitly, the other stiff methods solve f1 + f2 as a whole;
* ``"sde-additive"``, ``"sde-diagonal"``: SDE methods that list the noise type (``MethodInfo.noise``).

What a row checks (:func:`check_case`):

* **Error bound.** Adaptive ODE methods run at the case's ``rtol``/``atol`` and must reach ``case.bound``;
  fixed-step runs (methods without an error estimate, and every SDE method) use the finest step of the ladder for
  their order and must reach that ladder's bound. ODE error: ``‖x − x*‖_∞ / max(1, ‖x*‖_∞)`` over the batch at
  ``tspan[1]``. SDE error: the strong error ``E|X_N − X*|`` (mean over paths and components) against the exact
  solution on the same Brownian path.
* **Order**, on cases that measure it (``measures_order``):

  - one-step ODE methods on torch (and julia): fixed steps along the ladder (``adaptive=False``, with tight
    ``rtol``/``atol``, which in fixed-step mode set the Newton tolerance of implicit methods); the least-squares
    slope of log error against log step must lie within ±0.3 of ``MethodInfo.order``;
  - scipy methods (no fixed-step mode) and julia's variable-order multistep methods: tolerance proportionality,
    the error falls at least 10× when ``rtol`` and ``atol`` fall 1000×;
  - SDE methods: the strong-order slope over many paths within ±0.2 of the expected order (:data:`STRONG_ORDER`,
    or the case's override).

Everything is seeded, so rows are deterministic; cases are float64 unless a dtype is given.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
from torch import Tensor

from .backends import BACKENDS, get_backend
from .conformance_cases import CASES, CASES_BY_NAME, SPLIT, STIFF, ConformanceCase, Ladder
from .methods import METHODS, MethodInfo
from .solution import SUCCESS, Solution
from .solve import solve

ODE_ORDER_SLACK = 0.3  # fixed-step slope within ±0.3 of MethodInfo.order
SDE_ORDER_SLACK = 0.2  # strong-order slope within ±0.2 of the expected order
TOLERANCE_FACTOR = 1e-3  # tolerance proportionality: rtol and atol multiplied by this ...
TOLERANCE_GAIN = 10.0  # ... must cut the error at least this much
FIXED_STEP_TOL = 1e-12  # rtol = atol of fixed-step runs: the Newton tolerance of implicit methods

# Strong orders by noise type. MethodInfo.order is an int (EM 1, SRA1 2) and cannot say "0.5 for diagonal noise,
# 1.0 for additive", so the suite keeps its own (Kloeden & Platen 1992, §10.2, §11.1, §12.2; Rößler 2010;
# Rackauckas & Nie 2018). An SDE method missing here fails its rows until it is added.
STRONG_ORDER: dict[str, dict[str, float]] = {
    "EM": {"additive": 1.0, "diagonal": 0.5},
    "EulerHeun": {"additive": 1.0, "diagonal": 1.0},  # Stratonovich; scalar (so commutative) noise here
    "ImplicitEM": {"additive": 1.0, "diagonal": 0.5},
    "SRA1": {"additive": 1.5},
    "SOSRA": {"additive": 1.5},
    "SKenCarp": {"additive": 1.5},
}
# Methods that converge to the Stratonovich solution (EulerHeun, as stochastic.py documents). For additive noise it is
# the Itô solution; diagonal-noise cases give both readings and these methods are compared with the Stratonovich one.
STRATONOVICH = frozenset({"EulerHeun"})
# Variable-order multistep methods have no fixed-step mode to measure a slope in: on julia they are checked by
# tolerance proportionality, as every scipy method is.
MULTISTEP = frozenset({"QNDF", "FBDF", "CVODE_BDF", "LSODA", "BDF"})


def claims(info: MethodInfo, case: ConformanceCase) -> bool:
    """Whether ``info`` claims ``case``'s class (see the module docstring); backends are checked separately."""
    if case.kind == "sde":
        return info.kind == "sde" and case.noise in info.noise
    if info.kind != "ode":
        return False
    if SPLIT in case.tags and info.imex:
        return True
    return info.stiff or STIFF not in case.tags


def methods_claiming(case: ConformanceCase, backend: str) -> list[str]:
    """The methods the method table gives ``backend`` for ``case``'s class, in table order."""
    return [m.name for m in METHODS.values() if backend in m.backends and claims(m, case)]


def expected_order(info: MethodInfo, case: ConformanceCase) -> float:
    """The convergence order a row expects: ``MethodInfo.order`` for ODEs, the strong order for SDEs."""
    if info.kind == "ode":
        return float(info.order)
    order = case.strong_order.get(info.name, STRONG_ORDER.get(info.name, {}).get(case.noise))
    if order is None:
        raise LookupError(
            f"no expected strong order for {info.name} with {case.noise} noise; add it to conformance.STRONG_ORDER"
        )
    return order


def order_mode(info: MethodInfo, backend: str) -> str:
    """How a row measures order: "strong" (SDE slope), "tolerance" (proportionality) or "fixed" (ODE slope)."""
    if info.kind == "sde":
        return "strong"
    if backend == "scipy" or info.name in MULTISTEP:
        return "tolerance"
    return "fixed"


def ode_error(x: Tensor, exact: Tensor) -> float:
    """‖x − x*‖_∞ / max(1, ‖x*‖_∞) over the whole batch (NaN where a sample failed)."""
    diff = (x - exact).abs().max()
    return float(diff / max(1.0, float(exact.abs().max())))


def strong_error(x: Tensor, exact: Tensor) -> float:
    """E|X_N − X*|: the mean absolute error over paths and components."""
    return float((x - exact).abs().mean())


def fitted_slope(steps, errors, span: float) -> float:
    """Least-squares slope of log(error) against log(span / n); NaN unless every error is positive and finite."""
    if not all(math.isfinite(e) and e > 0 for e in errors):
        return math.nan
    xs = [math.log(span / n) for n in steps]
    ys = [math.log(e) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sum((a - mx) ** 2 for a in xs)


def _ladder(case: ConformanceCase, order: float) -> Ladder:
    ladder = case.ladders.get(order)
    if ladder is None:
        known = ", ".join(f"{k:g}" for k in case.ladders) or "none"
        raise LookupError(f"case {case.name!r} has no fixed-step ladder for order {order:g} (it has: {known})")
    return ladder


def _stats(sol: Solution) -> dict:
    stats = sol.stats.as_dict()
    for key in ("sample_naccept", "sample_nreject"):  # one entry per path: too long for a report row
        stats.pop(key, None)
    return stats


def check_case(
    case: ConformanceCase, method: str, backend: str, *, dtype: torch.dtype = torch.float64, device="cpu"
) -> dict:
    """Run one (case, method, backend) row and return it (see the module docstring for what is checked).

    Returns a dict with ``case``, ``method``, ``backend``, ``setting`` (tolerances or steps of the error row),
    ``error``, ``bound``, ``retcode``, ``stats`` (of the error row's solve), ``order`` (measured, or None),
    ``expected_order``, ``order_kind`` ("fixed-step slope", "strong slope", "tolerance gain" or None),
    ``order_passed`` (None when not measured), ``ladder`` (``[(steps, error), ...]`` of fixed-step runs),
    ``tolerance_gain``, ``passed`` and ``wall_time``. Solver failures are rows that do not pass; misuse (a method
    the table does not give this backend for this case) raises.
    """
    info = METHODS[method]
    if backend not in info.backends or not claims(info, case):
        raise ValueError(f"{info.name} on {backend!r} does not claim case {case.name!r} ({', '.join(case.tags)})")
    start = time.perf_counter()
    inst = case.make(dtype, device, case.batch)
    problem = inst.problem
    span = abs(problem.tspan[1] - problem.tspan[0])
    stratonovich = info.name in STRATONOVICH and inst.exact_stratonovich is not None
    exact = inst.exact_stratonovich if stratonovich else inst.exact
    measure = ode_error if case.kind == "ode" else strong_error
    mode = order_mode(info, backend)
    row = {
        "case": case.name,
        "method": info.name,
        "backend": backend,
        "tags": list(case.tags),
        "reading": "Stratonovich" if stratonovich else None,
        "order": None,
        "expected_order": None,
        "order_kind": None,
        "order_passed": None,
        "ladder": [],
        "tolerance_gain": None,
    }

    def fixed(n: int) -> Solution:
        return solve(problem, info.name, backend, adaptive=False, dt=span / n, rtol=FIXED_STEP_TOL, atol=FIXED_STEP_TOL)

    def run_ladder(steps) -> Solution:
        sol = None
        for n in steps:
            sol = fixed(n)
            row["ladder"].append((n, measure(sol.final, exact)))
            if sol.retcode != SUCCESS:
                break
        return sol

    if case.kind == "sde" or not info.adaptive:
        order = expected_order(info, case)
        ladder = _ladder(case, order)
        sol = run_ladder(ladder.steps if case.measures_order else ladder.steps[-1:])
        n, err = row["ladder"][-1]
        row.update(setting=f"{n} fixed steps", error=err, bound=ladder.bound, retcode=sol.retcode, stats=_stats(sol))
        if case.measures_order:
            row["expected_order"] = order
    else:
        # the per-step (local) tolerance model: these rows check the methods' own error control (bound, tolerance
        # gain); what the default proportional model adds on top is checked in tests/solvers/test_tolerance_model.py
        sol = solve(problem, info.name, backend, rtol=case.rtol, atol=case.atol, tolerance_model="local")
        row.update(
            setting=f"rtol={case.rtol:g}, atol={case.atol:g}",
            error=measure(sol.final, exact),
            bound=case.bound,
            retcode=sol.retcode,
            stats=_stats(sol),
        )
        if case.measures_order and mode == "tolerance":
            tight = solve(
                problem,
                info.name,
                backend,
                rtol=case.rtol * TOLERANCE_FACTOR,
                atol=case.atol * TOLERANCE_FACTOR,
                tolerance_model="local",
            )
            tight_error = measure(tight.final, exact)
            gain = row["error"] / tight_error if tight_error > 0 else math.inf
            row.update(order_kind="tolerance gain", tolerance_gain=gain, order_passed=bool(gain >= TOLERANCE_GAIN))
            if tight.retcode != SUCCESS:
                row["retcode"] = tight.retcode
        elif case.measures_order:
            row["expected_order"] = float(info.order)
            failed = run_ladder(_ladder(case, float(info.order)).steps).retcode
            if failed != SUCCESS:
                row["retcode"] = failed

    if row["expected_order"] is not None:
        steps, errors = zip(*row["ladder"], strict=True)
        slope = fitted_slope(steps, errors, span)
        slack = SDE_ORDER_SLACK if case.kind == "sde" else ODE_ORDER_SLACK
        row.update(
            order=slope,
            order_kind="strong slope" if case.kind == "sde" else "fixed-step slope",
            order_passed=bool(len(steps) > 1 and abs(slope - row["expected_order"]) <= slack),
        )
    row["passed"] = bool(
        row["retcode"] == SUCCESS and row["error"] <= row["bound"] and row["order_passed"] is not False
    )
    row["wall_time"] = time.perf_counter() - start
    return row


def run_conformance(
    backend: str,
    methods: list[str] | None = None,
    *,
    cases: list[str] | None = None,
    dtype: torch.dtype = torch.float64,
    device="cpu",
) -> list[dict]:
    """Run every (case, method) pair ``backend`` claims (optionally only ``methods`` and ``cases``); one row each.

    A row whose solve raises is returned with ``passed`` False and the exception in ``message``, so a report
    always covers the whole table. Raises when the backend is not available, or for unknown method or case names.
    """
    get_backend(backend)
    chosen = list(CASES) if cases is None else [_case(name) for name in cases]
    if methods is not None:
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown methods {', '.join(unknown)}; known: {', '.join(METHODS)}")
    rows = []
    for case in chosen:
        for method in methods_claiming(case, backend):
            if methods is not None and method not in methods:
                continue
            start = time.perf_counter()
            try:
                row = check_case(case, method, backend, dtype=dtype, device=device)
            except Exception as exc:  # a report row, not a crash: the rest of the table still runs
                row = {
                    "case": case.name,
                    "method": method,
                    "backend": backend,
                    "error": math.nan,
                    "passed": False,
                    "message": f"{type(exc).__name__}: {exc}",
                    "wall_time": time.perf_counter() - start,
                }
            rows.append(row)
    return rows


def _case(name: str) -> ConformanceCase:
    if name not in CASES_BY_NAME:
        raise ValueError(f"unknown conformance case {name!r}; cases: {', '.join(CASES_BY_NAME)}")
    return CASES_BY_NAME[name]


def format_rows(rows: list[dict]) -> str:
    """A plain-text table of rows."""
    lines = [f"{'case':26s} {'method':13s} {'backend':7s} {'error':>9s} {'bound':>8s} {'order':>14s}  {'time':>6s}  ok"]
    for r in rows:
        if r.get("order_kind") == "tolerance gain":
            order = f"gain {r['tolerance_gain']:.3g}"
        elif r.get("order") is not None:
            order = f"{r['order']:.2f} ({r['expected_order']:g})"
        else:
            order = "-"
        bound = f"{r['bound']:.0e}" if "bound" in r else "-"
        lines.append(
            f"{r['case']:26s} {r['method']:13s} {r['backend']:7s} {r['error']:9.2e} {bound:>8s} {order:>14s}  "
            f"{r['wall_time']:5.2f}s  {'yes' if r['passed'] else 'NO ' + r.get('message', r.get('retcode', ''))}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m pysens.solvers.conformance [backend ...] [--methods M ...] [--json FILE]``: run the table, print
    it, and exit non-zero when a row fails (a backend that is not available is reported and skipped)."""
    parser = argparse.ArgumentParser(prog="python -m pysens.solvers.conformance", description=main.__doc__)
    parser.add_argument("backends", nargs="*", default=["torch", "scipy"], choices=list(BACKENDS))
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--cases", nargs="+", default=None)
    parser.add_argument("--json", default=None, help="write the rows as JSON to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows, ok = [], True
    for backend in args.backends:
        try:
            found = run_conformance(backend, args.methods, cases=args.cases)
        except Exception as exc:  # backend not available here: say so, run the others
            print(f"{backend}: {exc}", file=sys.stderr)
            ok = False
            continue
        rows += found
        ok &= all(r["passed"] for r in found)
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
