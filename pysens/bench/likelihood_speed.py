"""Likelihood speed against the peers' own pipelines (issue 13): exact divergences per call, then end to end.

1. ``engines``: one exact divergence of a score at t = 0.5 (float64, one thread): the d = 16 Gaussian mixture given
   as a plain callable (no closed form visible to pysens) and as pysens's class (its closed form), pysens's
   width-256 depth-3 SiLU :class:`~pysens.diffusion.MLPScore` with d = 16 and d = 64 (its structured divergence,
   :mod:`pysens.diffusion.network_jacobians`), and the d = 64 network behind a plain callable (a user's own network:
   autodiff only). Every engine of :func:`pysens.derivatives.divergence` (vmapped VJP, autograd-batched VJPs,
   vmapped JVP, the VJP loop, the model's ``score_and_divergence`` as ``"analytic"`` where it has one, passed exactly
   as :func:`~pysens.diffusion.likelihood.log_likelihood` passes it, and ``"auto"`` after its one measuring call) is
   timed interleaved in CPU seconds of this thread, min over ``--runs-engines`` rounds; values are compared with
   the loop's. **Target**: auto ≥ the loop's speed (ratio ≥ 1.0) with values equal to 1e-12.
2. ``end-to-end``: log p_{t0}(x) of B points, exact divergence, float64, over a tolerance sweep (rtol = atol), by
   pysens (:func:`pysens.diffusion.log_likelihood`, engine ``"auto"``, Tsit5 and DP8) and by the two peer pipelines
   of :mod:`pysens.bench.likelihood_peers` (k-diffusion-style torchdiffeq dopri5 with FFJORD's brute-force
   divergence; score_sde-style scipy RK45 numpy round trip with two score calls per right-hand side and the same
   brute-force divergence). Error: mean_b |log p − exact| for the mixture (closed-form noised density, exact
   terminal density on every path), and against a tight pysens DP8 solve (rtol = atol = ``--reference-tol``, the
   prior as terminal density on every path) for the MLP. Time to reach mean error 1e-6 is interpolated on each
   path's work-precision front in log-log. **Targets**: pysens ≥ 3× faster than both peers on the mixture,
   ≥ 2× on the MLP d = 64.

Timing is noisy on a shared machine: every ratio is of runs interleaved in this one process, and the targets are
judged on the CPU seconds of the solving thread (``time.thread_time``: every path runs in this one thread, torch with
one intra-op thread, so this counts all of each path's work and none of other processes'); wall seconds are kept
alongside.

    python -m pysens.cli bench likelihood-speed [--out benchmarks/results] [--quick] [--runs 1] [--runs-mlp N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pysens.artifacts import write_json
from pysens.bench.diffusion import gaussian_mixture
from pysens.bench.likelihood_peers import kdiffusion_log_likelihood, score_sde_log_likelihood
from pysens.bench.matched_error import Case, Outcome, sweep, time_at_error
from pysens.derivatives import chosen_engines, clear_engine_cache, divergence
from pysens.diffusion import VP, MLPScore
from pysens.diffusion.likelihood import log_likelihood

ENGINES = ("loop", "vjp", "grad-batched", "jvp", "analytic", "auto")
TARGET_ERROR = 1e-6
TARGETS = {"mixture d=16": 3.0, "MLP d=64": 2.0}
PYSENS_METHODS = ("Tsit5", "DP8")
PEERS = {
    "k-diffusion-style dopri5 (FFJORD brute force)": kdiffusion_log_likelihood,
    "score_sde-style RK45 round trip (brute force)": score_sde_log_likelihood,
}


def plain_callable(model) -> Callable[[Tensor, Tensor], Tensor]:
    """``model`` behind a plain function: pysens sees no closed form, only autodiff."""

    def score(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t)

    return score


def mlp_score(dim: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MLPScore(dim, VP(), hidden=256, depth=3).double()


@torch.no_grad()  # as inside a solve
def _engine_case(name: str, score, dim: int, batch: int, runs: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    t = torch.full((batch,), 0.5, dtype=torch.float64)

    def field(u: Tensor) -> Tensor:
        return score(u, t)

    # the model's own divergence where it provides one, exactly as log_likelihood passes it to the divergence layer
    closed = getattr(score, "score_and_divergence", None)
    analytic = None if closed is None else (lambda u: closed(u, t))
    engines = [e for e in ENGINES if e != "analytic" or analytic is not None]
    clear_engine_cache()
    key = ("bench", name)
    divergence(field, x, engine="auto", key=key, analytic=analytic)  # the one measuring call
    chosen = next(iter(chosen_engines().values()), "analytic")  # "auto" measures nothing when a closed form is given
    times: dict[str, list[float]] = {e: [] for e in engines}
    values: dict[str, Tensor] = {}
    for e in engines:  # warm-up
        divergence(field, x, engine=e, key=key, analytic=analytic)
    for _ in range(runs):
        for e in engines:
            start = time.thread_time()  # one intra-op thread: all of the call's work, none of other processes'
            _, values[e] = divergence(field, x, engine=e, key=key, analytic=analytic)
            times[e].append(time.thread_time() - start)
    best = {e: min(v) for e, v in times.items()}
    diff = {e: float((values[e] - values["loop"]).abs().max()) for e in engines}
    scale = float(values["loop"].abs().max())
    return {
        "case": name,
        "dim": dim,
        "batch": batch,
        "structure": "none (plain callable)" if closed is None else f"{type(score).__name__}.score_and_divergence",
        "auto_chose": chosen,
        "clock": "CPU seconds of this thread (time.thread_time)",
        "ms": {e: 1e3 * best[e] for e in engines},
        "ms_median": {e: 1e3 * statistics.median(v) for e, v in times.items()},
        "max_abs_diff_vs_loop": diff,
        "scale": scale,
        "loop_over_auto": best["loop"] / best["auto"],
        "met": bool(best["loop"] / best["auto"] >= 1.0 and max(diff.values()) <= 1e-12 * max(1.0, scale)),
    }


def engine_cases(seed: int, batch: int) -> list[tuple[str, Callable, int, int]]:
    """(name, score, d, B): the d = 16 mixture as a plain callable and as pysens's class (closed form); pysens's MLP
    score (its structured divergence) at d = 16 and 64, at ``batch`` rows and at B = 1 and 16 (the shapes behind
    ``"auto"``'s rule for model-provided divergences); and the d = 64 MLP behind a plain callable, as a user's own
    network is seen (no structure: autodiff engines only)."""
    gmm = gaussian_mixture(16, 5, seed=seed)
    mlp16, mlp64 = mlp_score(16, seed), mlp_score(64, seed)
    cases = [("mixture d=16", plain_callable(gmm), 16, batch), ("mixture d=16 (closed form)", gmm, 16, batch)]
    for small in (1, 16):
        cases += [("MLP d=16", mlp16, 16, small), ("MLP d=64", mlp64, 64, small)]
    cases += [("MLP d=16", mlp16, 16, batch), ("MLP d=64", mlp64, 64, batch)]
    return [*cases, ("MLP d=64, plain callable", plain_callable(mlp64), 64, batch)]


def run_engines(cfg: argparse.Namespace, say: Callable[[str], None]) -> list[dict]:
    out = []
    for name, score, dim, batch in engine_cases(cfg.seed, cfg.engine_batch):
        say(f"engines: {name}, B = {batch}")
        out.append(_engine_case(name, score, dim, batch, cfg.runs_engines, cfg.seed))
    return out


def _problem(name: str, cfg: argparse.Namespace):
    """(score callable, x, exact-or-None, terminal log density, batch)."""
    process = VP()
    if name == "mixture d=16":
        gmm = gaussian_mixture(16, 5, seed=cfg.seed, process=process)
        x = gmm.sample_data(cfg.batch, generator=torch.Generator().manual_seed(cfg.seed + 1))
        exact = gmm.log_density(x, process.t_eps)
        return plain_callable(gmm), x, exact, (lambda z: gmm.log_density(z, process.T)), process
    model = mlp_score(64, cfg.seed)
    x = torch.randn(cfg.mlp_batch, 64, generator=torch.Generator().manual_seed(cfg.seed + 1), dtype=torch.float64)
    return model, x, None, process.prior_log_density, process


def run_end_to_end(cfg: argparse.Namespace, name: str, tols: list[float], say: Callable[[str], None]) -> dict:
    score, x, exact, terminal, process = _problem(name, cfg)
    t0 = process.t_eps
    reference = None
    if exact is None:
        say(f"end-to-end {name}: reference (pysens DP8 at {cfg.reference_tol:g})")
        reference = log_likelihood(
            score,
            process,
            x,
            t0=t0,
            method="DP8",
            rtol=cfg.reference_tol,
            atol=cfg.reference_tol,
            terminal_log_density=terminal,
        ).log_density
    target = exact if exact is not None else reference

    cpu: dict[tuple[str, float], list[float]] = {}  # this thread's CPU seconds per (setup, tol), every run

    def cpu_timed(label: str, solve: Callable[[float], Outcome]) -> Callable[[float], Outcome]:
        def run(tol: float) -> Outcome:
            start = time.thread_time()
            out = solve(tol)
            cpu.setdefault((label, tol), []).append(time.thread_time() - start)
            return out

        return run

    def pysens_case(method: str) -> Case:
        def run(tol: float) -> Outcome:
            r = log_likelihood(
                score, process, x, t0=t0, method=method, rtol=tol, atol=tol, terminal_log_density=terminal
            )
            return Outcome(r.log_density, r.stats.nf, r.retcode, rows=r.solution.extra.get("f_rows"))

        return Case(f"pysens {method}", cpu_timed(f"pysens {method}", run), tols, {"path": "pysens"})

    def peer_case(label: str, fn) -> Case:
        def run(tol: float) -> Outcome:
            r = fn(score, process, x, t0=t0, rtol=tol, atol=tol, terminal_log_density=terminal)
            return Outcome(r.log_density, r.nf, r.retcode)

        return Case(label, cpu_timed(label, run), tols, {"path": "peer"})

    cases = [pysens_case(m) for m in PYSENS_METHODS] + [peer_case(k, f) for k, f in PEERS.items()]
    n_runs = cfg.runs if exact is not None or cfg.runs_mlp is None else cfg.runs_mlp
    say(f"end-to-end {name}: {len(cases)} setups × {len(tols)} tolerances × {n_runs} runs")
    points = sweep(cases, lambda o: float((o.value - target).abs().mean()), runs=n_runs, device=torch.device("cpu"))
    for p in points:  # the warm-up run is the first entry: drop it
        runs = cpu.get((p["setup"], p["tol"]), [])[-(p.get("runs") or 0) :] if p.get("runs") else []
        p["cpu_min"] = min(runs) if runs else math.nan
    cpu_at, cpu_ratios, cpu_best = _at_target(cases, points, "cpu_min")
    wall_at, wall_ratios, wall_best = _at_target(cases, points, "time_min")
    target_ratio = TARGETS.get(name)
    return {
        "problem": name,
        "batch": x.shape[0],
        "runs": n_runs,
        "error": "mean |log p − exact| (closed form)" if exact is not None else "mean |log p − pysens DP8 reference|",
        "reference_tol": None if exact is not None else cfg.reference_tol,
        "points": points,
        "clock": "CPU seconds of the solving thread (time.thread_time); wall seconds alongside",
        "seconds_at_target_error": cpu_at,
        "pysens_best": cpu_best,
        "peer_over_pysens_at_target": cpu_ratios,
        "wall_seconds_at_target_error": wall_at,
        "wall_pysens_best": wall_best,
        "wall_peer_over_pysens_at_target": wall_ratios,
        "target": target_ratio,
        "met": None
        if target_ratio is None or any(v is None for v in cpu_ratios.values())
        else bool(min(cpu_ratios.values()) >= target_ratio),
    }


def _at_target(cases: list[Case], points: list[dict], clock: str) -> tuple[dict, dict, str | None]:
    """Seconds (``clock``: "cpu_min" or "time_min") to mean error :data:`TARGET_ERROR` on each setup's front, each
    peer's over the faster pysens method's, and that method's name."""
    at_target = {}
    for c in cases:
        pts = [p for p in points if p["setup"] == c.name and p["retcode"] == "Success"]
        t = time_at_error([p["error"] for p in pts], [p[clock] for p in pts], [TARGET_ERROR])[0]
        at_target[c.name] = None if not math.isfinite(t) else float(t)
    ours = {m: at_target[f"pysens {m}"] for m in PYSENS_METHODS}
    best = min((m for m in ours if ours[m] is not None), key=lambda m: ours[m], default=None)
    ratios = {}
    for peer in PEERS:
        tp, to = at_target[peer], (ours[best] if best else None)
        ratios[peer] = None if tp is None or to is None else tp / to
    return at_target, ratios, None if best is None else f"pysens {best}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pysens bench likelihood-speed", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", default="benchmarks/results", help="folder for likelihood_speed.json")
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    p.add_argument("--runs", type=int, default=1, help="timed runs per end-to-end point (min reported)")
    p.add_argument("--runs-mlp", type=int, default=None, help="timed runs per MLP end-to-end point (default --runs)")
    p.add_argument("--runs-engines", type=int, default=5, help="timed rounds per divergence engine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=None, help="mixture points (default 64; quick 32)")
    p.add_argument("--mlp-batch", type=int, default=None, help="MLP points (default 16; quick 8)")
    p.add_argument("--engine-batch", type=int, default=None, help="rows per divergence call (default 256)")
    p.add_argument("--reference-tol", type=float, default=1e-10)
    p.add_argument("--parts", nargs="+", choices=("engines", "mixture", "mlp"), default=["engines", "mixture", "mlp"])
    return p


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    cfg = _parser().parse_args(argv)
    torch.set_num_threads(1)
    quick = cfg.quick
    cfg.batch = cfg.batch or (32 if quick else 64)
    cfg.mlp_batch = cfg.mlp_batch or (8 if quick else 16)
    cfg.engine_batch = cfg.engine_batch or (64 if quick else 256)
    mixture_tols = [1e-5, 1e-6] if quick else [1e-5, 1e-6, 1e-7, 1e-8]
    mlp_tols = [1e-5, 1e-6] if quick else [1e-5, 1e-6, 1e-7]
    if quick:
        cfg.reference_tol = max(cfg.reference_tol, 1e-9)
    say = progress or (lambda s: print(s, flush=True))
    result: dict = {
        "config": {k: v for k, v in vars(cfg).items() if k != "out"},
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "target_error": TARGET_ERROR,
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    result["end_to_end"] = []
    # the JSON is rewritten after every part, so a long run that is stopped keeps what it measured
    if "engines" in cfg.parts:
        result["engines"] = run_engines(cfg, say)
        write_json(out / "likelihood_speed.json", result)
    for part, name, tols in (("mixture", "mixture d=16", mixture_tols), ("mlp", "MLP d=64", mlp_tols)):
        if part in cfg.parts:
            result["end_to_end"].append(run_end_to_end(cfg, name, tols, say))
            write_json(out / "likelihood_speed.json", result)
    print(report(result))
    return 0


def report(result: dict) -> str:
    lines = []
    for e in result.get("engines", []):
        ms = ", ".join(f"{k} {v:.2f} ms" for k, v in e["ms"].items())
        head = f"{e['case']}, B = {e['batch']}"
        lines.append(f"{head}: {ms}; auto chose {e['auto_chose']}; loop/auto {e['loop_over_auto']:.2f}")
    for r in result.get("end_to_end", []):
        ratios = ", ".join(f"{k}: {v:.2f}×" if v else f"{k}: –" for k, v in r["peer_over_pysens_at_target"].items())
        lines.append(f"{r['problem']} at mean error {result['target_error']:g}: {ratios} (target {r['target']}×)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
