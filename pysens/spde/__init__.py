"""Forward SPDE of score error and the SIEM quality metric (digest seed002, arXiv 2602.08579 reconstructed).

The score error is a stochastic source in the Fokker–Planck equation of the sampler; the density u_τ then solves a
forward SPDE with transport noise. This package provides

* grid solvers in 1-D and 2-D (:class:`Grid`, :class:`GridSPDE`): finite-volume Fokker–Planck operators (central,
  Scharfetter–Gummel, Chang–Cooper flux; no-flux or periodic boundaries) posed as method-of-lines ODE/SDE problems
  for any ``pysens.solve`` backend, with the exact-shift splitting for common noise, noise models N1–N4
  (:mod:`pysens.spde.noise`) and an Itô/Stratonovich ``convention``;
* the particle representation (:func:`simulate_particles`) and DDPM ancestral/DDIM samplers that stream per-step
  statistics (:func:`sample_with_statistics`);
* SIEM with estimators A/B/C and both μ_t candidates behind one :class:`SIEMConfig` (:func:`siem`,
  :func:`mu_curves`), radial test functions, windows (:func:`window`), the stability helpers and the closed forms
  the estimators are tested against;
* the correlation study on sklearn digits (:func:`run_study`, CLI verb ``siem-study`` via :func:`add_cli`).

Every formula is a labelled reconstruction (the paper's body was not readable); the switches are documented where
they live.
"""

from .cli import add_cli
from .closed_forms import (
    common_noise_grad_mean_gaussian,
    ddpm_gaussian_recursion,
    dilation_noise_moments,
    ou_common_noise_expected_kl,
    ou_common_noise_expected_qv,
    white_noise_qv_rate_gaussian,
)
from .ddpm import TrajectoryStats, WhiteNoisePlugin, ddim_timesteps, sample_with_statistics
from .density_ratio import DensityRatio
from .grid import FokkerPlanckOperator, Grid, GridTooCoarseWarning
from .metrics import FeatureClassifier, correlate, frechet_distance, sliced_w2, w2_distance
from .noise import AdditiveNoise, ColoredTransportNoise, CommonNoise, DilationNoise, SmoothBrownianPath
from .particles import ParticleResult, simulate_particles
from .qv import EnsembleQV, realized_qv
from .schedules import DDPMSchedule, alpha_bar, eps_to_score, linear_betas, score_to_eps, window, window_steps
from .siem import MuCurves, SIEMConfig, SIEMResult, mu_curves, mu_from_stats, siem, siem_from_stats
from .solver import GridSolution, GridSPDE, sampling_drift
from .stability import (
    dilation_stability,
    gaussian_kl,
    gaussian_w2,
    kl_bound,
    kl_noise_floor,
    logconcavity_threshold,
    w2_bound,
    w2_contraction_rate,
)
from .study import StudyConfig, check_checkpoints, run_study
from .test_functions import GaussianBump, Radial, RadialPower, RadialQuadratic, RadialTestFunction, as_radial

__all__ = [
    "AdditiveNoise",
    "ColoredTransportNoise",
    "CommonNoise",
    "DDPMSchedule",
    "DensityRatio",
    "DilationNoise",
    "EnsembleQV",
    "FeatureClassifier",
    "FokkerPlanckOperator",
    "GaussianBump",
    "Grid",
    "GridSPDE",
    "GridSolution",
    "GridTooCoarseWarning",
    "MuCurves",
    "ParticleResult",
    "Radial",
    "RadialPower",
    "RadialQuadratic",
    "RadialTestFunction",
    "SIEMConfig",
    "SIEMResult",
    "SmoothBrownianPath",
    "StudyConfig",
    "TrajectoryStats",
    "WhiteNoisePlugin",
    "add_cli",
    "alpha_bar",
    "as_radial",
    "check_checkpoints",
    "common_noise_grad_mean_gaussian",
    "correlate",
    "ddim_timesteps",
    "ddpm_gaussian_recursion",
    "dilation_noise_moments",
    "dilation_stability",
    "eps_to_score",
    "frechet_distance",
    "gaussian_kl",
    "gaussian_w2",
    "kl_bound",
    "kl_noise_floor",
    "linear_betas",
    "logconcavity_threshold",
    "mu_curves",
    "mu_from_stats",
    "ou_common_noise_expected_kl",
    "ou_common_noise_expected_qv",
    "realized_qv",
    "run_study",
    "sample_with_statistics",
    "sampling_drift",
    "score_to_eps",
    "siem",
    "siem_from_stats",
    "simulate_particles",
    "sliced_w2",
    "w2_bound",
    "w2_contraction_rate",
    "w2_distance",
    "white_noise_qv_rate_gaussian",
    "window",
    "window_steps",
]
