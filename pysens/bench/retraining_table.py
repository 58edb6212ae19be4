"""The retraining study's table in ``benchmarks/README.md``, rendered from ``retraining_study.json``.

Main table: one row per predictor (each reference reading of eq. ★, each OT regularisation), columns the study's
metrics (:mod:`pysens.sensitivity.study_scores`) as value [95% bootstrap interval]; then the cross-stream ceiling,
the paired comparisons of each reading with each OT setting (booleans: beats on the point estimate / with the
interval above 0), the acceptance verdicts and the model-vs-data log-density gap along the paths. Further studies
(other data sets, the add edit, retraining from scratch) are rendered below it when their JSON files exist in
``retraining/<name>/retraining_study.json``. A JSON file from the single-stream study (no ``scores``) renders as
its old two-column table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["render_retraining"]

_COLUMNS = [
    ("single_run", "single run"),
    ("vs_stream_mean", "vs stream mean"),
    ("pooled", "pooled"),
    ("near_edit", "near edit"),
    ("in_range", "in range"),
    ("off_range", "off range"),
    ("calibration", "calibration (slope obs on pred)"),
]
EXTRA_STUDIES = ("add", "mnist5k", "unet", "retrain")


def _ci(entry: dict, spec: str = ".3f") -> str:
    value, (lo, hi) = entry["value"], entry["ci"]
    if not (isinstance(value, float) and math.isfinite(value)):
        return "–"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return format(value, spec)
    return f"{value:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _legacy(data: dict) -> str:
    s, c = data["summary"], data["config"]
    rows = [
        ["all samples", format(s["mean_cosine"], ".3f"), format(s["ot_mean_cosine"], ".3f")],
        ["samples near the edited class", format(s["near_edit_mean_cosine"], ".3f"),
         format(s["near_edit_ot_mean_cosine"], ".3f")],
    ]  # fmt: skip
    return (
        f"{c['edit']} {c['count']} images of digit {c['digit']}, {c['mode']}, {len(c['seeds'])} training seeds; "
        f"cosine between predicted ε·y and the observed sample change.\n\n"
        + _table(["samples", "sensitivity (ours)", "entropic-OT baseline"], rows)
    )


def _network(c: dict) -> str:
    """The study's score network in words (JSON written before ``network`` existed: the MLP)."""
    name = c.get("network", "mlp")
    if name == "unet":
        text = f"UNet ({c['hidden']} base channels)"
    else:
        text = f"MLP {c['depth']}×{c['hidden']}" + (" with input skip" if name == "mlp-skip" else "")
    ema = f", EMA {c['ema']:g}" if c.get("ema") else ""
    return f"{text}{ema}, {c['steps']} base + {c['finetune_steps']} fine-tune steps"


def _study(data: dict, *, main: bool = True) -> str:
    s, c = data["summary"], data["config"]
    ceiling = s["ceiling_cross_stream_cosine"]
    out = (
        f"{c.get('dataset', 'digits')} ({_network(c)}): {c['edit']} {c['count']} images of class {c['digit']} "
        f"(ε = {data['runs'][0]['epsilon']:.4f}), {c['mode']}, "
        f"{len(c['seeds'])} training seeds × {s['streams']} CRN streams = {s['units']} samples "
        f"({s['near_edit_units']} near the edit, {s['off_range_units']} off the data's range); cosine of the "
        f"predicted with the observed sample change (near edit, in and off range: against the "
        f"stream mean), [95% bootstrap interval]. Ceiling (cross-stream cosine of the "
        f"observed changes): {_ci(ceiling)}.\n\n"
    )
    first = data.get("runs", [{}])[0].get("diagnostics", {})
    if "margin" in first:  # written before off-range meant "beyond the training set's coverage radius"
        out += (
            "Off range here is the earlier rule (a pixel beyond the data's range ± 5%), which flags every denoised "
            "sample; its in/off-range columns carry no information.\n\n"
        )
    rows = []
    for name, sc in s["scores"].items():
        label = name + (" (default)" if name == f"reference={c['references'][0]}" else "")
        rows.append([label, *(_ci(sc[k], ".2f" if k == "calibration" else ".3f") for k, _ in _COLUMNS)])
        rows[-1].append(format(sc["off_range_share"], ".0%"))
    out += _table(["predictor", *(h for _, h in _COLUMNS), "share of the predicted change off range"], rows)
    comp_rows = []
    for key, comp in s["comparisons"].items():
        cells = []
        for metric in ("single_run", "vs_stream_mean", "near_edit"):
            m = comp[metric]
            verdict = "beats" if m["beats_ci"] else ("ahead" if m["beats"] else "behind")
            cells.append(f"{m['difference']:+.3f} [{m['ci'][0]:+.3f}, {m['ci'][1]:+.3f}] {verdict}")
        comp_rows.append([key, *cells])
    out += "\nPaired differences (first − second; *beats*: interval above 0, *ahead*: point estimate only):\n\n"
    out += _table(["comparison", "single run", "vs stream mean", "near edit"], comp_rows)
    acc = s["acceptance"]
    verdicts = ", ".join(f"{k}: {'met' if v else 'not met'}" for k, v in acc.items() if k != "default_reference")
    if main:  # the targets are for the default digits study only
        out += f"\nAcceptance (reference={acc['default_reference']}): {verdicts}.\n"
    gaps = [r.get("log_ratio_along_path") for r in data.get("runs", []) if r.get("log_ratio_along_path")]
    if gaps:
        times = list(gaps[0])
        medians = [
            sorted(g[t]["median"] for g in gaps)[len(gaps) // 2] if all(t in g for g in gaps) else float("nan")
            for t in times
        ]
        out += (
            "\nModel minus data log-density along the base model's sample paths (median over samples, median over "
            "seeds): " + ", ".join(f"t = {t}: {m:+.1f} nats" for t, m in zip(times, medians, strict=True)) + ".\n"
        )
    return out


def render_retraining(results: Path) -> str:
    """The markdown for the ``retraining`` region from ``results/retraining_study.json`` (and the extra studies)."""
    path = results / "retraining_study.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the suite that writes it (pysens bench --list)")
    data = json.loads(path.read_text())
    if "scores" not in data["summary"]:
        return _legacy(data)
    out = _study(data)
    for name in EXTRA_STUDIES:
        extra = results / "retraining" / name / "retraining_study.json"
        if extra.is_file():
            body = _study(json.loads(extra.read_text()), main=False)
            out += f"\n**{name}** (`results/retraining/{name}/`)\n\n" + body
    return out
