"""Text tables and figures of :mod:`pysens.bench.diffusion`'s results."""

from __future__ import annotations

import math
from pathlib import Path

from pysens.artifacts import save_figure
from pysens.bench.matched_error import (
    _finite,
)

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
