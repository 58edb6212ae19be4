"""The tables of ``benchmarks/README.md``, rendered from the JSON files the suites write.

The README carries one marked region per table::

    <!-- bench-table: stiff -->
    ...generated markdown...
    <!-- /bench-table -->

``update_readme`` re-renders every region from ``benchmarks/results`` (``pysens bench --tables``); a test checks
that the committed README equals its re-rendering, so the numbers in it are the numbers in the JSON files.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pysens.artifacts import atomic_write

__all__ = ["RENDERERS", "render", "update_readme"]

_REGION = re.compile(r"(<!-- bench-table: ([\w-]+) -->\n)(.*?)(<!-- /bench-table -->)", re.S)


def _load(results: Path, name: str) -> dict:
    path = results / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the suite that writes it (pysens bench --list)")
    return json.loads(path.read_text())


def _num(v, spec: str = ".2g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec)


def _times(v) -> str:
    text = _num(v, ".2f")
    return text if text == "–" else text + "×"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _stiff(results: Path) -> str:
    data = _load(results, "stiff.json")
    cfg = data["config"]
    out = []
    for key, wp in data["problems"].items():
        rows = []
        for setup in dict.fromkeys(p["setup"] for p in wp["points"]):
            pts = [p for p in wp["points"] if p["setup"] == setup]
            ok = [p for p in pts if isinstance(p["error"], float) and math.isfinite(p["error"])]
            best = min((p for p in ok if p["error"] <= 1e-6), key=lambda p: p["time_min"], default=None)
            tight = min(ok, key=lambda p: p["error"], default=None)
            rows.append(
                [
                    setup,
                    _num(best and best["time_min"], ".3g"),
                    _num(best and best["reltol"], ".0e"),
                    _num(tight and tight["error"], ".1e"),
                    _num(tight and tight["time_min"], ".3g"),
                    str(tight["nf"]) if tight else "failed",
                ]
            )
        target = data["targets"][key]
        ratio = target.get("ratio_torch_over_bdf")
        out.append(
            f"**{wp['problem']}** (d = {cfg['d']}, {cfg['runs']} runs" + (", quick" if cfg["quick"] else "") + ")"
        )
        out.append("")
        out.append(
            _table(
                ["setup", "time to error ≤ 1e-6 [s]", "at reltol", "smallest error", "its time [s]", "its RHS calls"],
                rows,
            )
        )
        out.append(
            f"Fastest torch stiff setup at error ≤ 1e-6 over scipy BDF's time: **{_num(ratio, '.2f')}×** "
            f"(target ≤ 1: {'met' if target.get('met') else 'not met'}).\n"
        )
    return "\n".join(out)


def _stiff_speed(results: Path, name: str = "stiff_speed.json") -> str:
    """One stiff-speed run's table (``stiff_speed_more.json``: the same suite over OREGO, VDPOL and POLLU)."""
    from pysens.bench.stiff_speed import table  # the suite renders its own table (one place for its layout)

    return table(_load(results, name)) + "\n"


def _stiff_testset_fine(results: Path) -> str:
    from pysens.bench.stiff_testset import error_per_tolerance_table  # the suite renders its own summary

    return error_per_tolerance_table(_load(results, "stiff_testset_fine.json"))


def _stiff_testset(results: Path) -> str:
    """Per test-set problem: each setup's scd, time and RHS calls at every rtol; ✗ marks a Success below its
    required digits (a wrong answer), a retcode stands in for a failed solve."""
    data = _load(results, "stiff_testset.json")
    cfg = data["config"]
    rtols = cfg["rtols"]
    model = cfg.get("tolerance_model", "local")
    out = [
        f"Cells: scd (significant correct digits at the final time) · time [s] · RHS calls; "
        f"✗ = `Success` with scd below its required digits, −log10(rtol) − {cfg['digits_margin']} where rtol "
        "dominates the tolerance (fewer only where the problem's atol does, E5, or where float64 attains fewer, "
        "E5s at 1e-8: 5.4) — a wrong answer; `NotRun`: "
        "a looser rtol already ended in `MaxIters`. "
        f"Tolerance model `{model}`; "
        f"{cfg['runs']} timed run(s) after {cfg['warmup']} warm-up(s), maxiters {cfg.get('maxiters', '–')} per solve"
        + (", quick sweep" if cfg["quick"] else "")
        + ".\n"
    ]
    for key, wp in data["problems"].items():
        rows = []
        for setup in dict.fromkeys(p["setup"] for p in wp["points"]):
            cells = [setup]
            for r in rtols:
                p = next((q for q in wp["points"] if q["setup"] == setup and q["reltol"] == r), None)
                if p is None:
                    cells.append("–")
                elif p["retcode"] != "Success":
                    cells.append(f"`{p['retcode'].split(':')[0]}`")
                else:
                    mark = " ✗" if p["wrong"] else ""
                    cells.append(f"{_num(p['scd'], '.1f')}{mark} · {_num(p['time_min'], '.2g')} · {p.get('nf') or 0}")
            rows.append(cells)
        atol = wp["points"][0]["abstol"] if wp["points"] else None
        where = f"d = {wp.get('dim', '?')}, atol at rtol {rtols[0]:.0e}: {_num(atol, '.1e')}"
        out.append(f"**{key}**: {wp.get('title', key)} ({where})")
        out.append("")
        out.append(_table(["setup"] + [f"rtol {r:.0e}" for r in rtols], rows))
    wrong = data["wrong"]
    out.append(f"Wrong answers returned as `Success`: **{len(wrong)}** (target: 0).\n")
    for w in wrong:
        need = w.get("required_digits")
        out.append(
            f"- {w['problem']} {w['setup']} at rtol {w['reltol']:.0e}: scd {_num(w['scd'], '.2f')}"
            + (f" < {_num(need, '.2f')} required" if need is not None else "")
        )
    return "\n".join(out) + ("\n" if wrong else "")


def _spde(results: Path) -> str:
    data = _load(results, "spde.json")
    rows = []
    for wp in data["work_precision"].values():
        for peer in ("scipy_BDF", "CVODE"):
            pairs = wp.get(f"speedup_torch_KenCarp4_vs_{peer}") or []
            if pairs:
                speed = ", ".join(f"{_num(p['speedup'], '.2f')}× @ {_num(p['error'], '.0e')}" for p in pairs)
            else:
                speed = "not run: " + wp.get("not_run", {}).get("scipy BDF", "no overlapping accuracies")
            rows.append([wp["problem"], peer.replace("_", " "), speed])
    siem = data["siem_nfe"]
    out = _table(["problem", "peer", "torch KenCarp4 speed-up over the peer at equal error"], rows)
    out += (
        f"\nSIEM first 10%: {siem['siem_first10']['nfe_per_particle']} vs {siem['fid_style_full']['nfe_per_particle']} "
        f"network evaluations per particle (NFE ratio **{_num(siem['nfe_ratio'], '.2f')}**, target {siem['target']}), "
        f"wall-time ratio {_num(siem['wall_time_ratio'], '.3f')}. Suite wall time {data['wall_time']:.0f} s.\n"
    )
    return out


def _short(x: float) -> str:
    """1.25 -> "1.25", 1.0 -> "1.0", 0.35 -> "0.35"."""
    text = f"{x:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _sensitivity(results: Path) -> str:
    data = _load(results, "sensitivity_cost.json")
    cfg = data["config"]
    rows, targets = [], []
    for r in data["rows"]:
        if r["case"] == "targets":
            targets.append(r)
            continue
        cpu = _num(r["cpu_median_s"] * 1e3, ".1f") if "cpu_median_s" in r else "–"
        rows.append(
            [r["divergence"], r["case"], str(r["nf"]), str(r["njvp"]), _num(r["wall_median_s"] * 1e3, ".1f"), cpu]
        )
    out = (
        f"d = 64 (8×8 digits), batch {cfg['batch']}, {cfg['steps']} Heun steps, {cfg['dtype']}, {data['device']}, "
        f"median of {cfg['runs']} runs.\n\n"
    )
    out += _table(["divergence", "case", "NFE", "JVPs", "wall [ms]", "CPU [ms]"], rows)
    for t in targets:
        c1_target = _short(t.get("c1_over_b_target", 1.25))
        extra_target = _short(t.get("extra_perturbation_over_a_target", 0.35))
        out += (
            f"\n{t['divergence']} ({t.get('clock', 'wall')} time): (c, P=1)/(b) = **{_num(t['c1_over_b'], '.2f')}** "
            f"(target ≤ {c1_target}: {'met' if t['c1_over_b_met'] else 'not met'}); extra perturbation/(a) = "
            f"**{_num(t['extra_perturbation_over_a'], '.2f')}** (target ≤ {extra_target}: "
            f"{'met' if t['extra_perturbation_over_a_met'] else 'not met'}).\n"
        )
    return out


def _siem(results: Path) -> str:
    data = _load(results, "siem_study/report.json")
    rows = []
    for metric in ("siem_A", "siem_B", "siem_C", "mu_particle_mean"):
        for window in ("first10", "full"):
            corr = data["correlations"].get(f"{metric}_{window}")
            if not corr:
                continue
            cells = []
            for target in ("fid_style", "w2_pixel"):
                s = corr[target]["spearman"]
                cells.append(f"{s['r']:+.2f} [{s['lo']:+.2f}, {s['hi']:+.2f}]")
            rows.append([metric, window, *cells])
    n = len(data["configurations"])
    return f"{n} checkpoints; Spearman ρ with bootstrap 95% intervals.\n\n" + _table(
        ["metric", "window", "vs FID-style distance", "vs exact W2 (pixels)"], rows
    )


def _retraining(results: Path) -> str:
    from pysens.bench.retraining_table import render_retraining  # self-contained: the study's own renderer

    return render_retraining(results)


def _ode_sde_gap(results: Path) -> str:
    data = _load(results, "ode_sde_gap/report.json")
    rep = data["reproduce"]
    rows = []
    for w, entry in rep["residuals"]["blob"].items():
        gap = rep["w2_table"]["blob"][w]["grid_3.5"]
        ours = results / "ode_sde_gap_200k" / f"gap_blob_{w}_200000.json"
        sampled = "–"
        if ours.is_file():
            grid = json.loads(ours.read_text())["w2_squared_grid"]
            sampled = f"{grid['ode_sde']:.4f} (floor {grid['floor']:.4f})"
        rows.append(
            [
                w,
                f"{_num(entry['uniform']['raw'], '.4g')} ± {_num(entry['uniform']['raw_se'], '.1g')}",
                _num(entry["reference"], ".4g"),
                f"{entry['relative_diff']:+.1%}",
                _num(gap["ode_sde"], ".4f"),
                _num(gap["ode_truth"], ".4f"),
                _num(gap["sde_truth"], ".4f"),
                sampled,
            ]
        )
    out = "Authors' blob checkpoints (their artefacts, 3.5 grid):\n\n" + _table(
        [
            "w_R",
            "R̃ (ours, uniform, ± SE)",
            "R̃ digest",
            "diff",
            "W2² ODE–SDE",
            "W2² ODE–truth",
            "W2² SDE–truth",
            "our sampler, 200k: W2² ODE–SDE",
        ],
        rows,
    )
    bounds = rep.get("derived_bound_log_ratio", {}).get("blob", {}).get("models", {})
    if bounds:
        rows = [
            [
                w,
                _num(b["w2_ode_sde_measured"], ".4f"),
                _num(b["bound"]["strict"], ".2g"),
                _num(b["bound"]["bulk"], ".2g"),
                _num(b["mismatch_integral_without_gronwall"], ".3f"),
                "yes" if b["holds"]["strict"] else "**no**",
            ]
            for w, b in bounds.items()
        ]
        out += "\nDerived bound (§3.3b) with ∇h from the log-ratio equation on a grid, authors' blob checkpoints:\n\n"
        out += _table(
            [
                "w_R",
                "W2(ODE, SDE) measured",
                "bound (L over mass > 1e-8)",
                "bound (L over mass > 1e-3, heuristic)",
                "∫(g²/2)‖∇h‖ dt, no Grönwall factor",
                "bound ≥ W2",
            ],
            rows,
        )
    trends = {k: v["trends"] for k, v in data.get("train", {}).get("results", {}).items() if "trends" in v}
    if trends:
        rows = []
        for dataset, t in trends.items():
            cells = [dataset]
            for key in ("gap_shrinks", "ode_improves_at_moderate_w", "sde_degrades"):
                item = t[key]
                cells.append(("holds" if item["holds"] else "no") + (" (beyond floor)" if item["beyond_floor"] else ""))
            rows.append(cells)
        out += "\nOur own models, w_R ∈ {0, 0.1, 1, 10} (short CPU training; the authors trained 100k steps):\n\n"
        out += _table(["data", "ODE–SDE gap shrinks", "ODE improves at moderate w_R", "SDE degrades"], rows)
    oracle = data["linear_score_oracle"]
    out += (
        f"\nLinear-score oracle (§6.2): V_O {oracle['v_ode']:.5f}, V_S {oracle['v_sde']:.5f}, W2 {oracle['w2']:.5f}, "
        f"derived bound {oracle['bound']:.5f} ({oracle['bound_label']}).\n"
    )
    return out


def _fp_residual(results: Path) -> str:
    data = _load(results, "fp_residual.json")
    ex = data["exact_vs_authors"]
    names = {
        "authors_nested_autograd": "authors' nested autograd loop",
        "torch_func": "torch.func (vmap of HVPs)",
        "forward_laplacian": "forward Laplacian (pysens default)",
    }
    rows = []
    for key, label in names.items():
        cells = [label]
        for part in ("evaluate", "evaluate_and_backward"):
            timing = ex[part][key]
            speed = ex[part]["speedup_min"].get(key)
            cells += [_num(timing["min_s"], ".3f"), f"{speed:.2f}×" if speed else "1×"]
        rows.append(cells)
    out = (
        f"Exact residual on {ex['points']:,} points, {ex['network']}, {ex['dtype']}, min of {ex['runs']} runs "
        f"(speed-up = the authors' time / ours, same run):\n\n"
    )
    out += _table(["engine", "evaluate [s]", "speed-up", "evaluate + backward [s]", "speed-up"], rows)
    met = ex["target_met"]
    out += (
        f"\nTarget ≥ 3× (forward Laplacian vs the authors' loop): evaluate {'met' if met['evaluate'] else 'not met'}, "
        f"evaluate + backward {'met' if met['evaluate_and_backward'] else 'not met'}.\n\n"
    )
    rows = []
    for r in data["hutchinson_scaling"]:
        rows.append(
            [
                str(r["d"]),
                _num(r["hutchinson_forward_laplacian_over_score"], ".2f"),
                _num(r["hutchinson_torch_func_over_score"], ".2f"),
                _num(r.get("exact_forward_laplacian_over_score"), ".1f"),
                _num(r.get("exact_torch_func_over_score"), ".1f"),
            ]
        )
    out += "Residual cost in units of one score evaluation (width 256 MLP, 1,024 points):\n\n" + _table(
        ["d", "Hutchinson, forward", "Hutchinson, torch.func", "exact, forward", "exact, torch.func"], rows
    )
    return out


def _ratio_rows(ratios: dict) -> list[list[str]]:
    rows = []
    for peer, ours in ratios.items():
        for setup, r in ours.items():
            rows.append(
                [
                    setup,
                    peer,
                    f"**{r['geomean']:.2f}×** ({r['min']:.2f}–{r['max']:.2f})",
                    _times(r.get("nf_geomean")),
                    _times(r.get("rows_geomean")),
                ]
            )
    return rows


def _diffusion(results: Path) -> str:
    data = _load(results, "diffusion/diffusion.json")
    w = data["workloads"]
    head = ["pysens setup", "peer", "peer time / ours at matched error (range)", "RHS calls", "rows evaluated"]
    out = (
        f"{data['device']}, torch {data['versions']['torch']}, {data['config']['threads']} thread; "
        f"suite wall time {data['wall_time']:.0f} s. Ratios > 1: pysens is faster.\n\n**Targets**\n\n"
    )
    rows = []
    for t in data["targets"]:
        if "ratio_geomean" in t:
            value = f"{t['ratio_geomean']:.2f}× ({t['ratio_min']:.2f}–{t['ratio_max']:.2f})"
        else:
            value = f"{t['ratio']:.2f}×"
        rows.append([t["target"], value, "met" if t["met"] else "**not met**"])
    out += _table(["target", "measured", ""], rows)
    lik = w["likelihood"]
    prob = lik["problem"]
    out += (
        f"\n**Likelihood** ({prob['batch']} points of a {data['config']['dim']}-D, {data['config']['components']}-"
        f"component mixture, VP, t0 = {prob['t0']:g}, exact divergence, float64; error = mean |log p − exact|; the "
        f"pysens reference at {lik['reference_check']['tol']:g} is {lik['reference_check']['mean_abs_error']:.1e} "
        f"from the closed form)\n\n"
    )
    out += _table(head, _ratio_rows(lik["ratios"]))
    share = lik["score_share"]
    out += (
        "\nShare of time in the score and its divergence: "
        + ", ".join(f"{k} {v['score_share']:.0%}" for k, v in share.items())
        + ".\n"
    )
    if "sampling" in w and w["sampling"].get("ratios_matched_error"):
        smp = w["sampling"]
        out += (
            f"\n**PF-ODE sampling** (digits ConvScore, batch {smp['problem']['batch']}, {smp['problem']['dtype']})\n\n"
        )
        out += _table(head, _ratio_rows(smp["ratios_matched_error"]))
        out += (
            "\nShare of time in the network: "
            + ", ".join(f"{k} {v['network_share']:.0%}" for k, v in smp["network_share"].items())
            + ".\n"
        )
    if "sde" in w and w["sde"].get("ratios_matched_error"):
        out += "\n**Reverse SDE on one shared Brownian path** (strong error, mixture, float64)\n\n"
        out += _table(head, _ratio_rows(w["sde"]["ratios_matched_error"]))
    return out


def _distributed(results: Path) -> str:
    data = _load(results, "distributed.json")
    cfg, machine = data["config"], data["machine"]
    rows = [
        [
            r["workload"],
            str(r["ranks"]),
            _num(r["job_wall_s"], ".1f"),
            _num(r["launcher_wall_s"], ".1f"),
            _num(r["throughput_per_s"], ".1f"),
            _times(r["speedup"]),
            _num(r["efficiency"], ".2f"),
            "yes" if r["bit_identical_to_1_rank"] else "**no**",
        ]
        for r in data["rows"]
    ]
    load = machine["load_average_before"][0], machine["load_average_after"][0]
    out = (
        f"{cfg['samples']} trajectories in shards of {cfg['batch_size']}, {cfg['model']}, {cfg['method']}, "
        f"{cfg['dtype']}, {cfg['threads_per_rank']} thread per rank, median of {cfg['runs']} interleaved rounds; "
        f"{machine['cpu_count']} CPU cores shared with other jobs (1-min load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after).\n\n"
    )
    out += _table(
        ["workload", "ranks", "job [s]", "torchrun total [s]", "traj/s", "speed-up", "efficiency", "= 1 rank"], rows
    )
    return out + f"\nGPUs: {data['expected_gpu_scaling']}.\n"


def _likelihood_speed(results: Path) -> str:
    data = _load(results, "likelihood_speed.json")
    out = ""
    if data.get("engines"):
        clock = "CPU ms of the thread" if data["engines"][0].get("clock") else "ms"
        out += f"**Exact divergence per call** (float64, one thread, t = 0.5; {clock}, min over interleaved rounds)\n\n"
        order = ("loop", "vjp", "grad-batched", "jvp", "analytic", "auto")  # "analytic": where the model has one
        names = [k for k in order if any(k in e["ms"] for e in data["engines"])]
        rows = [
            [
                e["case"],
                str(e["batch"]),
                *(_num(e["ms"].get(k), ".2f") for k in names),
                e["auto_chose"],
                _times(e["loop_over_auto"]),
                _num(max(e["max_abs_diff_vs_loop"].values()), ".1e"),
                "met" if e["met"] else "NOT met",
            ]
            for e in data["engines"]
        ]
        head = ["score", "B", *names, "auto chose", "loop / auto", "max Δ vs loop", "≥ 1.0×"]
        out += _table(head, rows)
    level = data.get("target_error")
    for r in data.get("end_to_end", []):
        out += f"\n**Likelihood end to end, {r['problem']}, B = {r['batch']}** (exact divergence, float64; "
        out += f"seconds to mean error {_num(level, 'g')} on each path's front; {r['error']})\n\n"
        secs, wall = r["seconds_at_target_error"], r.get("wall_seconds_at_target_error", {})
        rows = [[name, _num(v, ".2f"), _num(wall.get(name), ".2f")] for name, v in secs.items()]
        wall_ratios = r.get("wall_peer_over_pysens_at_target", {})
        for peer, ratio in r["peer_over_pysens_at_target"].items():
            rows.append([f"{peer} / {r['pysens_best']}", _times(ratio), _times(wall_ratios.get(peer))])
        met = {None: "–", True: "met", False: "NOT met"}[r["met"]]
        rows.append([f"target ≥ {_num(r['target'], 'g')}× vs both peers (CPU)", met, ""])
        out += _table(["setup", "CPU seconds", "wall seconds"], rows)
    return out


def _gmres_speed(results: Path) -> str:
    data = _load(results, "gmres_speed.json")
    runs = data["config"]["runs"]
    out = f"Rodas5P on HIRES, B = 1, float64, one thread; CPU seconds (min of {runs} interleaved runs)\n\n"
    rows = []
    for r in data["rows"]:
        d, g = r["dense"], r["gmres"]
        rows.append(
            [
                _num(r["rtol"], "g"),
                f"{_num(d['cpu_min'], '.3f')} · {_num(d['scd'], '.2f')} · {d['nf']}",
                f"{_num(g['cpu_min'], '.3f')} · {_num(g['scd'], '.2f')} · {g['nf']} · {g['njvp']}",
                _times(r["gmres_over_dense_cpu"]),
                ", ".join(_times(v) for v in r["gmres_over_dense_cpu_per_round"]),
            ]
        )
    head = ["rtol", "dense: s · scd · nf", "gmres: s · scd · nf · JVPs", "gmres / dense", "per round"]
    return out + _table(head, rows) + f"\nTarget: {data['target']}: {'met' if data['met'] else 'NOT met'}.\n"


RENDERERS: dict[str, Callable[[Path], str]] = {
    "likelihood-speed": _likelihood_speed,
    "gmres-speed": _gmres_speed,
    "distributed": _distributed,
    "stiff": _stiff,
    "stiff-testset": _stiff_testset,
    "stiff-testset-fine": _stiff_testset_fine,
    "stiff-speed": _stiff_speed,
    "stiff-speed-more": partial(_stiff_speed, name="stiff_speed_more.json"),
    "spde": _spde,
    "sensitivity": _sensitivity,
    "siem": _siem,
    "retraining": _retraining,
    "ode-sde-gap": _ode_sde_gap,
    "fp-residual": _fp_residual,
    "diffusion": _diffusion,
}


def render(name: str, results: str | Path) -> str:
    """The markdown of table ``name`` from the JSON files in ``results``."""
    if name not in RENDERERS:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(RENDERERS)}")
    return RENDERERS[name](Path(results))


def update_readme(readme: str | Path, results: str | Path, *, write: bool = True) -> tuple[str, list[str]]:
    """Re-render every marked region of ``readme`` from ``results``; returns (new text, names of changed tables).

    With ``write=False`` nothing is written (the consistency check)."""
    path = Path(readme)
    text = path.read_text()
    changed: list[str] = []

    def fill(match: re.Match) -> str:
        name = match.group(2)
        body = render(name, results)
        if body != match.group(3):
            changed.append(name)
        return match.group(1) + body + match.group(4)

    new = _REGION.sub(fill, text)
    if write and changed:
        atomic_write(path, lambda fh: fh.write(new.encode()))
    return new, changed
