"""The SIEM correlation study on sklearn digits: checkpoints along training, SIEM and μ_t vs sample-quality targets.

Digest seed002 §5.3 (the protocol to reproduce, at toy scale). Steps:

1. Train MLP score networks (one per width) on the 1797 sklearn 8×8 digits in [−1, 1] (d = 64), on the VP process
   that matches the linear DDPM schedule exactly (:meth:`DDPMSchedule.vp_process`), saving a checkpoint at
   log-spaced training steps (≥ 12 configurations in all). Training runs in chunks of ``pysens.diffusion.train``
   with a constant learning rate, one chunk per checkpoint (Adam's moments restart at each chunk: ``train`` saves
   one path per call).
2. For every checkpoint and run (seed): one full ancestral trajectory (T = 1000 steps, N particles) streaming the
   statistics of :func:`~pysens.spde.ddpm.sample_with_statistics`; SIEM A/B/C and ‖μ‖ (both candidates) over the
   full trajectory and over the first 10% (timesteps 999…900) from the *same* run (a window-only run with the same
   seed draws the same numbers and stops after 100 network evaluations per particle).
3. Targets on the final samples against held-out real digits: exact W2 (POT) **in the 64-pixel space**, sliced W2
   (pixel space), and an **FID-style** Fréchet distance in the penultimate-layer features of a small MLP digit
   classifier trained here on the labels (not Inception; not comparable with published FIDs).
4. Spearman/Pearson/Kendall between every metric (averaged over runs) and every target across configurations, with
   percentile bootstrap intervals; a figure like the paper's Fig. 2 (metrics vs training step) and the μ_t curves;
   the network evaluations the 10% window saves.

MNIST-5k is not included: nothing can be downloaded here.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from pysens.artifacts import save_figure, write_json
from pysens.commands.siem_study import add_arguments as add_arguments  # re-exported for benchmarks/siem_study.py
from pysens.diffusion import MLPScore, digits, read_checkpoint, train
from pysens.ensemble.distributed import join_process_group, run_shards
from pysens.ensemble.shards import ShardPlan
from pysens.progress import phase_bar, say
from pysens.runtime import apply_runtime_options

from .ddpm import WhiteNoisePlugin, sample_with_statistics
from .metrics import FeatureClassifier, correlate, frechet_distance, sliced_w2, w2_distance
from .schedules import DDPMSchedule, window_steps
from .siem import SIEMConfig, mu_from_stats, siem_from_stats
from .test_functions import RadialQuadratic

__all__ = ["StudyConfig", "check_checkpoints", "run_study", "training_milestones"]

WINDOWS = {"full": (1.0, "full"), "first10": (0.1, "start_of_sampling")}
TARGETS = ("fid_style", "w2_pixel", "sw2_pixel")


@dataclass
class StudyConfig:
    """Sizes of the study; the defaults run in under ~10 minutes on one CPU core.

    Attributes:
        out: output folder. checkpoints: checkpoints per width (log-spaced in training steps from ``first_step`` to
        ``train_steps``). widths: MLP hidden widths (one training run each). n_particles, n_runs: sampler particles
        and seeds per configuration. n_targets: real digits held out for the targets (the rest train the models).
        white_stride_window / white_stride_full: SIEM-C classifier fits every this many steps.
        classifier_steps: Adam steps of the FID-style feature classifier.
    """

    out: str = "runs/siem_study"
    checkpoints: int = 12
    first_step: int = 20
    train_steps: int = 3000
    widths: tuple[int, ...] = (128,)
    depth: int = 3
    batch_size: int = 256
    lr: float = 2e-3
    n_particles: int = 500
    n_runs: int = 3
    n_targets: int = 500
    white_stride_window: int = 10
    white_stride_full: int = 100
    n_boot: int = 1000
    classifier_steps: int = 600
    seed: int = 0
    device: str = "cpu"
    progress: bool = False  # tqdm bars (stderr) over the training checkpoints and the sampled configurations
    extra: dict = field(default_factory=dict)


def training_milestones(first: int, last: int, count: int) -> list[int]:
    """``count`` distinct integer training steps, log-spaced from ``first`` to ``last``."""
    if count < 1 or first < 1 or last < first:
        raise ValueError(f"need count >= 1 and 1 <= first <= last, got {count}, {first}, {last}")
    steps = sorted({int(round(first * (last / first) ** (i / max(count - 1, 1)))) for i in range(count)})
    if len(steps) < count:
        raise ValueError(f"{count} distinct checkpoints do not fit between steps {first} and {last}")
    return steps


def check_checkpoints(paths: list[Path]) -> list:
    """Load checkpoints and check they are comparable: same network family, process and event shape.

    Raises ``ValueError`` naming the first mismatching file (mixing, e.g., a VP and a VE model or 8×8 and 28×28
    images would make the correlation table meaningless).
    """
    if not paths:
        raise ValueError("no checkpoints given")
    loaded = [read_checkpoint(p) for p in paths]
    ref = loaded[0]
    keys = ("process", "event_shape")
    for path, ck in zip(paths, loaded, strict=True):
        if type(ck.model) is not type(ref.model):
            raise ValueError(
                f"mismatched checkpoints: {path} is a {type(ck.model).__name__}, {paths[0]} a "
                f"{type(ref.model).__name__}"
            )
        for k in keys:
            if ck.config.get(k) != ref.config.get(k):
                raise ValueError(
                    f"mismatched checkpoints: {path} has {k}={ck.config.get(k)!r} but {paths[0]} has "
                    f"{ref.config.get(k)!r}"
                )
    return loaded


def _digits_with_labels() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    return digits(), torch.as_tensor(load_digits().target, dtype=torch.int64)


def _train_checkpoints(cfg: StudyConfig, data: Tensor, process, out: Path, log) -> list[dict]:
    rows = []
    milestones = training_milestones(cfg.first_step, cfg.train_steps, cfg.checkpoints)
    for width in cfg.widths:
        torch.manual_seed(cfg.seed)
        model = MLPScore(tuple(data.shape[1:]), process, hidden=width, depth=cfg.depth).to(cfg.device)
        done = 0
        for i, step in enumerate(phase_bar(milestones, f"training width {width}", disable=not cfg.progress)):
            path = out / "checkpoints" / f"mlp_w{width}_step{step:06d}.pt"
            result = train(
                model,
                data,
                steps=step - done,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                seed=cfg.seed + i,
                lr_schedule="constant",
                progress=False,
                checkpoint_path=path,
            )
            done = step
            rows.append(
                {
                    "path": str(path),
                    "width": width,
                    "step": step,
                    "loss": float(result.losses[-min(50, result.steps) :].mean()),
                }
            )
            log(f"  width {width}: step {step:5d}, loss {rows[-1]['loss']:.4f} ({result.wall_time:.1f} s)")
    return rows


def _relative_to(path: str, folder: Path) -> str:
    """``path`` relative to ``folder`` when it lies inside it, else unchanged."""
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return path


def run_study(cfg: StudyConfig, log=print) -> dict | None:
    """Run the study end to end; writes ``report.json``, ``fig2_metrics_vs_training.png`` and ``mu_curves.png``
    into ``cfg.out`` and returns the report. Under ``torchrun -m pysens siem-study …`` rank 0 trains, the
    checkpoints' sampling is split across the ranks, and rank 0 writes the report (the other ranks return None)."""
    start = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = _digits_with_labels()
    gen = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(images.shape[0], generator=gen)
    held, train_idx = perm[: cfg.n_targets], perm[cfg.n_targets :]
    train_data, real = images[train_idx], images[held]
    schedule = DDPMSchedule.linear()
    process = schedule.vp_process()
    data_mean = train_data.reshape(train_data.shape[0], -1).mean(0).double()
    event = tuple(images.shape[1:])

    log(f"[1/4] training {len(cfg.widths)} width(s) x {cfg.checkpoints} checkpoints on {train_data.shape[0]} digits")
    t_train = time.perf_counter()
    group = join_process_group(cfg.device)  # one process unless a launcher such as torchrun started several
    device = group.device
    rows = _train_checkpoints(cfg, train_data, process, out, log) if group.rank == 0 else None
    if group.distributed:  # rank 0 trains (checkpoints continue each other); the others wait for the list
        # and take rank 0's global RNG state after training, which the classifier's initialisation draws from
        cuda = device.type == "cuda"
        shared = [rows, torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None]
        torch.distributed.broadcast_object_list(shared, src=0)
        rows = shared[0]
        torch.set_rng_state(shared[1])
        if cuda:
            torch.cuda.set_rng_state(shared[2])
    t_train = time.perf_counter() - t_train
    loaded = check_checkpoints([Path(r["path"]) for r in rows])

    log("[2/4] feature classifier for the FID-style distance (MLP on digit labels; not Inception)")
    classifier = FeatureClassifier(math.prod(event))
    accuracy = classifier.fit(images.reshape(images.shape[0], -1), labels, steps=cfg.classifier_steps, seed=cfg.seed)
    real_features = classifier.features(real.reshape(real.shape[0], -1)).detach()

    log(f"[3/4] sampling {len(rows)} configurations x {cfg.n_runs} runs x {cfg.n_particles} particles (T = 1000)")
    phi = RadialQuadratic()
    siem_cfg = SIEMConfig(n_particles=cfg.n_particles, n_runs=cfg.n_runs)
    positions = {name: window_steps(schedule.T, frac, where) for name, (frac, where) in WINDOWS.items()}
    white_at = frozenset(list(positions["first10"])[:: cfg.white_stride_window]) | frozenset(
        list(positions["full"])[:: cfg.white_stride_full]
    )
    white = WhiteNoisePlugin(positions=white_at, reference_mean=data_mean)
    t_sample = time.perf_counter()
    ticks = iter(phase_bar(range(len(rows)), "sampling", disable=not cfg.progress))  # one tick per configuration

    def measure(index: int) -> dict:
        """Metrics of configuration ``index`` (every random number is seeded by the run, not by the rank)."""
        next(ticks, None)
        row, ck = rows[index], loaded[index]
        model = ck.model.to(device).eval()
        per_run: dict[str, list[float]] = {}
        curves = []
        for r in range(cfg.n_runs):
            g = torch.Generator(device=device).manual_seed(cfg.seed + 1000 + r)
            stats = sample_with_statistics(
                model,
                event,
                cfg.n_particles,
                schedule,
                process=process,
                test_functions={"phi": phi},
                white=white,
                generator=g,
                device=device,
            )
            mu = mu_from_stats(stats, data_mean)
            curves.append({k: v.cpu() for k, v in mu.items()})
            for wname, pos in positions.items():
                for key, v in siem_from_stats(stats, siem_cfg, pos).items():
                    per_run.setdefault(f"siem_{key}_{wname}", []).append(v)
                for key, v in mu.items():
                    per_run.setdefault(f"mu_{key}_{wname}", []).append(float(v[list(pos)].mean()))
            samples = stats.final.detach().cpu().clamp(-1.5, 1.5)
            feats = classifier.features(samples.reshape(samples.shape[0], -1)).detach()
            per_run.setdefault("fid_style", []).append(frechet_distance(feats, real_features))
            per_run.setdefault("w2_pixel", []).append(w2_distance(samples, real))
            per_run.setdefault("sw2_pixel", []).append(sliced_w2(samples, real, seed=cfg.seed + r))
        metrics = {k: float(torch.tensor(v).mean()) for k, v in per_run.items()}
        log(
            f"  step {row['step']:5d} w{row['width']}: FID-style {metrics['fid_style']:.3f}, "
            f"W2 {metrics['w2_pixel']:.3f}, SIEM-A(10%) {metrics['siem_A_first10']:.3e}, "
            f"|mu_eps|(10%) {metrics['mu_eps_mean_first10']:.4f}"
        )
        return {
            "metrics": metrics,
            "metrics_std": {k: float(torch.tensor(v).std()) if len(v) > 1 else 0.0 for k, v in per_run.items()},
            "mu_curve": {k: torch.stack([c[k] for c in curves]).mean(0) for k in curves[0]},
        }

    # under torchrun the configurations are split across the ranks (pysens.ensemble); rank 0 gathers and reports
    run = run_shards(ShardPlan(len(rows), 1), lambda ix: measure(ix.start), group=group, kind="siem-study")
    if run is None:
        return None
    for row, part in zip(rows, run.payloads, strict=True):
        row["metrics"], row["metrics_std"] = part["metrics"], part["metrics_std"]
    mu_curves_per_config = [part["mu_curve"] for part in run.payloads]
    t_sample = time.perf_counter() - t_sample

    log("[4/4] correlations with bootstrap intervals")
    metric_names = [k for k in rows[0]["metrics"] if k not in TARGETS]
    table = {
        m: {
            t: correlate(
                [r["metrics"][m] for r in rows], [r["metrics"][t] for r in rows], n_boot=cfg.n_boot, seed=cfg.seed
            )
            for t in TARGETS
        }
        for m in metric_names
    }
    nfe = {
        "siem_first10_per_particle": len(positions["first10"]),
        "full_trajectory_per_particle": schedule.T,
        "ratio": len(positions["first10"]) / schedule.T,
        "saved_per_configuration": (schedule.T - len(positions["first10"])) * cfg.n_particles * cfg.n_runs,
    }
    report = {
        # paths relative to the report's own folder: the study may run in a staging folder that is moved into place
        # (``pysens bench siem``), and a report must not point at a folder that is gone
        "config": asdict(cfg) | {"out": "."},
        "spaces": {
            "w2_pixel": "exact W2 (POT emd2) in the 64-pixel space of 8x8 digits in [-1, 1]",
            "sw2_pixel": "sliced W2 (POT, 200 projections) in the same pixel space",
            "fid_style": "Frechet distance in the 32-d penultimate features of an in-project MLP digit classifier "
            f"(train accuracy {accuracy:.3f}); not Inception, not FID",
        },
        "test_function": "phi(x) = |x|^2/d",
        "windows": {"full": "timesteps 999..0 (1000 reverse steps)", "first10": "timesteps 999..900 (100 steps)"},
        "configurations": [r | {"path": _relative_to(r["path"], out)} for r in rows],
        "correlations": table,
        "nfe": nfe,
        "wall_time": {"train": t_train, "sample_and_targets": t_sample, "total": time.perf_counter() - start},
    }
    write_json(out / "report.json", report)
    _figure(rows, out / "fig2_metrics_vs_training.png")
    _mu_figure(rows, mu_curves_per_config, out / "mu_curves.png")
    _print_table(table, log)
    log(
        f"NFE per particle: SIEM first 10% = {nfe['siem_first10_per_particle']}, full trajectory = "
        f"{nfe['full_trajectory_per_particle']} (ratio {nfe['ratio']:.2f})"
    )
    log(
        f"wrote {out / 'report.json'}, {out / 'fig2_metrics_vs_training.png'}, {out / 'mu_curves.png'} "
        f"({report['wall_time']['total']:.0f} s)"
    )
    return report


def _print_table(table: dict, log) -> None:
    head = f"{'metric':<26}" + "".join(f"{t + ' spearman [95% CI]':>36}" for t in TARGETS)
    log(head)
    for m, row in table.items():
        cells = []
        for t in TARGETS:
            c = row[t]["spearman"]
            cells.append(f"{c['r']:>+8.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}]".rjust(36))
        log(f"{m:<26}" + "".join(cells))


def _figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (
            "targets",
            [
                ("fid_style", "FID-style (classifier features)"),
                ("w2_pixel", "W2 (pixels)"),
                ("sw2_pixel", "sliced W2 (pixels)"),
            ],
        ),
        (
            "SIEM, full trajectory",
            [("siem_A_full", "A"), ("siem_A_raw_full", "A raw"), ("siem_B_full", "B"), ("siem_C_full", "C (log)")],
        ),
        (
            "SIEM, first 10%",
            [
                ("siem_A_first10", "A"),
                ("siem_A_raw_first10", "A raw"),
                ("siem_B_first10", "B"),
                ("siem_C_first10", "C (log)"),
            ],
        ),
        (
            "||mu_t||, first 10% / full",
            [
                ("mu_particle_mean_first10", "particle mean, 10%"),
                ("mu_eps_mean_first10", "mean eps, 10%"),
                ("mu_particle_mean_full", "particle mean, full"),
                ("mu_eps_mean_full", "mean eps, full"),
            ],
        ),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (title, series) in zip(axes, panels, strict=True):
        for width in sorted({r["width"] for r in rows}):
            sub = [r for r in rows if r["width"] == width]
            steps = [r["step"] for r in sub]
            for key, label in series:
                vals = torch.tensor([r["metrics"][key] for r in sub], dtype=torch.float64)
                span = (vals.max() - vals.min()).clamp_min(1e-300)
                ax.plot(steps, (vals - vals.min()) / span, "o-", ms=3, label=f"{label} (w{width})")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("min-max normalised")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _mu_figure(rows: list[dict], curves: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    cmap = plt.get_cmap("viridis")
    keys = [
        ("particle_mean", "||mu_t|| (particle mean)"),
        ("eps_mean", "||mu^eps_t|| (mean predicted noise)"),
        ("centered", "||mu_t - sqrt(abar_t) m_data||"),
    ]
    timesteps = torch.arange(999, -1, -1)
    for ax, (key, title) in zip(axes, keys, strict=True):
        for i, (row, c) in enumerate(zip(rows, curves, strict=True)):
            ax.plot(timesteps, c[key], color=cmap(i / max(len(rows) - 1, 1)), lw=0.8, label=f"step {row['step']}")
        ax.axvspan(900, 999, color="grey", alpha=0.15)
        ax.invert_xaxis()
        ax.set_yscale("log")
        ax.set_xlabel("DDPM timestep (sampling runs right to left; grey: first 10%)")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=5, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    cfg = StudyConfig(
        out=args.out,
        checkpoints=args.checkpoints,
        first_step=args.first_step,
        train_steps=args.train_steps,
        widths=tuple(args.widths),
        n_particles=args.particles,
        n_runs=args.runs,
        n_targets=args.targets,
        n_boot=args.boot,
        seed=args.seed,
        device=args.device,
    )
    if args.quick:
        cfg.train_steps, cfg.first_step, cfg.n_particles, cfg.n_runs, cfg.n_boot = 400, 10, 200, 1, 200
        cfg.white_stride_window, cfg.white_stride_full = 50, 500
    return cfg


def main_from_args(args: argparse.Namespace) -> int:
    status = apply_runtime_options(args)
    if status:
        return status
    cfg = config_from_args(args)
    cfg.progress = True
    report = run_study(cfg, log=say)  # phase lines on stderr, between the bars
    if report is not None:  # None on the ranks other than 0 of a torchrun job
        print(json.dumps(report["nfe"]))
    return 0
