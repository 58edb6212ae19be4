"""The workloads the distributed tests run, identical in the parent (one process) and in each spawned rank."""

from __future__ import annotations

import os
import signal

import torch
import torch.distributed as dist

import pysens
from pysens.ensemble import (
    EnsembleProblem,
    ShardFailure,
    join_process_group,
    sharded_log_likelihood,
    sharded_sample_sensitivity,
    solve_ensemble,
)
from pysens.sensitivity import data_edit

RATES = torch.linspace(0.5, 3.0, 64, dtype=torch.float64)
FAILING_TRAJECTORY = 29  # shard 3 of 8-trajectory shards: owned by rank 1 of 2
KILL_TRAJECTORY = 24  # first trajectory of shard 3: rank 1 dies after finishing its shard 1


def rhs(t, x):
    """dx/dt = −x³ + t x, elementwise (no closed form: the distributed tests compare runs with each other; the
    accuracy against an exact solution is checked on the linear ensemble of test_problem.py)."""
    return -(x**3) + t[:, None] * x


def ode_ensemble(fail_at: int | None = None, kill_at: int | None = None) -> EnsembleProblem:
    """64 trajectories: x(0) = RATES[i] in both components; ``prob_func`` raises at ``fail_at`` and SIGKILLs its
    own process at ``kill_at``."""
    base = pysens.ODEProblem(rhs, torch.ones(1, 2, dtype=torch.float64), (0.0, 2.0))

    def prob_func(problem, i, repeat):
        if i == fail_at:
            raise ValueError(f"no parameters for trajectory {i}")
        if i == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return pysens.ODEProblem(rhs, torch.full((1, 2), float(RATES[i]), dtype=torch.float64), problem.tspan)

    def output_func(solution, i):
        return solution.final[0], False

    return EnsembleProblem(base, prob_func=prob_func, output_func=output_func)


def small_model() -> pysens.MLPScore:
    torch.manual_seed(0)
    return pysens.MLPScore(2, pysens.VP(), hidden=16, depth=2).double()


def run_ensemble(group=None, out=None, **kw):
    return solve_ensemble(
        ode_ensemble(**kw),
        "Tsit5",
        trajectories=64,
        ensemble="distributed",
        batch_size=8,
        group=group,
        out=out,
        rtol=1e-8,
        atol=1e-8,
    )


def run_likelihood(group=None):
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return sharded_log_likelihood(
        small_model(),
        "VP",
        x,
        batch_size=4,
        seed=5,
        divergence="hutchinson",
        n_probes=2,
        group=group,
        t0=1e-2,
        rtol=1e-4,
        atol=1e-4,
    )


def run_sensitivity(group=None):
    removed = torch.tensor([[1.0, 0.5], [-1.0, 0.0]], dtype=torch.float64)
    edit = data_edit(100, removed=removed)
    return sharded_sample_sensitivity(
        small_model(),
        "VP",
        8,
        [edit],
        batch_size=4,
        seed=7,
        dtype=torch.float64,
        group=group,
        t1=1e-2,
        rtol=1e-4,
        atol=1e-4,
    )


def _join(rank: int, world_size: int, init_file: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    return join_process_group("cpu")


def worker_identity(rank: int, world_size: int, init_file: str, result_file: str) -> None:
    """Rank ``rank``: the ensemble, the likelihood, the sensitivity, then an ensemble whose prob_func fails."""
    group = _join(rank, world_size, init_file)
    results = {
        "ensemble": run_ensemble(group),
        "likelihood": run_likelihood(group),
        "sensitivity": run_sensitivity(group),
    }
    try:
        run_ensemble(group, fail_at=FAILING_TRAJECTORY)
        results["failure"] = None
    except ShardFailure as err:
        results["failure"] = str(err)
    if rank == 0:
        torch.save({k: _plain(v) for k, v in results.items()}, result_file)
    else:  # every rank raised the same failure
        torch.save({"failure": results["failure"]}, result_file + f".rank{rank}")
    dist.destroy_process_group()


def worker_killed(rank: int, world_size: int, init_file: str, out: str) -> None:
    """Rank 1 is killed (SIGKILL) when it reaches trajectory KILL_TRAJECTORY."""
    group = _join(rank, world_size, init_file)
    run_ensemble(group, out=out, kill_at=KILL_TRAJECTORY if rank == 1 else None)
    dist.destroy_process_group()


def _plain(result):
    """What the parent compares: tensors and return codes (no process-specific objects)."""
    if result is None or isinstance(result, str):
        return result
    if hasattr(result, "values"):
        return {"values": result.values, "retcodes": result.retcodes, "shards": result.shards}
    return {"u": torch.stack(result.u), "shards": result.shards}
