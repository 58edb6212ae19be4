"""Diffusion workloads against torchdiffeq, scipy RK45 (score_sde's path) and torchsde: likelihood of an exact
mixture, PF-ODE sampling of a digits model, sample-sensitivity cost and reverse-SDE sampling on one Brownian path.

The code lives in :mod:`pysens.bench.diffusion` (also ``pysens bench diffusion``); this wrapper runs it from a checkout.

    python benchmarks/diffusion.py [--out benchmarks/results/diffusion] [--quick] [--runs 3] [--device cpu]
        [--workloads likelihood sampling sensitivity sde]
"""

from __future__ import annotations

from pysens.bench.diffusion import main

if __name__ == "__main__":
    raise SystemExit(main())
