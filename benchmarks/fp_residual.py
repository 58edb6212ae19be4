"""Cost of the log-density Fokker–Planck residual: the authors' nested autograd, torch.func and the forward Laplacian.

The benchmark lives in :mod:`pysens.bench.fp_residual` (also ``pysens bench fp-residual``); this script takes the
same options.

    python benchmarks/fp_residual.py --help
"""

from __future__ import annotations

from pysens.bench.fp_residual import main

if __name__ == "__main__":
    raise SystemExit(main())
