"""EnsembleProblem semantics in one process: exact answers, batched vs serial, reruns, reductions, bad input."""

from __future__ import annotations

import math

import pytest
import torch

import pysens
from pysens.ensemble import EnsembleProblem, TrajectoryError, solve_ensemble
from pysens.solvers import BrownianGrid
from tests.ensemble import workloads

RATES = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)


def decay(t, x):
    """dx/dt = −k x with the rate k carried as the state's second component (dk/dt = 0)."""
    return torch.stack([-x[:, 1] * x[:, 0], torch.zeros_like(x[:, 0])], dim=1)


def decay_ensemble(**kw) -> EnsembleProblem:
    base = pysens.ODEProblem(decay, torch.tensor([[1.0, 1.0]], dtype=torch.float64), (0.0, 1.0))

    def prob_func(problem, i, repeat):
        return pysens.ODEProblem(decay, torch.tensor([[1.0, float(RATES[i])]], dtype=torch.float64), problem.tspan)

    return EnsembleProblem(base, prob_func=prob_func, **kw)


@pytest.mark.parametrize("mode", ["serial", "batched"])
def test_linear_decay_ensemble_matches_exp(mode):
    sol = solve_ensemble(
        decay_ensemble(), "Tsit5", trajectories=16, ensemble=mode, batch_size=5, rtol=1e-10, atol=1e-12
    )
    finals = torch.stack([s.final[0, 0] for s in sol.u])
    # Tsit5 at rtol 1e-10 over one unit of time: global error a few times the tolerance
    assert torch.allclose(finals, torch.exp(-RATES), rtol=0, atol=1e-9)
    assert all(s.retcode == "Success" for s in sol.u) and sol.n_reduced == 16


@pytest.mark.parametrize("method", ["Tsit5", "DP5", "DP8", "Rodas5P", "Rosenbrock23"])
def test_batched_takes_the_same_steps_as_serial(method):
    """Per-sample steps: a trajectory inside a batch takes the steps it takes alone. The values agree to round-off
    (measured ≤ 4e-14 here: the controller's vectorised float64 pow, see pysens.ensemble.problem), so the bound is
    1e-12, a few hundred ulp of O(1) values; fixed-step RK4 is bitwise (next test)."""
    ens = workloads.ode_ensemble()

    def run(mode):
        return solve_ensemble(
            EnsembleProblem(ens.problem, prob_func=ens.prob_func), method, trajectories=12, ensemble=mode, batch_size=6
        )

    serial, batched = run("serial"), run("batched")
    for a, b in zip(serial.u, batched.u, strict=True):
        assert torch.equal(a.stats.sample_naccept, b.stats.sample_naccept)
        assert torch.allclose(a.final, b.final, rtol=1e-12, atol=1e-12)


def test_fixed_step_batched_is_bitwise_serial():
    ens = workloads.ode_ensemble()
    runs = [
        solve_ensemble(ens, "RK4", trajectories=20, ensemble=m, batch_size=8, dt=0.05) for m in ("serial", "batched")
    ]
    assert torch.equal(torch.stack(runs[0].u), torch.stack(runs[1].u))


def test_output_func_rerun_and_reduction_convergence():
    repeats = {}

    def prob_func(problem, i, repeat):
        repeats[i] = repeat
        return problem

    def output_func(solution, i):
        return float(solution.final[0, 0]), repeats[i] < 2 and i % 2 == 0  # even trajectories solved twice

    def reduction(u, batch, indices):
        u = u + sum(batch)
        return u, indices.stop >= 8  # converged after the second batch of 4

    base = pysens.ODEProblem(decay, torch.tensor([[1.0, 1.0]], dtype=torch.float64), (0.0, 1.0))
    ens = EnsembleProblem(base, prob_func=prob_func, output_func=output_func, reduction=reduction, u_init=0.0)
    sol = solve_ensemble(ens, "Tsit5", trajectories=20, batch_size=4, rtol=1e-10, atol=1e-12)
    assert sol.converged and sol.n_reduced == 8
    assert sorted(repeats) == list(range(8))  # batches after convergence are never solved
    assert all(repeats[i] == (2 if i % 2 == 0 else 1) for i in range(8))
    assert sol.u == pytest.approx(8 * math.exp(-1.0), abs=1e-8)


def test_pysens_solve_dispatches_ensembles():
    sol = pysens.solve(decay_ensemble(), "Tsit5", trajectories=4, ensemble="batched", rtol=1e-10, atol=1e-12)
    assert len(sol) == 4 and sol.mode == "batched"
    assert float(sol[3].final[0, 0]) == pytest.approx(math.exp(-float(RATES[3])), abs=1e-9)


def test_batched_sde_trajectories_stack_their_brownian_paths():
    def f(t, x):
        return -x

    def g(t, x):
        return torch.ones_like(x)

    def prob_func(problem, i, repeat):
        gen = pysens.ensemble.trajectory_generator(11, i, 1)
        path = BrownianGrid.sample((0.0, 1.0), 50, (1, 1), generator=gen)
        return pysens.SDEProblem(f, g, torch.ones(1, 1, dtype=torch.float64), (0.0, 1.0), "additive", brownian=path)

    base = pysens.SDEProblem(f, g, torch.ones(1, 1, dtype=torch.float64), (0.0, 1.0), "additive")
    ens = EnsembleProblem(base, prob_func=prob_func)
    serial = solve_ensemble(ens, "EM", trajectories=6, ensemble="serial", dt=0.02)
    batched = solve_ensemble(ens, "EM", trajectories=6, ensemble="batched", dt=0.02)
    for a, b in zip(serial.u, batched.u, strict=True):  # EM is elementwise: the same path gives the same numbers
        assert torch.equal(a.final, b.final)


def test_bad_input_is_refused_by_name():
    ens = decay_ensemble()
    with pytest.raises(ValueError, match="ensemble must be one of"):
        solve_ensemble(ens, trajectories=2, ensemble="threads")
    with pytest.raises(ValueError, match="trajectories must be a positive integer"):
        solve_ensemble(ens, trajectories=0)
    with pytest.raises(ValueError, match="batch_size is required"):
        solve_ensemble(ens, trajectories=2, ensemble="distributed")
    with pytest.raises(ValueError, match="generator is refused"):
        solve_ensemble(ens, trajectories=2, generator=torch.Generator())
    with pytest.raises(TypeError, match="problem must be an ODEProblem"):
        EnsembleProblem("not a problem")
    with pytest.raises(TypeError, match="prob_func must be callable"):
        EnsembleProblem(ens.problem, prob_func=3)


def test_inhomogeneous_batch_names_the_trajectory():
    def prob_func(problem, i, repeat):
        tspan = (0.0, 2.0) if i == 3 else (0.0, 1.0)
        return pysens.ODEProblem(decay, problem.x0, tspan)

    ens = EnsembleProblem(decay_ensemble().problem, prob_func=prob_func)
    with pytest.raises(TrajectoryError, match="trajectory 3 does not stack") as info:
        solve_ensemble(ens, trajectories=6, ensemble="batched")
    assert info.value.trajectory == 3
    assert len(solve_ensemble(ens, trajectories=6, ensemble="serial")) == 6  # serial takes anything


def test_failing_prob_func_names_the_trajectory_in_one_process():
    ens = workloads.ode_ensemble(fail_at=5)
    with pytest.raises(TrajectoryError, match="prob_func raised on trajectory 5") as info:
        solve_ensemble(ens, trajectories=8, ensemble="batched")
    assert isinstance(info.value.__cause__, ValueError)
