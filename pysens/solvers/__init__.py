"""Problems, methods, backends and solutions: pose a differential equation once, solve it anywhere."""

from .backends import BackendNotAvailable, backend_status
from .methods import METHODS, MethodInfo, MethodNotAvailable, methods_for
from .noise import BrownianGrid
from .problem import ODEProblem, SDEProblem, SplitODEProblem, SplitSDEProblem
from .solution import RETCODES, Solution, Stats
from .solve import solve

__all__ = [
    "BackendNotAvailable",
    "BrownianGrid",
    "METHODS",
    "MethodInfo",
    "MethodNotAvailable",
    "ODEProblem",
    "RETCODES",
    "SDEProblem",
    "SplitODEProblem",
    "SplitSDEProblem",
    "Solution",
    "Stats",
    "backend_status",
    "methods_for",
    "solve",
]
