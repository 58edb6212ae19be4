"""The ODE–SDE gap through the Fokker–Planck equation (Deveney et al.; seed001_fokker_planck.md).

(a) Reproduce the authors' table from their artefacts (``shared/data/odesdegap``): W2² ODE–SDE / ODE–truth /
    SDE–truth of the precomputed 3M-sample histograms for w_R ∈ {0, 0.1, 1, 10} (3.5 and 4.0 grids, against the
    digest), R̃ of their 12 checkpoints (uniform protocol with standard errors, and log-stratified raw/gauge-fixed),
    and our samplers' W2²(ODE, SDE) on their blob checkpoints beside the truth–truth floor at the same N.
(b) Train our own PotentialScoreNet models with w_R ∈ {0, 0.1, 1, 10} on the 2-D toys (optionally sklearn digits
    with the Hutchinson Laplacian) and report whether the three trends hold, beside the floor.

Writes ``report.json`` and PNGs (sample densities, R̃ vs gap) into ``--out``. The default sizes take ~10 minutes on
one CPU core; the acceptance check of our sampler at ≥ 200k samples is ``--part reproduce --gap-samples 200000``
(~20 minutes per checkpoint on one core).

    python benchmarks/ode_sde_gap.py [--out benchmarks/results/ode_sde_gap] [--part all|reproduce|train] [--digits]
"""

from __future__ import annotations

import sys

from pysens.fokker_planck.experiment import build_parser, run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.set_defaults(out="benchmarks/results/ode_sde_gap")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
