"""One derivative layer for batched row-wise callables: JVPs, VJPs, Jacobian blocks, divergences and Hessian-free
products, each with several engines (``torch.func`` forward or reverse mode vmapped, a loop of reverse passes,
double-VJP, finite differences with a controlled step, closed forms) and ``engine="auto"`` that measures once and
caches. Every derivative pysens takes of a score or right-hand side goes through here."""

from .autotune import chosen_engines, clear_engine_cache
from .divergence import (
    DIVERGENCE_ENGINES,
    HUTCHINSON_ENGINES,
    divergence,
    hutchinson_divergence,
    hutchinson_probes,
)
from .products import (
    HVP_ENGINES,
    JACOBIAN_ENGINES,
    JVP_ENGINES,
    fd_step,
    hessian_vector_product,
    jacobian,
    jvp,
    time_derivative,
    vjp,
)
from .rows import ROW_JACOBIAN_ENGINES, row_jacobian

__all__ = [
    "DIVERGENCE_ENGINES",
    "HUTCHINSON_ENGINES",
    "HVP_ENGINES",
    "JACOBIAN_ENGINES",
    "JVP_ENGINES",
    "ROW_JACOBIAN_ENGINES",
    "chosen_engines",
    "clear_engine_cache",
    "divergence",
    "fd_step",
    "hessian_vector_product",
    "hutchinson_divergence",
    "hutchinson_probes",
    "jacobian",
    "jvp",
    "row_jacobian",
    "time_derivative",
    "vjp",
]
