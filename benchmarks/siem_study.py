"""SIEM correlation study on sklearn digits (digest seed002 §5.3 at toy scale); the ``pysens siem-study`` verb.

Trains MLP score networks on the 8×8 digits, saves ≥ 12 checkpoints along training, and for each computes SIEM
(A/B/C) and ‖μ_t‖ (both candidates) over the full trajectory and the first 10% (timesteps 999…900), against W2
(POT, 64-pixel space), sliced W2 (pixel space) and an FID-style Fréchet distance in the features of an in-project
digit classifier (not Inception). Writes report.json (correlation tables with bootstrap intervals, NFE saved),
fig2_metrics_vs_training.png and mu_curves.png into --out. The defaults run in under ~10 minutes on one CPU core.

    python benchmarks/siem_study.py [--out benchmarks/results/siem_study] [--quick] [--particles 500] [--runs 3]
"""

from __future__ import annotations

import argparse

from pysens.spde.study import add_arguments, main_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(out="benchmarks/results/siem_study")
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
