"""Work-precision harness (DiffEqDevTools semantics) for solver studies on every backend, its peer setups
(torchdiffeq, torchsde, scipy solve_ivp, CVODE, julia) and the benchmark suites behind ``pysens bench``."""

from pysens.bench.peers import (
    available_peers,
    cvode_setup,
    julia_setup,
    solve_ivp_setup,
    torchdiffeq_setup,
    torchsde_setup,
)
from pysens.bench.work_precision import ERRORS, Setup, WorkPrecision, work_precision

__all__ = [
    "ERRORS",
    "Setup",
    "WorkPrecision",
    "available_peers",
    "cvode_setup",
    "julia_setup",
    "solve_ivp_setup",
    "torchdiffeq_setup",
    "torchsde_setup",
    "work_precision",
]
