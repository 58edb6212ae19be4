"""Cost of sample sensitivities against sampling and likelihoods.

The benchmark lives in :mod:`pysens.bench.sensitivity_cost` (also ``pysens bench sensitivity``);
this script takes the same options.

    python benchmarks/sensitivity_cost.py --help
"""

from __future__ import annotations

from pysens.bench.sensitivity_cost import main

if __name__ == "__main__":
    raise SystemExit(main())
