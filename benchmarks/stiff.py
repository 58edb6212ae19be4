"""Work-precision of stiff solvers (torch Rosenbrock/ESDIRK vs Tsit5, scipy, CVODE).

The benchmark lives in :mod:`pysens.bench.stiff` (also ``pysens bench stiff``); this script takes the same options.

    python benchmarks/stiff.py --help
"""

from __future__ import annotations

from pysens.bench.stiff import main

if __name__ == "__main__":
    raise SystemExit(main())
