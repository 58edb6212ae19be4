"""Sensitivity analysis of diffusion models (Scarvelis & Solomon 2025; derivation in seed000_sensitivity.md).

How a diffusion model's score and samples move when its training data move, before retraining:

* :mod:`~pysens.sensitivity.measures`: perturbation directions η of the data law (``EmpiricalMeasure``,
  ``GaussianMixtureMeasure``, ``GaussianMeanShift``, signed combinations, ``data_edit`` / ``edit_epsilon``);
* :func:`score_derivative`: δs_t = (σ_t/ρ_t)(∇log σ_t − s_t), in log space (digest §2.1, eq. ★);
* :func:`sample_sensitivity`: the PF-ODE tangent system (x, ℓ, y_1..y_P) from T to t1 on any solver (§3.1);
* :func:`sde_sample_sensitivity`: pathwise sensitivity of the reverse SDE with the Itô log-density (§3.5);
* :func:`discrete_sample_sensitivity`: the exact derivative of a fixed-step Euler/Heun sampler (§3.4);
* :mod:`~pysens.sensitivity.reference`: which law (★) is read against (``reference="model"``, ``"data"``, mixed),
  the training set's closed-form noised law :class:`DataLaw` (density, score, JVPs) and per-sample diagnostics;
* :mod:`~pysens.sensitivity.evaluation`: per-seed cosine/Pearson against observed changes, entropic-OT baseline;
* :mod:`~pysens.sensitivity.retraining`: the retraining study and its ``retraining-study`` CLI verb (``add_cli``).

Conventions (CONVENTIONS.md): forward time t ∈ [0, T], t = 0 data, samplers run from T down to t1 > 0; states
``[B, *event]``; a perturbed law is ρ + εη and a sensitivity y = ∂x_{t1}/∂ε at ε = 0 with x_T held fixed;
sensitivities to P directions are stacked ``[P, B, *event]``.
"""

from pysens.sensitivity.discrete import DISCRETE_METHODS, discrete_sample_sensitivity, karras_timesteps
from pysens.sensitivity.evaluation import (
    CorrelationResult,
    entropic_ot_displacement,
    sensitivity_correlation,
)
from pysens.sensitivity.measures import (
    EDIT_CONVENTIONS,
    DataEdit,
    EmpiricalMeasure,
    GaussianMeanShift,
    GaussianMixtureMeasure,
    ModelMeasure,
    Perturbation,
    ProbabilityMeasure,
    SignedMeasure,
    data_edit,
    edit_epsilon,
)
from pysens.sensitivity.ode import PARAMETERIZATIONS, SensitivityResult, TangentField, sample_sensitivity
from pysens.sensitivity.reference import REFERENCES, DataLaw, ReferenceDiagnostics
from pysens.sensitivity.retraining import add_cli, retraining_study
from pysens.sensitivity.score_derivative import ScoreDerivativeResult, score_derivative
from pysens.sensitivity.sde import sde_sample_sensitivity

__all__ = [
    "DISCRETE_METHODS",
    "EDIT_CONVENTIONS",
    "PARAMETERIZATIONS",
    "REFERENCES",
    "CorrelationResult",
    "DataEdit",
    "DataLaw",
    "EmpiricalMeasure",
    "GaussianMeanShift",
    "GaussianMixtureMeasure",
    "ModelMeasure",
    "Perturbation",
    "ProbabilityMeasure",
    "ReferenceDiagnostics",
    "ScoreDerivativeResult",
    "SensitivityResult",
    "SignedMeasure",
    "TangentField",
    "add_cli",
    "data_edit",
    "discrete_sample_sensitivity",
    "edit_epsilon",
    "entropic_ot_displacement",
    "karras_timesteps",
    "retraining_study",
    "sample_sensitivity",
    "score_derivative",
    "sde_sample_sensitivity",
    "sensitivity_correlation",
]
