"""The ODE–SDE gap through the Fokker–Planck equation (Deveney et al.; seed001_fokker_planck.md).

* ``residual``: the log-density FP residual R[φ] (exact or Hutchinson Laplacian, autograd or finite-difference
  ∂_t, raw or gauge-fixed), FP-Diffusion's vector score residual, and the residual functional R̃.
* ``laplacian``: φ's ∂_tφ, ∇_xφ and Δφ by the forward-Laplacian, ``torch.func`` and autograd engines.
* ``potential``: ``PotentialScoreNet`` (a scalar φ_θ with score ∇φ_θ) and the authors' checkpoints.
* ``training``: DSM + w_R · mean R² (the authors' loss and schedule).
* ``gap``: the same prior samples through the PF-ODE and the reverse SDE, and W2 by exact grid OT, sliced and
  Gaussian; the authors' Euler/EM schedule as a preset.
* ``bound``: the derived Grönwall bound (seed001 §3.3b, not the paper's theorem), its score mismatch from samples or
  from a grid solution of the log-ratio PDE, and the linear-score oracle.
* ``log_ratio``: the log-ratio PDE (§3.3a) solved on a grid by the method of lines (d ≤ 2).
* ``experiment``: the reproduction and training study behind ``benchmarks/ode_sde_gap.py`` and the CLI verb.

Time runs forward from t = 0 (data) to T (noise); states are ``[B, d]``; see CONVENTIONS.md.
"""

from pysens.fokker_planck.bound import (
    MISMATCHES,
    DerivedBound,
    LinearScoreOracle,
    derived_w2_bound,
    estimate_derived_bound,
    linear_score_oracle,
    linear_score_residual,
    log_ratio_bound,
)
from pysens.fokker_planck.data import TOY_DATASETS, blob_mixture, sample_toy
from pysens.fokker_planck.gap import (
    GapResult,
    Grid,
    Histogram,
    SamplerSchedule,
    authors_schedule,
    discretise,
    gaussian_w2,
    ode_sde_gap,
    sample_gaussian_w2,
    sample_ode_sde,
    sliced_w2,
    uniform_schedule,
    w2_grid,
)
from pysens.fokker_planck.log_ratio import LogRatioSolution, solve_log_ratio
from pysens.fokker_planck.potential import (
    AUTHORS_DATASETS,
    AUTHORS_WEIGHTS,
    DATA_ENV_VAR,
    PotentialScoreNet,
    authors_checkpoint_path,
    authors_data_dir,
    load_authors_checkpoint,
)
from pysens.fokker_planck.residual import (
    NonlinearDriftProcess,
    PotentialDerivatives,
    ResidualFunctional,
    gauge_fix,
    log_fp_residual,
    potential_derivatives,
    residual_functional,
    score_fp_residual,
)
from pysens.fokker_planck.training import (
    AUTHORS_LR_SCHEDULE,
    FPTrainResult,
    authors_dsm_loss,
    load_potential_checkpoint,
    save_potential_checkpoint,
    train_fp_regularised,
)

__all__ = [
    "AUTHORS_DATASETS",
    "AUTHORS_LR_SCHEDULE",
    "AUTHORS_WEIGHTS",
    "DATA_ENV_VAR",
    "MISMATCHES",
    "TOY_DATASETS",
    "DerivedBound",
    "FPTrainResult",
    "GapResult",
    "Grid",
    "Histogram",
    "LinearScoreOracle",
    "LogRatioSolution",
    "NonlinearDriftProcess",
    "PotentialDerivatives",
    "PotentialScoreNet",
    "ResidualFunctional",
    "SamplerSchedule",
    "authors_checkpoint_path",
    "authors_data_dir",
    "authors_dsm_loss",
    "authors_schedule",
    "blob_mixture",
    "derived_w2_bound",
    "discretise",
    "estimate_derived_bound",
    "gauge_fix",
    "gaussian_w2",
    "linear_score_oracle",
    "linear_score_residual",
    "load_authors_checkpoint",
    "load_potential_checkpoint",
    "log_fp_residual",
    "log_ratio_bound",
    "ode_sde_gap",
    "potential_derivatives",
    "residual_functional",
    "sample_gaussian_w2",
    "sample_ode_sde",
    "sample_toy",
    "save_potential_checkpoint",
    "score_fp_residual",
    "sliced_w2",
    "solve_log_ratio",
    "train_fp_regularised",
    "uniform_schedule",
    "w2_grid",
]
