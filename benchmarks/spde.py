"""Grid SPDE work-precision across backends and SIEM's first-10% cost.

The benchmark lives in :mod:`pysens.bench.spde` (also ``pysens bench spde``); this script takes the same options.

    python benchmarks/spde.py --help
"""

from __future__ import annotations

from pysens.bench.spde import main

if __name__ == "__main__":
    raise SystemExit(main())
