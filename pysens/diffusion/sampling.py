"""Samplers: the probability-flow ODE and the reverse SDE, both posed as problems for ``pysens.solve``.

Time runs from T (noise) down to a cut-off t1 > 0. For dX = f(t) X dt + g(t) dW and a score s(x, t):

    PF-ODE:       dx/dt = v(x, t) = f(t) x − ½ g(t)² s(x, t)
    reverse SDE:  dx = [f(t) x − g(t)² s(x, t)] dt + g(t) dW̄     (dt < 0; the noise is additive)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pysens.diffusion.processes import ForwardProcess, expand_as_batch, resolve_process
from pysens.solvers import BrownianGrid, ODEProblem, SDEProblem, Solution, solve
from pysens.solvers.methods import with_compaction
from pysens.solvers.problem import check_state
from pysens.solvers.solution import SolvedResult
from pysens.validation import check_int, check_number, checked_score

ScoreModel = Callable[[Tensor, Tensor], Tensor]


def check_score_model(score, x: Tensor, name: str) -> None:
    """Clear errors when ``score`` is not callable or lives on another dtype/device than ``x``."""
    if not callable(score):
        raise TypeError(f"score must be callable as score(x, t), got {type(score).__name__}")
    event_shape = getattr(score, "event_shape", None)
    if isinstance(event_shape, (tuple, torch.Size)) and tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"{name} must be shaped [B, {', '.join(map(str, event_shape))}] for this score model (event shape "
            f"{tuple(event_shape)}); got {tuple(x.shape)}"
        )
    if isinstance(score, nn.Module):
        tensor = next(iter(score.parameters()), None)
        if tensor is None:
            tensor = next(iter(score.buffers()), None)
        if tensor is not None and tensor.is_floating_point():
            if tensor.dtype != x.dtype:
                raise TypeError(f"{name} is {x.dtype} but the score model is {tensor.dtype}; convert one of them")
            if tensor.device != x.device:
                raise ValueError(f"{name} is on {x.device} but the score model is on {tensor.device}; move one of them")


def check_cutoff(process: ForwardProcess, t1: float | None, name: str = "t1") -> float:
    t1 = process.t_eps if t1 is None else check_number(t1, name)
    process.check_time(t1, name)
    if not 0.0 < t1 < process.T:
        raise ValueError(f"{name} must lie strictly between 0 and T = {process.T:g}, got {t1:g}")
    return t1


def pf_ode_drift(score: ScoreModel, process: ForwardProcess) -> Callable[[Tensor, Tensor], Tensor]:
    """v(t, x) = f(t) x − ½ g(t)² s(x, t), as a right-hand side ``f(t, x)`` for :class:`ODEProblem`."""

    def v(t: Tensor, x: Tensor) -> Tensor:
        return expand_as_batch(process.drift_coef(t), x) * x - 0.5 * expand_as_batch(process.g2(t), x) * score(x, t)

    return v


@dataclass
class SampleResult(SolvedResult):
    """Samples ``x`` ``[B, *event]`` at the cut-off, the noise ``x_T`` they came from, and the solve."""

    x: Tensor
    x_T: Tensor
    solution: Solution


def sample_pf_ode(
    score: ScoreModel,
    process: ForwardProcess | str,
    x_T: Tensor,
    *,
    t1: float | None = None,
    method: str = "Tsit5",
    backend: str = "torch",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    saveat=None,
    **solve_kwargs,
) -> SampleResult:
    """Integrate the probability-flow ODE from ``x_T`` (at T) down to ``t1`` (default ``process.t_eps``).

    Tolerances default to score_sde's (1e-5). ``saveat`` (times from T down to t1) keeps the trajectory in
    ``result.solution``. Explicit torch methods run with ``compact=True`` (finished samples leave the batch; see
    :mod:`pysens.solvers.explicit`) unless ``compact=False`` is passed: the score must be a function of (x, t) row
    by row, as the score interface says, not close over per-sample tensors.
    """
    process = resolve_process(process)
    check_state(x_T, "x_T")
    check_score_model(score, x_T, "x_T")
    t1 = check_cutoff(process, t1)
    problem = ODEProblem(pf_ode_drift(checked_score(score), process), x_T, (process.T, t1), name="pf-ode")
    solve_kwargs = with_compaction(method, backend, solve_kwargs)
    sol = solve(problem, method, backend, rtol=rtol, atol=atol, saveat=saveat, **solve_kwargs)
    return SampleResult(x=sol.final, x_T=x_T, solution=sol)


def sample_sde(
    score: ScoreModel,
    process: ForwardProcess | str,
    x_T: Tensor,
    *,
    t1: float | None = None,
    n_steps: int | None = 1000,
    timesteps=None,
    method: str = "EM",
    brownian: BrownianGrid | None = None,
    generator: torch.Generator | None = None,
    saveat=None,
) -> SampleResult:
    """Integrate the reverse SDE from ``x_T`` down to ``t1`` with ``n_steps`` equal steps (or ``timesteps``).

    Noise comes from ``brownian`` (a path to replay, running from T to t1) or is drawn from ``generator``.
    """
    process = resolve_process(process)
    check_state(x_T, "x_T")
    check_score_model(score, x_T, "x_T")
    t1 = check_cutoff(process, t1)
    score = checked_score(score)

    def drift(t: Tensor, x: Tensor) -> Tensor:
        return expand_as_batch(process.drift_coef(t), x) * x - expand_as_batch(process.g2(t), x) * score(x, t)

    def diffusion(t: Tensor, x: Tensor) -> Tensor:
        return expand_as_batch(process.diffusion(t), x).expand_as(x)

    problem = SDEProblem(
        drift, diffusion, x_T, (process.T, t1), noise="additive", brownian=brownian, name="reverse-sde"
    )
    if timesteps is None:
        n_steps = check_int(n_steps, "n_steps")
        dt = (process.T - t1) / n_steps
    elif n_steps not in (None, 1000):
        raise ValueError("give n_steps (equal steps) or timesteps (a grid), not both")
    else:
        dt = None
    sol = solve(problem, method, "torch", dt=dt, timesteps=timesteps, saveat=saveat, generator=generator)
    return SampleResult(x=sol.final, x_T=x_T, solution=sol)
