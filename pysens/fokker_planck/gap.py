"""The ODE–SDE gap: one prior sample through the probability-flow ODE and the reverse SDE, compared in W2.

For dX = f(t) X dt + g(t) dW and a score s(x, t) (seed001 §2.2), from the same x_T ~ π:

    PF-ODE:       dx/dt = f(t) x − ½ g² s(x, t)
    reverse SDE:  dx = [f(t) x − g² s(x, t)] dt + g dW̄           (both run from T down to the end time)

The authors' samplers (seed001 §2.1) are Euler and Euler–Maruyama on ``nfe = 800`` steps of T/800, whose last 10
are each split in 10 (890 steps down to t = 0), the SDE's very last step noise-free: :func:`authors_schedule`.
Any other pysens method/backend works too (adaptive ODE methods ignore the grid and use rtol/atol).

Distances (seed001 §5.2): samples are binned to their nearest point of an n × n grid on [−h, h]² — point k is
(g[k mod n], g[k div n]) with g = linspace(−h, h, n), the authors' layout — and W2² between two histograms is the
exact discrete OT cost with squared Euclidean ground cost (POT ``emd2``). The grid half-width h is always explicit:
the authors' precomputed script re-used h = 4 on 3.5-binned weights, scaling W2² by (4/3.5)². Samples with
|x_i| ≥ h are not binned; they are counted and reported (or refused, ``outside="error"``). Also: sliced W2
(POT), and the closed-form W2 between Gaussians (the Bures formula), applied to the samples' mean/covariance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from pysens.diffusion.processes import ForwardProcess, expand_as_batch
from pysens.solvers import ODEProblem, SDEProblem, solve
from pysens.solvers.methods import resolve_method

__all__ = [
    "GapResult",
    "Grid",
    "Histogram",
    "SamplerSchedule",
    "authors_schedule",
    "discretise",
    "gaussian_w2",
    "geometric_schedule",
    "ode_sde_gap",
    "sample_ode_sde",
    "sample_gaussian_w2",
    "sliced_w2",
    "uniform_schedule",
    "w2_grid",
]

ScoreModel = Callable[[Tensor, Tensor], Tensor]
DataSampler = Callable[[int, torch.Generator], Tensor]


# -- schedules and samplers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerSchedule:
    """A fixed time grid ``times`` (from T down to the end time) shared by both samplers.

    ``final_noise_free``: the SDE's last step is a plain Euler step of its drift (the authors' sampler).
    """

    name: str
    times: tuple[float, ...]
    final_noise_free: bool = False

    @property
    def n_steps(self) -> int:
        return len(self.times) - 1


def authors_schedule(
    T: float = 10.0, nfe: int = 800, refine_last: int = 10, refine_factor: int = 10
) -> SamplerSchedule:
    """The authors' grid (seed001 §2.1): ``nfe − refine_last`` steps of T/nfe, then the last ``refine_last`` coarse
    steps split into ``refine_factor`` each, down to t = 0; the SDE's final step is noise-free. Defaults: 790 + 100
    steps, smallest evaluation time 0.00125."""
    if not (nfe >= 1 and 0 <= refine_last <= nfe and refine_factor >= 1):
        raise ValueError(
            f"need nfe >= 1, 0 <= refine_last <= nfe, refine_factor >= 1; got {nfe}, {refine_last}, {refine_factor}"
        )
    dt = T / nfe
    coarse = [T - k * dt for k in range(nfe - refine_last + 1)]
    start = coarse[-1]
    fine = [start - k * dt / refine_factor for k in range(1, refine_last * refine_factor + 1)]
    times = coarse + fine
    times[-1] = 0.0  # exactly 0, as the authors' loop ends there up to round-off
    return SamplerSchedule(
        name=f"authors(nfe={nfe}, refine_last={refine_last}x{refine_factor})", times=tuple(times), final_noise_free=True
    )


def uniform_schedule(T: float, t_end: float, n_steps: int) -> SamplerSchedule:
    """``n_steps`` equal steps from T down to ``t_end``, all SDE steps noisy."""
    if n_steps < 1 or not 0 <= t_end < T:
        raise ValueError(f"need n_steps >= 1 and 0 <= t_end < T; got n_steps={n_steps}, t_end={t_end}")
    times = tuple(T - (T - t_end) * k / n_steps for k in range(n_steps + 1))
    return SamplerSchedule(name=f"uniform({n_steps})", times=times)


def geometric_schedule(T: float, t_end: float, n_steps: int, final_noise_free: bool = True) -> SamplerSchedule:
    """``n_steps`` log-spaced steps from T down to ``t_end`` > 0 (each step a fixed fraction of t), for scores whose
    Lipschitz constant grows like 1/β_t² ~ 1/t near t = 0 (data on a low-dimensional set in high d): explicit
    Euler/EM on it stays stable where the uniform grid does not. ``final_noise_free``: the SDE's last step is an Euler
    step of its drift, as in :func:`authors_schedule`."""
    if n_steps < 1 or not 0 < t_end < T:
        raise ValueError(f"need n_steps >= 1 and 0 < t_end < T; got n_steps={n_steps}, t_end={t_end}")
    ratio = (t_end / T) ** (1.0 / n_steps)
    times = [T * ratio**k for k in range(n_steps + 1)]
    times[0], times[-1] = float(T), float(t_end)
    return SamplerSchedule(
        name=f"geometric({n_steps}, t_end={t_end:g})", times=tuple(times), final_noise_free=final_noise_free
    )


def _pf_ode_drift(score: ScoreModel, process: ForwardProcess) -> Callable[[Tensor, Tensor], Tensor]:
    def v(t: Tensor, x: Tensor) -> Tensor:
        return expand_as_batch(process.drift_coef(t), x) * x - 0.5 * expand_as_batch(process.g2(t), x) * score(x, t)

    return v


def _reverse_drift(score: ScoreModel, process: ForwardProcess) -> Callable[[Tensor, Tensor], Tensor]:
    def b(t: Tensor, x: Tensor) -> Tensor:
        return expand_as_batch(process.drift_coef(t), x) * x - expand_as_batch(process.g2(t), x) * score(x, t)

    return b


def sample_ode_sde(
    score: ScoreModel,
    process: ForwardProcess,
    x_T: Tensor,
    schedule: SamplerSchedule,
    *,
    ode_method: str = "Euler",
    sde_method: str = "EM",
    backend: str = "torch",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, dict]:
    """Push the same ``x_T`` ``[B, *event]`` through the PF-ODE and the reverse SDE on ``schedule``.

    Fixed-step ODE methods walk ``schedule.times``; adaptive ones (Tsit5, DP5, …, any backend) integrate from T to
    the schedule's end time with ``rtol``/``atol``. The SDE always walks the grid with ``sde_method`` (torch), noise
    from ``generator``; with ``schedule.final_noise_free`` its last step is an Euler step of the reverse drift.
    Returns ``(x_ode, x_sde, info)`` with the retcodes and counters of the solves.
    """
    times = torch.tensor(schedule.times, dtype=torch.float64)
    tspan = (schedule.times[0], schedule.times[-1])
    ode_info = resolve_method(ode_method, backend, "ode")
    ode = ODEProblem(_pf_ode_drift(score, process), x_T, tspan, name="pf-ode")
    if ode_info.adaptive:
        ode_sol = solve(ode, ode_method, backend, rtol=rtol, atol=atol)
    else:
        ode_sol = solve(ode, ode_method, backend, timesteps=times)
    noisy = times[:-1] if schedule.final_noise_free else times
    sde = SDEProblem(
        _reverse_drift(score, process),
        lambda t, x: expand_as_batch(process.diffusion(t), x).expand_as(x),
        x_T,
        (float(noisy[0]), float(noisy[-1])),
        noise="additive",
        name="reverse-sde",
    )
    sde_sol = solve(sde, sde_method, "torch", timesteps=noisy, generator=generator)
    x_sde = sde_sol.final
    retcodes = {"ode": ode_sol.retcode, "sde": sde_sol.retcode}
    if schedule.final_noise_free:
        last = ODEProblem(_reverse_drift(score, process), x_sde, (float(times[-2]), float(times[-1])), name="sde-last")
        last_sol = solve(last, "Euler", "torch", timesteps=times[-2:])
        x_sde = last_sol.final
        retcodes["sde_final_step"] = last_sol.retcode
    info = {"retcodes": retcodes, "ode_nf": ode_sol.stats.nf, "sde_nf": sde_sol.stats.nf}
    return ode_sol.final, x_sde, info


# -- grids, histograms and distances ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """An ``n × n`` grid of points on [−half_width, half_width]² (the authors': half_width 3.5, n = 64)."""

    half_width: float = 3.5
    n: int = 64

    def __post_init__(self) -> None:
        if not self.half_width > 0 or self.n < 2:
            raise ValueError(f"need half_width > 0 and n >= 2; got {self.half_width}, {self.n}")

    @property
    def axis(self) -> np.ndarray:
        return np.linspace(-self.half_width, self.half_width, self.n)

    @property
    def points(self) -> np.ndarray:
        """``[n², 2]``; point k is (axis[k mod n], axis[k div n])."""
        g1, g2 = np.meshgrid(self.axis, self.axis)
        return np.stack([g1.reshape(-1), g2.reshape(-1)], axis=1)

    def cost_matrix(self) -> np.ndarray:
        """Squared Euclidean distances ``[n², n²]`` between grid points (float64)."""
        p = self.points
        return ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)


@dataclass
class Histogram:
    """Normalised weights ``[n²]`` on a ``Grid``, with ``n_binned`` samples used and ``n_outside`` not binned."""

    weights: np.ndarray
    grid: Grid
    n_binned: int
    n_outside: int


def discretise(samples: Tensor | np.ndarray, grid: Grid, outside: str = "error") -> Histogram:
    """Bin ``samples`` ``[N, 2]`` to their nearest grid point (per axis rounding = nearest in Euclidean distance).

    Samples with |x_i| ≥ half_width in either coordinate (or not finite) are not binned: ``outside="error"`` raises
    ``ValueError`` with their count; ``outside="drop"`` (the authors' protocol) leaves them out and records
    ``n_outside`` (all-zero weights when nothing is left).
    """
    if outside not in ("error", "drop"):
        raise ValueError(f"outside must be 'error' or 'drop'; got {outside!r}")
    x = samples.detach().cpu().double().numpy() if isinstance(samples, Tensor) else np.asarray(samples, np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"samples must be [N, 2]; got shape {x.shape}")
    finite = np.isfinite(x).all(1)
    inside = finite & (np.abs(x) < grid.half_width).all(1)
    n_outside = int((~inside).sum())
    if n_outside and outside == "error":
        raise ValueError(
            f"{n_outside} of {x.shape[0]} samples lie outside the grid [-{grid.half_width}, {grid.half_width}]^2 "
            "(or are not finite); widen the grid or pass outside='drop' to count and leave them out"
        )
    kept = x[inside]
    if kept.shape[0] == 0:
        # nothing to bin (a diverged sampler): all-zero weights, which w2_grid refuses and ode_sde_gap reports as nan
        return Histogram(weights=np.zeros(grid.n * grid.n), grid=grid, n_binned=0, n_outside=n_outside)
    spacing = 2.0 * grid.half_width / (grid.n - 1)
    idx = np.clip(np.rint((kept + grid.half_width) / spacing).astype(np.int64), 0, grid.n - 1)
    counts = np.bincount(idx[:, 0] + grid.n * idx[:, 1], minlength=grid.n * grid.n).astype(np.float64)
    return Histogram(weights=counts / counts.sum(), grid=grid, n_binned=int(kept.shape[0]), n_outside=n_outside)


def w2_grid(a: Histogram | np.ndarray, b: Histogram | np.ndarray, grid: Grid | None = None) -> float:
    """W2² between two weight vectors on the same grid: exact discrete OT (POT ``emd2``, squared Euclidean cost).

    ``a``, ``b``: ``Histogram``s or ``[n²]`` non-negative weights (normalised here) with ``grid`` given.
    Raises ``ValueError`` for mismatched grids or shapes and ``RuntimeError`` when the network simplex stops short.
    """
    import ot

    if isinstance(a, Histogram) or isinstance(b, Histogram):
        grids = {h.grid for h in (a, b) if isinstance(h, Histogram)}
        if grid is not None:
            grids.add(grid)
        if len(grids) != 1:
            raise ValueError(f"the histograms are on different grids: {sorted(map(str, grids))}")
        grid = grids.pop()
    if grid is None:
        raise ValueError("pass grid= when comparing raw weight vectors")
    wa = np.asarray(a.weights if isinstance(a, Histogram) else a, dtype=np.float64).reshape(-1)
    wb = np.asarray(b.weights if isinstance(b, Histogram) else b, dtype=np.float64).reshape(-1)
    for name, w in (("a", wa), ("b", wb)):
        if w.shape != (grid.n**2,):
            raise ValueError(f"{name} must have {grid.n**2} weights for a {grid.n}x{grid.n} grid; got {w.shape}")
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"{name} must be finite, non-negative weights with a positive sum")
    wa, wb = wa / wa.sum(), wb / wb.sum()
    # Empty cells carry no mass, so the OT problem restricted to the two supports has the same optimum and is
    # several times cheaper for the network simplex than the full n² × n² one.
    ia, ib = np.flatnonzero(wa), np.flatnonzero(wb)
    points = grid.points
    cost_matrix = ((points[ia][:, None, :] - points[ib][None, :, :]) ** 2).sum(-1)
    cost, log = ot.emd2(wa[ia], wb[ib], cost_matrix, numItermax=10_000_000, log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact OT did not converge: {log['warning']}")
    return max(float(cost), 0.0)


def sliced_w2(x: Tensor, y: Tensor, n_projections: int = 200, seed: int = 0) -> float:
    """Sliced W2² between sample sets ``[N, d]`` and ``[M, d]``: the mean over ``n_projections`` random unit directions
    θ of the 1-D W2² between the projected samples, by sorting (quantile functions on a common grid when N ≠ M)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be [N, d] and [M, d]; got {tuple(x.shape)}, {tuple(y.shape)}")
    if n_projections < 1:
        raise ValueError(f"n_projections must be positive; got {n_projections}")
    x, y = x.detach().cpu().double(), y.detach().cpu().double()
    theta = torch.randn(x.shape[1], n_projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = (x @ theta).sort(dim=0).values, (y @ theta).sort(dim=0).values
    if px.shape[0] != py.shape[0]:
        # both quantile functions on the midpoints of the finer of the two grids
        m = max(px.shape[0], py.shape[0])
        levels = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        px, py = (p[(levels * p.shape[0]).long().clamp_max(p.shape[0] - 1)] for p in (px, py))
    return float(((px - py) ** 2).mean())


def gaussian_w2(m1: Tensor, c1: Tensor, m2: Tensor, c2: Tensor) -> float:
    """Closed-form W2² between N(m1, C1) and N(m2, C2): |m1 − m2|² + tr(C1 + C2 − 2 (C2^½ C1 C2^½)^½)."""
    m1, c1, m2, c2 = (v.detach().double() for v in (m1, c1, m2, c2))

    def sqrtm(c: Tensor) -> Tensor:
        lam, u = torch.linalg.eigh(0.5 * (c + c.mT))
        return (u * lam.clamp_min(0).sqrt()) @ u.mT

    r2 = sqrtm(c2)
    cross = sqrtm(r2 @ c1 @ r2)
    return max(float(((m1 - m2) ** 2).sum() + torch.trace(c1 + c2 - 2.0 * cross)), 0.0)


def sample_gaussian_w2(x: Tensor, y: Tensor) -> float:
    """``gaussian_w2`` of the sample means and covariances of ``x``, ``y`` ``[N, d]`` (a lower bound on W2² of the
    sample laws: Gelbrich)."""
    x, y = x.detach().double(), y.detach().double()
    return gaussian_w2(
        x.mean(0), torch.cov(x.T).reshape(x.shape[1], -1), y.mean(0), torch.cov(y.T).reshape(y.shape[1], -1)
    )


# -- the gap ----------------------------------------------------------------------------------------------------


@dataclass
class GapResult:
    """W2² between the ODE, SDE and truth sample laws at equal N (seed001 §5.2).

    ``grid``: exact OT on the grid — keys "ode_sde", "ode_truth", "sde_truth", "floor" (truth vs an independent
    truth set: the finite-N floor below which a distance means nothing). ``sliced``, ``gaussian``: the same pairs by
    sliced W2² and by the closed-form Gaussian W2² of the sample moments, on the same in-box samples in 2-D.
    ``outside``: samples per set left out of the grid. ``n``: samples per set. ``x_ode``, ``x_sde``, ``x_truth``:
    the samples (CPU). ``info``: schedule, methods, retcodes, wall time.
    """

    grid: dict[str, float]
    sliced: dict[str, float]
    gaussian: dict[str, float]
    outside: dict[str, int]
    n: int
    half_width: float
    grid_points: int
    histograms: dict[str, Histogram]
    x_ode: Tensor
    x_sde: Tensor
    x_truth: Tensor
    info: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "w2_squared_grid": self.grid,
            "w2_squared_sliced": self.sliced,
            "w2_squared_gaussian": self.gaussian,
            "outside_grid": self.outside,
            "n": self.n,
            "grid_half_width": self.half_width,
            "grid_points_per_axis": self.grid_points,
            "info": self.info,
        }


def ode_sde_gap(
    score: ScoreModel,
    process: ForwardProcess,
    n: int,
    *,
    dim: int = 2,
    data_sampler: DataSampler | None = None,
    schedule: SamplerSchedule | str = "authors",
    ode_method: str = "Euler",
    sde_method: str = "EM",
    backend: str = "torch",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    grid: Grid | None = None,
    batch_size: int = 50_000,
    seed: int = 0,
    sliced_projections: int = 200,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> GapResult:
    """W2²(ODE, SDE), W2²(ODE, truth), W2²(SDE, truth) and the truth–truth floor for ``n`` samples each.

    Both samplers start from the same prior draws x_T ~ π (``process.prior_sample``) in batches of ``batch_size``;
    ``schedule`` is a ``SamplerSchedule`` or "authors" (:func:`authors_schedule` for ``process.T``). ``data_sampler(n,
    generator)`` draws the truth (two independent sets: truth and the floor's partner); without it the truth
    columns are omitted. Grid distances drop out-of-grid samples as the authors did and report how many.
    Deterministic given ``seed`` (one generator for priors, noise and truth, on ``device``). ``dim`` is the data
    dimension; grid distances need ``dim == 2`` (otherwise only sliced and Gaussian W2² are reported).
    """
    if n < 2:
        raise ValueError(f"n must be at least 2; got {n}")
    if isinstance(schedule, str):
        if schedule != "authors":
            raise ValueError(f"schedule must be a SamplerSchedule or 'authors'; got {schedule!r}")
        schedule = authors_schedule(process.T)
    grid = Grid() if grid is None else grid
    generator = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    odes, sdes, retcodes = [], [], set()
    for begin in range(0, n, batch_size):
        m = min(batch_size, n - begin)
        x_T = process.prior_sample((m, dim), generator=generator, dtype=dtype, device=device)
        x_ode, x_sde, info = sample_ode_sde(
            score,
            process,
            x_T,
            schedule,
            ode_method=ode_method,
            sde_method=sde_method,
            backend=backend,
            rtol=rtol,
            atol=atol,
            generator=generator,
        )
        odes.append(x_ode.detach().cpu())
        sdes.append(x_sde.detach().cpu())
        retcodes.update(info["retcodes"].values())
        if progress is not None:
            progress(f"sampled {begin + m}/{n}")
    sample_time = time.perf_counter() - start
    sets = {"ode": torch.cat(odes), "sde": torch.cat(sdes)}
    if data_sampler is not None:
        sets["truth"] = data_sampler(n, generator).detach().cpu()
        sets["truth2"] = data_sampler(n, generator).detach().cpu()
    pairs = {"ode_sde": ("ode", "sde")}
    if data_sampler is not None:
        pairs.update({"ode_truth": ("ode", "truth"), "sde_truth": ("sde", "truth"), "floor": ("truth", "truth2")})
    # grid OT is the authors' 2-D protocol; in other dimensions only the sliced and Gaussian distances are formed
    hists = {k: discretise(v, grid, outside="drop") for k, v in sets.items()} if dim == 2 else {}
    # a set with nothing on the grid (or fewer than two finite samples) has no distance: nan, with its count reported
    grid_w2 = (
        {
            k: w2_grid(hists[a], hists[b]) if hists[a].n_binned and hists[b].n_binned else math.nan
            for k, (a, b) in pairs.items()
        }
        if dim == 2
        else {}
    )
    # The sliced and Gaussian distances see the same samples as the grid (inside the box, in 2-D): a few diverged
    # ODE paths far outside would otherwise dominate both (a second moment, unlike the grid's dropped count).
    if dim == 2:
        finite = {k: v[torch.isfinite(v).all(1) & (v.abs() < grid.half_width).all(1)].double() for k, v in sets.items()}
    else:
        finite = {k: v[torch.isfinite(v).all(1)].double() for k, v in sets.items()}
    usable = {k: v.shape[0] >= 2 for k, v in finite.items()}
    sliced = {
        k: sliced_w2(finite[a], finite[b], sliced_projections, seed) if usable[a] and usable[b] else math.nan
        for k, (a, b) in pairs.items()
    }
    gauss = {
        k: sample_gaussian_w2(finite[a], finite[b]) if usable[a] and usable[b] else math.nan
        for k, (a, b) in pairs.items()
    }
    nonfinite = {k: int((~torch.isfinite(v).all(1)).sum()) for k, v in sets.items()}
    info = {
        "schedule": schedule.name,
        "n_steps": schedule.n_steps,
        "ode_method": ode_method,
        "sde_method": sde_method,
        "backend": backend,
        "retcodes": sorted(retcodes),
        "non_finite_samples": nonfinite,
        "sampling_wall_time": sample_time,
        "wall_time": time.perf_counter() - start,
        "seed": seed,
        "dtype": str(dtype).removeprefix("torch."),
    }
    return GapResult(
        grid=grid_w2,
        sliced=sliced,
        gaussian=gauss,
        outside={k: h.n_outside for k, h in hists.items()},
        n=n,
        half_width=grid.half_width,
        grid_points=grid.n,
        histograms=hists,
        x_ode=sets["ode"],
        x_sde=sets["sde"],
        x_truth=sets.get("truth", torch.empty(0, 2)),
        info=info,
    )
