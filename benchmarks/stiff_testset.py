"""The stiff test-set suite: Bari test-set problems against their published answers, every stiff method and backend.

The benchmark lives in :mod:`pysens.bench.stiff_testset` (also ``pysens bench stiff-testset``); this script takes
the same options.

    python benchmarks/stiff_testset.py --help
"""

from __future__ import annotations

from pysens.bench.stiff_testset import main

if __name__ == "__main__":
    raise SystemExit(main())
