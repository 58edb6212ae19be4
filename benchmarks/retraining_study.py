"""The retraining study: predicted sample changes ε·y against real fine-tuning or retraining on sklearn digits.

Everything is in :mod:`pysens.sensitivity.retraining` (also the ``pysens retraining-study`` verb); this script takes
the same options. The default run (one training seed, 32 noise seeds) takes a few minutes on one CPU core.

    python benchmarks/retraining_study.py [--out benchmarks/results/retraining] [--mode finetune|retrain]
        [--edit remove|add] [--digit 3] [--count 40] [--seeds 0 1 2] ...
"""

from __future__ import annotations

import argparse

from pysens.sensitivity.retraining import add_arguments, run_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(out="benchmarks/results/retraining")
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
