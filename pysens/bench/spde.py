"""Work-precision of the grid SPDE across backends, and the NFE of SIEM's first-10% window vs a full FID-style run.

Problems (float64, CPU, digest seed002 §3.2/§8): the forward SPDE of the reverse VP sampler over the first part of
sampling, drift ½βy + βs(y, 1−τ) with the exact score of a two-component Gaussian mixture (``sampling_drift``),
diffusion β/2, common noise N1 (σ = 0.5) driven by a smooth Karhunen–Loève Brownian path (16 terms in 1-D, 8 in
2-D), so the SPDE is one random ODE every backend integrates to tolerance (Wong–Zakai form). Central flux, no-flux
box; the IMEX split puts the diffusion in f1.

* ``1d``: M = 1024 cells on [−8, 8], τ ∈ [0, 0.1], one realisation (B = 1);
* ``1d_batch``: the same with B = 16 realisations (each its own path: torch steps each on its own clock, scipy
  solves the flattened 16 384-vector);
* ``2d``: 256² cells on [−6, 6]², τ ∈ [0, 0.05], B = 1.

Setups: torch KenCarp4 (IMEX ESDIRK) and TRBDF2 (ESDIRK) with GMRES preconditioned by the grid's FFT solve of
(I − γDΔ_h); scipy BDF (the exact Jacobian: the pysens scipy backend assembles it from dense per-sample blocks,
which is infeasible at 256² = 65 536 cells, 34 GB, so BDF is recorded as not run there); sksundae CVODE_BDF with
GMRES and the same preconditioner. Errors: mean |u(T) − ref(T)| against a tight reference (CVODE_BDF at 1e-11 in
1-D, 1e-10 in 2-D; an independent backend from the torch setups). Times: min over ``--runs`` after one warm-up
(one run, no warm-up for the batch and 2-D problems). Every setup and the reference read their tolerances in their
native meaning (``tolerance_model="local"``: each step's estimated error, as scipy and CVODE read them), so a point is
one solver setting and the comparison is the work-precision front; under pysens's default ``"proportional"`` model the
order-2 TRBDF2 gets per-step tolerances ~rtol^1.5 and its 1-D 1e-7 point alone took minutes per run.

The SIEM section counts network evaluations per particle of SIEM over the first 10% (100 of 1000 ancestral steps)
against a full-trajectory FID-style evaluation (1000 steps + classifier features + Fréchet distance), and times
both on an MLP score network for 8×8 digits.

    python benchmarks/spde.py [--out benchmarks/results] [--runs 3] [--quick]    (or: pysens bench spde)
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
from pysens.diffusion import GaussianMixtureScore, MLPScore, digits, train
from pysens.spde import (
    CommonNoise,
    DDPMSchedule,
    FeatureClassifier,
    Grid,
    GridSPDE,
    RadialQuadratic,
    SmoothBrownianPath,
    frechet_distance,
    sample_with_statistics,
    sampling_drift,
    siem_from_stats,
    window_steps,
)
from pysens.spde.siem import SIEMConfig

DT = torch.float64


NATIVE_TOLERANCES = "local"  # every solver's own meaning of rtol/atol (module docstring)


def spde_problem(dim: int, cells: int, batch: int, horizon: float, terms: int):
    """The grid SPDE of a VP sampler with an exact mixture score and N1 noise on a smooth path, as one ODE problem."""
    process = DDPMSchedule.linear().vp_process()
    means = torch.tensor([[-1.0, 0.5], [1.5, -0.5]], dtype=DT)[:, :dim]
    score = GaussianMixtureScore(means, torch.tensor([0.1, 0.2], dtype=DT), torch.tensor([0.4, 0.6], dtype=DT), process)
    drift, diffusion = sampling_drift(score, process)
    box = 8.0 if dim == 1 else 6.0
    grid = Grid([-box] * dim, [box] * dim, [cells] * dim)
    spde = GridSPDE(grid, drift, diffusion, CommonNoise(0.5))
    pts = grid.points(DT)
    u0 = torch.exp(-(pts**2).sum(1) / 2).reshape(1, *grid.cells).expand(batch, *grid.cells).clone()
    u0 = u0 / grid.mass(u0).reshape(-1, *([1] * dim))
    path = SmoothBrownianPath((0.0, horizon), terms, (batch, dim), generator=torch.Generator().manual_seed(0))
    name = f"grid SPDE {dim}-D {'x'.join(map(str, grid.cells))}, B={batch}, tau in [0, {horizon}]"
    return spde, spde.ode_problem(u0, (0.0, horizon), path=path, name=name)


def setups(spde: GridSPDE, with_bdf: bool) -> list[Setup]:
    gmres = {"linsolve": "gmres", "precond": spde.preconditioner()}
    out = [
        Setup("torch KenCarp4 (IMEX)", "KenCarp4", "torch", gmres),
        Setup("torch TRBDF2 (ESDIRK)", "TRBDF2", "torch", gmres),
        Setup("scipy CVODE_BDF (gmres)", "CVODE_BDF", "scipy", gmres),
    ]
    if with_bdf:
        out.insert(2, Setup("scipy BDF", "BDF", "scipy"))
    return out


def speedup_at_equal_error(points: list[dict], fast: str, slow: str) -> list[dict]:
    """time(slow)/time(fast) at the errors ``slow`` reached, interpolating ``fast`` log-log between its points."""

    def curve(name):
        pts = [(p["error"], p["time_min"]) for p in points if p["setup"] == name and _ok(p)]
        return sorted(pts)

    a, b = curve(fast), curve(slow)
    out = []
    for err, t_slow in b:
        below = [p for p in a if p[0] <= err]
        above = [p for p in a if p[0] >= err]
        if not below or not above:
            continue
        (e0, t0), (e1, t1) = max(below), min(above)
        if e0 == e1:
            t_fast = t0
        else:
            w = (math.log(err) - math.log(e0)) / (math.log(e1) - math.log(e0))
            t_fast = math.exp(math.log(t0) + w * (math.log(t1) - math.log(t0)))
        out.append({"error": err, "time_fast": t_fast, "time_slow": t_slow, "speedup": t_slow / t_fast})
    return out


def _ok(p: dict) -> bool:
    return p["retcode"] == "Success" and math.isfinite(p["error"]) and p["error"] > 0


def work_precision_section(args, out: Path) -> dict:
    cases = {
        "1d": dict(dim=1, cells=256 if args.quick else 1024, batch=1, horizon=0.1, terms=16),
        "1d_batch": dict(
            dim=1, cells=256 if args.quick else 1024, batch=4 if args.quick else 16, horizon=0.1, terms=16
        ),
        "2d": dict(dim=2, cells=64 if args.quick else 256, batch=1, horizon=0.05, terms=8),
    }
    tols = {"1d": [1e-5, 1e-6, 1e-7, 1e-8], "1d_batch": [1e-5, 1e-6, 1e-7, 1e-8], "2d": [1e-5, 1e-6, 1e-7]}
    results = {}
    native = {"tolerance_model": NATIVE_TOLERANCES}  # see the module docstring
    for key, case in cases.items():
        spde, problem = spde_problem(**case)
        heavy = key != "1d"
        with_bdf = spde.grid.size <= 4096
        ref_tol = (1e-11, 1e-11) if case["dim"] == 1 else (1e-10, 1e-10)
        print(f"\n== {problem.name}")
        start = time.perf_counter()
        wp = work_precision(
            problem,
            setups(spde, with_bdf),
            tols[key],
            tols[key],
            reference=Setup(
                "scipy CVODE_BDF (gmres)", "CVODE_BDF", "scipy", {"linsolve": "gmres", "precond": spde.preconditioner()}
            ),
            reference_tol=ref_tol,
            error="final",
            solve_kwargs=native,
            runs=1 if heavy else args.runs,
            warmup=0 if heavy else 1,
            name=problem.name,
            progress=args.progress or (lambda msg: print("  ", msg, flush=True)),
        )
        print(wp.table())
        wp.plot(out / f"spde_wp_{key}.png")
        entry = wp.as_dict()
        entry["wall_time"] = time.perf_counter() - start
        entry["cells"] = spde.grid.size
        entry["tolerance_model"] = NATIVE_TOLERANCES
        if with_bdf:
            entry["speedup_torch_KenCarp4_vs_scipy_BDF"] = speedup_at_equal_error(
                wp.points, "torch KenCarp4 (IMEX)", "scipy BDF"
            )
        else:
            entry["not_run"] = {
                "scipy BDF": f"the pysens scipy backend gives BDF a Jacobian assembled from dense per-sample blocks "
                f"[B, d, d]; at d = {spde.grid.size} cells that is {spde.grid.size**2 * 8 / 2**30:.0f} GiB"
            }
        entry["speedup_torch_KenCarp4_vs_CVODE"] = speedup_at_equal_error(
            wp.points, "torch KenCarp4 (IMEX)", "scipy CVODE_BDF (gmres)"
        )
        for label in ("speedup_torch_KenCarp4_vs_scipy_BDF", "speedup_torch_KenCarp4_vs_CVODE"):
            if label in entry:
                ratios = [f"{s['speedup']:.2f}x @ {s['error']:.1e}" for s in entry[label]]
                print(f"  {label}: {', '.join(ratios) or 'no overlapping accuracies'}")
        results[key] = entry
    return results


def siem_nfe_section(args) -> dict:
    """Network evaluations and wall time: SIEM over the first 10% vs a full-trajectory FID-style evaluation."""
    schedule = DDPMSchedule.linear()
    process = schedule.vp_process()
    data = digits()
    torch.manual_seed(0)
    model = MLPScore((1, 8, 8), process, hidden=128, depth=3)
    train(model, data, steps=100 if args.quick else 1000, progress=False)
    classifier = FeatureClassifier(64)
    from sklearn.datasets import load_digits

    classifier.fit(data.reshape(-1, 64), torch.as_tensor(load_digits().target), steps=100 if args.quick else 600)
    n = 200 if args.quick else 1000
    cfg = SIEMConfig(estimators=("A", "B"))
    window = window_steps(schedule.T, 0.1)

    start = time.perf_counter()
    stats = sample_with_statistics(
        model,
        (1, 8, 8),
        n,
        schedule,
        stop_after=window.stop,
        test_functions={"phi": RadialQuadratic()},
        generator=torch.Generator().manual_seed(1),
    )
    value = siem_from_stats(stats, cfg, window)
    t_siem = time.perf_counter() - start

    start = time.perf_counter()
    full = sample_with_statistics(model, (1, 8, 8), n, schedule, generator=torch.Generator().manual_seed(1))
    feats = classifier.features(full.final.reshape(n, -1)).detach()
    real = classifier.features(data[:n].reshape(n, -1)).detach()
    fid = frechet_distance(feats, real)
    t_full = time.perf_counter() - start
    out = {
        "particles": n,
        "siem_first10": {"nfe_per_particle": stats.nfe, "nfe_total": stats.nfe * n, "wall_time": t_siem, **value},
        "fid_style_full": {
            "nfe_per_particle": full.nfe,
            "nfe_total": full.nfe * n,
            "wall_time": t_full,
            "fid_style": fid,
        },
        "nfe_ratio": stats.nfe / full.nfe,
        "wall_time_ratio": t_siem / t_full,
        "target": "<= 0.12",
    }
    print(f"\n== SIEM first 10% vs full-trajectory FID-style evaluation (N = {n}, 8x8 digits MLP score)")
    print(
        f"  NFE per particle: {stats.nfe} vs {full.nfe} (ratio {out['nfe_ratio']:.3f}, target <= 0.12); "
        f"wall time {t_siem:.2f} s vs {t_full:.2f} s (ratio {out['wall_time_ratio']:.3f})"
    )
    return out


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small grids (smoke test)")
    args = parser.parse_args(argv)
    args.progress = progress
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {"work_precision": work_precision_section(args, out), "siem_nfe": siem_nfe_section(args)}
    report["wall_time"] = time.perf_counter() - start
    report["device"] = "cpu, 1 thread, float64"
    report["config"] = {"runs": args.runs, "quick": args.quick, "tolerance_model": NATIVE_TOLERANCES}
    write_json(out / "spde.json", report)
    print(f"\nwrote {out / 'spde.json'} and spde_wp_*.png ({report['wall_time']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
