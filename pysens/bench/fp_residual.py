"""Cost of the log-density Fokker–Planck residual R[φ] (seed001 §3.1, §3.4): exact engines and Hutchinson.

1. Exact Laplacian on 50k points (the authors' collocation batch), same run, same device, float32: the authors'
   nested-autograd loop (``pinn_utils.pinn_loss``: five ``torch.autograd.grad`` calls with ``create_graph``) against
   ``log_fp_residual`` with the torch.func engine (one vmap over the d basis tangents of a JVP of ∇_{(x,t)}φ) and
   with the forward-Laplacian engine (value, Jacobian and x-Laplacian carried through the MLP in one batched
   forward pass), for evaluation only and for evaluation + the backward pass to θ (one training step's residual
   work). The network is the authors' blob w_R = 0 checkpoint when ``shared/data/odesdegap`` is present, else the
   same architecture (3 → 80 → 80 → 80 → 1, Softplus(β = 100)) at random. The target (issue 5): ≥ 3× the
   authors' loop.
2. Hutchinson scaling in d: the residual with one Rademacher probe at d = 2, 64, 784 (``PotentialScoreNet`` of width
   ``--width``), torch.func and forward engines, timed against one score evaluation ∇φ at the same d: the ratio
   must stay O(1) in d, while the exact Laplacian's ratio grows with d (both exact engines are timed up to
   ``--exact-up-to``).

Times are the minimum and median of ``--runs`` runs after a warm-up; the functions compared take turns run by run,
so a load change on a shared machine hits all of them alike. Prints tables and writes ``fp_residual.json``.

    pysens bench fp-residual [-- --runs 7 --points 50000 --device cpu|cuda]
    python benchmarks/fp_residual.py [--out benchmarks/results] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pysens.artifacts import write_json
from pysens.fokker_planck import (
    PotentialScoreNet,
    authors_checkpoint_path,
    authors_data_dir,
    load_authors_checkpoint,
    log_fp_residual,
)

__all__ = ["authors_nested_autograd", "exact_vs_authors", "hutchinson_scaling", "main"]

TARGET_SPEEDUP = 3.0
# the engines of ``log_fp_residual`` timed against the authors' loop, under their names in the report
ENGINES = {"torch_func": "func", "forward_laplacian": "forward"}
AUTHORS = "authors_nested_autograd"


def _timed(fns: dict[str, Callable[[], object]], runs: int, device: str) -> dict[str, dict[str, float]]:
    """Min and median wall time of each function; the functions take turns run by run, so a load change on a
    shared machine hits all of them alike."""

    def once(fn: Callable[[], object]) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        once(fn)  # warm-up
    for _ in range(runs):
        for name, fn in fns.items():
            times[name].append(once(fn))
    return {name: {"min_s": min(v), "median_s": statistics.median(v)} for name, v in times.items()}


def authors_nested_autograd(net: PotentialScoreNet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The authors' residual computation (pinn_utils.pinn_loss, 'logFP' branch) on our network, per point ``[B]``."""
    tt = t[:, None].detach().clone().requires_grad_(True)
    xx = x[:, :1].detach().clone().requires_grad_(True)
    yy = x[:, 1:].detach().clone().requires_grad_(True)
    u = net.potential(torch.cat([xx, yy], 1), tt[:, 0])[:, None]
    ones = torch.ones_like(u)
    grad = torch.autograd.grad
    u_t = grad(u, tt, grad_outputs=ones, retain_graph=True, create_graph=True)[0]
    u_x = grad(u, xx, grad_outputs=ones, retain_graph=True, create_graph=True)[0]
    u_xx = grad(u_x, xx, grad_outputs=ones, retain_graph=True, create_graph=True)[0]
    u_y = grad(u, yy, grad_outputs=ones, retain_graph=True, create_graph=True)[0]
    u_yy = grad(u_y, yy, grad_outputs=ones, retain_graph=True, create_graph=True)[0]
    res = u_t - 2 - xx * u_x - yy * u_y - 0.5 * u_x**2 - 0.5 * u_y**2 - 0.5 * (u_xx + u_yy)
    return res[:, 0]


def exact_vs_authors(points: int, runs: int, device: str, seed: int, report: Callable[[str], None]) -> dict:
    """Section 1: the three exact computations, evaluation and evaluation + backward, with speed-ups in one run."""
    folder = authors_data_dir()
    if folder is not None:
        net = load_authors_checkpoint(authors_checkpoint_path("blob", 0.0, folder), device=device)
        source = "authors' blob w_R=0 checkpoint"
    else:
        torch.manual_seed(seed)
        net = PotentialScoreNet(dim=2).to(device)
        source = "random PotentialScoreNet(2, 80, 3), authors' data absent"
    g = torch.Generator(device=device).manual_seed(seed)
    x = (2 * torch.rand(points, 2, generator=g, device=device) - 1) * 3.5
    t = 1e-5 + (10 - 1e-5) * torch.rand(points, generator=g, device=device)

    residuals: dict[str, Callable[[], torch.Tensor]] = {AUTHORS: lambda: authors_nested_autograd(net, x, t)}
    for name, engine in ENGINES.items():
        residuals[name] = lambda engine=engine: log_fp_residual(net.potential, net.process, x, t, engine=engine)

    def evaluate(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            if fn is residuals[AUTHORS]:
                fn().detach()  # nested autograd needs the graph even to evaluate
            else:
                with torch.no_grad():  # torch.func still differentiates inside no_grad
                    fn()

        return run

    def step(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            net.zero_grad(set_to_none=True)
            fn().pow(2).mean().backward()

        return run

    reference = residuals[AUTHORS]().detach()
    result: dict = {
        "network": source,
        "points": points,
        "dtype": "float32",
        "runs": runs,
        "max_abs_residual": float(reference.abs().max()),
        "max_abs_difference": {name: float((residuals[name]().detach() - reference).abs().max()) for name in ENGINES},
        "target": f"forward_laplacian >= {TARGET_SPEEDUP}x {AUTHORS} (min times)",
    }
    for key, wrap in (("evaluate", evaluate), ("evaluate_and_backward", step)):
        report(f"exact Laplacian: {key}, {points} points")
        times = _timed({name: wrap(fn) for name, fn in residuals.items()}, runs, device)
        ours = times[AUTHORS]
        result[key] = {
            **times,
            "speedup_min": {name: ours["min_s"] / times[name]["min_s"] for name in ENGINES},
            "speedup_median": {name: ours["median_s"] / times[name]["median_s"] for name in ENGINES},
        }
    result["target_met"] = {
        key: result[key]["speedup_min"]["forward_laplacian"] >= TARGET_SPEEDUP
        for key in ("evaluate", "evaluate_and_backward")
    }
    return result


def hutchinson_scaling(
    dims: list[int],
    points: int,
    width: int,
    runs: int,
    device: str,
    seed: int,
    exact_up_to: int,
    report: Callable[[str], None],
) -> list[dict]:
    """Section 2: one-probe Hutchinson residual vs one score evaluation per d, and the exact engines up to
    ``exact_up_to``."""
    rows = []
    for d in dims:
        report(f"Hutchinson scaling: d = {d}")
        torch.manual_seed(seed)
        net = PotentialScoreNet(dim=d, hidden=width, depth=3, beta=10.0).to(device)
        g = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn(points, d, generator=g, device=device)
        t = 0.01 + torch.rand(points, generator=g, device=device)
        timed = {"score": lambda net=net, x=x, t=t: net(x, t)}
        for name, engine in ENGINES.items():
            timed[f"hutchinson_{name}"] = lambda net=net, x=x, t=t, g=g, engine=engine: log_fp_residual(
                net.potential, net.process, x, t, laplacian="hutchinson", n_probes=1, generator=g, engine=engine
            )
        if d <= exact_up_to:
            for name, engine in ENGINES.items():
                timed[f"exact_{name}"] = lambda net=net, x=x, t=t, engine=engine: log_fp_residual(
                    net.potential, net.process, x, t, engine=engine, chunk_size=64
                )
        with torch.no_grad():
            row = {"d": d, "points": points, "width": width, **_timed(timed, runs, device)}
        for name in timed:
            if name != "score":
                row[f"{name}_over_score"] = row[name]["min_s"] / row["score"]["min_s"]
        rows.append(row)
    return rows


def _reporter(progress: Callable[[str], None] | None) -> Callable[[str], None]:
    """Progress lines: to ``progress`` (the ``pysens bench`` bar) or printed."""
    if progress is not None:
        return progress
    return lambda msg: print(" ", msg, flush=True)


def _print_exact(exact: dict, device: str) -> None:
    diffs = ", ".join(f"{name} {value:.1e}" for name, value in exact["max_abs_difference"].items())
    print(
        f"exact Laplacian, {exact['points']} points, {exact['network']}, {device}, {torch.get_num_threads()} "
        f"thread(s); max |R - R_authors|: {diffs} (max |R| = {exact['max_abs_residual']:.2e})"
    )
    names = [AUTHORS, *ENGINES]
    print(f"  {'min time (s)':24s} " + " ".join(f"{n:>24s}" for n in names) + "   speed-up forward (func)")
    for key in ("evaluate", "evaluate_and_backward"):
        row = exact[key]
        speed = row["speedup_min"]
        print(
            f"  {key:24s} "
            + " ".join(f"{row[n]['min_s']:24.3f}" for n in names)
            + f"   {speed['forward_laplacian']:7.2f} ({speed['torch_func']:.2f})"
        )
    met = exact["target_met"]
    print(f"  target {exact['target']}: evaluate {met['evaluate']}, evaluate+backward {met['evaluate_and_backward']}")


def _print_scaling(scaling: list[dict], points: int, width: int) -> None:
    print(f"residual vs one score evaluation, {points} points, width {width} (min times, ms; ratio to the score)")
    columns = [f"{kind}_{name}" for kind in ("hutchinson", "exact") for name in ENGINES]
    print(f"  {'d':>5s} {'score':>8s} " + " ".join(f"{c:>30s}" for c in columns))
    for row in scaling:
        cells = [f"{row['d']:5d}", f"{1e3 * row['score']['min_s']:8.1f}"]
        for name in columns:
            text = f"{1e3 * row[name]['min_s']:.1f} ({row[f'{name}_over_score']:.1f}x)" if name in row else "-"
            cells.append(f"{text:>30s}")
        print("  " + " ".join(cells))


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pysens bench fp-residual", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="5k points, 2 runs, width 64 (smoke run)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per function (default 7; quick: 2)")
    parser.add_argument("--points", type=int, default=None, help="points of the exact comparison (default 50000)")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 64, 784])
    parser.add_argument("--scaling-points", type=int, default=None, help="points per d (default 1024; quick: 256)")
    parser.add_argument("--width", type=int, default=None, help="scaling network width (default 256; quick: 64)")
    parser.add_argument("--exact-up-to", type=int, default=64, help="largest d for the exact-Laplacian columns")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quick = args.quick
    runs = args.runs or (2 if quick else 7)
    points = args.points or (5_000 if quick else 50_000)
    scaling_points = args.scaling_points or (256 if quick else 1024)
    width = args.width or (64 if quick else 256)
    torch.set_num_threads(args.threads)
    report = _reporter(progress)
    start = time.perf_counter()

    exact = exact_vs_authors(points, runs, args.device, args.seed, report)
    _print_exact(exact, args.device)
    scaling = hutchinson_scaling(
        args.dims, scaling_points, width, runs, args.device, args.seed, args.exact_up_to, report
    )
    _print_scaling(scaling, scaling_points, width)
    result = {
        "exact_vs_authors": exact,
        "hutchinson_scaling": scaling,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "quick": quick,
        "wall_time_s": time.perf_counter() - start,
    }
    path = write_json(Path(args.out) / "fp_residual.json", result)
    print(f"wrote {path} ({result['wall_time_s']:.0f} s)")
    return 0
