"""The retraining study's figure: what a reader needs to judge one prediction at a glance.

For the first training seed, the samples nearest the edit (where the score change lives): rows are the base
sample, the predicted change ε·y under each reference reading, the observed change (mean over the CRN streams),
the entropic-OT prediction at each regularisation, the edited model's sample, and, last, the edited (removed or
added) training images. Changes share one symmetric colour scale per column, so predicted and observed compare
directly; each column's title gives the default reading's and the first OT setting's cosine with the observed
stream mean. The suptitle carries the summary with its bootstrap intervals.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from pysens.artifacts import save_figure

__all__ = ["plot_study"]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    n = float(a.norm() * b.norm())
    return float(a @ b) / n if n > 0 else float("nan")


def plot_study(path: Path, report: dict, arrays: list[dict], cfg) -> None:
    """Write the figure (module docstring) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = arrays[0]
    shape = tuple(arr["x"].shape[-2:]) if arr["x"].dim() >= 3 else (1, arr["x"][0].numel())
    mean_change = arr["observed"].mean(1)
    rows = [("base sample", arr["x"], False)]
    rows += [(f"predicted ε·y\n({r})", arr["predicted"][r], True) for r in cfg.references]
    rows += [(f"observed Δx\n(mean of {arr['observed'].shape[1]})", mean_change, True)]
    rows += [(f"OT reg {reg:g}", arr["ot"][reg], True) for reg in cfg.ot_regs]
    rows += [("edited sample", arr["edited"], False)]
    distance = torch.cdist(arr["x"].flatten(1), arr["moved"].double().flatten(1)).min(1).values
    cols = min(cfg.figure_seeds, arr["x"].shape[0])
    order = torch.argsort(distance)[:cols].tolist()
    fig, axes = plt.subplots(len(rows) + 1, cols, figsize=(1.35 * cols, 1.3 * (len(rows) + 1)), squeeze=False)
    changes = [block for _, block, is_change in rows if is_change]
    for j, b in enumerate(order):
        lim = max(float(c[b].abs().max()) for c in changes) or 1.0
        default = cfg.references[0]
        axes[0, j].set_title(
            f"cos {_cos(arr['predicted'][default][b], mean_change[b]):.2f} / "
            f"OT {_cos(arr['ot'][cfg.ot_regs[0]][b], mean_change[b]):.2f}",
            fontsize=6,
        )
        for i, (label, block, is_change) in enumerate(rows):
            ax = axes[i, j]
            img = block[b].reshape(shape).cpu().numpy()
            if is_change:
                ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim)
            else:
                ax.imshow(img, cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=6)
        ax = axes[len(rows), j]
        ax.axis("off")
        if j < arr["moved"].shape[0]:
            ax.imshow(arr["moved"][j].reshape(shape).cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
    verb = "removed" if cfg.edit == "remove" else "added"
    axes[len(rows), 0].set_title(f"{verb} images (seed {cfg.seeds[0]})", fontsize=6, loc="left")
    s = report["summary"]
    default = s["scores"][f"reference={cfg.references[0]}"]
    ot = s["scores"][f"ot_reg={cfg.ot_regs[0]:g}"]

    def fmt(entry: dict) -> str:
        lo, hi = entry["ci"]
        return f"{entry['value']:.2f} [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else f"{entry['value']:.2f}"

    title = (
        f"{cfg.dataset}: {cfg.edit} {cfg.count} × class {cfg.digit}, {cfg.mode}, {len(cfg.seeds)} seeds × "
        f"{s['streams']} streams (ceiling {s['ceiling_cross_stream_cosine']['value']:.2f})\n"
        f"reference={cfg.references[0]}: vs stream mean {fmt(default['vs_stream_mean'])}, near edit "
        f"{fmt(default['near_edit'])}; OT {cfg.ot_regs[0]:g}: {fmt(ot['vs_stream_mean'])}, {fmt(ot['near_edit'])}"
    )
    fig.suptitle(title, fontsize=7)
    fig.subplots_adjust(top=1.0 - 0.75 / fig.get_figheight(), hspace=0.3)
    save_figure(fig, path)
    plt.close(fig)
