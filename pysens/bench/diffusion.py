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

    python benchmarks/diffusion.py [--out benchmarks/results/diffusion] [--quick] [--runs 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from pysens.artifacts import save_figure, write_json
from pysens.bench.likelihood_peers import PeerLikelihood
from pysens.bench.matched_error import (
    Case,
    Outcome,
    TimedScore,
    _finite,
    compare,
    matched_error_ratios,
    measure,
    pareto_front,
    sweep,
    time_at_error,
)
from pysens.bench.peers import BENCH_EXTRA, available_peers, torchsde_setup
from pysens.bench.sensitivity_cost import timed_interleaved
from pysens.bench.work_precision import Setup, work_precision
from pysens.diffusion import VP, ConvScore, GaussianMixtureScore, digits, load_checkpoint
from pysens.diffusion.divergence import exact_divergence, hutchinson_divergence, hutchinson_probes
from pysens.diffusion.likelihood import log_likelihood
from pysens.diffusion.processes import ForwardProcess, expand_as_batch
from pysens.diffusion.sampling import pf_ode_drift, sample_pf_ode, sample_sde
from pysens.diffusion.training import train
from pysens.solvers import BrownianGrid, SDEProblem

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
TARGETS = {"torchdiffeq dopri5": 2.0, "scipy RK45 round trip": 5.0, "sensitivity / (sampling + likelihood)": 1.25}
HEADLINE = "pysens Tsit5"  # the pysens setup the likelihood targets are stated for


# ---------------------------------------------------------------------------------------------------------------------
# the likelihood problem and the two peer paths


def gaussian_mixture(
    dim: int = 8, components: int = 5, *, seed: int = 0, process: ForwardProcess | None = None
) -> GaussianMixtureScore:
    """An exact float64 mixture with full covariances: means 2·N(0, I), C_k = 0.3 A_k A_kᵀ/d + 0.05 I (A_k standard
    normal), weights 0.5 + U(0, 1) normalised."""
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(components, dim, generator=g, dtype=torch.float64)
    a = torch.randn(components, dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    covariances = 0.3 * a @ a.mT + 0.05 * torch.eye(dim, dtype=torch.float64)
    weights = torch.rand(components, generator=g, dtype=torch.float64) + 0.5
    return GaussianMixtureScore(means, covariances, weights, process=process or VP())


def augmented_field(score, process: ForwardProcess, probes: Tensor | None = None) -> Callable:
    """(t, x) ↦ (dx/dt, dΔ/dt) = (f x − ½ g² s, d f − ½ g² ∇·s) with the exact divergence (``probes`` None) or
    Hutchinson's with the fixed ``probes`` ``[K, B, *event]``: the same field and divergence pysens integrates."""

    def field_(t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        def s(u: Tensor) -> Tensor:
            return score(u, t)

        value, div = exact_divergence(s, x) if probes is None else hutchinson_divergence(s, x, probes)
        f, g2 = process.drift_coef(t).to(x.dtype), process.g2(t).to(x.dtype)
        d = x[0].numel()
        dx = expand_as_batch(f, x) * x - 0.5 * expand_as_batch(g2, x) * value
        ddelta = d * f.expand(x.shape[0]) - 0.5 * g2 * div
        return dx, ddelta

    return field_


def torchdiffeq_log_likelihood(
    score,
    process: ForwardProcess,
    x: Tensor,
    *,
    t0: float,
    rtol: float,
    atol: float,
    probes: Tensor | None = None,
    terminal_log_density: Callable[[Tensor], Tensor] | None = None,
) -> PeerLikelihood:
    """k-diffusion's likelihood path: ``torchdiffeq.odeint`` dopri5 on the tuple state (x, Δ) from t0 to T, one step
    size for the whole batch (torchdiffeq's mixed RMS norm over the tuple), a 0-d time, on the data's device.

    torchdiffeq steps past the last output time and interpolates back; the score is not defined beyond [0, T] (the
    mixture rejects t > T, and β_t² < 0 below 0), so ``step_t`` clips the step that would cross an end onto it (a
    network would extrapolate silently there; the clip only changes that one step)."""
    from torchdiffeq import odeint

    field_ = augmented_field(score, process, probes)
    calls = 0

    def func(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nonlocal calls
        calls += 1
        return field_(t, state[0])

    ts = torch.tensor([t0, process.T], dtype=x.dtype, device=x.device)
    with torch.no_grad():
        xs, deltas = odeint(
            func, (x, x.new_zeros(x.shape[0])), ts, rtol=rtol, atol=atol, method="dopri5", options={"step_t": ts}
        )
    latent = xs[-1]
    log_pT = (terminal_log_density or process.prior_log_density)(latent)
    return PeerLikelihood(log_pT + deltas[-1], calls)


def scipy_rk45_log_likelihood(
    score,
    process: ForwardProcess,
    x: Tensor,
    *,
    t0: float,
    rtol: float,
    atol: float,
    probes: Tensor | None = None,
    terminal_log_density: Callable[[Tensor], Tensor] | None = None,
) -> PeerLikelihood:
    """score_sde's likelihood path: [x.flatten(), Δ] as one float64 numpy vector, ``solve_ivp(method="RK45")`` from t0
    to T (scipy's RMS norm over the whole batch), numpy → torch (the data's device and dtype) → numpy every call,
    per-sample times ``[B]``."""
    from scipy.integrate import solve_ivp

    field_ = augmented_field(score, process, probes)
    B, shape, dtype, device = x.shape[0], x.shape, x.dtype, x.device

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        z = torch.from_numpy(y).to(device=device, dtype=dtype)
        tt = torch.full((B,), t, dtype=dtype, device=device)
        with torch.no_grad():
            dx, ddelta = field_(tt, z[:-B].reshape(shape))
        return torch.cat([dx.reshape(-1), ddelta]).to(torch.float64).cpu().numpy()

    y0 = np.concatenate([x.detach().to(torch.float64).cpu().numpy().reshape(-1), np.zeros(B)])
    sol = solve_ivp(rhs, (t0, process.T), y0, method="RK45", rtol=rtol, atol=atol)
    end = torch.from_numpy(sol.y[:, -1].copy()).to(device=device, dtype=dtype)
    latent = end[:-B].reshape(shape)
    log_pT = (terminal_log_density or process.prior_log_density)(latent)
    retcode = "Success" if sol.success else f"Failure: {sol.message}"
    return PeerLikelihood(log_pT + end[-B:], int(sol.nfev), retcode)


def peer_status() -> dict[str, str | None]:
    """``{peer: None if importable else the reason}`` for torchdiffeq and torchsde."""
    have = available_peers()
    return {
        name: None if have[name] else f"{name} not installed ({BENCH_EXTRA}, or pip install {name})"
        for name in ("torchdiffeq", "torchsde")
    }


def _versions() -> dict:
    out = {"torch": torch.__version__, "numpy": np.__version__}
    for name in ("scipy", "torchdiffeq", "torchsde"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


# ---------------------------------------------------------------------------------------------------------------------
# workload 1: likelihood of an exact mixture


def run_likelihood(cfg: argparse.Namespace, say: Callable[[str], None]) -> dict:
    device, runs = torch.device(cfg.device), cfg.runs
    process = VP()
    gmm = gaussian_mixture(cfg.dim, cfg.components, seed=cfg.seed, process=process).to(device)
    t0 = process.t_eps
    x = gmm.sample_data(cfg.batch, generator=torch.Generator(device=device).manual_seed(cfg.seed + 1))
    exact = gmm.log_density(x, t0)

    def terminal(model):
        return lambda z: model.log_density(z, process.T)

    probes = hutchinson_probes(
        1, x.shape, generator=torch.Generator(device=device).manual_seed(cfg.seed + 2), dtype=x.dtype, device=device
    )
    peers = peer_status()
    skipped = {}

    # `model` knows its density (the terminal term); `score` is what the solver calls (the model, or a timed wrapper)
    def pysens_case(name, method, backend, model, xx, knobs, score=None, **meta) -> Case:
        def run(tol: float) -> Outcome:
            r = log_likelihood(
                score or model,
                process,
                xx,
                t0=t0,
                method=method,
                backend=backend,
                rtol=tol,
                atol=tol,
                divergence=meta["divergence"],
                generator=torch.Generator(device=device).manual_seed(cfg.seed + 2),
                terminal_log_density=terminal(model),
            )
            return Outcome(r.log_density, r.stats.nf, r.retcode, rows=r.solution.extra.get("f_rows"))

        return Case(name, run, knobs, {"path": "pysens", "method": method, "backend": backend, **meta})

    def peer_case(name, fn, model, xx, knobs, probe=None, score=None, **meta) -> Case:
        def run(tol: float) -> Outcome:
            r = fn(
                score or model,
                process,
                xx,
                t0=t0,
                rtol=tol,
                atol=tol,
                probes=probe,
                terminal_log_density=terminal(model),
            )
            return Outcome(r.log_density, r.nf, r.retcode)

        return Case(name, run, knobs, {"path": "peer", **meta})

    tols = cfg.tolerances
    f64 = {"dtype": "float64", "divergence": "exact"}

    def float64_cases(knobs, score=None) -> list[Case]:
        out = [
            pysens_case("pysens Tsit5", "Tsit5", "torch", gmm, x, knobs, score, **f64),
            pysens_case("pysens DP5", "DP5", "torch", gmm, x, knobs, score, **f64),
            pysens_case("pysens scipy DP5", "DP5", "scipy", gmm, x, knobs, score, **f64),
        ]
        if peers["torchdiffeq"] is None:
            out.append(peer_case("torchdiffeq dopri5", torchdiffeq_log_likelihood, gmm, x, knobs, None, score, **f64))
        out.append(peer_case("scipy RK45 round trip", scipy_rk45_log_likelihood, gmm, x, knobs, None, score, **f64))
        return out

    if peers["torchdiffeq"] is not None:
        skipped["torchdiffeq dopri5"] = peers["torchdiffeq"]
    cases = float64_cases(tols)

    # float32 (the dtype networks run in): the torch paths only, where float32 can resolve the tolerance
    gmm32, x32 = copy.deepcopy(gmm).to(torch.float32), x.to(torch.float32)
    tols32 = [t for t in tols if t >= 1e-5]
    f32 = {"dtype": "float32", "divergence": "exact"}
    cases.append(pysens_case("pysens Tsit5 float32", "Tsit5", "torch", gmm32, x32, tols32, **f32))
    if peers["torchdiffeq"] is None:
        cases.append(peer_case("torchdiffeq dopri5 float32", torchdiffeq_log_likelihood, gmm32, x32, tols32, **f32))

    say(f"likelihood: reference check (pysens Tsit5 at rtol = atol = {cfg.reference_tol:g}, exact terminal density)")
    ref_seconds, _, _, ref = measure(
        lambda: log_likelihood(
            gmm, process, x, t0=t0, rtol=cfg.reference_tol, atol=cfg.reference_tol, terminal_log_density=terminal(gmm)
        ),
        device,
    )
    ref_err = (ref.log_density - exact).abs()
    reference_check = {
        "setup": "pysens Tsit5",
        "tol": cfg.reference_tol,
        "mean_abs_error": float(ref_err.mean()),
        "max_abs_error": float(ref_err.max()),
        "agrees_below_1e-6": bool(ref_err.max() < 1e-6),
        "nf": ref.stats.nf,
        "seconds": ref_seconds,
        # what the projects' prior term N(0, I) would add on top of the solver error
        "prior_term_gap": float(
            (process.prior_log_density(ref.latent) - gmm.log_density(ref.latent, process.T)).abs().mean()
        ),
    }

    say(f"likelihood: exact divergence, {len(cases)} setups × {len(tols)} tolerances × {runs} runs")
    points = sweep(
        cases, lambda o: float((o.value.double() - exact).abs().mean()), runs=runs, device=device, bar=cfg.bar
    )
    # where the time goes: one solve per path with the score's calls (inside the divergence's vmap/JVP, so the whole
    # score-and-divergence evaluation) timed; the rest is the solver's own work and the plumbing around it
    share_tol = tols[len(tols) // 2]
    say(f"likelihood: share of time in the score and its divergence (one solve per path at {share_tol:g})")
    score_share = {}
    for name in [c.name for c in cases if c.meta["dtype"] == "float64"]:
        timed = TimedScore(gmm, device)
        case = next(c for c in float64_cases([share_tol], score=timed) if c.name == name)
        seconds, _, _, out = measure(lambda case=case: case.run(share_tol), device)
        score_share[name] = {
            "tol": share_tol,
            "score_seconds": timed.seconds,
            "total_seconds": seconds,
            "score_share": timed.seconds / seconds,
            "nf": out.nf,
            "other_ms_per_call": 1e3 * (seconds - timed.seconds) / max(out.nf, 1),
            "score_ms_per_call": 1e3 * timed.seconds / max(timed.calls, 1),
        }

    # Hutchinson: the same fixed probe on every path; solver error against a tight solve with that probe
    hutch_ref = log_likelihood(
        gmm,
        process,
        x,
        t0=t0,
        rtol=cfg.reference_tol,
        atol=cfg.reference_tol,
        divergence="hutchinson",
        generator=torch.Generator(device=device).manual_seed(cfg.seed + 2),
        terminal_log_density=terminal(gmm),
    ).log_density
    htols = [t for t in tols if t >= 1e-6]
    hmeta = {"dtype": "float64", "divergence": "hutchinson"}
    hcases = [pysens_case("pysens Tsit5", "Tsit5", "torch", gmm, x, htols, **hmeta)]
    if peers["torchdiffeq"] is None:
        hcases.append(peer_case("torchdiffeq dopri5", torchdiffeq_log_likelihood, gmm, x, htols, probes, **hmeta))
    hcases.append(peer_case("scipy RK45 round trip", scipy_rk45_log_likelihood, gmm, x, htols, probes, **hmeta))
    say(f"likelihood: Hutchinson (1 Rademacher probe), {len(hcases)} setups × {len(htols)} tolerances")

    def hutch_error(o: Outcome) -> float:
        o.extra["estimator_error"] = float((o.value.double() - exact).abs().mean())
        return float((o.value.double() - hutch_ref).abs().mean())

    hpoints = sweep(hcases, hutch_error, runs=runs, device=device, bar=cfg.bar)

    # exact vs Hutchinson on each path at the tolerances both swept: time saved, accuracy lost
    exact_vs_hutchinson = {
        f"{h['setup']} {h['tol']:g}": {
            "time_exact_over_hutchinson": p["time_min"] / h["time_min"],
            "error_exact": p["error"],
            "error_hutchinson_vs_exact_density": h.get("estimator_error"),
        }
        for h in hpoints
        for p in points
        if p["setup"] == h["setup"] and p["tol"] == h["tol"] and _finite(h["time_min"]) and _finite(p["time_min"])
    }

    ratios: dict[str, dict] = {}
    for peer in ("torchdiffeq dopri5", "scipy RK45 round trip"):
        if peer in skipped:
            continue
        ratios[peer] = {
            ours: compare(points, peer, ours) for ours in ("pysens Tsit5", "pysens DP5", "pysens scipy DP5")
        }
        ratios[peer]["hutchinson: pysens Tsit5"] = compare(hpoints, peer, HEADLINE)
    if "torchdiffeq dopri5" not in skipped:
        ratios["torchdiffeq dopri5 float32"] = {
            "pysens Tsit5 float32": compare(points, "torchdiffeq dopri5 float32", "pysens Tsit5 float32")
        }
    targets = []
    for peer in ("torchdiffeq dopri5", "scipy RK45 round trip"):
        target = TARGETS[peer]
        if peer in skipped:
            targets.append(
                {"target": f"pysens ≥ {target:g}× faster than {peer}", "met": None, "skipped": skipped[peer]}
            )
            continue
        r = ratios[peer][HEADLINE]
        targets.append(
            {
                "target": f"{HEADLINE} ≥ {target:g}× faster than {peer} at matched error (exact divergence, float64)",
                "ratio_geomean": r["geomean"],
                "ratio_min": r.get("min"),
                "ratio_max": r.get("max"),
                "met": None if r["geomean"] is None else bool(r["geomean"] >= target),
            }
        )
    return {
        "problem": {
            "mixture": {"dim": cfg.dim, "components": cfg.components, "covariances": "full", "seed": cfg.seed},
            "process": process.config(),
            "batch": cfg.batch,
            "t0": t0,
            "error": "mean_b |log p_model(x_b) − log p_t0(x_b)| (closed form), exact terminal density log p_T",
        },
        "reference_check": reference_check,
        "points": points,
        "score_share": score_share,
        "hutchinson": {
            "probes": "1 Rademacher probe per sample, the same numbers on every path",
            "error": "solver error: mean |ll − ll_ref| against pysens Tsit5 at the reference tolerance, same probe; "
            "estimator_error: mean |ll − log p_t0| against the exact density",
            "points": hpoints,
            "exact_vs_hutchinson": exact_vs_hutchinson,
        },
        "ratios": ratios,
        "targets": targets,
        "skipped": skipped,
    }


# ---------------------------------------------------------------------------------------------------------------------
# workload 2: PF-ODE sampling of a digits model


def torchdiffeq_sample(score, process: ForwardProcess, x_T: Tensor, *, t1: float, rtol: float, atol: float):
    """The PF-ODE from T down to t1 by ``torchdiffeq.odeint`` dopri5 (one step size for the batch, the last step
    clipped onto t1 by ``step_t``: see :func:`torchdiffeq_log_likelihood`); (x, nf)."""
    from torchdiffeq import odeint

    drift = pf_ode_drift(score, process)
    calls = 0

    def func(t: Tensor, x: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return drift(t, x)

    ts = torch.tensor([process.T, t1], dtype=x_T.dtype, device=x_T.device)
    with torch.no_grad():
        xs = odeint(func, x_T, ts, rtol=rtol, atol=atol, method="dopri5", options={"step_t": ts})
    return xs[-1], calls


_DIGITS_MODEL: dict = {}


def digits_model(cfg: argparse.Namespace, say: Callable[[str], None]) -> tuple[torch.nn.Module, dict]:
    """The digits ``ConvScore`` (trained once per run with a fixed seed, or loaded from ``--checkpoint``)."""
    key = (cfg.checkpoint, cfg.train_steps, cfg.base_channels, cfg.seed, cfg.device)
    if key in _DIGITS_MODEL:
        return _DIGITS_MODEL[key]
    process = VP()
    if cfg.checkpoint:
        model = load_checkpoint(cfg.checkpoint, map_location=cfg.device)
        info = {"checkpoint": str(cfg.checkpoint), "parameters": sum(p.numel() for p in model.parameters())}
    else:
        say(f"sampling: training ConvScore (base {cfg.base_channels}) on sklearn digits, {cfg.train_steps} DSM steps")
        torch.manual_seed(cfg.seed)
        model = ConvScore(process, channels=1, image_size=8, base_channels=cfg.base_channels).to(cfg.device)
        fit = train(model, digits(), steps=cfg.train_steps, batch_size=128, lr=2e-3, seed=cfg.seed, progress=cfg.bars)
        info = {
            "base_channels": cfg.base_channels,
            "train_steps": cfg.train_steps,
            "final_loss": float(fit.losses[-50:].mean()),
            "train_seconds": fit.wall_time,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    model.eval().requires_grad_(False)
    _DIGITS_MODEL[key] = (model, info)
    return model, info


def run_sampling(cfg: argparse.Namespace, say: Callable[[str], None]) -> dict:
    device = torch.device(cfg.device)
    model, info = digits_model(cfg, say)
    process = model.process
    t1 = process.t_eps
    x_T = process.prior_sample(
        (cfg.image_batch, 1, 8, 8),
        generator=torch.Generator(device=device).manual_seed(cfg.seed + 3),
        dtype=torch.float32,
    ).to(device)
    say(f"sampling: float64 reference (pysens Tsit5, rtol = atol = {cfg.sampling_reference_tol:g})")
    model64 = copy.deepcopy(model).double()
    ref_seconds, _, _, ref = measure(
        lambda: sample_pf_ode(
            model64, process, x_T.double(), t1=t1, rtol=cfg.sampling_reference_tol, atol=cfg.sampling_reference_tol
        ),
        device,
    )
    peers, skipped = peer_status(), {}

    def pysens_case(method: str, knobs, score=model) -> Case:
        def run(tol: float) -> Outcome:
            r = sample_pf_ode(score, process, x_T, t1=t1, method=method, rtol=tol, atol=tol)
            return Outcome(r.x, r.stats.nf, r.retcode, rows=r.solution.extra.get("f_rows"))

        return Case(f"pysens {method}", run, knobs, {"path": "pysens", "dtype": "float32"})

    def torchdiffeq_case(knobs, score=model) -> Case:
        def run(tol: float) -> Outcome:
            xx, nf = torchdiffeq_sample(score, process, x_T, t1=t1, rtol=tol, atol=tol)
            return Outcome(xx, nf)

        return Case("torchdiffeq dopri5", run, knobs, {"path": "peer", "dtype": "float32"})

    def all_cases(knobs, score=model) -> list[Case]:
        out = [pysens_case("Tsit5", knobs, score), pysens_case("DP5", knobs, score)]
        if peers["torchdiffeq"] is None:
            out.append(torchdiffeq_case(knobs, score))
        return out

    if peers["torchdiffeq"] is not None:
        skipped["torchdiffeq dopri5"] = peers["torchdiffeq"]
    cases = all_cases(cfg.sampling_tolerances)
    say(
        f"sampling: {len(cases)} setups × {len(cfg.sampling_tolerances)} tolerances × {cfg.runs} runs, "
        f"B = {x_T.shape[0]}"
    )
    points = sweep(
        cases,
        lambda o: float((o.value.double() - ref.x).abs().mean()),
        runs=cfg.runs,
        device=device,
        bar=cfg.bar,
    )

    # score-network share: one instrumented solve per setup at the middle tolerance
    tol = cfg.sampling_tolerances[len(cfg.sampling_tolerances) // 2]
    share = {}
    for name in [c.name for c in cases]:
        timed = TimedScore(model, device)
        case = next(c for c in all_cases([tol], timed) if c.name == name)
        seconds, *_ = measure(lambda case=case: case.run(tol), device)
        share[name] = {
            "tol": tol,
            "network_seconds": timed.seconds,
            "total_seconds": seconds,
            "network_share": timed.seconds / seconds,
            "network_calls": timed.calls,
        }

    ratios, same_tol = {}, {}
    if "torchdiffeq dopri5" not in skipped:
        for ours in ("pysens Tsit5", "pysens DP5"):
            ratios[ours] = compare(points, "torchdiffeq dopri5", ours)
            same_tol[ours] = {
                f"{p['tol']:g}": q["time_min"] / p["time_min"]
                for p in points
                if p["setup"] == ours
                for q in points
                if q["setup"] == "torchdiffeq dopri5" and q["tol"] == p["tol"] and _finite(p["time_min"])
            }
    return {
        "problem": {
            "model": {"class": type(model).__name__, **info},
            "process": process.config(),
            "batch": cfg.image_batch,
            "t1": t1,
            "dtype": "float32",
            "error": "mean |x − x_ref| over the batch and pixels; x_ref: the model in float64, pysens Tsit5 at the "
            "reference tolerance",
        },
        "reference": {"tol": cfg.sampling_reference_tol, "nf": ref.stats.nf, "seconds": ref_seconds},
        "points": points,
        "network_share": share,
        "ratios_matched_error": {"torchdiffeq dopri5": ratios},
        "ratios_same_tolerance": {"torchdiffeq dopri5": same_tol},
        "skipped": skipped,
    }


# ---------------------------------------------------------------------------------------------------------------------
# workload 3: sample-sensitivity cost


def run_sensitivity(cfg: argparse.Namespace, say: Callable[[str], None]) -> dict:
    from pysens.sensitivity import GaussianMixtureMeasure, ModelMeasure, data_edit, karras_timesteps, sample_sensitivity

    device = torch.device(cfg.device)
    process = VP()
    grid = karras_timesteps(process, cfg.sensitivity_steps)
    solver = {"method": "Heun", "adaptive": False, "timesteps": grid, "t1": float(grid[-1]), "rtol": 1e-3}

    model, _ = digits_model(cfg, say)
    images = digits()
    from sklearn.datasets import load_digits

    labels = torch.as_tensor(load_digits().target)
    edit = data_edit(images.shape[0], removed=images[labels == 3][:10].to(device))
    x_img = process.prior_sample(
        (cfg.image_batch, 1, 8, 8),
        generator=torch.Generator(device=device).manual_seed(cfg.seed + 4),
        dtype=torch.float32,
    ).to(device)
    gmm = gaussian_mixture(cfg.dim, cfg.components, seed=cfg.seed, process=process).to(device)
    u, lam = gmm.eigenvectors[:1], gmm.variances[:1]  # component 0's covariance, C = U diag(λ) Uᵀ
    reweight = GaussianMixtureMeasure(gmm.means[:1], u @ torch.diag_embed(lam) @ u.mT) - ModelMeasure()
    x_gmm = process.prior_sample(
        (cfg.batch, cfg.dim), generator=torch.Generator(device=device).manual_seed(cfg.seed + 5), device=device
    )
    settings = [
        ("digits ConvScore, Hutchinson, float32", model, x_img, edit.perturbation, "hutchinson"),
        (f"{cfg.dim}-D mixture, exact divergence, float64", gmm, x_gmm, reweight, "exact"),
    ]
    rows, targets = [], []
    for label, score, x_T, direction, divergence in settings:
        gen = torch.Generator(device=device)

        def sens(perturbations, score=score, x_T=x_T, divergence=divergence, gen=gen):
            gen.manual_seed(cfg.seed + 6)  # the same probes in every run
            return sample_sensitivity(
                score, process, x_T, perturbations, divergence=divergence, generator=gen, **solver
            )

        cases = {
            "a: sample": lambda score=score, x_T=x_T: sample_pf_ode(score, process, x_T, **solver),
            "b: sample + likelihood": lambda sens=sens: sens(None),
            "c: + sensitivity P=1": lambda sens=sens, direction=direction: sens([direction]),
        }
        say(f"sensitivity: {label}, B = {x_T.shape[0]}, {cfg.sensitivity_steps} Heun steps, median of {cfg.runs}")
        walls = {}
        for name, (wall, res) in timed_interleaved(cases, cfg.runs).items():
            _, peak, rss, _ = measure(cases[name], device)
            walls[name] = wall
            rows.append(
                {
                    "setting": label,
                    "case": name,
                    "batch": x_T.shape[0],
                    "nf": res.stats.nf,
                    "njvp": res.stats.njvp,
                    "wall_median_s": wall,
                    "peak_mb": peak,
                    "rss_mb": rss,
                    "retcode": res.retcode,
                }
            )
        ratio = walls["c: + sensitivity P=1"] / walls["b: sample + likelihood"]
        targets.append(
            {
                "target": f"sensitivity solve ≤ 1.25× sampling + likelihood ({label})",
                "ratio": ratio,
                "ratio_over_sampling": walls["c: + sensitivity P=1"] / walls["a: sample"],
                "met": bool(ratio <= TARGETS["sensitivity / (sampling + likelihood)"]),
            }
        )
    return {
        "problem": {
            "grid": f"Karras (rho 7), {cfg.sensitivity_steps} Heun steps, fixed (the same NFE in every case)",
            "timing": "median of --runs interleaved rounds after a warm-up (sensitivity_cost.timed_interleaved)",
            "perturbations": {
                "digits": "remove 10 images of digit 3 (data_edit)",
                "mixture": "reweight towards component 0 (GaussianMixtureMeasure − ModelMeasure)",
            },
        },
        "rows": rows,
        "targets": targets,
        "skipped": {},
    }


# ---------------------------------------------------------------------------------------------------------------------
# workload 4: reverse-SDE sampling on one Brownian path


def reverse_sde_problem(score, process: ForwardProcess, x_T: Tensor, t1: float, grid: BrownianGrid) -> SDEProblem:
    """The reverse SDE dx = [f x − g² s] dt + g dW̄ from T down to t1 on the path ``grid`` (additive noise), posed as
    :func:`~pysens.diffusion.sampling.sample_sde` poses it, so that pysens methods and torchsde solve one problem."""

    def drift(t: Tensor, x: Tensor) -> Tensor:
        return expand_as_batch(process.drift_coef(t), x) * x - expand_as_batch(process.g2(t), x) * score(x, t)

    def diffusion(t: Tensor, x: Tensor) -> Tensor:
        return expand_as_batch(process.diffusion(t), x).expand_as(x)

    return SDEProblem(drift, diffusion, x_T, (process.T, t1), noise="additive", brownian=grid, name="reverse-sde")


def run_sde(cfg: argparse.Namespace, say: Callable[[str], None]) -> dict:
    device = torch.device(cfg.device)
    process = VP()
    gmm = gaussian_mixture(cfg.dim, cfg.components, seed=cfg.seed, process=process).to(device)
    t1 = process.t_eps
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 7)
    x_T = process.prior_sample((cfg.batch, cfg.dim), generator=gen, device=device)
    grid = BrownianGrid.sample(
        (process.T, t1), cfg.fine_steps, x_T.shape, generator=gen, dtype=x_T.dtype, device=device, iterated=True
    )
    problem = reverse_sde_problem(gmm, process, x_T, t1, grid)
    span = process.T - t1
    # the reference and a check of it: two strong order-1.5 methods on the path's fine grid
    check = sample_sde(gmm, process, x_T, t1=t1, n_steps=cfg.fine_steps, method="SOSRA", brownian=grid)
    peers, skipped = peer_status(), {}
    setups = [Setup("pysens EM", "EM"), Setup("pysens SRA1", "SRA1"), Setup("pysens SOSRA", "SOSRA")]
    if peers["torchsde"] is None:
        setups += [
            torchsde_setup("torchsde euler", "euler", noise_type="diagonal"),
            torchsde_setup("torchsde srk", "srk", noise_type="additive"),  # SRA1 for additive noise: a d×d g per sample
        ]
    else:
        skipped["torchsde euler"] = skipped["torchsde srk"] = peers["torchsde"]
    say(f"sde: {len(setups)} setups × {len(cfg.sde_steps)} step counts × {cfg.runs} runs, B = {cfg.batch}")
    wp = work_precision(
        problem,
        setups,
        dts=[span / n for n in cfg.sde_steps],
        reference=Setup("pysens SRA1 (fine grid)", "SRA1"),
        reference_dt=span / cfg.fine_steps,
        brownian=grid,
        error="final",
        runs=cfg.runs,
        warmup=1,
        progress=cfg.bar,
    )
    points = []
    for p in wp.points:
        p = {k: v for k, v in p.items() if k not in ("abstol", "reltol")}
        p["steps"] = round(span / p["dt"])
        p["path"] = "peer" if p["backend"] == "torchsde" else "pysens"
        points.append(p)
    ref = sample_sde(gmm, process, x_T, t1=t1, n_steps=cfg.fine_steps, method="SRA1", brownian=grid)
    ratios = {}
    if peers["torchsde"] is None:
        for peer, ours in (
            ("torchsde euler", "pysens EM"),
            ("torchsde srk", "pysens SRA1"),
            ("torchsde srk", "pysens SOSRA"),
        ):
            ratios.setdefault(peer, {})[ours] = compare(points, peer, ours)
    return {
        "problem": {
            "mixture": {"dim": cfg.dim, "components": cfg.components, "seed": cfg.seed},
            "process": process.config(),
            "batch": cfg.batch,
            "t1": t1,
            "dtype": "float64",
            "error": "strong: mean |x(t1) − x_ref(t1)| over the batch, every solver on the same Brownian path "
            "(BrownianGrid with exact time integrals, replayed to torchsde), x_ref = pysens SRA1 on the path's "
            "fine grid",
            "fine_steps": cfg.fine_steps,
            "harness": "pysens.bench.work_precision (min of runs after a warm-up, setups one after another)",
        },
        "reference": {**wp.reference, "sosra_vs_sra1_on_fine_grid": float((check.x - ref.x).abs().mean())},
        "points": points,
        "ratios_matched_error": ratios,
        "skipped": skipped,
    }


# ---------------------------------------------------------------------------------------------------------------------
# reporting


def _fmt(v, spec: str = ".2e") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec) if math.isfinite(v) else "nan"
    return str(v)


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Rows as a fixed-width text table; ``columns`` are (key, header, format spec)."""
    cells = [[_fmt(r.get(k), spec) for k, _, spec in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, (_, h, _) in enumerate(columns)]
    line = "  ".join(h.ljust(w) for (_, h, _), w in zip(columns, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


_SWEEP_COLUMNS = [
    ("setup", "setup", ""),
    ("tol", "rtol=atol", ".0e"),
    ("error", "error", ".2e"),
    ("time_min", "time min [s]", ".3f"),
    ("nf", "nf", ""),
    ("peak_mb", "peak MB", ".1f"),
    ("rss_mb", "RSS MB", ".0f"),
    ("retcode", "retcode", ""),
]


def _ratio_lines(ratios: dict, indent: str = "  ") -> list[str]:
    lines = []
    for peer, by_ours in ratios.items():
        for ours, r in by_ours.items():
            if r.get("geomean") is None:
                lines.append(f"{indent}{peer} / {ours}: n/a ({r.get('note', '')})")
            else:
                lines.append(
                    f"{indent}{peer} / {ours}: {r['geomean']:.2f}× (range {r['min']:.2f}–{r['max']:.2f}× over errors "
                    f"{r['levels'][0]:.1e}..{r['levels'][-1]:.1e}; RHS calls {_fmt(r.get('nf_geomean'), '.2f')}×)"
                )
    return lines


def report_text(workloads: dict) -> str:
    out = []
    if "likelihood" in workloads:
        w = workloads["likelihood"]
        rc = w["reference_check"]
        out += [
            f"== likelihood: exact {w['problem']['mixture']['dim']}-D mixture, VP, B = {w['problem']['batch']}, "
            "error vs closed-form log p_t0 ==",
            f"reference check ({rc['setup']} at {rc['tol']:g}): mean |err| {rc['mean_abs_error']:.2e}, max "
            f"{rc['max_abs_error']:.2e} (< 1e-6: {rc['agrees_below_1e-6']}); prior-term gap {rc['prior_term_gap']:.2e}",
            table(w["points"], [*_SWEEP_COLUMNS[:1], ("dtype", "dtype", ""), *_SWEEP_COLUMNS[1:]]),
            "share of the solve time in the score and its divergence (the rest: solver and plumbing, per RHS call):",
            *(
                f"  {k}: {v['score_share']:.0%} (score {v['score_ms_per_call']:.2f} ms/call, rest "
                f"{v['other_ms_per_call']:.2f} ms/call, nf {v['nf']}, tol {v['tol']:g})"
                for k, v in w["score_share"].items()
            ),
            "",
            "Hutchinson (1 fixed probe; error = solver error vs tight solve, est. error vs exact density):",
            table(
                w["hutchinson"]["points"],
                [*_SWEEP_COLUMNS[:3], ("estimator_error", "est. error", ".2e"), *_SWEEP_COLUMNS[3:]],
            ),
            "speed ratio at matched error (peer time / pysens time; and the same ratio of RHS calls):",
            *_ratio_lines(w["ratios"]),
            *(f"skipped {k}: {v}" for k, v in w["skipped"].items()),
            "",
        ]
    if "sampling" in workloads:
        w = workloads["sampling"]
        out += [
            f"== sampling: PF-ODE, digits ConvScore, B = {w['problem']['batch']}, float32, error vs float64 ref ==",
            table(w["points"], _SWEEP_COLUMNS),
            "score-network share of the solve time: "
            + ", ".join(f"{k} {v['network_share']:.0%}" for k, v in w["network_share"].items()),
            "speed ratio at matched error:",
            *_ratio_lines(w["ratios_matched_error"]),
            "speed ratio at the same tolerance: "
            + "; ".join(
                f"{ours}: " + ", ".join(f"{tol} {r:.2f}×" for tol, r in v.items())
                for ours, v in w["ratios_same_tolerance"].get("torchdiffeq dopri5", {}).items()
            ),
            *(f"skipped {k}: {v}" for k, v in w["skipped"].items()),
            "",
        ]
    if "sensitivity" in workloads:
        w = workloads["sensitivity"]
        out += [
            "== sensitivity: cost of (x, ℓ, y) vs (x, ℓ) on a fixed Heun grid ==",
            table(
                w["rows"],
                [
                    ("setting", "setting", ""),
                    ("case", "case", ""),
                    ("nf", "nf", ""),
                    ("njvp", "njvp", ""),
                    ("wall_median_s", "median [s]", ".3f"),
                    ("peak_mb", "peak MB", ".1f"),
                ],
            ),
            *(f"  {t['target']}: {t['ratio']:.2f}× ({'met' if t['met'] else 'NOT met'})" for t in w["targets"]),
            *(f"skipped {k}: {v}" for k, v in w["skipped"].items()),
            "",
        ]
    if "sde" in workloads:
        w = workloads["sde"]
        out += [
            f"== sde: reverse SDE on the mixture, B = {w['problem']['batch']}, strong error on one shared path "
            "(RHS calls: drift evaluations) ==",
            f"reference: SOSRA vs SRA1 on the fine grid differ by {w['reference']['sosra_vs_sra1_on_fine_grid']:.1e}",
            table(
                w["points"],
                [("setup", "setup", ""), ("steps", "steps", "g"), *(c for c in _SWEEP_COLUMNS[2:] if c[0] != "rss_mb")],
            ),
            "speed ratio at matched error (peer time / pysens time):",
            *_ratio_lines(w["ratios_matched_error"]),
            *(f"skipped {k}: {v}" for k, v in w["skipped"].items()),
            "",
        ]
    return "\n".join(out)


def _plot_sweeps(path: Path, panels: list[tuple[str, list[dict], str, str]]) -> None:
    """One log-log panel per (title, points, error key, x label): time against error, one line per setup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.5), squeeze=False)
    for ax, (title, points, key, xlabel) in zip(axes[0], panels, strict=True):
        for name in dict.fromkeys(p["setup"] for p in points):
            sel = [
                p for p in points if p["setup"] == name and _finite(p[key]) and _finite(p["time_min"]) and p[key] > 0
            ]
            if sel:
                style = "o-" if sel[0].get("path") == "pysens" else "s--"
                ax.loglog([p[key] for p in sel], [p["time_min"] for p in sel], style, label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("time [s] (min of runs)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)


def write_figures(out: Path, workloads: dict) -> list[str]:
    written = []
    if "likelihood" in workloads:
        w = workloads["likelihood"]
        _plot_sweeps(
            out / "likelihood.png",
            [
                ("likelihood, exact divergence", w["points"], "error", "mean |log p − log p_exact|"),
                ("likelihood, Hutchinson (solver error)", w["hutchinson"]["points"], "error", "mean |ll − ll_ref|"),
            ],
        )
        written.append("likelihood.png")
    if "sampling" in workloads:
        _plot_sweeps(
            out / "sampling.png",
            [("PF-ODE sampling, digits ConvScore", workloads["sampling"]["points"], "error", "mean |x − x_ref|")],
        )
        written.append("sampling.png")
    if "sde" in workloads:
        _plot_sweeps(
            out / "sde.png",
            [("reverse SDE, strong error on one path", workloads["sde"]["points"], "error", "mean |x − x_ref|")],
        )
        written.append("sde.png")
    return written


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
    p.add_argument("--batch", type=int, default=None, help="mixture points per solve (default 256; quick 64)")
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--components", type=int, default=5)
    p.add_argument("--image-batch", type=int, default=None, help="digits per solve (default 256; quick 32)")
    p.add_argument("--train-steps", type=int, default=None, help="DSM steps for the digits model (default 1500)")
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
