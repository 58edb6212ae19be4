"""Ensembles and sharded solves: many trajectories on one process, a batch, or the ranks of a torch.distributed job.

* :class:`EnsembleProblem` / :func:`solve_ensemble` (also ``pysens.solve(EnsembleProblem, ...)``): SciML's
  ensemble interface, ``ensemble="serial" | "batched" | "distributed"``;
* ``sharded_*``: the high-level verbs (PF-ODE and SDE sampling, likelihood, sample sensitivity) over N
  trajectories in fixed shards, with per-trajectory random numbers, on every rank of the process group;
* :mod:`~pysens.ensemble.shards`: the shard folder (manifest, atomic shard files, resumption);
* :mod:`~pysens.ensemble.distributed`: joining the process group torchrun set up, running and gathering shards.

Results do not depend on the number of ranks: shards are fixed by ``batch_size`` and random numbers by
``(seed, trajectory)``, so ``torchrun --nproc_per_node=N`` reproduces the one-process run bit for bit on the
same device and dtype.
"""

from pysens.ensemble.distributed import Group, ShardedRun, ShardFailure, TrajectoryError, join_process_group, run_shards
from pysens.ensemble.problem import EnsembleProblem, EnsembleSolution, solve_ensemble
from pysens.ensemble.seeding import trajectory_generator, trajectory_seed
from pysens.ensemble.shards import ShardPlan, ShardStore
from pysens.ensemble.verbs import (
    ShardedResult,
    sharded_log_likelihood,
    sharded_sample_pf_ode,
    sharded_sample_sde,
    sharded_sample_sensitivity,
)

__all__ = [
    "EnsembleProblem",
    "EnsembleSolution",
    "Group",
    "ShardFailure",
    "ShardPlan",
    "ShardStore",
    "ShardedResult",
    "ShardedRun",
    "TrajectoryError",
    "join_process_group",
    "run_shards",
    "sharded_log_likelihood",
    "sharded_sample_pf_ode",
    "sharded_sample_sde",
    "sharded_sample_sensitivity",
    "solve_ensemble",
    "trajectory_generator",
    "trajectory_seed",
]
