"""Workload 1 of :mod:`pysens.bench.diffusion`: log p_{t0}(x) of an exact Gaussian mixture, pysens against the
matched-RHS peer paths (the pipelines of :mod:`pysens.bench.likelihood_peers` driving pysens's augmented field, so
the solver and its plumbing are the only difference; see :mod:`pysens.bench.diffusion`'s docstring)."""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from pysens.bench.likelihood_peers import PeerLikelihood, kdiffusion_log_likelihood, score_sde_log_likelihood
from pysens.bench.matched_error import (
    Case,
    Outcome,
    TimedScore,
    _finite,
    compare,
    measure,
    sweep,
)
from pysens.bench.peers import BENCH_EXTRA, available_peers
from pysens.derivatives.autotune import callable_key
from pysens.diffusion import VP, GaussianMixtureScore
from pysens.diffusion.divergence import exact_divergence, hutchinson_divergence, hutchinson_probes
from pysens.diffusion.likelihood import log_likelihood
from pysens.diffusion.processes import ForwardProcess, expand_as_batch

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
    Hutchinson's with the fixed ``probes`` ``[K, B, *event]``: the same field and divergence pysens integrates.

    The exact divergence is computed as :func:`pysens.diffusion.likelihood.log_likelihood` computes it: the score's
    own closed form when it has one (``score.score_and_divergence``), otherwise the ``"auto"`` engine cached under the
    score object (keyed on the per-call closure it would measure every engine at every right-hand-side call)."""
    analytic = getattr(score, "score_and_divergence", None)
    engine_key = ("score", callable_key(score))

    def field_(t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        def s(u: Tensor) -> Tensor:
            return score(u, t)

        if probes is None:
            closed_form = None if analytic is None else (lambda u: analytic(u, t))
            value, div = exact_divergence(s, x, analytic=closed_form, key=engine_key)
        else:
            value, div = hutchinson_divergence(s, x, probes)
        f, g2 = process.drift_coef(t).to(x.dtype), process.g2(t).to(x.dtype)
        d = x[0].numel()
        dx = expand_as_batch(f, x) * x - 0.5 * expand_as_batch(g2, x) * value
        ddelta = d * f.expand(x.shape[0]) - 0.5 * g2 * div
        return dx, ddelta

    return field_


def _matched_rhs(pipeline: Callable[..., PeerLikelihood], doc: str) -> Callable[..., PeerLikelihood]:
    """``pipeline`` (a :mod:`pysens.bench.likelihood_peers` path) driving pysens's augmented field
    (:func:`augmented_field`, exact divergence or Hutchinson with ``probes``) instead of its own divergence."""

    def run(
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
        field = augmented_field(score, process, probes)
        return pipeline(
            score, process, x, t0=t0, rtol=rtol, atol=atol, terminal_log_density=terminal_log_density, field=field
        )

    run.__doc__ = doc
    return run


torchdiffeq_log_likelihood = _matched_rhs(
    kdiffusion_log_likelihood,
    """k-diffusion's likelihood path (:func:`~pysens.bench.likelihood_peers.kdiffusion_log_likelihood`: torchdiffeq
    dopri5 on the tuple state (x, Δ), one step size for the batch, the crossing step clipped onto T) driving pysens's
    augmented field.""",
)
scipy_rk45_log_likelihood = _matched_rhs(
    score_sde_log_likelihood,
    """score_sde's likelihood path (:func:`~pysens.bench.likelihood_peers.score_sde_log_likelihood`: one float64 numpy
    vector, ``solve_ivp(method="RK45")``, numpy → torch → numpy every call) driving pysens's augmented field.""",
)


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
    # where the time goes: one solve per path with the score-and-divergence evaluations timed (the mixture's closed
    # form, through TimedScore as in the sweep); the rest is the solver's own work and the plumbing around it
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
