"""Discretise-then-differentiate: the exact ε-derivative of a fixed-step PF-ODE sampler (digest §3.4).

The sampler is written for the perturbed model s + Σ_p ε_p δs_p, where δs_p uses the ℓ tracked in the same loop,

    v_ε(t, x, ℓ) = f x − ½ g² (s_t(x) + Σ_p ε_p δs_p(x, ℓ)),     dℓ/dt = −d f + ½ g² ∇·s_t(x),

stepped by Euler or by Heun (the explicit trapezoid: EDM's second-order sampler on a grid that ends at t1 > 0, see
:func:`karras_timesteps`), and ``torch.func.jvp`` with respect to ε at ε = 0 (vmapped over the P unit directions)
gives the derivative of the discrete sampler itself. For an explicit Runge–Kutta method this equals the same method
applied to the tangent system of :mod:`pysens.sensitivity.ode` on the same grid (forward sensitivities commute with
explicit RK steps), so the two agree to rounding, a check of both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pysens.diffusion.processes import ForwardProcess, Time, expand_as_batch, resolve_process
from pysens.diffusion.sampling import ScoreModel
from pysens.sensitivity.measures import DataEdit, Perturbation
from pysens.sensitivity.ode import SensitivityResult, TangentField, prepare
from pysens.sensitivity.reference import reference_diagnostics
from pysens.sensitivity.tangents import score_jets
from pysens.solvers import Stats

__all__ = ["DISCRETE_METHODS", "discrete_sample_sensitivity", "karras_timesteps"]

DISCRETE_METHODS = ("Euler", "Heun")


def karras_timesteps(
    process: ForwardProcess | str, n_steps: int, *, t1: float | None = None, rho: float = 7.0
) -> Tensor:
    """EDM's time grid (Karras et al. 2022, eq. 5): t_i = (T^{1/ρ} + i/n (t1^{1/ρ} − T^{1/ρ}))^ρ, i = 0..n, from T down
    to t1 (default ``process.t_eps``), float64 ``[n + 1]``."""
    process = resolve_process(process)
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer; got {n_steps!r}")
    if not rho > 0:
        raise ValueError(f"rho must be positive; got {rho}")
    t1 = process.t_eps if t1 is None else float(t1)
    if not 0.0 < t1 < process.T:
        raise ValueError(f"t1 must lie strictly between 0 and T = {process.T:g}; got {t1:g}")
    i = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    grid = (process.T ** (1 / rho) + i * (t1 ** (1 / rho) - process.T ** (1 / rho))) ** rho
    grid[0], grid[-1] = process.T, t1  # exact ends despite the power round trip
    return grid


def _check_grid(timesteps, process: ForwardProcess, n_steps: int | None) -> Tensor:
    if timesteps is None:
        if n_steps is None:
            raise ValueError("give timesteps (a grid from T down to t1) or n_steps")
        return karras_timesteps(process, n_steps)
    grid = torch.as_tensor(timesteps, dtype=torch.float64).detach().cpu().reshape(-1)
    if grid.numel() < 2:
        raise ValueError("timesteps must hold at least two times (T and t1)")
    if abs(float(grid[0]) - process.T) > 1e-12 * max(1.0, process.T):
        raise ValueError(f"timesteps must start at T = {process.T:g}; got {float(grid[0]):g}")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("timesteps must decrease strictly (from T down to t1)")
    return grid


def discrete_sample_sensitivity(
    score: ScoreModel,
    process: ForwardProcess | str,
    x_T: Tensor,
    perturbations: Perturbation | DataEdit | Sequence[Perturbation | DataEdit],
    *,
    timesteps=None,
    n_steps: int | None = None,
    method: str = "Heun",
    parameterization: str = "score",
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    terminal_log_density: Callable[[Tensor], Tensor] | None = None,
    log_density: Callable[[Tensor, Time], Tensor] | None = None,
    chunk_size: int | None = None,
    reference: str = "model",
    data=None,
) -> SensitivityResult:
    """The exact derivative of a fixed-step Euler or Heun PF-ODE sampler with respect to ε (module docstring).

    Args:
        timesteps: the grid from T down to t1 (``[n + 1]``); default :func:`karras_timesteps` with ``n_steps``.
        method: ``"Euler"`` or ``"Heun"``.
        reference, data: which law eq. (★) reads its ratio and score from, and the training set
            (:func:`pysens.sensitivity.sample_sensitivity`, :mod:`pysens.sensitivity.reference`).
        Others as in :func:`pysens.sensitivity.sample_sensitivity`.
    """
    process = resolve_process(process)
    grid = _check_grid(timesteps, process, n_steps)
    if method not in DISCRETE_METHODS:
        raise ValueError(f"method must be one of {DISCRETE_METHODS}; got {method!r}")
    setup = prepare(
        score,
        process,
        x_T,
        perturbations,
        t1=float(grid[-1]),
        parameterization=parameterization,
        divergence=divergence,
        n_probes=n_probes,
        probe=probe,
        generator=generator,
        terminal_log_density=terminal_log_density,
        log_density=log_density,
        reference=reference,
        data=data,
    )
    P = len(setup.perturbations)
    if P == 0:
        raise ValueError("perturbations must hold at least one direction (nothing to differentiate)")
    field_ = TangentField(
        setup.score,
        process,
        setup.perturbations,
        divergence=divergence,
        probes=setup.probes,
        log_density=log_density,
        chunk_size=chunk_size,
        reference=setup.reference,
    )
    d = math.prod(x_T.shape[1:])
    track_ell = log_density is None

    def velocity(t: Tensor, x: Tensor, ell: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        jets = score_jets(
            setup.score, x, t, None, divergence=field_.divergence, probes=setup.probes, chunk_size=chunk_size
        )
        current = ell if track_ell else log_density(x, t)
        ds = field_.score_derivatives(t, x, current, jets.score)
        s_eps = jets.score + torch.einsum("p,p...->...", eps, ds)
        f, g2 = process.drift_coef(t), process.g2(t)
        dx = expand_as_batch(f, x) * x - 0.5 * expand_as_batch(g2, x) * s_eps
        dell = -d * f.expand(x.shape[0]) + 0.5 * g2 * jets.divergence if track_ell else torch.zeros_like(ell)
        return dx, dell

    def sampler(eps: Tensor) -> tuple[Tensor, Tensor]:
        x, ell = x_T, setup.terminal_log_density
        for k in range(grid.numel() - 1):
            t = torch.full((x.shape[0],), float(grid[k]), dtype=x.dtype, device=x.device)
            t_next = torch.full_like(t, float(grid[k + 1]))
            h = float(grid[k + 1] - grid[k])
            k1x, k1l = velocity(t, x, ell, eps)
            if method == "Euler":
                x, ell = x + h * k1x, ell + h * k1l
                continue
            k2x, k2l = velocity(t_next, x + h * k1x, ell + h * k1l, eps)
            x, ell = x + 0.5 * h * (k1x + k2x), ell + 0.5 * h * (k1l + k2l)
        return x, ell

    start = time.perf_counter()
    zero = x_T.new_zeros(P)
    basis = torch.eye(P, dtype=x_T.dtype, device=x_T.device)
    with torch.no_grad():  # forward mode only: no autograd graph through the loop
        (xs, ells), (ys, _) = torch.func.vmap(lambda e: torch.func.jvp(sampler, (zero,), (e,)))(basis)
    x, ell = xs[0], ells[0]
    if not track_ell:
        ell = log_density(x, setup.t1)
    n_eval = (grid.numel() - 1) * (1 if method == "Euler" else 2)
    stats = Stats(
        nf=n_eval,
        njvp=n_eval * field_.jvps_per_evaluation(d),
        njac=0,
        nlinsolve=0,
        nfactor=0,
        nkrylov=0,
        naccept=grid.numel() - 1,
        nreject=0,
    )
    stats.wall_time = time.perf_counter() - start
    finite = bool(torch.isfinite(x).all() and torch.isfinite(ys).all())
    return SensitivityResult(
        x=x,
        sensitivity=ys,
        log_density=ell,
        x_T=x_T,
        terminal_log_density=setup.terminal_log_density,
        t1=setup.t1,
        stats=stats,
        retcode="Success" if finite else "Unstable",
        perturbations=setup.perturbations,
        diagnostics=reference_diagnostics(setup.reference, x, ell, setup.t1, x),
    )
