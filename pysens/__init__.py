"""pysens: sensitivity analysis of score-based diffusion models.

Pose a differential equation once (``ODEProblem``, ``SDEProblem``) and ``solve`` it with a SciML-named
method on the torch, scipy or julia backend; the diffusion layer (``pysens.diffusion``) holds forward
processes, exact and trainable score models, samplers and likelihoods.

The names below load on first use (PEP 562), so that ``import pysens.cli`` and ``pysens --help`` import no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    **dict.fromkeys(
        [
            "EDM",
            "VE",
            "VP",
            "ConvScore",
            "EmpiricalScore",
            "GaussianMixtureScore",
            "MLPScore",
            "SubVP",
            "load_checkpoint",
            "save_checkpoint",
            "train",
        ],
        "pysens.diffusion",
    ),
    "LikelihoodResult": "pysens.diffusion.likelihood",
    "log_likelihood": "pysens.diffusion.likelihood",
    "SampleResult": "pysens.diffusion.sampling",
    "sample_pf_ode": "pysens.diffusion.sampling",
    "sample_sde": "pysens.diffusion.sampling",
    **dict.fromkeys(["BrownianGrid", "ODEProblem", "SDEProblem", "Solution", "Stats", "solve"], "pysens.solvers"),
    **dict.fromkeys(["EnsembleProblem", "EnsembleSolution", "solve_ensemble"], "pysens.ensemble"),
}

__all__ = [  # the keys of _EXPORTS, spelled out for static tools
    "EDM",
    "VE",
    "VP",
    "BrownianGrid",
    "ConvScore",
    "EmpiricalScore",
    "EnsembleProblem",
    "EnsembleSolution",
    "GaussianMixtureScore",
    "LikelihoodResult",
    "MLPScore",
    "ODEProblem",
    "SDEProblem",
    "SampleResult",
    "Solution",
    "Stats",
    "SubVP",
    "load_checkpoint",
    "log_likelihood",
    "sample_pf_ode",
    "sample_sde",
    "save_checkpoint",
    "solve",
    "solve_ensemble",
    "train",
]

if TYPE_CHECKING:
    from pysens.diffusion import (
        EDM,
        VE,
        VP,
        ConvScore,
        EmpiricalScore,
        GaussianMixtureScore,
        MLPScore,
        SubVP,
        load_checkpoint,
        save_checkpoint,
        train,
    )
    from pysens.diffusion.likelihood import LikelihoodResult, log_likelihood
    from pysens.diffusion.sampling import SampleResult, sample_pf_ode, sample_sde
    from pysens.ensemble import EnsembleProblem, EnsembleSolution, solve_ensemble
    from pysens.solvers import BrownianGrid, ODEProblem, SDEProblem, Solution, Stats, solve


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pysens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
