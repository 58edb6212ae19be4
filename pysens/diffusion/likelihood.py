"""Log-likelihood by the continuous change of variables along the probability-flow ODE.

For a sample x at time t0 (default ``process.t_eps``), integrate forward to T the augmented state

    z = (x, Δ):   dx/dt = v(x, t) = f(t) x − ½ g(t)² s(x, t),
                  dΔ/dt = ∇·v(x, t) = d f(t) − ½ g(t)² ∇·s(x, t),      Δ(t0) = 0,

so that log p_{t0}(x) = log p_T(x_T) + Δ(T). The terminal density p_T defaults to the process's prior,
which is only an approximation of the noised data law at T (for VE the gap is large); pass
``terminal_log_density`` when the exact one is known.

The augmented state is packed as :class:`~pysens.solvers.layout.StateLayout` blocks ``x`` (the event
shape) and ``delta`` (a scalar per sample), so any backend can solve it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pysens.derivatives import DIVERGENCE_ENGINES
from pysens.derivatives.autotune import callable_key
from pysens.diffusion.divergence import exact_divergence, hutchinson_divergence, hutchinson_probes
from pysens.diffusion.processes import ForwardProcess, expand_as_batch, resolve_process
from pysens.diffusion.sampling import ScoreModel, check_cutoff, check_score_model
from pysens.solvers import ODEProblem, Solution, solve
from pysens.solvers.layout import StateLayout
from pysens.solvers.methods import with_compaction
from pysens.solvers.problem import check_state
from pysens.solvers.solution import SolvedResult
from pysens.validation import check_callable, check_choice, check_int, checked_log_density, checked_score

DIVERGENCES = ("exact", "hutchinson")


@dataclass
class LikelihoodResult(SolvedResult):
    """``log_density`` ``[B]`` = ``terminal_log_density`` + ``delta``; ``latent`` is x_T ``[B, *event]``."""

    log_density: Tensor
    terminal_log_density: Tensor
    delta: Tensor
    latent: Tensor
    solution: Solution


def log_likelihood(
    score: ScoreModel,
    process: ForwardProcess | str,
    x: Tensor,
    *,
    t0: float | None = None,
    method: str = "Tsit5",
    backend: str = "torch",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    terminal_log_density: Callable[[Tensor], Tensor] | None = None,
    chunk_size: int | None = None,
    probes: Tensor | None = None,
    divergence_engine: str = "auto",
    **solve_kwargs,
) -> LikelihoodResult:
    """log p_{t0}(x) per sample under the model's probability-flow ODE.

    Args:
        score, process: the model and its forward process.
        x: ``[B, *event]`` points at time ``t0``.
        divergence: ``"exact"`` (``divergence_engine`` picks how; ``chunk_size`` bounds vmapped engines' memory) or
            ``"hutchinson"`` (``n_probes`` fixed probes per solve, drawn once from ``generator``:
            an unbiased estimate of the log-density's change).
        probes: Hutchinson probes ``[K, B, *event]`` to use instead of drawing them (sharded runs draw them per
            trajectory: :mod:`pysens.ensemble`).
        divergence_engine: the exact divergence's engine (:func:`pysens.derivatives.divergence`): ``"auto"``
            (default) uses the model's own divergence when it has one (``score.score_and_divergence(x, t)``: the
            closed form of :class:`~pysens.diffusion.GaussianMixtureScore`, the structured pass of
            :class:`~pysens.diffusion.MLPScore`), else the fastest of the exact engines measured once
            for this score and shape; or force ``"vjp"``, ``"grad-batched"``, ``"jvp"``, ``"loop"``, ``"analytic"``.
        terminal_log_density: ``log p_T(x_T) -> [B]``; default ``process.prior_log_density``.
        method, backend, rtol, atol, **solve_kwargs: passed to :func:`pysens.solve`.
    """
    process = resolve_process(process)
    check_state(x, "x")
    check_score_model(score, x, "x")
    t0 = check_cutoff(process, t0, "t0")
    divergence = check_choice(divergence, "divergence", DIVERGENCES)
    if terminal_log_density is not None:
        check_callable(terminal_log_density, "terminal_log_density", "terminal_log_density(x_T) -> [B]")
        with torch.no_grad():  # one cheap evaluation, so a wrongly shaped density fails before the solve
            checked_log_density(terminal_log_density, "terminal_log_density")(x)
    n_probes = check_int(n_probes, "n_probes")
    chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size")
    # "auto" caches its engine per user score: keyed on the caller's callable (a model by its id, a closure by its
    # definition site, a bound method by its function and instance), not on this solve's checking wrapper (a new
    # wrapper every call would re-measure every engine at every batch size in every solve)
    engine_key = ("score", callable_key(score))
    # the closed form is looked up on the caller's object: the checking wrapper below does not forward attributes
    analytic = getattr(score, "score_and_divergence", None) if divergence_engine in ("auto", "analytic") else None
    score = checked_score(score)
    event = tuple(x.shape[1:])
    d = math.prod(event)
    if divergence == "exact":
        probes = None
    elif probes is None:
        probes = hutchinson_probes(n_probes, x.shape, kind=probe, generator=generator, dtype=x.dtype, device=x.device)
    elif probes.dim() != x.dim() + 1 or probes.shape[1:] != x.shape:
        raise ValueError(f"probes must be shaped [K, {', '.join(map(str, x.shape))}], got {tuple(probes.shape)}")
    layout = StateLayout(x=event, delta=())
    if divergence_engine not in DIVERGENCE_ENGINES:
        raise ValueError(f"divergence_engine must be one of {DIVERGENCE_ENGINES}, got {divergence_engine!r}")

    def rhs(t: Tensor, z: Tensor) -> Tensor:
        y = layout.unpack(z)["x"]

        def field(u: Tensor) -> Tensor:
            return score(u, t)

        if probes is None:
            closed_form = None if analytic is None else (lambda u: analytic(u, t))
            s, div_s = exact_divergence(
                field, y, chunk_size, engine=divergence_engine, analytic=closed_form, key=engine_key
            )
        else:
            s, div_s = hutchinson_divergence(field, y, probes)
        f, g2 = process.drift_coef(t), process.g2(t)
        dx = expand_as_batch(f, y) * y - 0.5 * expand_as_batch(g2, y) * s
        ddelta = d * f.expand(y.shape[0]) - 0.5 * g2 * div_s
        return layout.pack(x=dx, delta=ddelta)

    z0 = layout.pack(x=x, delta=torch.zeros(x.shape[0], dtype=x.dtype, device=x.device))
    if probes is None:  # the Hutchinson right-hand side closes over per-sample probes, so it keeps the full batch
        solve_kwargs = with_compaction(method, backend, solve_kwargs)
    sol = solve(
        ODEProblem(rhs, z0, (t0, process.T), name="likelihood"), method, backend, rtol=rtol, atol=atol, **solve_kwargs
    )
    sol.stats.njvp = sol.stats.nf * (d if probes is None else probes.shape[0])
    end = layout.unpack(sol.final)
    latent, delta = end["x"], end["delta"]
    log_pT = (terminal_log_density or process.prior_log_density)(latent)
    return LikelihoodResult(
        log_density=log_pT + delta, terminal_log_density=log_pT, delta=delta, latent=latent, solution=sol
    )
