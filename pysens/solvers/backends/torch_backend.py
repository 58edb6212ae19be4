"""The native torch backend: batched, per-sample step sizes, CPU or CUDA, float32 or float64."""

from __future__ import annotations

from ..bdf import solve_qndf
from ..esdirk import ESDIRK_TABLEAUS, solve_esdirk
from ..explicit import solve_explicit
from ..methods import MethodInfo
from ..options import SolveOptions
from ..problem import ODEProblem, SDEProblem
from ..rosenbrock import ROSENBROCK_METHODS, solve_rosenbrock
from ..rosenbrock_w import W_METHODS, solve_rosenbrock_w
from ..solution import Solution
from ..stochastic import SDE_SOLVERS
from ..tableaus import TABLEAUS

NAME = "torch"


def available() -> tuple[bool, str]:
    return True, "built in"


def solve(problem: ODEProblem | SDEProblem, method: MethodInfo, opts: SolveOptions) -> Solution:
    if method.kind == "sde":
        return SDE_SOLVERS[method.name](problem, method, opts)
    if method.name == "QNDF":
        return solve_qndf(problem, opts)
    if method.name in ESDIRK_TABLEAUS:
        return solve_esdirk(problem, method.name, opts)
    if method.name in ROSENBROCK_METHODS:
        return solve_rosenbrock(problem, method.name, opts)
    if method.name in W_METHODS:
        return solve_rosenbrock_w(problem, method.name, opts)
    return solve_explicit(problem, TABLEAUS[method.name], opts)
