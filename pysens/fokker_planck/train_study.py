"""Part (b) of the ODE–SDE gap study: train our own FP-regularised models for each w_R, measure R̃ and the gap,
and check the paper's three trends (see :mod:`pysens.fokker_planck.experiment`); with ``digits``, the same on
sklearn's 8×8 digits.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pysens.artifacts import save_figure
from pysens.ensemble.distributed import join_process_group, run_shards
from pysens.ensemble.shards import ShardPlan
from pysens.fokker_planck.bound import (
    estimate_derived_bound,
)
from pysens.fokker_planck.data import sample_toy
from pysens.fokker_planck.gap import authors_schedule, ode_sde_gap
from pysens.fokker_planck.potential import (
    AUTHORS_WEIGHTS,
    PotentialScoreNet,
)
from pysens.fokker_planck.residual import residual_functional
from pysens.fokker_planck.training import train_fp_regularised

__all__ = ["train_study"]

# CPU-sized schedules (the authors': 1e-3 / 1e-4 / 1e-5 over 25 / 65 / 10 % of 100k steps)
PRETRAIN_LR = ((2e-3, 0.6), (5e-4, 0.3), (1e-4, 0.1))
FINETUNE_LR = ((5e-4, 0.7), (1e-4, 0.3))

Log = Callable[[str], None]


def _trends(rows: dict[str, dict[str, Any]], weights: Sequence[float]) -> dict[str, Any]:
    """The three trends, each with the numbers it rests on and whether the differences clear the floor.

    A distance that is missing or NaN (every sample of a set left the grid, so grid W2 is undefined) counts as
    infinitely far: such a model is worse than any model whose samples stay on the grid."""

    def distance(v) -> float:
        return math.inf if v is None or not math.isfinite(v) else float(v)

    gap = [distance(rows[str(w)]["gap"]["ode_sde"]) for w in weights]
    ode = [distance(rows[str(w)]["gap"]["ode_truth"]) for w in weights]
    sde = [distance(rows[str(w)]["gap"]["sde_truth"]) for w in weights]
    floor = max(rows[str(w)]["gap"]["floor"] for w in weights)
    best_ode = min(ode[1:])
    return {
        "floor_max": floor,
        "gap_shrinks": {
            "values": gap,
            "holds": gap[-1] < gap[0],
            "monotone": all(b <= a for a, b in zip(gap, gap[1:], strict=False)),
            "beyond_floor": gap[0] - gap[-1] > floor,
        },
        "ode_improves_at_moderate_w": {
            "values": ode,
            "holds": best_ode < ode[0],
            "beyond_floor": ode[0] - best_ode > floor,
        },
        "sde_degrades": {"values": sde, "holds": sde[-1] > sde[0], "beyond_floor": sde[-1] - sde[0] > floor},
    }


def train_study(
    out: Path,
    *,
    datasets: Sequence[str] = ("blob",),
    weights: Sequence[float] = AUTHORS_WEIGHTS,
    steps: int = 1500,
    pretrain_steps: int = 0,
    residual_t: str = "uniform",
    dsm_batch: int = 2048,
    residual_batch: int = 1024,
    hidden: int = 64,
    gap_samples: int = 5000,
    nfe: int = 800,
    residual_points: int = 20_000,
    bound_samples: int = 1000,
    digits: bool = False,
    digits_steps: int = 1500,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    log: Log = print,
) -> dict[str, Any] | None:
    """Part (b): train PotentialScoreNet models with w_R ∈ ``weights`` on the toy ``datasets`` (and, with ``digits``,
    on sklearn's 8×8 digits with the Hutchinson Laplacian at perturbed-data points, ``digits_steps`` steps per w_R;
    see :func:`_digits_study` for its model, geometric sampler grid down to t = 1e-3 and out-of-range counts), then
    measure R̃ and the gap.

    Protocol (default, the authors'): each w_R trained from the same initialisation for ``steps`` steps of
    DSM + w_R · R² (box collocation, ``residual_t`` "uniform" t as the authors or "stratified"). With
    ``pretrain_steps`` > 0, one DSM model per dataset is trained first and each w_R fine-tunes it for ``steps``
    (w_R = 0 continues DSM alone). Defaults are sized for minutes on one CPU core, where the authors trained 100k
    steps on 200k/50k-point batches; the samplers use the authors' schedule with ``nfe`` coarse steps. With
    ``bound_samples`` the derived §3.3b bound is estimated for each model (KDE mismatch; an estimate, labelled as
    such in the report).

    Under ``torchrun -m pysens ode-sde-gap --part train …`` the w_R models of each dataset are split across the
    ranks (every rank prepares the same seeded base model); rank 0 gathers them, adds the digits study and figures,
    and returns the report, the same as one process would; other ranks return None.
    """
    results: dict[str, Any] = {}
    group = join_process_group(device)  # one process unless a launcher such as torchrun started several
    device = group.device
    schedule = authors_schedule(10.0, nfe=nfe)
    samples_for_plot: dict[str, dict[str, torch.Tensor]] = {}
    for dataset in datasets:
        rows: dict[str, Any] = {}
        samples_for_plot[dataset] = {}

        def data(n: int, g: torch.Generator, d: str = dataset) -> torch.Tensor:
            return sample_toy(d, n, g)

        torch.manual_seed(seed)
        base = PotentialScoreNet(dim=2, hidden=hidden, depth=3).to(device)
        pretrain = None
        if pretrain_steps:
            # one DSM model shared by every w_R, then an equal fine-tuning budget per w_R (FP-Diffusion fine-tunes
            # pretrained models the same way): a CPU-sized stand-in for the authors' 100k-step runs from scratch
            pretrain = train_fp_regularised(
                base,
                data,
                w_residual=0.0,
                steps=pretrain_steps,
                dsm_batch=dsm_batch,
                lr_schedule=PRETRAIN_LR,
                seed=seed,
                progress=progress,
                log_residual_every=0,
            )
            log(f"[train] {dataset}: DSM pretraining {pretrain_steps} steps, {pretrain.wall_time:.0f}s")

        def fit_weight(index: int, dataset: str = dataset, base=base) -> dict[str, Any]:
            """Train, measure and log the model of ``weights[index]`` (seeded by ``seed``, not by the rank)."""
            weight = weights[index]
            net = copy.deepcopy(base)
            fit = train_fp_regularised(
                net,
                data,
                w_residual=weight,
                steps=steps,
                dsm_batch=dsm_batch,
                residual_batch=residual_batch,
                lr_schedule=FINETUNE_LR if pretrain_steps else PRETRAIN_LR,
                residual_t=residual_t,
                seed=seed + 1,
                progress=progress,
                checkpoint_path=out / "models" / f"{dataset}_w{weight}.pt",
            )
            rf = residual_functional(
                net.potential,
                net.process,
                n_points=residual_points,
                n_slices=100,
                dtype=torch.float32,
                device=device,
                generator=torch.Generator(device=device).manual_seed(seed),
            )
            gap = ode_sde_gap(
                net,
                net.process,
                gap_samples,
                schedule=schedule,
                seed=seed,
                device=device,
                data_sampler=lambda n, g, d=dataset: sample_toy(d, n, g),
            )
            bound = (
                estimate_derived_bound(
                    net,
                    net.process,
                    n=bound_samples,
                    n_times=30,
                    seed=seed,
                    schedule=schedule,
                    dtype=torch.float32,
                    device=device,
                )
                if bound_samples
                else None
            )
            row = {
                "derived_bound_estimate": None
                if bound is None
                else {
                    "bound": bound.bound,
                    "w2_ode_sde_grid": math.sqrt(gap.grid["ode_sde"]) if math.isfinite(gap.grid["ode_sde"]) else None,
                    "label": bound.as_dict()["label"],
                },
                "training": fit.as_dict(),
                "residual": rf.as_dict(),
                "gap": gap.grid,
                "gap_sliced": gap.sliced,
                "gap_gaussian": gap.gaussian,
                "outside_grid": gap.outside,
            }
            log(
                f"[train] {dataset} w_R={weight}: fine-tuned {fit.wall_time:.0f}s, R̃ raw {rf.raw:.4g} / gauge-fixed "
                f"{rf.gauge_fixed:.4g}, W2² ODE-SDE {gap.grid['ode_sde']:.4f}, ODE-truth {gap.grid['ode_truth']:.4f}, "
                f"SDE-truth {gap.grid['sde_truth']:.4f}, floor {gap.grid['floor']:.4f}"
            )
            return {"row": row, "x_ode": gap.x_ode, "x_sde": gap.x_sde, "x_truth": gap.x_truth}

        # under torchrun the w_R models are split across the ranks (pysens.ensemble); rank 0 gathers them
        run = run_shards(ShardPlan(len(weights), 1), lambda ix: fit_weight(ix.start), group=group, kind="ode-sde-gap")
        if run is None:
            continue
        for weight, part in zip(weights, run.payloads, strict=True):
            rows[str(weight)] = part["row"]
            samples_for_plot[dataset][f"ODE w={weight:g}"] = part["x_ode"]
            samples_for_plot[dataset][f"SDE w={weight:g}"] = part["x_sde"]
            samples_for_plot[dataset]["truth"] = part["x_truth"]
        results[dataset] = {
            "models": rows,
            "trends": _trends(rows, weights),
            "pretraining": None if pretrain is None else pretrain.as_dict(),
        }
    if group.rank != 0:
        return None
    if digits:
        results["digits"] = _digits_study(out, weights, digits_steps, seed, device, progress, log)
    _plot_trained(out, samples_for_plot, results, datasets, weights)
    return {
        "results": results,
        "config": {
            "pretrain_steps": pretrain_steps,
            "pretrain_lr": PRETRAIN_LR,
            "finetune_lr": FINETUNE_LR,
            "finetune_steps": steps,
            "dsm_batch": dsm_batch,
            "residual_batch": residual_batch,
            "hidden": hidden,
            "gap_samples": gap_samples,
            "nfe": nfe,
            "schedule": schedule.name,
            "t_sampling": "T*Beta(1,2)+1e-5",
            "collocation": f"box [-3.5, 3.5]^2, t ~ U[1e-5, 10] ({residual_t} estimate)",
        },
    }


class GaussianBasePotential(PotentialScoreNet):
    """φ_θ(x, t) = MLP(t, x) + log N(x; α_t m, diag(α_t² v + β_t²)): the exact log-marginal of a diagonal Gaussian
    fitted to the data (``mean`` m, ``var`` v ``[d]``) plus a learned correction. The Gaussian term solves the
    log-FP equation exactly (R = 0), so the residual still measures the network's correction, and it gives the score
    a linear restoring force: a bare Softplus MLP's score is bounded in |x|, so any error at large t sends 64-D
    samples out to |x| ~ 10³ where nothing pulls them back (the earlier digits runs). The buffers travel in the
    state dict; rebuild with ``GaussianBasePotential(mean, var, **config)`` to reload a checkpoint."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(dim=mean.shape[-1], **kwargs)
        self.register_buffer("base_mean", mean.detach().clone().reshape(-1))
        self.register_buffer("base_var", var.detach().clone().reshape(-1))

    def potential(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        correction = super().potential(x, t)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(x.shape[0]) if t.dim() == 0 else t.reshape(x.shape[0])
        alpha = self.process.scale(t)[:, None]
        v = alpha**2 * self.base_var + self.process.sigma(t)[:, None] ** 2
        return correction - 0.5 * (((x - alpha * self.base_mean) ** 2) / v + torch.log(v)).sum(1)


# digits (d = 64): the sampler and training settings of :func:`_digits_study`
DIGITS_T_END = 1e-3  # sampling stops (and DSM/residual times start) here; the authors' 2-D runs used 1e-5
DIGITS_SAMPLER_STEPS = 200  # geometric grid from T = 10 down to DIGITS_T_END
DIGITS_SAMPLES = 2000
DIGITS_LR = ((1e-3, 0.6), (2.5e-4, 0.3), (5e-5, 0.1))
DIGITS_OUT_OF_RANGE = 10.0  # pixels live in [-1, 1]; a sample with a non-finite or |x_i| > 10 coordinate has diverged


def _count_out_of_range(x: torch.Tensor, limit: float = DIGITS_OUT_OF_RANGE) -> int:
    """Samples (rows of ``x``) with a non-finite coordinate or one beyond ``limit`` in absolute value."""
    return int(((~torch.isfinite(x)).any(1) | (x.abs() > limit).any(1)).sum())


def _digits_study(
    out: Path,
    weights: Sequence[float],
    steps: int,
    seed: int,
    device: str,
    progress: bool,
    log: Log,
    *,
    n_samples: int = DIGITS_SAMPLES,
    sampler_steps: int = DIGITS_SAMPLER_STEPS,
    t_end: float = DIGITS_T_END,
    hidden: int = 256,
    dsm_batch: int = 256,
    residual_batch: int = 128,
) -> dict[str, Any]:
    """sklearn digits (d = 64, pixels in [−1, 1]): a :class:`GaussianBasePotential` (diagonal-Gaussian log-marginal
    + MLP correction) per w_R, DSM + w_R · R² with the Hutchinson Laplacian at the DSM's perturbed points, t ≥
    ``t_end``. Both samplers start from the same prior draws and walk a geometric grid of ``sampler_steps`` steps from
    T = 10 down to ``t_end`` (explicit Euler / EM, the SDE's last step noise-free). The truth is the training digits
    resampled and noised to ``t_end`` (the law the samplers target there). Distances: sliced and Gaussian W2² (grid
    OT is 2-D only) over the finite samples, with the count of out-of-range samples (non-finite or |x_i| > 10)
    reported per set; ``trends`` as for the toys, on the sliced W2²."""
    from pysens.diffusion.datasets import digits as load_digits
    from pysens.fokker_planck.gap import geometric_schedule

    data = load_digits().reshape(-1, 64).to(device)
    schedule = geometric_schedule(10.0, t_end, sampler_steps)
    rows: dict[str, Any] = {}
    for weight in weights:
        torch.manual_seed(seed)
        net = GaussianBasePotential(data.mean(0), data.var(0), hidden=hidden, depth=3, beta=10.0).to(device)
        process = net.process
        fit = train_fp_regularised(
            net,
            data,
            w_residual=weight,
            steps=steps,
            dsm_batch=dsm_batch,
            residual_batch=residual_batch,
            lr_schedule=DIGITS_LR,
            t_eps=t_end,
            collocation="perturbed",
            laplacian="hutchinson",
            n_probes=1,
            seed=seed,
            progress=progress,
            log_residual_every=0,
            checkpoint_path=out / "models" / f"digits_w{weight}.pt",
        )

        def truth(n: int, g: torch.Generator, p: Any = process) -> torch.Tensor:
            x0 = data[torch.randint(data.shape[0], (n,), generator=g, device=data.device)]
            t = torch.tensor(t_end, dtype=x0.dtype, device=x0.device)
            noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype, device=x0.device)
            return p.scale(t) * x0 + p.sigma(t) * noise

        gap = ode_sde_gap(
            net, process, n_samples, dim=64, schedule=schedule, seed=seed, device=device, data_sampler=truth
        )
        out_of_range = {name: _count_out_of_range(x) for name, x in (("ode", gap.x_ode), ("sde", gap.x_sde))}
        rows[str(weight)] = {
            "training": fit.as_dict(),
            "gap": gap.sliced,
            "gap_sliced": gap.sliced,
            "gap_gaussian": gap.gaussian,
            "out_of_range": out_of_range,
            "max_abs": {"ode": float(gap.x_ode.abs().max()), "sde": float(gap.x_sde.abs().max())},
            "sampling_wall_time": gap.info["sampling_wall_time"],
        }
        log(
            f"[digits] w_R={weight}: trained {fit.wall_time:.0f}s (final DSM {fit.as_dict()['final_dsm']:.3g}, "
            f"R² {fit.as_dict()['final_residual']}), sliced W2² ODE-SDE {gap.sliced['ode_sde']:.4g}, ODE-truth "
            f"{gap.sliced['ode_truth']:.4g}, SDE-truth {gap.sliced['sde_truth']:.4g}, floor {gap.sliced['floor']:.4g}; "
            f"out of range (non-finite or |x| > {DIGITS_OUT_OF_RANGE:g}) ODE {out_of_range['ode']}, SDE "
            f"{out_of_range['sde']} of {n_samples}"
        )
    base = rows[str(weights[0])]["gap"]
    return {
        "models": rows,
        "trends": _trends(rows, weights),
        "sanity": {
            "all_in_range": all(sum(r["out_of_range"].values()) == 0 for r in rows.values()),
            "first_w_sde_truth_over_floor": base["sde_truth"] / base["floor"],
        },
        "config": {
            "model": f"GaussianBasePotential(d=64, hidden={hidden}, depth=3, softplus beta=10)",
            "steps": steps,
            "lr": DIGITS_LR,
            "dsm_batch": dsm_batch,
            "residual_batch": residual_batch,
            "t_end": t_end,
            "schedule": schedule.name,
            "samples": n_samples,
        },
        "note": f"truth = the 1797 training digits resampled and noised to t_end = {t_end:g} (so the floor is a "
        "resampling floor); samplers stop at t_end, not 0; distances are sliced W2² (200 projections)",
    }


def _plot_trained(out: Path, samples: dict, results: dict, datasets: Sequence[str], weights: Sequence[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for dataset in datasets:
        panels = samples[dataset]
        fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.4))
        for ax, (title, x) in zip(axes, sorted(panels.items(), key=lambda kv: kv[0] != "truth"), strict=True):
            ax.hist2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=64, range=[[-3.5, 3.5], [-3.5, 3.5]], cmap="magma")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"our models on {dataset}: sample densities", y=1.04)
        save_figure(fig, out / f"trained_{dataset}_densities.png")
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    for dataset in datasets:
        rows = results[dataset]["models"]
        xs = [rows[str(w)]["residual"]["raw"] for w in weights]
        ys = [rows[str(w)]["gap"]["ode_sde"] for w in weights]
        ax.loglog(xs, ys, "o-", label=f"{dataset} (raw R̃)")
        ax.axhline(max(rows[str(w)]["gap"]["floor"] for w in weights), ls=":", lw=1)
    ax.set_xlabel("R̃ (stratified)")
    ax.set_ylabel("W2²(ODE, SDE); dotted: truth-truth floor")
    ax.set_title("our models: residual vs gap")
    ax.legend()
    save_figure(fig, out / "trained_residual_vs_gap.png")
    plt.close(fig)
