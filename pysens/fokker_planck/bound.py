"""The derived W2 bound between the ODE and SDE sample laws, and its closed-form linear-score oracle.

**Derived, not the paper's theorem** (seed001 §0, §3.3): the paper states that W2(p^ODE(·,0), p^SDE(·,0)) is bounded by
a Fokker–Planck residual, but its statement and constants were not available. The bound here is the digest's own
derivation (§3.3b, check 3c): couple both flows at t = T from the same prior sample and apply Grönwall backwards,

    W2(p^ODE_0, p^SDE_0) ≤ ∫_0^T exp(∫_0^t L(τ) dτ) · (g(t)²/2) · ‖∇h(·, t)‖_{L²(p^SDE_t)} dt,

with L(t) = Lip_x(f − (g²/2) s) the Lipschitz constant of the ODE velocity and h = log p^SDE − φ (so ∇h is the score
mismatch; it solves the log-ratio equation ∂_t h = −R − f·∇h − (g²/2)(Δh + |∇h|²), §3.3a).

**Score mismatch**, three ways (:func:`estimate_derived_bound`): from reverse-SDE samples against a KDE or a
Gaussian-fit score (estimates, any d), or, for d ≤ 2, from the log-ratio equation solved on a grid by the method of
lines (:func:`solve_log_ratio`, :func:`log_ratio_bound`): then p^SDE_t ∝ e^{φ + h} is known on the grid, no sampling.

**Oracle** (§6.2): for an affine process and a linear score s(x, t) = −x/a(t) every law stays N(0, V I) with

    ODE:  V_O' = (2f + g²/a) V_O,        SDE:  V_S' = 2(f + g²/a) V_S − g²,        V(T) = prior variance,

W2 = √d |√V_O(0) − √V_S(0)|, ∇h = x (1/a − 1/V_S), ‖∇h‖ = |1/a − 1/V_S| √(d V_S) and L = |f + g²/(2a)|. For the
digest's example (OU, σ0 = 0.3, a = v_true (1 + 0.3 e^{−t}), d = 2): V_O = 0.20887, V_S = 0.14428, W2 = 0.10915,
bound 0.22110.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from pysens.diffusion.processes import OU, ForwardProcess, expand_as_batch
from pysens.fokker_planck.gap import SamplerSchedule, authors_schedule
from pysens.fokker_planck.log_ratio import LogRatioSolution, Potential, check_grid_args, graded_times, solve_log_ratio
from pysens.solvers import SDEProblem, Stats, solve
from pysens.spde.grid import Grid as CellGrid

__all__ = [
    "MISMATCHES",
    "DerivedBound",
    "LinearScoreOracle",
    "derived_w2_bound",
    "estimate_derived_bound",
    "linear_score_oracle",
    "linear_score_residual",
    "log_ratio_bound",
]

CurveFn = Callable[[np.ndarray], np.ndarray]


def _coefficients(process: ForwardProcess, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tt = torch.as_tensor(np.asarray(t, dtype=np.float64))
    return process.drift_coef(tt).numpy(), process.g2(tt).numpy()


def derived_w2_bound(times: np.ndarray, lipschitz: np.ndarray, g2: np.ndarray, mismatch: np.ndarray) -> float:
    """∫_0^T exp(∫_0^t L) (g²/2) ‖∇h‖ dt by the trapezoid rule on ascending ``times`` ``[n]`` (seed001 §3.3b, derived).

    ``lipschitz`` L(t), ``g2`` g(t)², ``mismatch`` ‖∇h(·, t)‖_{L²(p^SDE_t)}, all ``[n]`` on ``times``.
    """
    times, lipschitz, g2, mismatch = (np.asarray(v, dtype=np.float64) for v in (times, lipschitz, g2, mismatch))
    if times.ndim != 1 or times.shape[0] < 2 or not (np.diff(times) > 0).all():
        raise ValueError("times must be a strictly ascending 1-D grid with at least two points")
    steps = np.diff(times)
    growth = np.concatenate([[0.0], np.cumsum(0.5 * (lipschitz[1:] + lipschitz[:-1]) * steps)])
    integrand = np.exp(growth) * 0.5 * g2 * mismatch
    return float(np.sum(0.5 * (integrand[1:] + integrand[:-1]) * steps))


@dataclass
class LinearScoreOracle:
    """Closed-form ODE/SDE variances at t = 0 for s = −x/a(t), the exact W2 between them and the derived bound."""

    v_ode: float
    v_sde: float
    w2: float
    bound: float
    dim: int

    def as_dict(self) -> dict:
        return {
            "v_ode": self.v_ode,
            "v_sde": self.v_sde,
            "w2": self.w2,
            "bound": self.bound,
            "dim": self.dim,
            "bound_label": "derived (seed001 §3.3b), not the paper's theorem",
        }


def linear_score_oracle(
    a: CurveFn, process: ForwardProcess | None = None, dim: int = 2, n_grid: int = 200_001
) -> LinearScoreOracle:
    """Integrate the §6.2 variance ODEs backwards from V(T) = prior variance (scipy, rtol 1e-12) and evaluate the
    derived bound on ``n_grid`` points of [0, T]. ``a`` maps times ``[n]`` to a(t) > 0 ``[n]``."""
    process = OU() if process is None else process
    T, v_T = process.T, process.prior_std**2

    def rhs(t: float, y: np.ndarray) -> list[float]:
        f, g2 = (c.item() for c in _coefficients(process, np.array([t])))
        at = np.asarray(a(np.array([t]))).item()
        return [(2 * f + g2 / at) * y[0], 2 * (f + g2 / at) * y[1] - g2]

    sol = solve_ivp(rhs, (T, 0.0), [v_T, v_T], rtol=1e-12, atol=1e-14, dense_output=True, method="DOP853")
    if not sol.success:
        raise RuntimeError(f"the variance ODEs failed: {sol.message}")
    v_ode, v_sde = (float(v) for v in sol.y[:, -1])
    times = np.linspace(0.0, T, n_grid)
    f, g2 = _coefficients(process, times)
    at = a(times)
    vs = sol.sol(times)[1]
    mismatch = np.abs(1.0 / at - 1.0 / vs) * np.sqrt(dim * vs)
    bound = derived_w2_bound(times, np.abs(f + 0.5 * g2 / at), g2, mismatch)
    w2 = math.sqrt(dim) * abs(math.sqrt(v_ode) - math.sqrt(v_sde))
    return LinearScoreOracle(v_ode=v_ode, v_sde=v_sde, w2=w2, bound=bound, dim=dim)


def linear_score_residual(
    x: Tensor, t: Tensor, a: Tensor, a_dot: Tensor, c_dot: Tensor, process: ForwardProcess
) -> Tensor:
    """Closed-form R for φ = −|x|²/(2a(t)) + c(t) under an affine process (seed001 §6.2, check 1c, generalised):

        R = |x|² (a' − 2 f a − g²) / (2a²) + c' + d f + d g² / (2a),

    i.e. |x|²(a' + 2a − 1)/(2a²) + c' − d + d/(2a) for the authors' OU. ``x`` ``[B, d]``; the rest ``[B]``."""
    f, g2 = process.drift_coef(t), process.g2(t)
    d = x.shape[1]
    r2 = (x * x).sum(1)
    return r2 * (a_dot - 2 * f * a - g2) / (2 * a * a) + c_dot + d * f + d * g2 / (2 * a)


MISMATCHES = ("kde", "gaussian", "log_ratio")
ScoreModel = Callable[[Tensor, Tensor], Tensor]


# -- the derived bound for a learned score ------------------------------------------------------------------------


@dataclass
class DerivedBound:
    """The derived bound evaluated for a learned score with estimated ingredients, and what went into it.

    ``bound``: the §3.3b integral. ``times`` ``[n]`` ascending; ``lipschitz``: the max of the spectral norm of
    ∇_x(f − (g²/2) s) over the SDE samples, or over the grid cells carrying probability > ``mass_floor`` × the
    largest (a max over points, so it can be low); ``mismatch``: ‖∇log p^SDE − s‖ in L²(p^SDE) by ``method``:

    * ``"kde"``: ∇log p^SDE from a leave-one-out Gaussian KDE of the SDE samples (bandwidth ``bandwidths``);
    * ``"gaussian"``: from the samples' Gaussian fit (bandwidth 0);
    * ``"log_ratio"``: ∇h from the grid solution of the log-ratio equation (:func:`solve_log_ratio`), weighted by
      p^SDE ∝ e^{φ + h} on the grid: no sampling. ``grid`` is the :class:`pysens.spde.Grid`, ``edge_mass`` ``[n]`` the
      probability of its outermost ring of cells (truncation is negligible while it is), ``retcode`` / ``stats``
      the PDE solve's. ``n_samples`` is 0 and ``bandwidths`` None there.

    Sample-based ingredients are estimates, so that number estimates the derived bound, it does not certify it. The
    log-ratio ingredients carry grid and truncation errors only (and a max of L over grid points).
    """

    bound: float
    times: np.ndarray
    lipschitz: np.ndarray
    mismatch: np.ndarray
    bandwidths: np.ndarray | None
    n_samples: int
    method: str = "kde"
    grid: CellGrid | None = None
    edge_mass: np.ndarray | None = None
    mass_floor: float | None = None
    retcode: str = "Success"
    stats: Stats | None = None

    def as_dict(self) -> dict:
        labels = {
            "kde": "score mismatch against a leave-one-out KDE score of SDE samples (an estimate)",
            "gaussian": "score mismatch against the Gaussian-fit score of SDE samples (an estimate)",
            "log_ratio": "score mismatch ∇h from the log-ratio PDE solved on a grid, weighted by p_SDE ∝ exp(φ + h) "
            "(no sampling; grid and box-truncation errors only)",
        }
        lipschitz = "grid max over cells with non-negligible mass" if self.method == "log_ratio" else "sample max"
        out = {
            "bound": self.bound,
            "label": f"derived bound (seed001 §3.3b, not the paper's theorem): {lipschitz} of the velocity Lipschitz "
            f"constant, {labels[self.method]}",
            "method": self.method,
            "times": self.times,
            "lipschitz": self.lipschitz,
            "mismatch": self.mismatch,
            "bandwidths": self.bandwidths,
            "n_samples": self.n_samples,
            "retcode": self.retcode,
        }
        if self.grid is not None:
            out["grid"] = {"lower": self.grid.lower, "upper": self.grid.upper, "cells": self.grid.cells}
            out["edge_mass_max"] = float(np.max(self.edge_mass))
            out["mass_floor"] = self.mass_floor
            out["solve_stats"] = None if self.stats is None else self.stats.as_dict()
        return out


def _kde_score(x: Tensor, bandwidth: float) -> Tensor:
    """Leave-one-out Gaussian-KDE score ∇log p̂(x_i) ``[N, d]`` of the samples ``x`` ``[N, d]`` themselves."""
    diff = x[:, None, :] - x[None, :, :]  # x_i − x_j
    logits = -(diff**2).sum(-1) / (2 * bandwidth**2)
    logits.fill_diagonal_(-math.inf)
    w = torch.softmax(logits, dim=1)
    return -(w[:, :, None] * diff).sum(1) / bandwidth**2


def _velocity_jacobian_norms(
    score: ScoreModel, process: ForwardProcess, x: Tensor, t_k: float
) -> tuple[Tensor, Tensor]:
    """s(x, t) ``[N, d]`` and the spectral norm ``[N]`` of the PF-ODE velocity Jacobian f I − (g²/2) ∇s at every row
    of ``x`` ``[N, d]``, by d exact JVPs of the score."""
    n, dim = x.shape
    t = torch.full((n,), t_k, dtype=x.dtype, device=x.device)
    eye = torch.eye(dim, dtype=x.dtype, device=x.device)
    tangents = eye.reshape(dim, 1, dim).expand(dim, n, dim)
    s, jac_cols = torch.func.vmap(lambda v: torch.func.jvp(lambda y: score(y, t), (x,), (v,)))(tangents)
    jac = jac_cols.permute(1, 2, 0)  # [n, d, d]: column i is ∂s/∂x_i
    f, g2 = float(process.drift_coef(t_k)), float(process.g2(t_k))
    return s[0].detach(), torch.linalg.matrix_norm(f * eye - 0.5 * g2 * jac, ord=2).detach()


def log_ratio_bound(
    solution: LogRatioSolution, score: ScoreModel, process: ForwardProcess, *, mass_floor: float = 1e-8
) -> DerivedBound:
    """The derived §3.3b bound from a grid solution of the log-ratio equation (:func:`solve_log_ratio`), on its times.

    Mismatch: :meth:`LogRatioSolution.score_mismatch`. L(t): the max of the spectral norm of f I − (g²/2) ∇s (exact
    JVPs of ``score``, which must be ∇φ of the solved potential) over the cells whose probability exceeds
    ``mass_floor`` × the largest. The Grönwall argument wants the sup over all space; the floor keeps the max to
    where p^SDE_t lives, and L is sensitive to it where the score is poor in the tails (a learned score far from
    data): report the floor with the number. The integral is the trapezoid rule on ``solution.times``.
    """
    if not (math.isfinite(mass_floor) and 0 <= mass_floor < 1):
        raise ValueError(f"mass_floor must lie in [0, 1); got {mass_floor!r}")
    x = solution.grid.points(solution.h.dtype, solution.h.device)
    weights = solution.weights().flatten(1)
    lips = []
    for t_k, w in zip(solution.times.tolist(), weights, strict=True):
        heavy = x[w > mass_floor * w.max()] if bool(torch.isfinite(w).all()) else x[:0]
        lips.append(float(_velocity_jacobian_norms(score, process, heavy, t_k)[1].max()) if len(heavy) else math.nan)
    times = solution.times.cpu().double().numpy()
    lipschitz = np.asarray(lips)
    mismatch = solution.score_mismatch().cpu().double().numpy()
    g2 = process.g2(torch.as_tensor(times)).numpy()
    bound = derived_w2_bound(times, lipschitz, g2, mismatch) if solution.retcode == "Success" else math.nan
    return DerivedBound(
        bound=bound,
        times=times,
        lipschitz=lipschitz,
        mismatch=mismatch,
        bandwidths=None,
        n_samples=0,
        method="log_ratio",
        grid=solution.grid,
        edge_mass=solution.edge_mass().cpu().double().numpy(),
        mass_floor=mass_floor,
        retcode=solution.retcode,
        stats=solution.stats,
    )


def estimate_derived_bound(
    score: ScoreModel,
    process: ForwardProcess,
    *,
    n: int = 2000,
    dim: int = 2,
    schedule: SamplerSchedule | None = None,
    n_times: int = 60,
    mismatch: str = "kde",
    seed: int = 0,
    potential: Potential | None = None,
    half_width: float | None = None,
    points: int | None = None,
    mass_floor: float = 1e-8,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> DerivedBound:
    """Evaluate the derived §3.3b bound for a learned score (see :class:`DerivedBound` for what is estimated).

    Sample-based (``mismatch="kde"`` or ``"gaussian"``): runs ``n`` reverse-SDE paths on ``schedule`` (default the
    authors' grid, every step noisy) and, at ``n_times`` saved times log-spaced towards the end time, takes L(t) as
    the max over the samples of the spectral norm of the velocity Jacobian f I − (g²/2) ∇s (exact JVPs) and the
    mismatch ‖∇log p^SDE − s‖ in L²(p^SDE) with ∇log p^SDE from a leave-one-out Gaussian KDE (``"kde"``, Scott
    bandwidth: consistent but noisy, and its noise adds to the mismatch) or from the samples' Gaussian fit
    (``"gaussian"``: exact when the SDE law is Gaussian, as for linear scores; wrong for multimodal laws).

    ``mismatch="log_ratio"`` (d ≤ 2): solves the log-ratio equation for h = log p^SDE − φ on ``points`` cells per axis
    of [−``half_width``, ``half_width``]^d (:func:`solve_log_ratio`, tolerances ``rtol``/``atol``) from T down to
    the schedule's end time, saving ≈ ``n_times`` times (half log-spaced towards the end, half uniform). At each,
    p^SDE_t ∝ e^{φ + h} normalised on the grid (exact up to grid and truncation errors, no sampling), the mismatch is
    ‖∇h‖ by central differences weighted by it, and L(t) the max of the spectral norm of f I − (g²/2) ∇s over the
    cells with probability > ``mass_floor`` × the largest. It needs the potential φ with s = ∇φ: ``potential``, or
    ``score.potential`` when the score is a :class:`PotentialScoreNet`. ``n`` and ``seed`` are unused there.
    """
    if mismatch not in MISMATCHES:
        raise ValueError(f"mismatch must be one of {MISMATCHES}; got {mismatch!r}")
    # EM needs small steps where g²/a is large (t → 0): the authors' grid refines the last 1/80 of [0, T] tenfold
    schedule = authors_schedule(process.T) if schedule is None else schedule
    if mismatch == "log_ratio":
        if dim not in (1, 2):
            check_grid_args(1.0, 8, dim)
        if half_width is None or points is None:
            raise ValueError("mismatch='log_ratio' solves on a grid: give half_width (the box [-L, L]^d) and points")
        potential = getattr(score, "potential", None) if potential is None else potential
        if potential is None:
            raise ValueError(
                "mismatch='log_ratio' needs the potential φ with score ∇φ: pass potential=... (or a PotentialScoreNet)"
            )
        # graded save times (fine towards the end time, where L and the mismatch change fastest): the bound's
        # trapezoid rule integrates on them (relative quadrature error ≈ 2e-3 at 60 times, 2e-4 at 200 on §6.2)
        times = graded_times(float(schedule.times[-1]), float(process.T), n_times, scale=1e-2)
        solution = solve_log_ratio(
            potential, process, half_width, points, times, dim=dim, rtol=rtol, atol=atol, dtype=dtype, device=device
        )
        return log_ratio_bound(solution, score, process, mass_floor=mass_floor)
    generator = torch.Generator(device=device).manual_seed(seed)
    grid = torch.tensor(schedule.times, dtype=torch.float64)
    # save times log-spaced towards the end time, where L(t) and the mismatch change fastest (the trapezoid rule
    # below integrates on them), snapped to the grid the SDE walks
    t_end = float(grid[-1])
    floor = max(t_end, 1e-4 * process.T)
    targets = torch.cat(
        [
            torch.tensor([t_end], dtype=torch.float64),
            torch.logspace(math.log10(floor), math.log10(process.T), n_times - 1, dtype=torch.float64),
        ]
    )
    keep = torch.unique((grid[None, :] - targets[:, None]).abs().argmin(1))
    x_T = process.prior_sample((n, dim), generator=generator, dtype=dtype, device=device)

    def drift(t: Tensor, x: Tensor) -> Tensor:
        return expand_as_batch(process.drift_coef(t), x) * x - expand_as_batch(process.g2(t), x) * score(x, t)

    def diffusion(t: Tensor, x: Tensor) -> Tensor:
        return expand_as_batch(process.diffusion(t), x).expand_as(x)

    problem = SDEProblem(drift, diffusion, x_T, (schedule.times[0], schedule.times[-1]), noise="additive")
    sol = solve(problem, "EM", "torch", timesteps=grid, saveat=grid[keep], generator=generator)
    times, lips, mism, bws = [], [], [], []
    for t_k, x_k in zip(sol.t.tolist(), sol.x, strict=True):
        s, norms = _velocity_jacobian_norms(score, process, x_k, t_k)
        lips.append(float(norms.max()))
        if mismatch == "kde":
            bandwidth = float(x_k.std(0).mean()) * n ** (-1.0 / (dim + 4))  # Scott's rule
            model_score = _kde_score(x_k, bandwidth)
        else:
            bandwidth = 0.0
            centred = x_k - x_k.mean(0)
            model_score = -torch.linalg.solve(torch.cov(centred.T).reshape(dim, dim), centred.T).T
        diff = model_score - s
        mism.append(float((diff**2).sum(1).mean().sqrt()))
        times.append(t_k)
        bws.append(bandwidth)
    order = np.argsort(times)
    times_a, lips_a, mism_a = (np.asarray(v)[order] for v in (times, lips, mism))
    g2_a = process.g2(torch.as_tensor(times_a)).numpy()
    bound = derived_w2_bound(times_a, lips_a, g2_a, mism_a)
    return DerivedBound(
        bound=bound,
        times=times_a,
        lipschitz=lips_a,
        mismatch=mism_a,
        bandwidths=np.asarray(bws)[order],
        n_samples=n,
        method=mismatch,
    )
