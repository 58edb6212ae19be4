"""The retraining study: predicted sample changes ε·y against the changes real retraining or fine-tuning makes.

Protocol (digest §5.1, §7.3; the paper's own protocol is not known, so every choice below is a switch):

1. Train a score network on the base training set (sklearn digits, 1797 8×8 images, by default).
2. Edit the data: remove ``count`` images of one class (``edit="remove"``), or start from the set without them and
   add them back (``edit="add"``). The edit is the direction η and ε of :func:`~pysens.sensitivity.data_edit`.
3. Predict, from the base model alone: the PF-ODE samples x(x_T) and their sensitivities y, so Δx ≈ ε·y.
4. Observe: ``mode="finetune"`` (default) fine-tunes two copies of the base model, one on the edited set and one,
   the control, on the unedited set, and Δx = x_edited − x_control (the control cancels the drift that continued
   training alone causes); ``mode="retrain"`` trains two models from one initialisation, on the base and on the
   edited set, and Δx = x_edited − x_base. The pair is trained with common random numbers: one stream of batches,
   times and noise, each model keeping only the rows of its own set (``_paired_fit``), so that SGD noise does not
   swamp the edit's effect. All samples come from the same noise x_T and the same solver.
5. Score per noise seed: cosine and Pearson correlation of ε·y with Δx, against the entropic-OT baseline
   (:func:`~pysens.sensitivity.entropic_ot_displacement`); repeat for each training seed.

Outputs in ``out``: ``retraining_study.json`` and ``retraining_study.png`` (per training seed and noise seed: base
sample, predicted change, observed change, OT prediction, edited sample; plus the edited images).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from pysens.artifacts import save_figure, write_json
from pysens.commands.retraining_study import add_arguments
from pysens.diffusion import VP, MLPScore, digits, expand_as_batch, train
from pysens.diffusion.sampling import sample_pf_ode
from pysens.sensitivity.evaluation import entropic_ot_displacement, sensitivity_correlation
from pysens.sensitivity.measures import EDIT_CONVENTIONS, data_edit
from pysens.sensitivity.ode import sample_sensitivity
from pysens.sensitivity.tangents import DIVERGENCES

__all__ = ["EDITS", "MODES", "RetrainingConfig", "add_arguments", "add_cli", "retraining_study"]

EDITS = ("remove", "add")
MODES = ("finetune", "retrain")


@dataclass
class RetrainingConfig:
    """Every knob of the study (defaults: the ~10-minute single-core run)."""

    edit: str = "remove"
    digit: int = 3
    count: int = 40
    mode: str = "finetune"
    convention: str = "mixture"
    bandwidth: float | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 10000
    finetune_steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    finetune_lr: float = 5e-4
    hidden: int = 256
    depth: int = 3
    samples: int = 32
    t1: float = 1e-3
    method: str = "Tsit5"
    rtol: float = 1e-5
    atol: float = 1e-5
    divergence: str = "exact"
    denoise: bool = True
    ot_reg: float = 0.05
    figure_seeds: int = 8

    def validate(self) -> None:
        if self.edit not in EDITS:
            raise ValueError(f"edit must be one of {EDITS}; got {self.edit!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.mode!r}")
        if self.convention not in EDIT_CONVENTIONS:
            raise ValueError(f"convention must be one of {EDIT_CONVENTIONS}; got {self.convention!r}")
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}; got {self.divergence!r}")
        if not 0 <= self.digit <= 9:
            raise ValueError(f"digit must be a class 0..9; got {self.digit}")
        for name in ("count", "steps", "finetune_steps", "batch_size", "samples", "hidden", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if not self.seeds:
            raise ValueError("seeds must list at least one training seed")


def _split(labels: Tensor, cfg: RetrainingConfig, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Masks over the whole data set of the base set and the edited set, and the indices of the moved images."""
    candidates = torch.nonzero(labels == cfg.digit).reshape(-1)
    if cfg.count > candidates.numel() - 1:
        raise ValueError(f"count ({cfg.count}) must be below the {candidates.numel()} images of class {cfg.digit}")
    g = torch.Generator().manual_seed(10_000 + seed)
    moved = candidates[torch.randperm(candidates.numel(), generator=g)[: cfg.count]]
    everything = torch.ones(labels.shape[0], dtype=torch.bool)
    without = everything.clone()
    without[moved] = False
    return (everything, without, moved) if cfg.edit == "remove" else (without, everything, moved)


def _paired_fit(
    models: tuple[nn.Module, nn.Module],
    data: Tensor,
    masks: tuple[Tensor, Tensor],
    steps: int,
    lr: float,
    cfg: RetrainingConfig,
    seed: int,
) -> list[dict]:
    """Train two models on one stream of batches, times and noise drawn from ``data`` (common random numbers):
    model k's loss keeps only the rows in its own training set ``masks[k]``, renormalised per batch, so the two runs
    differ by the edit alone and not by the sampling noise of SGD. Denoising score matching as in
    :func:`pysens.diffusion.train` (λ(t) = β_t², t ~ U[t_eps, T], Adam, cosine learning rate, gradient clipping 1)."""
    process = models[0].process
    g_data = torch.Generator().manual_seed(seed)
    g_noise = torch.Generator().manual_seed(seed + 1)
    optimizers = [torch.optim.Adam(m.parameters(), lr=lr) for m in models]
    schedules = [
        torch.optim.lr_scheduler.LambdaLR(o, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, steps) / steps)))
        for o in optimizers
    ]
    losses = [torch.zeros(steps, dtype=torch.float64) for _ in models]
    start = time.perf_counter()
    for step in range(steps):
        index = torch.randint(data.shape[0], (cfg.batch_size,), generator=g_data)
        x0 = data[index]
        t = process.t_eps + (process.T - process.t_eps) * torch.rand(cfg.batch_size, generator=g_noise)
        noise = torch.randn(x0.shape, generator=g_noise)
        alpha, beta = expand_as_batch(process.scale(t), x0), expand_as_batch(process.sigma(t), x0)
        x_t = alpha * x0 + beta * noise
        for k, (model, optimizer, schedule) in enumerate(zip(models, optimizers, schedules, strict=True)):
            weight = masks[k][index].to(x0.dtype)
            if float(weight.sum()) > 0:
                per_sample = (beta * model(x_t, t) + noise).pow(2).flatten(1).sum(1)  # the DSM residual
                loss = (weight * per_sample).sum() / weight.sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses[k][step] = loss.detach()
            schedule.step()
    wall = (time.perf_counter() - start) / len(models)
    return [{"steps": steps, "final_loss": float(v[-100:].mean()), "wall_time": wall} for v in losses]


def _samples(model, process, x_T: Tensor, cfg: RetrainingConfig) -> Tensor:
    """PF-ODE samples at t1, finished with Tweedie's denoiser D = (x + β² s)/α when ``cfg.denoise``."""
    x = sample_pf_ode(model, process, x_T, t1=cfg.t1, method=cfg.method, rtol=cfg.rtol, atol=cfg.atol).x
    if not cfg.denoise:
        return x
    with torch.no_grad():
        return (x + process.sigma(cfg.t1) ** 2 * model(x, cfg.t1)) / process.scale(cfg.t1)


def _one_seed(seed: int, data: Tensor, labels: Tensor, cfg: RetrainingConfig, quiet: bool) -> dict:
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    process = VP()
    base_mask, edited_mask, moved_index = _split(labels, cfg, seed)
    base_data, edited_data, moved = data[base_mask], data[edited_mask], data[moved_index]
    n = base_data.shape[0]
    edit = data_edit(
        n,
        removed=moved.double() if cfg.edit == "remove" else None,
        added=moved.double() if cfg.edit == "add" else None,
        convention=cfg.convention,
        bandwidth=cfg.bandwidth,
    )

    def fresh() -> MLPScore:
        torch.manual_seed(seed)  # the same initialisation for every model trained from scratch
        return MLPScore(tuple(data.shape[1:]), process, hidden=cfg.hidden, depth=cfg.depth)

    masks = (base_mask, edited_mask)
    if cfg.mode == "finetune":
        say(f"  seed {seed}: training the base model on {n} images ({cfg.steps} steps)")
        base = fresh()
        fit = train(base, base_data, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed, progress=False)
        training = {
            "base": {"steps": cfg.steps, "final_loss": float(fit.losses[-100:].mean()), "wall_time": fit.wall_time}
        }
        say(f"  seed {seed}: fine-tuning copies on the unedited (control) and edited sets ({cfg.finetune_steps} steps)")
        control, edited = copy.deepcopy(base), copy.deepcopy(base)
        fits = _paired_fit((control, edited), data, masks, cfg.finetune_steps, cfg.finetune_lr, cfg, seed + 1)
        training.update(control=fits[0], edited=fits[1])
    else:
        say(f"  seed {seed}: training from one initialisation on the base and edited sets ({cfg.steps} steps)")
        base, edited = fresh(), fresh()
        fits = _paired_fit((base, edited), data, masks, cfg.steps, cfg.lr, cfg, seed)
        control = base
        training = {"base": fits[0], "edited": fits[1]}
    for m in (base, edited, control):
        m.eval().double()

    say(f"  seed {seed}: samples and sensitivities of {cfg.samples} noise seeds (exact ε = {edit.epsilon:.4f})")
    g = torch.Generator().manual_seed(20_000 + seed)
    x_T = process.prior_sample((cfg.samples, *data.shape[1:]), generator=g, dtype=torch.float64)
    start = time.perf_counter()
    sens = sample_sensitivity(
        base,
        process,
        x_T,
        [edit.perturbation],
        t1=cfg.t1,
        method=cfg.method,
        rtol=cfg.rtol,
        atol=cfg.atol,
        divergence=cfg.divergence,
        generator=torch.Generator().manual_seed(30_000 + seed),
        denoise=cfg.denoise,
    )
    sensitivity_time = time.perf_counter() - start
    predicted = sens.predicted_change(edit.epsilon)[0]
    x_edited = _samples(edited, process, x_T, cfg)
    x_control = _samples(control, process, x_T, cfg) if cfg.mode == "finetune" else sens.x
    actual = x_edited - x_control
    ot_predicted = entropic_ot_displacement(sens.x, base_data.double(), edited_data.double(), reg=cfg.ot_reg)
    ours = sensitivity_correlation(predicted, actual)
    baseline = sensitivity_correlation(ot_predicted, actual)
    # distance of each base sample to the nearest moved image: the sensitivity should live near the edit (§2.4),
    # so the correlations are also reported for the samples nearer than the median and the rest
    nearest = torch.cdist(sens.x.flatten(1), moved.double().flatten(1)).min(1).values
    near = nearest <= nearest.median()
    by_distance = {
        label: {
            "samples": int(mask.sum()),
            "mean_cosine": float(ours.cosine[mask].nanmean()),
            "ot_mean_cosine": float(baseline.cosine[mask].nanmean()),
        }
        for label, mask in (("near_edit", near), ("far_from_edit", ~near))
    }
    return {
        "seed": seed,
        "n_base": n,
        "n_moved": moved.shape[0],
        "epsilon": edit.epsilon,
        "training": training,
        "sensitivity": {
            "retcode": sens.retcode,
            "wall_time": sensitivity_time,
            **sens.stats.as_dict(),
        },
        "correlation": ours.as_dict(),
        "ot_correlation": baseline.as_dict(),
        "norms": {
            "predicted": predicted.flatten(1).norm(dim=1),
            "actual": actual.flatten(1).norm(dim=1),
            "ot": ot_predicted.flatten(1).norm(dim=1),
        },
        "distance_to_edit": nearest,
        "by_distance": by_distance,
        "_arrays": {
            "x": sens.x,
            "predicted": predicted,
            "actual": actual,
            "ot": ot_predicted,
            "edited": x_edited,
            "moved": moved,
        },
    }


def retraining_study(out: str | Path, config: RetrainingConfig | None = None, *, quiet: bool = False) -> dict:
    """Run the study (module docstring) and write ``retraining_study.json`` and ``.png`` into ``out``.

    Returns the report (also in the JSON): the config, per training seed the per-noise-seed cosine and Pearson
    correlations of ε·y and of the OT baseline with the observed change, their means, norms and solver stats, and a
    ``summary`` averaged over training seeds.
    """
    cfg = config or RetrainingConfig()
    cfg.validate()
    out = Path(out)
    start = time.perf_counter()
    data = digits()
    from sklearn.datasets import load_digits

    labels = torch.as_tensor(load_digits().target)
    if not quiet:
        print(f"retraining study: {cfg.edit} {cfg.count} images of class {cfg.digit}, {cfg.mode}, seeds {cfg.seeds}")
    runs = [_one_seed(seed, data, labels, cfg, quiet) for seed in cfg.seeds]
    arrays = [run.pop("_arrays") for run in runs]

    def mean_of(key: str, stat: str) -> float:
        return sum(r[key][stat] for r in runs) / len(runs)

    summary = {
        "mean_cosine": mean_of("correlation", "mean_cosine"),
        "mean_pearson": mean_of("correlation", "mean_pearson"),
        "ot_mean_cosine": mean_of("ot_correlation", "mean_cosine"),
        "ot_mean_pearson": mean_of("ot_correlation", "mean_pearson"),
        "near_edit_mean_cosine": sum(r["by_distance"]["near_edit"]["mean_cosine"] for r in runs) / len(runs),
        "near_edit_ot_mean_cosine": sum(r["by_distance"]["near_edit"]["ot_mean_cosine"] for r in runs) / len(runs),
        "per_training_seed": {
            r["seed"]: {
                "mean_cosine": r["correlation"]["mean_cosine"],
                "mean_pearson": r["correlation"]["mean_pearson"],
                "ot_mean_cosine": r["ot_correlation"]["mean_cosine"],
                "ot_mean_pearson": r["ot_correlation"]["mean_pearson"],
            }
            for r in runs
        },
    }
    report = {
        "study": "retraining",
        "config": asdict(cfg),
        "runs": runs,
        "summary": summary,
        "wall_time": time.perf_counter() - start,
    }
    _plot(out / "retraining_study.png", runs, arrays, cfg)
    write_json(out / "retraining_study.json", report)
    return report


def _plot(path: Path, runs: list[dict], arrays: list[dict], cfg: RetrainingConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["base sample", "predicted ε·y", "observed Δx", "OT prediction", "edited sample"]
    cols = min(cfg.figure_seeds, cfg.samples)
    fig, axes = plt.subplots(
        len(runs) * (len(rows) + 1), cols, figsize=(1.3 * cols, 1.35 * len(runs) * (len(rows) + 1)), squeeze=False
    )
    for r, (run, arr) in enumerate(zip(runs, arrays, strict=True)):
        top = r * (len(rows) + 1)
        images = [arr["x"], arr["predicted"], arr["actual"], arr["ot"], arr["edited"]]
        for i, (label, block) in enumerate(zip(rows, images, strict=True)):
            for j in range(cols):
                ax = axes[top + i, j]
                img = block[j].reshape(8, 8).cpu().numpy()
                if i in (1, 2, 3):
                    # changes share one symmetric colour scale per sample, so predicted and observed compare directly
                    lim = max(float(b[j].abs().max()) for b in images[1:4]) or 1.0
                    ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
                else:
                    ax.imshow(img, cmap="gray", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(label, fontsize=7)
                if i == 2:
                    c = run["correlation"]["cosine"][j]
                    o = run["ot_correlation"]["cosine"][j]
                    ax.set_title(f"cos {c:.2f} / OT {o:.2f}", fontsize=6)
        moved = arr["moved"]
        for j in range(cols):
            ax = axes[top + len(rows), j]
            ax.axis("off")
            if j < moved.shape[0]:
                ax.imshow(moved[j].reshape(8, 8).cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
        verb = "removed" if cfg.edit == "remove" else "added"
        axes[top + len(rows), 0].set_title(f"{verb} images (seed {run['seed']})", fontsize=7, loc="left")
    ours = sum(r["correlation"]["mean_cosine"] for r in runs) / len(runs)
    ot = sum(r["ot_correlation"]["mean_cosine"] for r in runs) / len(runs)
    title = f"{cfg.edit} {cfg.count} × digit {cfg.digit}, {cfg.mode}: mean cosine {ours:.3f} (OT {ot:.3f})"
    fig.suptitle(title, fontsize=9)
    # a tall grid: keep the default 12% top margin from becoming a blank band
    fig.subplots_adjust(top=1.0 - 0.45 / fig.get_figheight(), hspace=0.35)
    save_figure(fig, path)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> RetrainingConfig:
    names = RetrainingConfig.__dataclass_fields__
    return RetrainingConfig(**{k: v for k, v in vars(args).items() if k in names})


def run_from_args(args: argparse.Namespace) -> int:
    """Run the study from parsed arguments and print its summary; the exit status."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = config_from_args(args)
        cfg.validate()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = retraining_study(args.out, cfg, quiet=args.quiet)
    s = report["summary"]
    print(f"  sensitivity: mean cosine {s['mean_cosine']:.3f}, mean Pearson {s['mean_pearson']:.3f}")
    print(f"  entropic OT: mean cosine {s['ot_mean_cosine']:.3f}, mean Pearson {s['ot_mean_pearson']:.3f}")
    print(f"  wall time {report['wall_time']:.1f} s; wrote {Path(args.out) / 'retraining_study.json'} and .png")
    return 0 if all(math.isfinite(s[k]) for k in ("mean_cosine", "mean_pearson")) else 1


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register the ``retraining-study`` verb on an argparse ``subparsers`` object (``pysens retraining-study``); its
    options live in :mod:`pysens.commands.retraining_study` (light, so that ``--help`` imports no torch)."""
    from pysens.commands import add_verb, verb_module

    return add_verb(subparsers, verb_module("retraining-study"))
