"""pysens: sensitivity analysis of score-based diffusion models.

Pose a differential equation once (``ODEProblem``, ``SDEProblem``) and ``solve`` it with a SciML-named
method on the torch, scipy or julia backend; the diffusion layer (``pysens.diffusion``) holds forward
processes, exact and trainable score models, samplers and likelihoods.
"""

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

__version__ = "0.1.0"

__all__ = [
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
