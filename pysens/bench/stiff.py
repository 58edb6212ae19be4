"""Work-precision of stiff solvers: torch Rosenbrock/ESDIRK/QNDF vs torch Tsit5 vs scipy (Radau, BDF, LSODA, CVODE).

Problems (all with state size ≥ 256, float64, CPU):
  * ``linear``: x' = −A x, A = Q diag(λ) Qᵀ with λ log-spaced over 1e0..1e6, d = 256, exact by expm;
  * ``vdp``: 128 Van der Pol oscillators (μ = 1e3, state 256, T = 300: the stiff slow phase before the first
    jump; T = 1000 takes scipy BDF past the 10-minute budget), reference scipy Radau at 1e-12;
  * ``heat``: 1-D heat equation by method of lines, N = 256 (split: f1 = Laplacian, f2 = −u/2), exact modal decay.

Each setup runs over paired tolerances in every solver's native meaning (``tolerance_model="local"``: each step's
estimated error, as SciML, scipy and CVODE read them), so a point is one solver setting and the comparison is the
work-precision front, time against the error reached (the default ``"proportional"`` model would hand the order-2
methods per-step tolerances ~rtol^1.5 and the sweep's 1e-7 point alone would take TRBDF2 minutes; what a requested
tolerance promises is the stiff test set's subject). Errors are measured against the reference; time is the minimum
and median of ``--runs`` runs after one warm-up. Prints a table per problem and writes ``stiff.json`` and one PNG
per problem into ``--out``.

    python benchmarks/stiff.py [--out benchmarks/results] [--runs 3] [--quick]    (or: pysens bench stiff)
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pysens.artifacts import write_json
from pysens.bench import Setup, work_precision
from pysens.solvers import ODEProblem, SplitODEProblem, backend_status
from pysens.solvers.methods import METHODS

DT = torch.float64


def linear(d: int):
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    A = Q @ torch.diag(torch.logspace(0, 6, d, dtype=DT)) @ Q.T
    x0 = torch.randn(1, d, generator=g, dtype=DT)
    T = 0.1
    p = ODEProblem(lambda t, x: -(x @ A.T), x0, (0.0, T), name=f"stiff linear d={d}, spread 1e6, T={T}")
    lam, V = torch.linalg.eigh(A)

    def exact(ts):
        return torch.stack([((x0 @ V) * torch.exp(-lam * t)) @ V.T for t in ts.tolist()])

    return p, exact


def vdp(batch: int, mu: float = 1e3, T: float = 1000.0):
    g = torch.Generator().manual_seed(1)
    x0 = torch.stack([2.0 + 0.1 * torch.rand(batch, generator=g, dtype=DT), torch.zeros(batch, dtype=DT)], 1)

    def f(t, x):
        return torch.stack([x[:, 1], mu * (1 - x[:, 0] ** 2) * x[:, 1] - x[:, 0]], 1)

    return ODEProblem(f, x0, (0.0, T), name=f"Van der Pol mu={mu:g} x{batch} (state {2 * batch}), T={T:g}")


def heat(N: int, c: float = 0.5, T: float = 0.05):
    h = 1.0 / (N + 1)
    xs = torch.arange(1, N + 1, dtype=DT) * h
    u0 = (torch.sin(math.pi * xs) + 0.5 * torch.sin(7 * math.pi * xs) + 0.1 * torch.sin(31 * math.pi * xs))[None]

    def lap(t, u):
        padded = torch.nn.functional.pad(u, (1, 1))
        return (padded[:, 2:] - 2 * u + padded[:, :-2]) / h**2

    p = SplitODEProblem(lap, lambda t, u: -c * u, u0, (0.0, T), name=f"heat MOL N={N} (split), T={T:g}")
    modes = [(1, 1.0), (7, 0.5), (31, 0.1)]

    def exact(ts):
        out = []
        for t in ts.tolist():
            u = sum(
                a * math.exp((-4 / h**2 * math.sin(k * math.pi * h / 2) ** 2 - c) * t) * torch.sin(k * math.pi * xs)
                for k, a in modes
            )
            out.append(u[None])
        return torch.stack(out)

    return p, exact


def setups(krylov: bool, cvode_linsolve: str = "dense", single: bool = False) -> list[Setup]:
    """The compared setups. Unpreconditioned GMRES only where the per-sample systems are small (``krylov``): on
    the 1e6-spread linear system and the heat equation it needs hundreds of iterations per solve, which is a
    preconditioning question (``precond=``), not a solver comparison. ``single`` (one sample, B = 1) adds QNDF with
    ``batch="coupled"``: there the same algorithm as the per-sample layout in leaner arithmetic (one step size for
    the batch, which on a batch of Van der Pol copies whose transients differ costs far more steps)."""
    ok = {name: status[0] for name, status in backend_status().items()}
    out = [
        Setup("torch Rodas5P dense", "Rodas5P", options={"linsolve": "dense"}),
        Setup("torch Rodas4 dense", "Rodas4", options={"linsolve": "dense"}),
        Setup("torch KenCarp4 dense", "KenCarp4", options={"linsolve": "dense"}),
        Setup("torch TRBDF2 dense", "TRBDF2", options={"linsolve": "dense"}),
        Setup("torch Rosenbrock23", "Rosenbrock23", options={"linsolve": "dense"}),
        Setup("torch QNDF", "QNDF"),
        *([Setup("torch QNDF coupled", "QNDF", options={"batch": "coupled"})] if single else []),
        Setup("scipy Radau", "RadauIIA5", "scipy"),
        Setup("scipy BDF", "BDF", "scipy"),
        Setup("scipy LSODA", "LSODA", "scipy"),
    ]
    if "scipy" in METHODS["CVODE_BDF"].backends and ok.get("scipy"):
        out.append(Setup(f"sksundae CVODE_BDF {cvode_linsolve}", "CVODE_BDF", "scipy", {"linsolve": cvode_linsolve}))
    if krylov:
        out += [
            Setup("torch Rodas5P gmres", "Rodas5P", options={"linsolve": "gmres"}),
            Setup("torch KenCarp4 gmres", "KenCarp4", options={"linsolve": "gmres"}),
        ]
    return out


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller problems and fewer tolerances (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = 64 if args.quick else 256
    reltols = [1e-4, 1e-6] if args.quick else [1e-3, 1e-5, 1e-7]
    abstols = [r * 1e-2 for r in reltols]
    results = {}
    started = time.perf_counter()
    native = {"tolerance_model": "local"}  # see the module docstring

    def exact_sweep(name: str, problem, exact):
        """The dense-Jacobian setups against an exact solution, plus one Tsit5 point."""
        wp = work_precision(
            problem,
            setups(krylov=False, single=problem.x0.shape[0] == 1),
            abstols,
            reltols,
            reference=exact,
            solve_kwargs=native,
            runs=args.runs,
            name=name,
            progress=_reporter(name, progress),
        )
        _add_tsit5(wp, problem, exact, abstols, reltols, native)
        return wp

    results["linear"] = exact_sweep("linear", *linear(d))

    p = vdp(d // 2, T=100.0 if args.quick else 300.0)
    wp = work_precision(
        p,
        setups(krylov=True, cvode_linsolve="gmres"),
        abstols,
        reltols,
        reference=Setup("scipy Radau", "RadauIIA5", "scipy"),
        reference_tol=(1e-12, 1e-12),
        solve_kwargs={"maxiters": 10**7, **native},
        runs=args.runs,
        name="vdp",
        progress=_reporter("vdp", progress),
    )
    results["vdp"] = wp

    results["heat"] = exact_sweep("heat", *heat(d))

    summary = {}
    for key, wp in results.items():
        print()
        print(wp.table())
        wp.plot(out / f"stiff_{key}.png", title=f"{key}: work-precision (CPU, float64, 1 thread)")
        summary[key] = _target(wp)
        print(f"  target (torch stiff reaches 1e-6 within scipy BDF's time): {summary[key]}")
    write_json(
        out / "stiff.json",
        {
            "problems": {k: wp.as_dict() for k, wp in results.items()},
            "targets": summary,
            "config": {
                "d": d,
                "runs": args.runs,
                "quick": args.quick,
                "threads": 1,
                "torch": torch.__version__,
                "tolerance_model": native["tolerance_model"],
            },
            "wall_time": time.perf_counter() - started,
        },
    )
    print(f"\nwrote {out / 'stiff.json'} and PNGs in {time.perf_counter() - started:.0f} s")
    return 0


def _reporter(problem: str, progress: Callable[[str], None] | None) -> Callable[[str], None]:
    """Progress lines for one problem: to ``progress`` (the ``pysens bench`` bar) or printed."""
    if progress is not None:
        return lambda msg: progress(f"{problem}: {msg}")
    return lambda msg: print(f"  {problem}:", msg, flush=True)


def _add_tsit5(wp, problem, exact, abstols, reltols, solve_kwargs: dict) -> None:
    """Tsit5 at the loosest tolerance and one timed run only: on these problems its cost is set by stability, not
    accuracy, so tighter tolerances cost the same steps and repeats only lengthen the run (it is 10–100× slower)."""
    extra = work_precision(
        problem,
        [Setup("torch Tsit5", "Tsit5")],
        abstols[:1],
        reltols[:1],
        reference=exact,
        solve_kwargs=solve_kwargs,
        runs=1,
        warmup=0,
        name=wp.problem,
    )
    wp.points.extend(extra.points)


def _target(wp) -> dict:
    """Fastest torch stiff setup and scipy BDF at error <= 1e-6 (time of the cheapest point that reaches it)."""

    def best(prefix):
        pts = [
            p
            for p in wp.points
            if p["setup"].startswith(prefix)
            and "Tsit5" not in p["setup"]
            and isinstance(p["error"], float)
            and p["error"] <= 1e-6
            and math.isfinite(p["time_min"])
        ]
        return min(pts, key=lambda p: p["time_min"]) if pts else None

    torch_best, bdf = best("torch"), best("scipy BDF")
    out = {
        "torch_best": torch_best and {k: torch_best[k] for k in ("setup", "error", "time_min")},
        "scipy_bdf": bdf and {k: bdf[k] for k in ("setup", "error", "time_min")},
    }
    if torch_best and bdf:
        out["ratio_torch_over_bdf"] = torch_best["time_min"] / bdf["time_min"]
        out["met"] = torch_best["time_min"] <= bdf["time_min"]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
