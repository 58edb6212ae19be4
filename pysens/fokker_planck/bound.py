"""The derived W2 bound between the ODE and SDE sample laws, and its closed-form linear-score oracle.

**Derived, not the paper's theorem** (seed001 §0, §3.3): the paper states that W2(p^ODE(·,0), p^SDE(·,0)) is bounded by
a Fokker–Planck residual, but its statement and constants were not available. The bound here is the digest's own
derivation (§3.3b, check 3c): couple both flows at t = T from the same prior sample and apply Grönwall backwards,

    W2(p^ODE_0, p^SDE_0) ≤ ∫_0^T exp(∫_0^t L(τ) dτ) · (g(t)²/2) · ‖∇h(·, t)‖_{L²(p^SDE_t)} dt,

with L(t) = Lip_x(f − (g²/2) s) the Lipschitz constant of the ODE velocity and h = log p^SDE − φ (so ∇h is the score
mismatch; it solves the log-ratio equation ∂_t h = −R − f·∇h − (g²/2)(Δh + |∇h|²), §3.3a).

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
from pysens.solvers import SDEProblem, solve

__all__ = [
    "DerivedBound",
    "LinearScoreOracle",
    "derived_w2_bound",
    "estimate_derived_bound",
    "linear_score_oracle",
    "linear_score_residual",
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


@dataclass
class DerivedBound:
    """The derived bound evaluated for a learned score with estimated ingredients, and what went into it.

    ``bound``: the §3.3b integral. ``times`` ``[n]`` ascending; ``lipschitz``: max over SDE samples of the spectral
    norm of ∇_x(f − (g²/2) s) (a sample estimate of the sup, so it can be low); ``mismatch``: ‖∇log p^SDE − s‖ in
    L²(p^SDE), with ∇log p^SDE from a leave-one-out Gaussian KDE of the SDE samples (bandwidth ``bandwidths``) or
    from their Gaussian fit (bandwidth 0).
    Both are estimates, so the number is an estimate of the derived bound, not a certified upper bound.
    """

    bound: float
    times: np.ndarray
    lipschitz: np.ndarray
    mismatch: np.ndarray
    bandwidths: np.ndarray
    n_samples: int

    def as_dict(self) -> dict:
        return {
            "bound": self.bound,
            "label": "derived bound (seed001 §3.3b, not the paper's theorem), estimated: sample max of the velocity "
            "Lipschitz constant, score mismatch against a KDE (bandwidth > 0) or Gaussian-fit (0) score of SDE samples",
            "times": self.times,
            "lipschitz": self.lipschitz,
            "mismatch": self.mismatch,
            "bandwidths": self.bandwidths,
            "n_samples": self.n_samples,
        }


def _kde_score(x: Tensor, bandwidth: float) -> Tensor:
    """Leave-one-out Gaussian-KDE score ∇log p̂(x_i) ``[N, d]`` of the samples ``x`` ``[N, d]`` themselves."""
    diff = x[:, None, :] - x[None, :, :]  # x_i − x_j
    logits = -(diff**2).sum(-1) / (2 * bandwidth**2)
    logits.fill_diagonal_(-math.inf)
    w = torch.softmax(logits, dim=1)
    return -(w[:, :, None] * diff).sum(1) / bandwidth**2


def estimate_derived_bound(
    score: Callable[[Tensor, Tensor], Tensor],
    process: ForwardProcess,
    *,
    n: int = 2000,
    dim: int = 2,
    schedule: SamplerSchedule | None = None,
    n_times: int = 60,
    mismatch: str = "kde",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> DerivedBound:
    """Evaluate the derived §3.3b bound for a learned score (estimates only: see :class:`DerivedBound`).

    Runs ``n`` reverse-SDE paths on ``schedule`` (default the authors' grid, every step noisy) and, at ``n_times``
    saved times log-spaced towards t = 0, estimates L(t) (the max over the samples of the spectral norm of the
    velocity Jacobian f I − (g²/2) ∇s, by exact JVPs) and the mismatch ‖∇h‖ = ‖∇log p^SDE − s‖ in L²(p^SDE). The
    SDE score ∇log p^SDE comes from ``mismatch="kde"`` (leave-one-out Gaussian KDE, Scott bandwidth: consistent but
    noisy, and its noise adds to the mismatch) or ``"gaussian"`` (the score of the samples' Gaussian fit: exact when
    the SDE law is Gaussian, as for linear scores; wrong for multimodal laws).
    """
    if mismatch not in ("kde", "gaussian"):
        raise ValueError(f"mismatch must be 'kde' or 'gaussian'; got {mismatch!r}")
    # EM needs small steps where g²/a is large (t → 0): the authors' grid refines the last 1/80 of [0, T] tenfold
    schedule = authors_schedule(process.T) if schedule is None else schedule
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
    eye = torch.eye(dim, dtype=dtype, device=device).reshape(dim, 1, dim).expand(dim, n, dim)
    for t_k, x_k in zip(sol.t.tolist(), sol.x, strict=True):
        t = torch.full((n,), t_k, dtype=dtype, device=device)
        s, jac_cols = torch.func.vmap(lambda v, x=x_k, t=t: torch.func.jvp(lambda y: score(y, t), (x,), (v,)))(eye)
        jac = jac_cols.permute(1, 2, 0)  # [n, d, d]: column i is ∂s/∂x_i
        f, g2 = float(process.drift_coef(t_k)), float(process.g2(t_k))
        velocity_jac = f * torch.eye(dim, dtype=dtype, device=device) - 0.5 * g2 * jac
        lips.append(float(torch.linalg.matrix_norm(velocity_jac, ord=2).max()))
        if mismatch == "kde":
            bandwidth = float(x_k.std(0).mean()) * n ** (-1.0 / (dim + 4))  # Scott's rule
            model_score = _kde_score(x_k, bandwidth)
        else:
            bandwidth = 0.0
            centred = x_k - x_k.mean(0)
            model_score = -torch.linalg.solve(torch.cov(centred.T).reshape(dim, dim), centred.T).T
        diff = model_score - s[0]
        mism.append(float((diff**2).sum(1).mean().sqrt()))
        times.append(t_k)
        bws.append(bandwidth)
    order = np.argsort(times)
    times_a, lips_a, mism_a = (np.asarray(v)[order] for v in (times, lips, mism))
    g2_a = process.g2(torch.as_tensor(times_a)).numpy()
    bound = derived_w2_bound(times_a, lips_a, g2_a, mism_a)
    return DerivedBound(
        bound=bound, times=times_a, lipschitz=lips_a, mismatch=mism_a, bandwidths=np.asarray(bws)[order], n_samples=n
    )
