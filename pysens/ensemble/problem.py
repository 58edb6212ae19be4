"""``EnsembleProblem``: many solves of one problem family, SciML's ensemble interface on pysens's engines.

SciML semantics (DiffEqBase's ``EnsembleProblem``):

* ``prob_func(problem, i, repeat) -> problem``: trajectory ``i`` (0-based here; SciML counts from 1), ``repeat``
  counting from 1 and raised each time ``output_func`` asks for a rerun;
* ``output_func(solution, i) -> (output, rerun)``: what to keep of trajectory i, and whether to solve it again;
* ``reduction(u, batch, I) -> (u, converged)``: folds each batch of outputs (trajectories ``I``, a range) into
  ``u`` (starting at ``u_init``); once ``converged`` no further batch is reduced (nor, except in the distributed
  mode, solved). The default appends: ``u`` is the list of outputs in trajectory order.

A trajectory is whatever problem ``prob_func`` returns, with any batch B_i ≥ 1 of samples.

Modes of :func:`solve_ensemble`:

* ``"serial"``: one ``pysens.solve`` per trajectory (SciML's ``EnsembleSerial``).
* ``"batched"``: the trajectories of a batch are stacked along the batch axis into one problem and solved at once
  by the per-sample engine (every sample keeps its own step size, error control and return code), then the rows
  are handed back per trajectory. The trajectories of a batch must be homogeneous: the same right-hand side
  objects, time span, event shape, dtype and device (per-trajectory parameters go into the state or into a
  closure over a batched tensor of parameters indexed by row); SDE trajectories bring their own
  ``BrownianGrid`` (e.g. from :func:`pysens.ensemble.trajectory_generator`), stacked with them.
* ``"distributed"``: batches become shards spread over the ranks of the torch.distributed process group
  (:mod:`pysens.ensemble.distributed`), each solved as in ``"batched"``; outputs are gathered on rank 0, or written
  shard by shard into ``out`` (resumable); the reduction runs on rank 0 in trajectory order. Other ranks get None.

Bit-identity. A batched solve gives each sample its own steps, so a trajectory solved inside a batch takes the
same steps as alone (the tests check the step counts). Its values agree to round-off but not always to the last
bit, for two reasons measured here: (1) the step-size controller raises float64 errors to fractional powers with
``**``, and PyTorch's vectorised ``pow`` rounds some elements one ulp away from its scalar tail loop, so a
sample's step can differ in the last bit with its position in the batch (float64, elementwise right-hand side:
up to 4e-14 after a solve for Tsit5 and Rodas5P; with ``exp(log(·)·p)`` in the controller the five methods tried
were bit-identical batched and alone); (2) neural networks: CPU BLAS picks kernels by batch size, so a network's
row can differ in the last bit with the rows beside it, which adaptive stepping can amplify. ESDIRK methods
differed by more (KenCarp4 3e-5, TRBDF2 5e-4 at the default rtol 1e-3, a step count changed; cause not traced).
So the distributed
mode never lets the world size change a batch: shards are fixed by ``batch_size`` alone, and a run on any number
of ranks equals the one-process run with the same ``batch_size`` to the last bit (same device, dtype and threads
per process).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pysens.ensemble.distributed import Group, TrajectoryError, join_process_group, run_shards
from pysens.ensemble.shards import ShardPlan, stable_repr
from pysens.solvers.noise import BrownianGrid
from pysens.solvers.problem import ODEProblem, SDEProblem, SplitODEProblem, SplitSDEProblem
from pysens.solvers.solution import SUCCESS, Solution, Stats
from pysens.solvers.solve import solve

MODES = ("serial", "batched", "distributed")


def _same_problem(problem, i: int, repeat: int):
    return problem


def _keep_solution(solution: Solution, i: int) -> tuple[Solution, bool]:
    return solution, False


def _append(u: list, batch: list, indices: range) -> tuple[list, bool]:
    return u + list(batch), False


@dataclass
class EnsembleProblem:
    """A base ``problem`` and how to make, keep and fold its trajectories (module docstring)."""

    problem: ODEProblem | SDEProblem
    prob_func: Callable[[Any, int, int], Any] = _same_problem
    output_func: Callable[[Solution, int], tuple[Any, bool]] = _keep_solution
    reduction: Callable[[Any, list, range], tuple[Any, bool]] = _append
    u_init: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.problem, (ODEProblem, SDEProblem)):
            raise TypeError(f"problem must be an ODEProblem or SDEProblem, got {type(self.problem).__name__}")
        for name in ("prob_func", "output_func", "reduction"):
            if not callable(getattr(self, name)):
                raise TypeError(f"{name} must be callable")


@dataclass
class EnsembleSolution:
    """``u``: the reduction's value (by default the list of outputs, one per trajectory, in order);
    ``converged``: whether the reduction said so; ``n_reduced``: trajectories folded into ``u``;
    ``stats``: work summed over the batched solves; ``shards``: per-shard records of a distributed run."""

    u: Any
    converged: bool
    n_reduced: int
    mode: str
    stats: Stats
    shards: list[dict] = field(default_factory=list)
    out: Path | None = None

    def __len__(self) -> int:
        return len(self.u) if isinstance(self.u, Sequence) else self.n_reduced

    def __getitem__(self, i: int) -> Any:
        return self.u[i]


def solve_ensemble(
    ensemble_problem: EnsembleProblem,
    method: str = "Tsit5",
    backend: str = "torch",
    *,
    trajectories: int,
    ensemble: str = "batched",
    batch_size: int | None = None,
    out: str | Path | None = None,
    group: Group | None = None,
    fingerprint: dict | None = None,
    **solve_kwargs,
) -> EnsembleSolution | None:
    """Solve ``trajectories`` trajectories of ``ensemble_problem`` with ``method`` on ``backend``.

    Also reached as ``pysens.solve(ensemble_problem, method, backend, trajectories=..., ensemble=...)``.

    Args:
        trajectories: N, the number of trajectories.
        ensemble: ``"serial"``, ``"batched"`` (default) or ``"distributed"`` (module docstring).
        batch_size: trajectories per batch (the reduction's batch and the distributed shard). Default: all of them
            for serial/batched; required for distributed, because it fixes the shards and with them the results.
        out: distributed only: a folder for the shards and manifest (resumable; see :mod:`pysens.ensemble.shards`).
        group: distributed only: the process group (default :func:`join_process_group`).
        fingerprint: distributed with ``out``: JSON-able settings that identify the run (refuses to mix runs);
            default: method, backend, N, batch size and the solve options' text.
        **solve_kwargs: passed to :func:`pysens.solve` for every batch (``generator`` only in serial mode: in the
            others every trajectory's noise must come from its own ``BrownianGrid``).

    Returns:
        An :class:`EnsembleSolution` (on rank 0 only in distributed mode; other ranks get None).
    """
    if not isinstance(ensemble_problem, EnsembleProblem):
        raise TypeError(f"ensemble_problem must be an EnsembleProblem, got {type(ensemble_problem).__name__}")
    if ensemble not in MODES:
        raise ValueError(f"ensemble must be one of {MODES}, got {ensemble!r}")
    if not isinstance(trajectories, int) or isinstance(trajectories, bool) or trajectories < 1:
        raise ValueError(f"trajectories must be a positive integer, got {trajectories!r}")
    if batch_size is None:
        if ensemble == "distributed":
            raise ValueError(
                "batch_size is required with ensemble='distributed': it fixes the shards, and so the results, "
                "independently of the number of ranks"
            )
        batch_size = trajectories
    plan = ShardPlan(trajectories, batch_size)
    if ensemble != "distributed" and (out is not None or group is not None):
        raise ValueError("out and group apply to ensemble='distributed' only")
    if solve_kwargs.get("generator") is not None and ensemble != "serial":
        raise ValueError(
            "generator is refused with ensemble='batched'/'distributed' (its numbers would depend on the batching); "
            "give each SDE trajectory its own BrownianGrid in prob_func, e.g. from pysens.ensemble.trajectory_generator"
        )
    stacked = ensemble != "serial"

    def work(indices: range) -> tuple[list, Stats]:
        stats = Stats()
        return _solve_batch(ensemble_problem, indices, method, backend, stacked, solve_kwargs, stats), stats

    if ensemble != "distributed":
        return _reduce(ensemble_problem, plan, (work(plan.bounds(k)) for k in range(plan.n_shards)), ensemble)
    group = group or join_process_group()
    if fingerprint is None:
        fingerprint = {
            "method": method,
            "backend": backend,
            "solve_kwargs": {k: stable_repr(v) for k, v in sorted(solve_kwargs.items())},
            "prob_func": getattr(ensemble_problem.prob_func, "__qualname__", repr(ensemble_problem.prob_func)),
        }
    run = run_shards(plan, work, group=group, out=out, kind="ensemble", fingerprint=fingerprint)
    if run is None:
        return None
    result = _reduce(ensemble_problem, plan, run.payloads, ensemble)
    result.shards, result.out = run.shards, run.out
    return result


def _reduce(ens: EnsembleProblem, plan: ShardPlan, batches, mode: str) -> EnsembleSolution:
    """Fold ``(outputs, stats)`` batches in trajectory order until the reduction converges (a lazy ``batches``
    is not solved past that point)."""
    u = [] if ens.u_init is None else ens.u_init
    total, done, converged = Stats(), 0, False
    for k, (outputs, stats) in enumerate(batches):
        indices = plan.bounds(k)
        u, converged = ens.reduction(u, outputs, indices)
        _add_stats(total, stats)
        total.wall_time += stats.wall_time
        done = indices.stop
        if converged:
            break
    return EnsembleSolution(u, bool(converged), done, mode, total)


def _make(ens: EnsembleProblem, i: int, repeat: int):
    try:
        problem = ens.prob_func(copy.copy(ens.problem), i, repeat)
    except Exception as err:
        raise TrajectoryError(i, f"prob_func raised on trajectory {i} (repeat {repeat})") from err
    if not isinstance(problem, (ODEProblem, SDEProblem)):
        raise TrajectoryError(
            i, f"prob_func must return an ODEProblem or SDEProblem; trajectory {i} got {type(problem).__name__}"
        )
    return problem


def _solve_batch(
    ens: EnsembleProblem, indices: range, method: str, backend: str, stacked: bool, solve_kwargs: dict, stats: Stats
) -> list:
    """Outputs of trajectories ``indices`` (with reruns), solved one by one or stacked."""
    repeat = dict.fromkeys(indices, 1)
    outputs: dict[int, Any] = {}
    pending = list(indices)
    while pending:
        problems = [_make(ens, i, repeat[i]) for i in pending]
        start = time.perf_counter()
        if stacked:
            solution = solve(stack_problems(problems, pending), method, backend, **solve_kwargs)
            _add_stats(stats, solution.stats)
            sizes = [p.x0.shape[0] for p in problems]
            offsets = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
            solutions = [rows_of(solution, slice(offsets[k], offsets[k + 1])) for k in range(len(problems))]
        else:
            solutions = []
            for problem in problems:
                solutions.append(solve(problem, method, backend, **solve_kwargs))
                _add_stats(stats, solutions[-1].stats)
        stats.wall_time += time.perf_counter() - start
        rerun = []
        for i, solution in zip(pending, solutions, strict=True):
            try:
                output, again = ens.output_func(solution, i)
            except Exception as err:
                raise TrajectoryError(i, f"output_func raised on trajectory {i} (repeat {repeat[i]})") from err
            if again:
                repeat[i] += 1
                rerun.append(i)
            else:
                outputs[i] = output
        pending = rerun
    return [outputs[i] for i in indices]


def _rhs_identity(problem) -> tuple:
    if isinstance(problem, SplitODEProblem):
        return (type(problem), problem.f1, problem.f2, problem.jvp1, problem.jac1)
    if isinstance(problem, SplitSDEProblem):
        return (type(problem), problem.f1, problem.f2, problem.g, problem.noise)
    if isinstance(problem, SDEProblem):
        return (type(problem), problem.f, problem.g, problem.noise)
    return (type(problem), problem.f, problem.jvp, problem.jac)


def stack_problems(problems: list, indices: Sequence[int]):
    """One problem whose rows are the trajectories' rows in order; ValueError naming the first trajectory that
    does not match the first one (right-hand side objects, tspan, event shape, dtype, device)."""
    first = problems[0]
    key = _rhs_identity(first)
    for i, p in zip(indices, problems, strict=True):
        mismatch = None
        if _rhs_identity(p) != key:
            mismatch = "its right-hand side objects (f, g, jvp, jac) are not those of the first"
        elif p.tspan != first.tspan:
            mismatch = f"its tspan {p.tspan} differs from {first.tspan}"
        elif p.x0.shape[1:] != first.x0.shape[1:] or p.x0.dtype != first.x0.dtype or p.x0.device != first.x0.device:
            mismatch = "its x0 event shape, dtype or device differs"
        elif isinstance(p, SDEProblem) and (p.brownian is None) != (first.brownian is None):
            mismatch = "some trajectories carry a BrownianGrid and others do not"
        if mismatch:
            raise TrajectoryError(
                i,
                f"batched ensembles need homogeneous trajectories: trajectory {i} does not stack ({mismatch}); "
                "use ensemble='serial', or keep per-trajectory parameters in the state",
            )
    if len(problems) == 1:
        return first
    merged = copy.copy(first)
    merged.x0 = torch.cat([p.x0 for p in problems])
    if isinstance(first, SDEProblem):
        if first.brownian is None:
            raise TrajectoryError(
                indices[0], "SDE trajectories of a batched ensemble need their own BrownianGrid (set it in prob_func)"
            )
        merged.brownian = _stack_brownian([p.brownian for p in problems])
    return merged


def _stack_brownian(paths: list[BrownianGrid]) -> BrownianGrid:
    times = paths[0].times
    if any(p.times.shape != times.shape or not torch.equal(p.times, times) for p in paths):
        raise ValueError("the trajectories' Brownian grids must share their time grid to be stacked")
    with_z = [p.time_integrals is not None for p in paths]
    z = torch.cat([p.time_integrals for p in paths], dim=1) if all(with_z) else None
    return BrownianGrid(times, torch.cat([p.increments for p in paths], dim=1), z)


def rows_of(solution: Solution, rows: slice) -> Solution:
    """The samples ``rows`` of a batched solution. Per-sample fields are sliced; batch counters (``nf``, ``naccept``…)
    stay those of the shared solve, while ``sample_naccept``/``sample_nreject`` are the rows' own."""
    stats = copy.copy(solution.stats)
    for name in ("sample_naccept", "sample_nreject"):
        value = getattr(stats, name)
        if value is not None:
            setattr(stats, name, value[rows])
    codes = solution.sample_retcodes[rows] if solution.sample_retcodes is not None else None
    retcode = solution.retcode if codes is None else next((c for c in codes if c != SUCCESS), SUCCESS)
    return Solution(
        t=solution.t,
        x=solution.x[:, rows],
        retcode=retcode,
        stats=stats,
        method=solution.method,
        backend=solution.backend,
        sample_retcodes=codes,
        t_final=None if solution.t_final is None else solution.t_final[rows],
        message=solution.message,
        extra=dict(solution.extra),
    )


def _add_stats(total: Stats, part: Stats) -> None:
    for name in ("nf", "njvp", "njac", "nlinsolve", "nfactor", "nkrylov", "naccept", "nreject"):
        value = getattr(part, name)
        if value is not None and getattr(total, name) is not None:
            setattr(total, name, getattr(total, name) + value)
