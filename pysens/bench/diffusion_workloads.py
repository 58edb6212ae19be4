"""Workloads 2–4 of :mod:`pysens.bench.diffusion`: PF-ODE sampling of a digits model, the sample-sensitivity cost,
and reverse-SDE sampling on one Brownian path (see that module's docstring)."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import torch
from torch import Tensor

from pysens.bench.diffusion_likelihood import TARGETS, gaussian_mixture, peer_status
from pysens.bench.matched_error import (
    Case,
    Outcome,
    TimedScore,
    _finite,
    compare,
    measure,
    sweep,
)
from pysens.bench.peers import torchsde_setup
from pysens.bench.sensitivity_cost import timed_interleaved
from pysens.bench.work_precision import Setup, work_precision
from pysens.diffusion import VP, ConvScore, digits, load_checkpoint
from pysens.diffusion.processes import ForwardProcess, expand_as_batch
from pysens.diffusion.sampling import pf_ode_drift, sample_pf_ode, sample_sde
from pysens.diffusion.training import train
from pysens.solvers import BrownianGrid, SDEProblem

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
