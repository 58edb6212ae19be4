"""``pysens demo``: train a score model, sample (PF-ODE and SDE), compute likelihoods, write a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from pysens.cli_args import output_folder, positive_int, run_in_folder, seed
from pysens.runtime import add_runtime_arguments, apply_runtime_options

NAME = "demo"
HELP = "train a score model, sample (PF-ODE and SDE), compute likelihoods, report"
DESCRIPTION = (
    "Train a score model on a 2-D Gaussian mixture (exact score and density) or the 8x8 sklearn digits, sample by "
    "the probability-flow ODE and the reverse SDE, compute log-likelihoods, and write report.json, samples.png and "
    "model.pt into --out (a rerun replaces the folder whole; a second run on a folder in use is refused). Progress "
    "bars go to stderr, the summary to stdout."
)
STEPS = {"mixture": 2000, "digits": 3000}
SAMPLES = {"mixture": 2000, "digits": 32}
OUTPUTS = ("report.json", "samples.png", "model.pt")  # what the demo writes (a pre-manifest folder may hold these)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=["mixture", "digits"], default="mixture")
    parser.add_argument(
        "--out", type=output_folder, default="runs/demo", help="output folder (report.json, samples.png, model.pt)"
    )
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="training steps (default: mixture 2000, digits 3000)"
    )
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        help="number of samples to draw (default: mixture 2000, digits 32)",
    )
    parser.add_argument("--seed", type=seed, default=0)
    add_runtime_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from pysens.demo import DEMOS

    status = apply_runtime_options(args)
    if status:
        return status
    steps = STEPS[args.dataset] if args.steps is None else args.steps
    samples = SAMPLES[args.dataset] if args.samples is None else args.samples
    reports = []

    def work() -> int:
        reports.append(
            DEMOS[args.dataset](
                Path(args.out), steps=steps, samples=samples, seed=args.seed, device=args.device, quiet=args.quiet
            )
        )
        return 0

    status = run_in_folder(args, work, kind=NAME, outputs=OUTPUTS)
    if status == 0:
        print_summary(reports[0])
        out = Path(args.out)
        print(f"wrote {out / 'report.json'}, {out / 'samples.png'}, {out / 'model.pt'}")
    return status


def print_summary(report: dict) -> None:
    """The demo's report as an aligned two-column table on stdout."""
    rows = [("demo", report["demo"]), ("training loss (last 100)", f"{report['training']['final_loss']:.4f}")]
    if "score_relative_mse" in report["training"]:
        rows.append(("score relative MSE vs exact", f"{report['training']['score_relative_mse']:.4f}"))
    for name, st in report["sampling"].items():
        if isinstance(st, dict) and "nf" in st:
            per_sample = st.get("sample_naccept")
            steps = f"{sum(per_sample) / len(per_sample):.1f} (mean per sample)" if per_sample else st["naccept"]
            rows.append((f"{name}: retcode / RHS calls / steps", f"{st['retcode']} / {st['nf']} / {steps}"))
    lik = report["likelihood"]
    if "model_mean_nll" in lik:
        rows.append(
            (
                "held-out NLL: model / exact",
                f"{lik['model_mean_nll']:.4f} / {lik['exact_mean_nll']:.4f} "
                f"(excess {lik['model_excess_nll']:.4f} ± {lik['model_excess_nll_standard_error']:.4f} s.e.)",
            )
        )
    if "bits_per_dim" in lik:
        rows.append(
            ("test bits/dim (Hutchinson, 64)", f"{lik['bits_per_dim']:.3f} ± {lik['bits_per_dim_standard_error']:.3f}")
        )
    rows.append(("solver check |log p - exact| (float64)", f"{lik['solver_check_max_abs_error']:.2e}"))
    rows.append(("wall time", f"{report['wall_time']:.1f} s"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
