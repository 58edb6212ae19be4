"""Pathwise sample sensitivity of the reverse SDE on a fixed Brownian path (digest §3.5).

In forward time t (steps h = t_{n+1} − t_n < 0 from T down to t1, |h| = dτ of the reverse time τ = T − t) and on a
replayable :class:`~pysens.solvers.BrownianGrid` W, Euler–Maruyama on the state (x, ℓ, y_1..y_P):

    x_{n+1} = x_n + [f x_n − g² s(x_n)] h + g ΔW
    y_{n+1} = y_n + [f y_n − g² (J_s y_n + δs(x_n, ℓ_n))] h                 (the noise is additive: no tangent term)
    ℓ_{n+1} = ℓ_n + [d f + ½ g² |s|²] |h| + g s·ΔW  (+ ½ g² (ΔWᵀ J_s ΔW − tr J_s |h|))      Itô log-density

f, g, s at (t_n, x_n). ℓ = log ρ_t(x_t) along the path needs no divergence (Skreta et al. 2024; Karczewski et al.);
with plain EM it converges at strong order ½ only. The bracket is the zero-mean Milstein term of the ℓ equation
(its diffusion g s(x)ᵀ depends on x, whose noise is g dW), which restores order 1 (``milstein=True``, the default;
switchable). It keeps the symmetric part of J_s only, exact for a conservative score (J_s = ∇² log ρ_t); the Lévy-area
term of a non-symmetric learned Jacobian is dropped. Its trace is exact (d JVPs) or a Hutchinson estimate with a
fresh Rademacher probe per step (the term is zero-mean, so an unbiased trace keeps it zero-mean; a probe fixed for
the whole path would not).

All JVPs of a step (J_s y_p, J_s ΔW, the trace tangents) are one vmapped JVP.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pysens.diffusion.divergence import hutchinson_probes
from pysens.diffusion.processes import ForwardProcess, Time, expand_as_batch, time_like
from pysens.diffusion.sampling import ScoreModel
from pysens.sensitivity.measures import DataEdit, Perturbation
from pysens.sensitivity.ode import SensitivityResult, TangentField, prepare
from pysens.sensitivity.reference import reference_diagnostics
from pysens.sensitivity.tangents import DIVERGENCES, score_jets
from pysens.solvers import BrownianGrid, Stats

__all__ = ["sde_sample_sensitivity"]


def sde_sample_sensitivity(
    score: ScoreModel,
    process: ForwardProcess | str,
    x_T: Tensor,
    perturbations: Perturbation | DataEdit | Sequence[Perturbation | DataEdit] | None = None,
    *,
    t1: float | None = None,
    n_steps: int = 1000,
    brownian: BrownianGrid | None = None,
    generator: torch.Generator | None = None,
    milstein: bool = True,
    milstein_trace: str = "exact",
    parameterization: str = "score",
    terminal_log_density: Callable[[Tensor], Tensor] | None = None,
    log_density: Callable[[Tensor, Time], Tensor] | None = None,
    chunk_size: int | None = None,
    reference: str = "model",
    data=None,
) -> SensitivityResult:
    """Reverse-SDE samples from ``x_T`` with the Itô log-density and pathwise sensitivities (module docstring).

    Args:
        score, process, x_T, perturbations, t1, parameterization, terminal_log_density, log_density, chunk_size:
            as in :func:`pysens.sensitivity.sample_sensitivity` (``log_density`` replaces the Itô ℓ by a closed form).
        n_steps: equal steps from T to t1; their ends must be points of ``brownian`` when one is given.
        brownian: the Brownian path to replay, spanning (T, t1) with increments shaped like ``x_T``; drawn from
            ``generator`` on ``n_steps`` intervals when None (and returned in the result for replay).
        milstein: add the zero-mean Milstein term to ℓ (order 1 instead of ½).
        milstein_trace: ``"exact"`` or ``"hutchinson"`` (fresh probes from ``generator``) for its tr J_s.
        reference, data: which law eq. (★) reads its ratio and score from, and the training set
            (:func:`pysens.sensitivity.sample_sensitivity`, :mod:`pysens.sensitivity.reference`).

    Returns:
        :class:`~pysens.sensitivity.ode.SensitivityResult` with ``brownian`` set and ``solution`` None.
    """
    setup = prepare(
        score,
        process,
        x_T,
        perturbations,
        t1=t1,
        parameterization=parameterization,
        divergence="exact",
        n_probes=1,
        probe="rademacher",
        generator=None,
        terminal_log_density=terminal_log_density,
        log_density=log_density,
        reference=reference,
        data=data,
    )
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer; got {n_steps!r}")
    if milstein_trace not in DIVERGENCES:
        raise ValueError(f"milstein_trace must be one of {DIVERGENCES}; got {milstein_trace!r}")
    process, P = setup.process, len(setup.perturbations)
    T, t1 = process.T, setup.t1
    if brownian is None:
        brownian = BrownianGrid.sample(
            (T, t1), n_steps, x_T.shape, generator=generator, dtype=x_T.dtype, device=x_T.device
        )
    elif not isinstance(brownian, BrownianGrid):
        raise TypeError(f"brownian must be a BrownianGrid; got {type(brownian).__name__}")
    else:
        brownian.check_covers((T, t1), x_T)
    times = torch.linspace(T, t1, n_steps + 1, dtype=torch.float64)
    index = brownian.indices(times)
    field_ = TangentField(
        setup.score,
        process,
        setup.perturbations,
        log_density=log_density,
        chunk_size=chunk_size,
        reference=setup.reference,
    )
    track_ell = log_density is None
    trace_mode = milstein_trace if (milstein and track_ell) else None
    d = math.prod(x_T.shape[1:])

    start = time.perf_counter()
    # forward-mode JVPs need no autograd graph; with one, a model's parameters would record the whole path
    with torch.no_grad():
        x = x_T.clone()
        ell = setup.terminal_log_density.clone()
        y = x_T.new_zeros(P, *x_T.shape)
        n_jvp = 0
        for k in range(n_steps):
            t = time_like(float(times[k]), x)
            h = float(times[k + 1] - times[k])
            dw = brownian.increment_between(index[k], index[k + 1]).to(dtype=x.dtype, device=x.device)
            tangents = [y] if P else []
            if trace_mode is not None:
                tangents.append(dw[None])
            probes = None
            if trace_mode == "hutchinson":
                probes = hutchinson_probes(1, x.shape, generator=generator, dtype=x.dtype, device=x.device)
            stacked = torch.cat(tangents) if tangents else None
            # one engine for every trace mode: J_s·dW (Milstein's x correction) is then bit-identical across them
            jets = score_jets(
                setup.score,
                x,
                t,
                stacked,
                divergence=trace_mode,
                probes=probes,
                chunk_size=chunk_size,
                engine="forward",
            )
            n_jvp += 0 if stacked is None else stacked.shape[0]
            n_jvp += {None: 0, "exact": d, "hutchinson": 1}[trace_mode]
            s = jets.score
            f, g2 = process.drift_coef(t), process.g2(t)
            fx, g2x = expand_as_batch(f, x), expand_as_batch(g2, x)
            if P:
                current_ell = ell if track_ell else log_density(x, t)
                ds = field_.score_derivatives(t, x, current_ell, s)
                y = y + h * (fx * y - g2x * (jets.products[:P] + ds))
            if track_ell:
                flat_s, flat_dw = s.flatten(1), dw.flatten(1)
                ell = (
                    ell + (d * f + 0.5 * g2 * (flat_s**2).sum(1)) * abs(h) + torch.sqrt(g2) * (flat_s * flat_dw).sum(1)
                )
                if trace_mode is not None:
                    quad = (jets.products[P] * dw).flatten(1).sum(1)  # ΔWᵀ J_s ΔW
                    ell = ell + 0.5 * g2 * (quad - jets.divergence * abs(h))
            x = x + h * (fx * x - g2x * s) + torch.sqrt(g2x) * dw
    if not track_ell:
        ell = log_density(x, t1)
    finite = torch.isfinite(x.flatten(1)).all(1) & torch.isfinite(ell)
    if P:
        finite &= torch.isfinite(y.flatten(2)).all(2).all(0)
    stats = Stats(nf=n_steps, njvp=n_jvp, njac=0, nlinsolve=0, nfactor=0, nkrylov=0, naccept=n_steps, nreject=0)
    stats.wall_time = time.perf_counter() - start
    return SensitivityResult(
        x=x,
        sensitivity=y,
        log_density=ell,
        x_T=x_T,
        terminal_log_density=setup.terminal_log_density,
        t1=t1,
        stats=stats,
        retcode="Success" if bool(finite.all()) else "Unstable",
        brownian=brownian,
        perturbations=setup.perturbations,
        diagnostics=reference_diagnostics(setup.reference, x, ell, setup.t1, x),
    )
