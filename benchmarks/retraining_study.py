"""The retraining study: predicted sample changes ε·y against real fine-tuning or retraining on sklearn digits.

Everything is in :mod:`pysens.sensitivity.retraining` (also the ``pysens retraining-study`` verb); this script takes
the same options. The default run (3 training seeds × 3 CRN fine-tune streams, 32 noise seeds each, readings
"data" and "model" of eq. ★, OT at reg 0.05 and 0.01) takes about 15 minutes on one idle CPU core.

    python benchmarks/retraining_study.py [--out benchmarks/results] [--mode finetune|retrain]
        [--edit remove|add] [--dataset digits|mnist5k] [--seeds 0 1 2] [--streams 3] [--references data model] ...

Further studies rendered beside the default one go to ``benchmarks/results/retraining/<add|mnist5k|unet|retrain>/``.
The mnist5k study was run as (about 50 minutes on a CPU core shared with a dozen other processes)

    python benchmarks/retraining_study.py --out benchmarks/results/retraining/mnist5k --dataset mnist5k \
        --network mlp-skip --count 120 --steps 3000 --finetune-steps 1500 --samples 24 --divergence hutchinson

and the UNet study is meant to run as (not yet run with the EMA warm-up: the run without it, about 50 minutes,
sampled off the data's range; see benchmarks/README.md)

    python benchmarks/retraining_study.py --out benchmarks/results/retraining/unet --network unet --hidden 16 \
        --ema 0.999 --steps 2000 --finetune-steps 1000 --samples 24 --seeds 0 --references model data
"""

from __future__ import annotations

import argparse

from pysens.sensitivity.retraining import add_arguments, run_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(out="benchmarks/results")
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
