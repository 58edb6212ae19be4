"""The precision-sensitive tests again, in a subprocess under a second ATen CPU capability.

torch picks vectorised kernels (AVX2, AVX512, ...) by the CPU it runs on, and they may round differently from the
scalar ones; a tolerance that holds on one machine's kernels only is a tolerance below what the arithmetic allows.
The suite itself runs under the native capability; this test re-runs the tests that compare results of different
code paths at a few ulps (network preconditioning, adapters, closed-form identities, batch-size and compaction
invariance, chunked mixtures, Brownian iterated integrals, schedules) under ``ATEN_CPU_CAPABILITY=default`` (the
scalar kernels), or under ``avx2`` when the suite itself runs on the scalar kernels.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

PRECISION_TESTS = [
    "tests/diffusion/test_networks.py::test_mlp_shapes_and_time_forms",
    "tests/diffusion/test_networks.py::test_score_is_minus_predicted_noise_over_beta",
    "tests/diffusion/test_adapters.py::test_round_trips_reproduce_the_score",
    "tests/diffusion/test_adapters.py::test_edm_denoiser_gives_the_edm_score",
    "tests/diffusion/test_processes.py::test_g2_matches_variance_identity_by_autograd",
    "tests/diffusion/test_processes.py::test_prior_log_density_is_the_gaussian",
    "tests/diffusion/test_processes.py::test_prior_sample_is_seeded_and_scaled",
    "tests/diffusion/test_mixtures.py::test_full_covariances_that_are_diagonal_agree_with_the_diagonal_path",
    "tests/diffusion/test_mixtures.py::test_chunked_evaluation_equals_one_pass",
    "tests/diffusion/test_mixtures.py::test_zero_weight_components_are_ignored_even_in_the_first_chunk",
    "tests/fokker_planck/test_ou_process.py",
    "tests/fokker_planck/test_forward_laplacian.py::test_all_linear_chain_has_zero_laplacian",
    "tests/fokker_planck/test_residual.py::test_gauge_shift_moves_raw_residual_by_c_dot_only",
    "tests/fokker_planck/test_residual.py::test_scalar_time_and_the_module_itself_give_the_batched_residual",
    "tests/sensitivity/test_measures.py::test_model_measure_and_combination_derivatives_are_linear",
    "tests/sensitivity/test_measures.py::test_mixture_measure_matches_the_mixture_model_at_every_time",
    "tests/solvers/test_explicit.py::test_per_sample_steps_independent_of_batch_mates",
    "tests/solvers/test_compaction.py::test_compaction_changes_the_work_not_the_result[Tsit5]",
    "tests/solvers/test_em.py",
    "tests/solvers/test_sde_methods.py::test_iterated_integral_is_the_trapezoid_of_the_fine_path",
    "tests/solvers/test_sde_methods.py::test_reverse_time_is_a_relabelling_of_forward_time",
    "tests/spde/test_schedules.py::test_exact_time_map_matches_the_discrete_marginals",
    "tests/spde/test_ddpm.py::test_ddim_with_eta_one_on_all_steps_is_the_ancestral_sampler",
]


def _capability_under(env_value: str) -> str:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": env_value}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return done.stdout.strip()


def _second_capability() -> str | None:
    """``default`` when this process runs vectorised kernels, else ``avx2`` if this CPU has it, else None."""
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        return "default"
    return "avx2" if _capability_under("avx2") == "AVX2" else None


def test_precision_sensitive_tests_pass_under_a_second_cpu_capability():
    other = _second_capability()
    if other is None:
        pytest.skip("this CPU has only the scalar ATen kernels: there is no second capability to compare with")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": other, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *PRECISION_TESTS]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"under ATEN_CPU_CAPABILITY={other}:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert " passed" in done.stdout.splitlines()[-1]
