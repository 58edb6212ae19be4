"""The log-density Fokker–Planck residual R[φ], its score form, and the residual functional R̃ (seed001 §3).

For a forward SDE dX = f(x, t) dt + g(t) dW and a scalar potential φ(x, t) ≈ log p_t(x), the log-density
Fokker–Planck equation gives the residual (seed001 §3.1, check 1a)

    R[φ](x, t) = ∂_t φ + ∇·f + f·∇φ − (g²/2)(Δφ + |∇φ|²),

which vanishes for the true log-marginals. Its spatial gradient is FP-Diffusion's vector "score-FPE" residual
(seed001 §3.2, check 1b), defined for any score network s:

    ∇_x R[φ] = ∂_t s − ∇_x[ (g²/2)(∇·s + |s|²) − f·s − ∇·f ],     s = ∇φ.

Shapes: ``x`` is ``[B, *event]`` (event axes are flattened to d internally), ``t`` a float, 0-d or ``[B]``;
``phi(x, t)`` returns ``[B]``, ``score(x, t)`` returns a tensor shaped like ``x``.

φ's derivatives (∂_tφ, ∇_xφ, Δφ) come from one of three engines, all differentiable in the network's parameters:

* ``"forward"``, the forward Laplacian (the idea of Li et al. 2023, "Forward Laplacian"): for a network that is a
  chain of ``nn.Linear`` layers and elementwise activations on the input ``[t, x]`` (``PotentialScoreNet``, or an
  ``nn.Sequential``), the value z, its x-Jacobian J = ∂z/∂x and its x-Laplacian L = Σ_i ∂²z/∂x_i² obey, layer by
  layer,  Linear  z ← zWᵀ + b, J ← JWᵀ, L ← LWᵀ;  activation σ  z ← σ(z), J ← σ'(z) J,
  L ← σ'(z) L + σ''(z) Σ_i J_i², with σ' and σ'' in closed form. One batched forward pass carries z and J; L's
  recursion is linear, so Δφ is gathered instead by one reverse sweep of the adjoint ∂φ/∂h, which also gives
  ∂_tφ and ∇_xφ (see :mod:`pysens.fokker_planck.laplacian`). With Hutchinson probes z_k the pass carries J z_k
  instead of J: O(K) whatever d. Plain tensor operations in a fixed number of batched passes, so the training
  backward through R is one level of autograd.
* ``"func"``: ``torch.func`` transforms over the whole batch, for any potential (rows are independent, so a tangent
  e_i in every row gives column i of every sample's Hessian at once): no Python loop over dimensions.
* ``"autograd"``: nested ``torch.autograd.grad`` calls, one per dimension or probe (the authors' way; the reference).

Gauge: φ → φ + c(t) changes neither the score nor any sampler but shifts R by c'(t) (seed001 §3.2, §6.3). The
gauge-fixed residual R − mean_x R(·, t) removes it; it needs several points per time slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pysens.diffusion.processes import ForwardProcess, Time, as_time, can_inspect_values, expand_as_batch
from pysens.fokker_planck.laplacian import (
    ENGINES,
    FORWARD_ACTIVATIONS,
    LAPLACIANS,
    TIME_DERIVATIVES,
    Potential,
    PotentialDerivatives,
    _batch_times,
    _check_choice,
    _fd_time_derivative,
    _resolve_probes,
    potential_derivatives,
)
from pysens.fokker_planck.potential import PotentialScoreNet
from pysens.validation import FirstCallCheck, check_batch, check_callable, check_int, check_number, checked_score

__all__ = [
    "ENGINES",
    "FORWARD_ACTIVATIONS",
    "LAPLACIANS",
    "TIME_DERIVATIVES",
    "NonlinearDriftProcess",
    "PotentialDerivatives",
    "ResidualFunctional",
    "gauge_fix",
    "log_fp_residual",
    "potential_derivatives",
    "residual_functional",
    "score_fp_residual",
]

ScoreModel = Callable[[Tensor, Tensor], Tensor]


class NonlinearDriftProcess:
    """A forward SDE dX = f(x, t) dt + g(t) dW with a general drift, for residuals only (no transition kernel).

    Args:
        drift: ``f(x, t) -> [B, *event]`` for ``x`` ``[B, *event]`` and ``t`` ``[B]``.
        g2: ``g(t)² -> [B]`` for ``t`` ``[B]``.
        T: end of the time axis.
        drift_divergence: ``∇·f(x, t) -> [B]`` in closed form, or None when it is not known. Exact residuals need
            it (``laplacian="exact"`` raises without it); the Hutchinson residual estimates it with its probes.
    """

    name = "NonlinearDrift"

    def __init__(
        self,
        drift: Callable[[Tensor, Tensor], Tensor],
        g2: Callable[[Tensor], Tensor],
        T: float,
        drift_divergence: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        check_callable(drift, "drift", "drift(x, t)")
        check_callable(g2, "g2", "g2(t)")
        if drift_divergence is not None:
            check_callable(drift_divergence, "drift_divergence", "drift_divergence(x, t)")
        T = check_number(T, "T", positive=True)
        self.drift, self._g2_fn, self.T, self.drift_divergence = drift, g2, float(T), drift_divergence

    def g2(self, t: Tensor) -> Tensor:
        return self._g2_fn(t)


DriftProcess = ForwardProcess | NonlinearDriftProcess


def _drift(process: DriftProcess, x: Tensor, t: Tensor) -> Tensor:
    """f(x, t) ``[B, d]`` for flat ``x`` ``[B, d]`` (affine processes: f(t) x)."""
    if isinstance(process, ForwardProcess):
        return expand_as_batch(process.drift_coef(t), x) * x
    return process.drift(x, t)


def _closed_form_divergence(process: DriftProcess, x: Tensor, t: Tensor) -> Tensor | None:
    """∇·f ``[B]`` when known in closed form (d·f(t) for the affine processes), else None."""
    if isinstance(process, ForwardProcess):
        return (x.shape[1] * process.drift_coef(t)).expand(x.shape[0])
    if process.drift_divergence is not None:
        return process.drift_divergence(x, t)
    return None


def _check_process(process: object) -> DriftProcess:
    if not isinstance(process, ForwardProcess | NonlinearDriftProcess):
        raise TypeError(f"process must be a ForwardProcess or a NonlinearDriftProcess; got {type(process).__name__}")
    return process


def _check_points(process: DriftProcess, x: Tensor, t: Time) -> None:
    """``x`` a finite ``[B, *event]`` batch and every time in ``t`` finite and within [0, T] (a few ulp of slack),
    named as the caller's arguments; values are not read inside functorch transforms."""
    if not isinstance(x, Tensor) or can_inspect_values(x):
        check_batch(x, "x")
    tt = as_time(t)
    if can_inspect_values(tt):
        slack = 8.0 * torch.finfo(tt.dtype).eps * max(process.T, 1.0)
        if not bool(torch.isfinite(tt).all()) or bool((tt < 0).any()) or bool((tt > process.T + slack).any()):
            raise ValueError(f"t must be finite and lie in [0, T] = [0, {process.T:g}]; got {t!r}")


def _checked_potential(phi: object) -> object:
    """``phi`` (a user's function or module) with its first output checked to be ``[B]``; the networks the engines
    read layer by layer pass as they are."""
    check_callable(phi, "phi", "phi(x, t) -> [B]")
    if (
        isinstance(phi, PotentialScoreNet | nn.Sequential)
        or getattr(phi, "__func__", None) is PotentialScoreNet.potential
    ):
        return phi  # networks the engines read themselves (a PotentialScoreNet, its potential, an nn.Sequential)
    return FirstCallCheck(phi, "phi", "phi(x, t)", lambda x, t: ((x.shape[0],), x.dtype, x.device))


def gauge_fix(residual: Tensor, t: Time) -> Tensor:
    """R − mean_x R(·, t): subtract the mean over the points that share a time (seed001 §3.4).

    ``residual`` is ``[B]``; ``t`` a float / 0-d tensor (one slice: the batch mean is removed) or ``[B]``. Raises
    ``ValueError`` when a time slice has a single point (its gauge-fixed residual would be 0 by construction).
    """
    if isinstance(t, Tensor) and t.dim() == 1 and t.shape[0] == residual.shape[0]:
        _, inverse, counts = torch.unique(t.detach(), return_inverse=True, return_counts=True)
        if bool((counts < 2).any()):
            raise ValueError(
                "gauge_fix needs at least two points per time slice (points sharing a t); "
                f"{int((counts < 2).sum())} slice(s) have one. Use a shared t or the stratified residual_functional"
            )
        sums = torch.zeros(counts.shape[0], dtype=residual.dtype, device=residual.device).index_add(
            0, inverse, residual
        )
        return residual - (sums / counts.to(residual.dtype))[inverse]
    if residual.shape[0] < 2:
        raise ValueError("gauge_fix needs at least two points per time slice")
    return residual - residual.mean()


def log_fp_residual(
    phi: Potential | nn.Sequential,
    process: DriftProcess,
    x: Tensor,
    t: Time,
    *,
    laplacian: str = "exact",
    time_derivative: str = "autograd",
    engine: str = "auto",
    gauge_fix: bool = False,
    n_probes: int = 1,
    probes: Tensor | None = None,
    probe_kind: str = "rademacher",
    generator: torch.Generator | None = None,
    fd_step: float = 1e-3,
    chunk_size: int | None = None,
) -> Tensor:
    """R[φ](x, t) = ∂_tφ + ∇·f + f·∇φ − (g²/2)(Δφ + |∇φ|²) per point, ``[B]`` (seed001 §3.1).

    Args:
        phi: the potential ``phi(x, t) -> [B]`` (e.g. ``PotentialScoreNet.potential`` or an exact
            ``log_density``), or an ``nn.Sequential`` read as φ(x, t) = net([t, x])[:, 0].
        process: a ``ForwardProcess`` (affine drift f(t)x, ∇·f = d f(t) in closed form) or a
            ``NonlinearDriftProcess``.
        x: ``[B, *event]`` points; t: float, 0-d or ``[B]``.
        laplacian: "exact" or "hutchinson" (``n_probes`` probes, or the given ``probes`` ``[K, B, *event]``); with
            Hutchinson a drift without closed-form divergence is estimated with the same probes.
        time_derivative: "autograd" (exact ∂_tφ) or "fd" (central difference of step ``fd_step``).
        engine: how φ's derivatives are taken: "auto" (default: the forward Laplacian when ``phi`` is a
            ``PotentialScoreNet.potential`` or an ``nn.Sequential`` it can read, else torch.func), "forward",
            "func" or "autograd"; see :func:`potential_derivatives`.
        gauge_fix: subtract the mean of R over the points sharing each time (see :func:`gauge_fix`).

    Raises ``ValueError`` for an exact residual of a drift without closed-form divergence, for K = 0 probes,
    and for unknown options. Differentiable in the parameters of ``phi``.
    """
    process = _check_process(process)
    _check_points(process, x, t)
    phi = _checked_potential(phi)
    flat = x.reshape(x.shape[0], -1)
    tb = _batch_times(t, flat)
    div_f = _closed_form_divergence(process, flat, tb)
    if div_f is None and laplacian == "exact":
        raise ValueError(
            f"{type(process).__name__} has no closed-form drift divergence, which the exact residual needs: pass "
            "drift_divergence=... or use laplacian='hutchinson' (it estimates ∇·f with the same probes)"
        )
    der = potential_derivatives(
        phi,
        x,
        tb,
        laplacian=laplacian,
        time_derivative=time_derivative,
        engine=engine,
        with_phi=False,
        n_probes=n_probes,
        probes=probes,
        probe_kind=probe_kind,
        generator=generator,
        fd_step=fd_step,
        chunk_size=chunk_size,
    )
    f = _drift(process, flat, tb)
    if div_f is None:
        # z_kᵀ J_f z_k with the Laplacian's probes: one JVP per probe, batched.
        def quad(z: Tensor) -> Tensor:
            return (torch.func.jvp(lambda y: _drift(process, y, tb), (flat,), (z,))[1] * z).sum(-1)

        div_f = torch.func.vmap(quad)(der.probes).mean(0)
    g2 = process.g2(tb).expand(flat.shape[0])
    grad = der.grad
    residual = der.phi_t + div_f + (f * grad).sum(-1) - 0.5 * g2 * (der.laplacian + (grad * grad).sum(-1))
    return _gauge_fix_fn(residual, t) if gauge_fix else residual


_gauge_fix_fn = gauge_fix


def score_fp_residual(
    score: ScoreModel,
    process: DriftProcess,
    x: Tensor,
    t: Time,
    *,
    divergence: str = "exact",
    time_derivative: str = "autograd",
    n_probes: int = 1,
    probes: Tensor | None = None,
    probe_kind: str = "rademacher",
    generator: torch.Generator | None = None,
    fd_step: float = 1e-3,
) -> Tensor:
    """FP-Diffusion's vector residual ∂_t s − ∇_x[(g²/2)(∇·s + |s|²) − f·s − ∇·f], shaped like ``x`` (seed001 §3.2,
    §7), for any score model ``score(x, t)``; equals ∇_x R[φ] when s = ∇φ.

    ∇·s is exact (d batched JVPs) or Hutchinson with fixed probes; the outer ∇_x is reverse mode over it, ∂_t s a
    forward-mode JVP in t (or a central difference). A drift without closed-form divergence needs it here even
    with Hutchinson (its x-gradient enters), so it raises ``ValueError``.
    """
    process = _check_process(process)
    _check_points(process, x, t)
    check_callable(score, "score", "score(x, t)")
    score = checked_score(score)
    _check_choice(divergence, LAPLACIANS, "divergence")
    _check_choice(time_derivative, TIME_DERIVATIVES, "time_derivative")
    event = x.shape[1:]
    flat = x.reshape(x.shape[0], -1)
    tb = _batch_times(t, flat)
    B, d = flat.shape
    if _closed_form_divergence(process, flat[:1], tb[:1]) is None:
        raise ValueError(
            f"{type(process).__name__} has no closed-form drift divergence; the score residual differentiates ∇·f "
            "in x, so pass drift_divergence=..."
        )

    def s_flat(y: Tensor, s: Tensor) -> Tensor:
        return score(y.reshape(y.shape[0], *event), s).reshape(y.shape[0], d)

    if divergence == "exact":
        tangents = torch.eye(d, dtype=flat.dtype, device=flat.device).reshape(d, 1, d).expand(d, B, d)
    else:
        tangents = _resolve_probes(probes, n_probes, flat, probe_kind, generator)

    def scalar_rhs(y: Tensor) -> Tensor:
        # Σ_b of (g²/2)(∇·s + |s|²) − f·s − ∇·f; its x-gradient is the bracket's gradient, row by row.
        def directional(v: Tensor) -> tuple[Tensor, Tensor]:
            value, jv = torch.func.jvp(lambda a: s_flat(a, tb), (y,), (v,))
            return value, (jv * v).sum(-1)

        values, quads = torch.func.vmap(directional)(tangents)
        s_val = values[0]
        div_s = quads.sum(0) if divergence == "exact" else quads.mean(0)
        g2 = process.g2(tb).expand(B)
        div_f = _closed_form_divergence(process, y, tb)
        return (0.5 * g2 * (div_s + (s_val * s_val).sum(-1)) - (_drift(process, y, tb) * s_val).sum(-1) - div_f).sum()

    rhs = torch.func.grad(scalar_rhs)(flat)
    if time_derivative == "autograd":
        _, s_t = torch.func.jvp(lambda s: s_flat(flat, s), (tb,), (torch.ones_like(tb),))
    else:
        s_t = _fd_time_derivative(lambda s: s_flat(flat, s), tb, fd_step)
    return (s_t - rhs).reshape(x.shape)


@dataclass
class ResidualFunctional:
    """R̃ = mean R² over t ∈ [t_min, t_max] × the box [−h, h]^d, with Monte-Carlo standard errors (seed001 §3.3c).

    ``raw`` / ``raw_se``: mean R² and its standard error. ``gauge_fixed`` / ``gauge_fixed_se``: the same for
    R − mean_x R(·, t) (None for the "uniform" design, which has one point per time). ``design``: "uniform" (t and x
    independent and uniform, the authors' protocol) or "stratified" (``n_slices`` equal time strata, one uniform time
    in each, ``points_per_slice`` uniform points at that time). ``slice_times`` / ``slice_raw`` /
    ``slice_gauge_fixed``: per-slice values ``[n_slices]`` (stratified only). ``n_points``: points evaluated.
    """

    raw: float
    raw_se: float
    gauge_fixed: float | None
    gauge_fixed_se: float | None
    design: str
    n_points: int
    box: float
    t_range: tuple[float, float]
    slice_times: Tensor | None = None
    slice_raw: Tensor | None = None
    slice_gauge_fixed: Tensor | None = None

    def as_dict(self) -> dict:
        return {
            "raw": self.raw,
            "raw_se": self.raw_se,
            "gauge_fixed": self.gauge_fixed,
            "gauge_fixed_se": self.gauge_fixed_se,
            "design": self.design,
            "n_points": self.n_points,
            "box": self.box,
            "t_range": list(self.t_range),
        }


def residual_functional(
    phi: Potential | nn.Sequential,
    process: DriftProcess,
    *,
    dim: int = 2,
    n_points: int = 200_000,
    design: str = "stratified",
    n_slices: int = 200,
    strata: str = "log",
    box: float = 3.5,
    t_min: float = 1e-5,
    t_max: float | None = None,
    batch_size: int = 50_000,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    **residual_options,
) -> ResidualFunctional:
    """Estimate R̃ = E[R²] for t ~ U[t_min, t_max] (default T) and x ~ U[−box, box]^dim (seed001 §3.3c, §5.3).

    ``design="uniform"`` is the authors' protocol (independent t and x per point; raw only, SE = std(R²)/√n).
    ``design="stratified"`` splits [t_min, t_max] into ``n_slices`` strata (``strata="log"``: log-spaced edges, which
    resolve the small times where R² concentrates; ``"linear"``: equal widths), draws one uniform time in each and
    ``n_points // n_slices`` points at that time, and weights each stratum by its width: the same expectation as the
    uniform design with far less variance, and a per-slice mean, so the gauge-fixed value is available. Its SE is
    the collapsed-strata estimate (pairs of neighbouring slices).
    Evaluated in chunks of ``batch_size`` without building a graph; ``residual_options`` go to
    :func:`log_fp_residual`.
    """
    _check_choice(design, ("uniform", "stratified"), "design")
    _check_choice(strata, ("log", "linear"), "strata")
    t_min = check_number(t_min, "t_min", positive=True)
    t_max = check_number(process.T if t_max is None else t_max, "t_max", high=process.T)
    if not 0 < t_min < t_max:
        raise ValueError(f"need 0 < t_min < t_max; got t_min={t_min}, t_max={t_max}")
    n_points, dim = check_int(n_points, "n_points", minimum=2), check_int(dim, "dim")
    n_slices, batch_size = check_int(n_slices, "n_slices"), check_int(batch_size, "batch_size")
    box = check_number(box, "box", positive=True)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    span = t_max - t_min

    def box_points(n: int) -> Tensor:
        return (2.0 * torch.rand(n, dim, generator=generator, dtype=dtype, device=device) - 1.0) * box

    def squared(x: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            return log_fp_residual(phi, process, x, t, generator=generator, **residual_options).detach()

    if design == "uniform":
        total, total_sq = 0.0, 0.0
        done = 0
        while done < n_points:
            n = min(batch_size, n_points - done)
            t = t_min + span * torch.rand(n, generator=generator, dtype=dtype, device=device)
            r2 = squared(box_points(n), t) ** 2
            total += float(r2.sum())
            total_sq += float((r2 * r2).sum())
            done += n
        mean = total / n_points
        var = max(total_sq / n_points - mean * mean, 0.0) * n_points / (n_points - 1)
        return ResidualFunctional(
            raw=mean,
            raw_se=math.sqrt(var / n_points),
            gauge_fixed=None,
            gauge_fixed_se=None,
            design=design,
            n_points=n_points,
            box=box,
            t_range=(t_min, t_max),
        )

    per_slice = n_points // n_slices
    if n_slices < 2 or per_slice < 2:
        raise ValueError(
            f"the stratified design needs n_slices >= 2 and >= 2 points per slice; got {n_slices}, {per_slice}"
        )
    if strata == "log":
        edges = torch.logspace(math.log10(t_min), math.log10(t_max), n_slices + 1, dtype=torch.float64)
    else:
        edges = torch.linspace(t_min, t_max, n_slices + 1, dtype=torch.float64)
    edges[0], edges[-1] = t_min, t_max
    widths = edges[1:] - edges[:-1]
    weights = widths / span  # each stratum's share of U[t_min, t_max]
    u = torch.rand(n_slices, generator=generator, dtype=dtype, device=device).cpu().double()
    times = (edges[:-1] + widths * u).to(dtype=dtype, device=device)
    slice_raw = torch.empty(n_slices, dtype=torch.float64)
    slice_gauge = torch.empty(n_slices, dtype=torch.float64)
    slices_per_batch = max(1, batch_size // per_slice)
    for start in range(0, n_slices, slices_per_batch):
        ts = times[start : start + slices_per_batch]
        t = ts.repeat_interleave(per_slice)
        r = squared(box_points(t.shape[0]), t).reshape(ts.shape[0], per_slice)
        slice_raw[start : start + ts.shape[0]] = (r**2).mean(1).cpu().double()
        slice_gauge[start : start + ts.shape[0]] = ((r - r.mean(1, keepdim=True)) ** 2).mean(1).cpu().double()

    def mean_se(v: Tensor) -> tuple[float, float]:
        # Collapsed strata (Cochran): neighbouring strata are paired and each pair, of weight W = w_a + w_b, is
        # treated as one stratum with two draws, contributing W² (m_a − m_b)² / 4 to the variance. Treating the
        # slices as i.i.d. instead would count the (removed) spread of R² over t as noise.
        n = v.shape[0]
        m = n - n % 2
        w_pair = weights[:m].reshape(-1, 2).sum(1)
        diffs = v[:m].reshape(-1, 2)
        var = (w_pair**2 * (diffs[:, 0] - diffs[:, 1]) ** 2 / 4).sum()
        if n % 2:  # an odd last stratum is paired with its left neighbour
            var = var + (weights[-1] ** 2) * (v[-1] - v[-2]) ** 2 / 2
        return float((weights * v).sum()), float(var.sqrt())

    raw, raw_se = mean_se(slice_raw)
    gauge, gauge_se = mean_se(slice_gauge)
    return ResidualFunctional(
        raw=raw,
        raw_se=raw_se,
        gauge_fixed=gauge,
        gauge_fixed_se=gauge_se,
        design=design,
        n_points=per_slice * n_slices,
        box=box,
        t_range=(t_min, t_max),
        slice_times=times.cpu(),
        slice_raw=slice_raw,
        slice_gauge_fixed=slice_gauge,
    )
