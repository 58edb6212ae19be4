"""Work-precision harness (DiffEqDevTools semantics) for solver studies on every backend."""

from pysens.bench.work_precision import ERRORS, Setup, WorkPrecision, work_precision

__all__ = ["ERRORS", "Setup", "WorkPrecision", "work_precision"]
