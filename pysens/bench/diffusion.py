"""Diffusion workloads against the peers users would otherwise reach for (GitHub issue 8, item 3).

Four workloads, each measured against its peers in the same run, on the same score callable and dtype:

1. ``likelihood`` (the headline): log p_{t0}(x) of B points of an exact 8-D Gaussian mixture under the VP process,
   by the probability-flow ODE on the augmented state (x, Δ) (:mod:`pysens.diffusion.likelihood`), against

   * k-diffusion's path (``k_diffusion.sampling.log_likelihood``): ``torchdiffeq.odeint(..., method="dopri5")`` on the
     tuple state (x, Δ), so the whole batch shares one step size under torchdiffeq's norm;
   * score_sde's path (``likelihood.get_likelihood_fn``): the batch and Δ flattened into one float64 numpy vector,
     ``scipy.integrate.solve_ivp(..., method="RK45")``, numpy → torch → numpy on every right-hand-side call.

   Both peers are written here from those projects' designs (anchors_solvers.md §4) with pysens's divergence
   (:mod:`pysens.diffusion.divergence`), so the solver and its plumbing are the only difference (k-diffusion takes
   its Hutchinson term from a reverse-mode VJP, and score_sde evaluates the drift in a second network call; neither
   is reproduced, so every path pays the same per call). Tolerances are swept (rtol = atol); the error of a run is
   mean_b |log p_model(x_b) − log p_{t0}(x_b)| against the closed-form noised mixture at t0 (the ODE transports
   p_{t0}, not p_0), with the exact terminal density log p_T for every path (the projects use the prior N(0, I)
   there; the gap is recorded as ``prior_term_gap``), so the floor is the solver's. A Hutchinson sweep uses one
   fixed Rademacher probe per sample, the same numbers on every path; its solver error is measured against a
   tight-tolerance solve with those probes, and its estimator error against the exact density.
   **Targets**, at matched error: pysens ≥ 2× faster than torchdiffeq dopri5 and ≥ 5× faster than the scipy round trip.
2. ``sampling``: PF-ODE sampling of B digits from a small ``ConvScore`` trained here on sklearn's digits (fixed seed),
   pysens torch Tsit5/DP5 vs torchdiffeq dopri5 at the same tolerances, error (mean |x − x_ref|) against a float64
   pysens solve at tight tolerance; the share of time spent in the score network (its calls timed by a wrapper).
3. ``sensitivity``: the cost of a sample-sensitivity solve (x, ℓ, y) relative to sampling + likelihood (x, ℓ) on the
   same fixed Heun/Karras grid, timed as ``pysens.bench.sensitivity_cost`` times it; **target** ≤ 1.25×.
4. ``sde``: reverse-SDE sampling of the mixture, pysens EM/SRA1/SOSRA vs torchsde ``euler``/``srk`` at fixed step
   counts, all on one replayed Brownian path (a :class:`~pysens.solvers.BrownianGrid` with its time integrals, handed
   to torchsde by :func:`pysens.bench.peers.torchsde_setup`), **strong** error against pysens SRA1 on the fine grid of
   that path, swept by :func:`pysens.bench.work_precision`.

Timing follows SciMLBenchmarks (anchors §1.8): a point's time is the minimum of ``--runs`` runs after a warm-up; in
the likelihood and sampling sweeps the cases are interleaved round by round (load from other processes falls on all
of them alike). Memory is the peak resident set size above the run's start and the process's peak RSS (CPU), or
``torch.cuda.max_memory_allocated`` (CUDA). A peer that is not installed is recorded as skipped with the reason. Speed
ratios at matched error interpolate each path's work-precision front in log-log (:func:`time_at_error`) at error
levels common to both paths.

The code is split by workload: :mod:`pysens.bench.diffusion_likelihood` (1, with the matched-RHS peer paths, which
are :mod:`pysens.bench.likelihood_peers`'s pipelines driving pysens's augmented field),
:mod:`pysens.bench.diffusion_workloads` (2–4) and :mod:`pysens.bench.diffusion_report` (tables, figures); this module
is the entry point and re-exports the public names.

    python benchmarks/diffusion.py [--out benchmarks/results/diffusion] [--quick] [--runs 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pysens.artifacts import write_json
from pysens.bench.diffusion_likelihood import (
    _versions,
    gaussian_mixture,
    peer_status,
    run_likelihood,
    scipy_rk45_log_likelihood,
    torchdiffeq_log_likelihood,
)
from pysens.bench.diffusion_report import _fmt, report_text, write_figures
from pysens.bench.diffusion_workloads import run_sampling, run_sde, run_sensitivity
from pysens.bench.likelihood_peers import PeerLikelihood
from pysens.bench.matched_error import (
    matched_error_ratios,
    pareto_front,
    time_at_error,
)

__all__ = [
    "WORKLOADS",
    "PeerLikelihood",
    "gaussian_mixture",
    "main",
    "matched_error_ratios",
    "pareto_front",
    "scipy_rk45_log_likelihood",
    "time_at_error",
    "torchdiffeq_log_likelihood",
]

WORKLOADS = ("likelihood", "sampling", "sensitivity", "sde")


# ---------------------------------------------------------------------------------------------------------------------
# entry point


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pysens bench diffusion", description=(__doc__ or "").splitlines()[0], allow_abbrev=False
    )
    p.add_argument("--out", default="benchmarks/results/diffusion", help="folder for diffusion.json and the PNGs")
    p.add_argument("--quick", action="store_true", help="small sizes and fewer tolerances (about a minute on a CPU)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per point, min reported (default 3; quick 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=None, help="mixture points per solve (default 256; quick 32)")
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--components", type=int, default=5)
    p.add_argument("--image-batch", type=int, default=None, help="digits per solve (default 256; quick 32)")
    p.add_argument(
        "--train-steps", type=int, default=None, help="DSM steps for the digits model (default 1000; quick 150)"
    )
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--checkpoint", default=None, help="load the digits model from a pysens checkpoint instead")
    p.add_argument("--tolerances", type=float, nargs="+", default=None, help="likelihood rtol = atol sweep")
    p.add_argument("--reference-tol", type=float, default=None, help="likelihood reference check tolerance")
    p.add_argument("--sampling-tolerances", type=float, nargs="+", default=None, help="PF-ODE sampling sweep")
    p.add_argument("--sampling-reference-tol", type=float, default=None)
    p.add_argument("--sensitivity-steps", type=int, default=None, help="Heun steps of the sensitivity workload")
    p.add_argument("--sde-steps", type=int, nargs="+", default=None, help="reverse-SDE step counts")
    p.add_argument("--fine-steps", type=int, default=None, help="steps of the shared Brownian grid (the reference)")
    return p


def configure(argv: list[str] | None) -> argparse.Namespace:
    cfg = _parser().parse_args(argv)
    cfg.bars, cfg.bar = False, None  # set by main: tqdm bars on a terminal, and the per-run progress callback
    quick = cfg.quick
    cfg.runs = cfg.runs if cfg.runs is not None else (1 if quick else 3)
    if cfg.runs < 1:
        raise SystemExit("--runs must be at least 1")
    defaults = {  # (quick, default size)
        "batch": (32, 256),
        "image_batch": (32, 256),
        "train_steps": (150, 1000),
        "tolerances": ([1e-3, 1e-4, 1e-5], [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]),
        "reference_tol": (1e-9, 1e-10),
        "sampling_tolerances": ([1e-3, 1e-4], [1e-3, 1e-4, 1e-5]),
        "sampling_reference_tol": (1e-6, 1e-7),
        "sensitivity_steps": (16, 32),
        "sde_steps": ([16, 64], [16, 32, 64, 128, 256]),
        "fine_steps": (512, 2048),
    }
    for key, sizes in defaults.items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, sizes[0] if quick else sizes[1])
    bad = [n for n in cfg.sde_steps if cfg.fine_steps % n]
    if bad:
        raise SystemExit(f"--sde-steps {bad} must divide --fine-steps {cfg.fine_steps} (steps land on the shared path)")
    return cfg


def main(argv: list[str] | None = None, progress: Callable[[str], None] | None = None) -> int:
    """Run the diffusion workloads, print a table per workload, write ``diffusion.json`` and PNGs to ``--out``.

    ``progress`` (optional) receives one line per phase and per timed run (for a progress bar); without it a tqdm
    bar is shown on an interactive terminal. Returns 0 (targets not met are reported, not errors).
    """
    cfg = configure(argv)
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    out = Path(cfg.out)
    cfg.bars = progress is None and sys.stderr.isatty()
    bar = tqdm(total=None, disable=not cfg.bars, leave=False, desc="diffusion", unit="run")

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)
        elif cfg.bars:
            bar.write(msg)
        else:
            print(msg, flush=True)

    def tick(msg: str) -> None:
        if progress is not None:
            progress(msg)
        bar.set_postfix_str(msg, refresh=False)
        bar.update(1)

    cfg.bar = tick
    runners = {"likelihood": run_likelihood, "sampling": run_sampling, "sensitivity": run_sensitivity, "sde": run_sde}
    workloads, seconds = {}, {}
    for name in WORKLOADS:
        if name in cfg.workloads:
            begin = time.perf_counter()
            workloads[name] = runners[name](cfg, say)
            seconds[name] = time.perf_counter() - begin
    bar.close()
    device = torch.device(cfg.device)
    targets = [t for w in workloads.values() for t in w.get("targets", [])]
    config = {k: v for k, v in vars(cfg).items() if k not in ("out", "bar", "bars")}
    report = {
        "benchmark": "diffusion",
        "config": config,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "versions": _versions(),
        "peers": {k: "available" if v is None else v for k, v in peer_status().items()},
        "workloads": workloads,
        "targets": targets,
        "workload_seconds": seconds,
        "wall_time": time.perf_counter() - start,
    }
    print(report_text(workloads))
    for t in targets:
        met = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        value = t.get("ratio_geomean", t.get("ratio"))
        print(f"target: {t['target']}: {_fmt(value, '.2f')}× — {met}")
    report["figures"] = write_figures(out, workloads)
    write_json(out / "diffusion.json", report)
    print(f"wrote {out / 'diffusion.json'} ({report['wall_time']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
