"""Cost of the log-density Fokker–Planck residual R[φ] (seed001 §3.1, §3.4).

1. Exact Laplacian on 50k points (the authors' collocation batch), same run, same device: ``log_fp_residual``
   (torch.func: one vmap over the d basis tangents of a JVP of ∇_{(x,t)}φ) against the authors' nested-autograd
   loop (``pinn_utils.pinn_loss``: five ``torch.autograd.grad`` calls with ``create_graph``), both for evaluation
   only and for evaluation + the backward pass to θ (one training step's residual work). The network is the
   authors' blob w_R = 0 checkpoint when ``shared/data/odesdegap`` is present, else the same architecture at random.
2. Hutchinson scaling in d: the residual with one Rademacher probe at d = 2, 64, 784 (PotentialScoreNet of width
   ``--width``), timed against one score evaluation ∇φ at the same d: the ratio must stay O(1) in d, while the exact
   Laplacian's ratio grows like d.

Times are the minimum and median of ``--runs`` runs after a warm-up. Prints tables and writes ``fp_residual.json``.

    python benchmarks/fp_residual.py [--out benchmarks/results] [--runs 5] [--points 50000] [--device cpu|cuda]
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


def exact_vs_authors(points: int, runs: int, device: str, seed: int) -> dict:
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

    def ours() -> torch.Tensor:
        return log_fp_residual(net.potential, net.process, x, t)

    def theirs() -> torch.Tensor:
        return authors_nested_autograd(net, x, t)

    def step(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            net.zero_grad(set_to_none=True)
            fn().pow(2).mean().backward()

        return run

    agreement = float((ours() - theirs()).abs().max())
    scale = float(theirs().abs().max())

    def ours_eval() -> None:
        with torch.no_grad():  # torch.func.grad still differentiates inside no_grad
            ours()

    evaluate = _timed({"torch_func": ours_eval, "authors_nested_autograd": lambda: theirs().detach()}, runs, device)
    train = _timed({"torch_func": step(ours), "authors_nested_autograd": step(theirs)}, runs, device)
    eval_ours, eval_theirs = evaluate["torch_func"], evaluate["authors_nested_autograd"]
    train_ours, train_theirs = train["torch_func"], train["authors_nested_autograd"]
    return {
        "network": source,
        "points": points,
        "dtype": "float32",
        "max_abs_difference": agreement,
        "max_abs_residual": scale,
        "evaluate": {
            "torch_func": eval_ours,
            "authors_nested_autograd": eval_theirs,
            "speedup_min": eval_theirs["min_s"] / eval_ours["min_s"],
        },
        "evaluate_and_backward": {
            "torch_func": train_ours,
            "authors_nested_autograd": train_theirs,
            "speedup_min": train_theirs["min_s"] / train_ours["min_s"],
        },
    }


def hutchinson_scaling(
    dims: list[int], points: int, width: int, runs: int, device: str, seed: int, exact_up_to: int
) -> list[dict]:
    rows = []
    for d in dims:
        torch.manual_seed(seed)
        net = PotentialScoreNet(dim=d, hidden=width, depth=3, beta=10.0).to(device)
        g = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn(points, d, generator=g, device=device)
        t = 0.01 + torch.rand(points, generator=g, device=device)
        timed = {
            "score": lambda net=net, x=x, t=t: net(x, t),
            "hutchinson_1_probe": lambda net=net, x=x, t=t, g=g: log_fp_residual(
                net.potential, net.process, x, t, laplacian="hutchinson", n_probes=1, generator=g
            ),
        }
        if d <= exact_up_to:
            timed["exact"] = lambda net=net, x=x, t=t: log_fp_residual(net.potential, net.process, x, t, chunk_size=64)
        row = {"d": d, "points": points, "width": width, **_timed(timed, runs, device)}
        row["hutchinson_over_score"] = row["hutchinson_1_probe"]["min_s"] / row["score"]["min_s"]
        if "exact" in row:
            row["exact_over_score"] = row["exact"]["min_s"] / row["score"]["min_s"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 64, 784])
    parser.add_argument("--scaling-points", type=int, default=1024)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--exact-up-to", type=int, default=64, help="largest d for the exact-Laplacian column")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    exact = exact_vs_authors(args.points, args.runs, args.device, args.seed)
    print(
        f"exact Laplacian, {exact['points']} points, {exact['network']}, {args.device}, "
        f"{torch.get_num_threads()} thread(s); max |R_ours - R_authors| = {exact['max_abs_difference']:.2e} "
        f"(max |R| = {exact['max_abs_residual']:.2e})"
    )
    print(f"  {'':24s} {'torch.func (s)':>15s} {'nested autograd (s)':>20s} {'speed-up':>9s}")
    for key in ("evaluate", "evaluate_and_backward"):
        row = exact[key]
        print(
            f"  {key:24s} {row['torch_func']['min_s']:15.3f} {row['authors_nested_autograd']['min_s']:20.3f} "
            f"{row['speedup_min']:9.2f}"
        )
    scaling = hutchinson_scaling(
        args.dims, args.scaling_points, args.width, args.runs, args.device, args.seed, args.exact_up_to
    )
    print(f"Hutchinson (1 probe) vs one score evaluation, {args.scaling_points} points, width {args.width}")
    print(f"  {'d':>5s} {'score (ms)':>11s} {'hutchinson (ms)':>16s} {'ratio':>7s} {'exact (ms)':>11s} {'ratio':>7s}")
    for row in scaling:
        exact_ms = f"{1e3 * row['exact']['min_s']:11.1f} {row['exact_over_score']:7.1f}" if "exact" in row else ""
        print(
            f"  {row['d']:5d} {1e3 * row['score']['min_s']:11.1f} {1e3 * row['hutchinson_1_probe']['min_s']:16.1f} "
            f"{row['hutchinson_over_score']:7.2f} {exact_ms}"
        )
    report = {
        "exact_vs_authors": exact,
        "hutchinson_scaling": scaling,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "wall_time_s": time.perf_counter() - start,
    }
    path = write_json(Path(args.out) / "fp_residual.json", report)
    print(f"wrote {path} ({report['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
