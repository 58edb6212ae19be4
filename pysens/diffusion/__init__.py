"""Diffusion layer: forward processes, exact and trainable score models, adapters, training and data.

Conventions (CONVENTIONS.md): forward time t ∈ [0, T] with t = 0 data and t = T noise; states are
``[B, *event_shape]``; a score model is any callable ``score(x, t)`` returning a tensor shaped like ``x``.
"""

from pysens.diffusion.adapters import DenoiserToScore, EpsilonToScore, ScoreToDenoiser, ScoreToEpsilon
from pysens.diffusion.datasets import digits, toy_mixture_2d
from pysens.diffusion.likelihood import LikelihoodResult, log_likelihood
from pysens.diffusion.mixtures import (
    MixtureCovariance,
    MixtureEvaluation,
    mixture_covariance,
    noised_mixture_log_density_and_score,
    sample_gaussian_mixture,
)
from pysens.diffusion.networks import (
    SCORE_NETWORKS,
    Checkpoint,
    ConvScore,
    MLPScore,
    NoiseLevelEmbedding,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from pysens.diffusion.processes import (
    EDM,
    OU,
    PROCESSES,
    VE,
    VP,
    ForwardProcess,
    SubVP,
    Time,
    as_time,
    expand_as_batch,
    make_process,
    process_from_config,
    resolve_process,
    time_like,
)
from pysens.diffusion.sampling import SampleResult, pf_ode_drift, sample_pf_ode, sample_sde
from pysens.diffusion.scores import EmpiricalScore, GaussianMixtureScore, check_state
from pysens.diffusion.training import TrainResult, dsm_loss, train

__all__ = [
    "EDM",
    "OU",
    "PROCESSES",
    "SCORE_NETWORKS",
    "VE",
    "VP",
    "Checkpoint",
    "ConvScore",
    "DenoiserToScore",
    "EmpiricalScore",
    "EpsilonToScore",
    "ForwardProcess",
    "GaussianMixtureScore",
    "MLPScore",
    "MixtureCovariance",
    "MixtureEvaluation",
    "NoiseLevelEmbedding",
    "ScoreToDenoiser",
    "ScoreToEpsilon",
    "SubVP",
    "Time",
    "TrainResult",
    "as_time",
    "check_state",
    "digits",
    "dsm_loss",
    "expand_as_batch",
    "load_checkpoint",
    "make_process",
    "mixture_covariance",
    "noised_mixture_log_density_and_score",
    "process_from_config",
    "read_checkpoint",
    "resolve_process",
    "sample_gaussian_mixture",
    "save_checkpoint",
    "time_like",
    "toy_mixture_2d",
    "train",
    "SampleResult",
    "LikelihoodResult",
    "log_likelihood",
    "pf_ode_drift",
    "sample_pf_ode",
    "sample_sde",
]
