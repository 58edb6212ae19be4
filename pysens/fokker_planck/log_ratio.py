"""The log-ratio equation on a grid (seed001 §3.3a), solved by the method of lines for d ≤ 2.

h = log p^SDE − φ solves ∂_t h = −R − f·∇h − (g²/2)(Δh + |∇h|²) backwards from h(·, T) = prior − φ, with R = R[φ] the
log-FP residual of the potential φ (:func:`pysens.fokker_planck.residual.log_fp_residual`). On a cell grid with
zero-normal-derivative ghost cells, the diffusion part is the stiff linear piece and the transport part the rest
(:class:`pysens.solvers.SplitODEProblem`); then p^SDE_t ∝ e^{φ + h} is known on the grid, with no sampling.
:mod:`pysens.fokker_planck.bound` turns a solution into the derived W2 bound's score mismatch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.interpolate import CubicSpline
from torch import Tensor

from pysens.diffusion.processes import ForwardProcess
from pysens.fokker_planck.residual import log_fp_residual
from pysens.solvers import SplitODEProblem, Stats, solve
from pysens.spde.grid import Grid as CellGrid

__all__ = ["LogRatioSolution", "Potential", "check_grid_args", "graded_times", "solve_log_ratio"]

Potential = Callable[[Tensor, Tensor], Tensor]


def _ghost_padded(u: Tensor, dim: int) -> Tensor:
    """``u`` ``[B, *cells]`` with one ghost cell on each side of each axis that copies its neighbour (zero normal
    derivative at the box faces), ``[B, *(cells + 2)]``."""
    return torch.nn.functional.pad(u.unsqueeze(1), (1, 1) * dim, mode="replicate").squeeze(1)


def _neighbour(padded: Tensor, dim: int, axis: int, offset: int) -> Tensor:
    """The cells shifted by ``offset`` (±1) along ``axis`` out of a ghost-padded array: ``[B, *cells]``."""
    index = [slice(None)] + [slice(1, -1)] * dim
    index[1 + axis] = slice(1 + offset, padded.shape[1 + axis] - 1 + offset)
    return padded[tuple(index)]


def _grid_gradient(u: Tensor, grid: CellGrid) -> Tensor:
    """Central differences ∇u ``[B, d, *cells]`` of ``u`` ``[B, *cells]`` (zero-normal-derivative ghost cells)."""
    padded = _ghost_padded(u, grid.dim)
    return torch.stack(
        [
            (_neighbour(padded, grid.dim, i, 1) - _neighbour(padded, grid.dim, i, -1)) / (2.0 * grid.h[i])
            for i in range(grid.dim)
        ],
        dim=1,
    )


def _grid_laplacian(u: Tensor, grid: CellGrid) -> Tensor:
    """The 5-point (3-point in 1-D) Laplacian ``[B, *cells]`` with zero-normal-derivative ghost cells: the
    finite-volume no-flux Laplacian that :meth:`pysens.spde.Grid.solve_shifted_laplacian` inverts by FFT."""
    padded = _ghost_padded(u, grid.dim)
    return sum(
        (_neighbour(padded, grid.dim, i, 1) - 2.0 * u + _neighbour(padded, grid.dim, i, -1)) / grid.h[i] ** 2
        for i in range(grid.dim)
    )


@dataclass
class LogRatioSolution:
    """h = log p^SDE − φ on a cell-centred grid over [−L, L]^d at the requested times (seed001 §3.3a).

    ``times`` ``[n]`` ascending forward times; ``h`` ``[n, *cells]``, defined up to an additive constant per time (the
    gauge: only ∇h and the normalised density are meaningful); ``log_density`` ``[n, *cells]``: log p^SDE_t = φ + h
    at the cell centres, normalised on the box (Σ_cells p |cell| = 1); ``grid``: the :class:`pysens.spde.Grid`
    (``grid.points()`` are the centres, in the C order of ``h[k].reshape(-1)``); ``retcode`` / ``stats``: the
    solve's. Rows after a failed solve are NaN.
    """

    times: Tensor
    h: Tensor
    log_density: Tensor
    grid: CellGrid
    retcode: str
    stats: Stats

    def weights(self) -> Tensor:
        """The probability of each cell under p^SDE_t, ``[n, *cells]`` (sums to 1 per time)."""
        return torch.exp(self.log_density) * self.grid.cell_volume

    def score_mismatch(self) -> Tensor:
        """‖∇h(·, t)‖_{L²(p^SDE_t)} ``[n]``: central differences of h, weighted by the cell probabilities."""
        grad2 = (_grid_gradient(self.h, self.grid) ** 2).sum(1)
        return (self.weights() * grad2).flatten(1).sum(1).sqrt()

    def edge_mass(self) -> Tensor:
        """The probability of the outermost ring of cells, ``[n]``: the truncation indicator. The box holds the law
        only while this is negligible (the boundary condition acts there); enlarge ``half_width`` otherwise."""
        w = self.weights()
        inner = w
        for i in range(self.grid.dim):
            inner = inner.narrow(1 + i, 1, self.grid.cells[i] - 2)
        return w.flatten(1).sum(1) - inner.flatten(1).sum(1)


def check_grid_args(half_width: float, points: int, dim: int) -> None:
    if dim not in (1, 2):
        raise ValueError(
            f"the log-ratio equation is solved on a grid, so only for states of dimension d = 1 or 2; got d = {dim} "
            "(use mismatch='kde' or 'gaussian' in higher dimension)"
        )
    if not (isinstance(half_width, int | float) and math.isfinite(half_width) and half_width > 0):
        raise ValueError(f"half_width must be a positive number; got {half_width!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 8:
        raise ValueError(f"points (cells per axis) must be an integer >= 8; got {points!r}")


def graded_times(t_end: float, T: float, n: int, scale: float = 1e-3) -> np.ndarray:
    """``n`` ascending times from ``t_end`` to ``T`` whose spacing grows in proportion to t − t_end + τ₀, with
    τ₀ = ``scale`` · T: fine where scores and residuals change fastest (t → t_end), coarse near T."""
    tau0 = scale * T
    span = T - t_end + tau0
    times = t_end - tau0 + tau0 * (span / tau0) ** np.linspace(0.0, 1.0, n)
    times[0], times[-1] = t_end, T
    return times


def _residual_table(
    phi: Potential, process: ForwardProcess, x: Tensor, times: np.ndarray, batch_rows: int = 32768
) -> Tensor:
    """R[φ] at the grid points ``x`` ``[P, d]`` and ``times`` ``[K]``, ``[K, P]``, each time slice gauge-fixed (its
    grid mean removed). Exact derivatives (:func:`log_fp_residual`), many times per call (its fixed cost per call
    dominates on small grids), no graph."""
    P = x.shape[0]
    per_call = max(1, batch_rows // P)
    rows = []
    with torch.no_grad():
        for start in range(0, len(times), per_call):
            ts = torch.as_tensor(times[start : start + per_call], dtype=x.dtype, device=x.device)
            # one time per row, materialised (forward mode refuses the stride-0 view of an expanded time)
            r = log_fp_residual(phi, process, x.repeat(len(ts), 1), ts.repeat_interleave(P).contiguous())
            rows.append(r.detach().reshape(len(ts), P))
    table = torch.cat(rows)
    bad = ~torch.isfinite(table).all(1)
    if bool(bad.any()):
        raise ValueError(
            f"R[φ] is not finite on the grid at t = {float(times[int(bad.nonzero()[0])]):.6g}: φ must be twice "
            "differentiable in x and once in t on [t_end, T] (a noised law whose noise std has an infinite "
            "t-derivative at t = 0 needs an end time > 0)"
        )
    return table - table.mean(1, keepdim=True)


def solve_log_ratio(
    phi: Potential,
    process: ForwardProcess,
    half_width: float,
    points: int,
    times: Sequence[float] | np.ndarray | Tensor,
    *,
    dim: int = 2,
    method: str = "KenCarp4",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    n_table: int = 200,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> LogRatioSolution:
    """Solve the log-ratio equation for h = log p^SDE − φ by the method of lines (seed001 §3.3a, check 2):

        ∂_t h = −R − f·∇h − (g²/2)(Δh + |∇h|²),     h(·, T) = log π − φ(·, T),

    backwards from t = T to min(``times``), where R = R[φ] is the log-FP residual (:func:`log_fp_residual`, same
    sign convention: R[log p_t] = 0) and p^SDE is the law of the reverse SDE with score ∇φ started from the prior π.
    Backwards in t it is a forward viscous Hamilton–Jacobi equation, so the terminal-value problem is well posed.
    Consistency: R ≡ 0 and φ(·, T) = log π + c make h ≡ c a solution, so ∇φ = ∇log p^SDE exactly.

    Args:
        phi: the potential ``phi(x, t) -> [B]`` whose gradient is the sampler's score (e.g.
            ``PotentialScoreNet.potential``); it must accept t as a float and be differentiable in x and t.
        process: an affine ``ForwardProcess`` (f(x, t) = f(t) x).
        half_width, points: the box [−L, L]^d and its cells per axis; the unknowns are h at the cell centres.
        times: the forward times at which h is returned (each in [0, T], at least one below T).
        dim: d, 1 or 2 (a grid in higher dimension is out of reach; the sample estimates cover d > 2).
        method: a stiff torch method of :func:`pysens.solve`: KenCarp4 (IMEX, the default) or TRBDF2. Rosenbrock
            methods (Rodas5P) also run but took ~25x more steps than KenCarp4 on the §6.2 oracle: avoid them.
        rtol, atol: the solver's tolerances on h.
        n_table: how many graded times R is tabulated on (see below).

    Discretisation: second-order central differences for ∇h and Δh on the cell centres. **Boundary**: one ghost cell
    per face copying its neighbour, i.e. ∂_n h = 0 (homogeneous Neumann: the finite-volume no-flux Laplacian). It
    is well posed for this parabolic equation, keeps spatial constants exact (so the R ≡ 0 case stays exact on the
    grid), and the FFT solve of (I − c Δ_h) is exact for it. The true h has ∂_n h ≠ 0, so the condition puts an error
    in a layer at the faces. Backwards in t, the transport f·∇h of a contracting drift runs outward and sweeps it out
    of the box; where the Hamilton–Jacobi term g²∇h·∇h turns the characteristics inward it can creep in. So the box
    must hold p^SDE with negligible mass near the faces: :meth:`LogRatioSolution.edge_mass` reports it, and the error
    tracks it (§6.2 oracle: 5e-6 relative at L = 4, edge mass 2e-7; 1e-8 at L = 6). A zero-flux-of-p condition would
    instead give the law of the SDE reflected at the box, whose h has a steep layer at the faces even when R ≡ 0.
    **Time**: with KenCarp4 the stiff diffusion −(g²/2)Δh is implicit (GMRES preconditioned by the exact FFT solve of
    the no-flux Laplacian: one iteration) and −R − f·∇h − (g²/2)|∇h|² explicit. **R** is tabulated on the grid at
    ``n_table`` times graded towards t_end (exact autograd derivatives of φ, many times per batched call) and
    interpolated in t by a cubic spline per cell: a solve asks for R at ~5 new stage times per step, and the fixed
    cost of each residual call would dominate. On the authors' networks 100 and 400 nodes give mismatches within
    2e-3 of each other. R and h(T) are gauge-fixed (grid means removed): that shifts h by a function of t only, which
    changes neither ∇h nor the normalised density, and keeps h O(1) for the error control.
    """
    if not isinstance(process, ForwardProcess):
        raise TypeError(f"process must be an affine ForwardProcess; got {type(process).__name__}")
    check_grid_args(half_width, points, dim)
    T = float(process.T)
    req = np.unique(np.asarray(torch.as_tensor(times, dtype=torch.float64).cpu(), dtype=np.float64).reshape(-1))
    if req.size == 0 or not np.isfinite(req).all() or req[0] < 0 or req[-1] > T * (1 + 1e-12) or req[0] >= T:
        raise ValueError(f"times must lie in [0, T] = [0, {T:g}] with at least one below T; got {req!r}")
    req = np.minimum(req, T)
    device = torch.device("cpu") if device is None else torch.device(device)
    grid = CellGrid([-float(half_width)] * dim, [float(half_width)] * dim, [points] * dim, bc="noflux")
    cells = grid.cells
    x = grid.points(dtype, device)  # [P, d]
    coords = x.T.reshape(dim, *cells)  # x_i at every cell, [d, *cells]
    t_end = float(req[0])
    # R tabulated on graded times and interpolated by a cubic spline in t per cell (not evaluated at every stage)
    nodes = graded_times(t_end, T, n_table)
    spline = CubicSpline(nodes, _residual_table(phi, process, x, nodes).cpu().double().numpy(), axis=0)

    def residual(t: float) -> Tensor:
        return torch.as_tensor(spline(t), dtype=dtype, device=device).reshape(1, *cells)

    def coefficients(t: Tensor) -> tuple[float, float, float]:
        s = float(t.reshape(-1)[0])
        return s, float(process.drift_coef(s)), 0.5 * float(process.g2(s))

    def diffusion(t: Tensor, h: Tensor) -> Tensor:  # the stiff part, −(g²/2) Δh
        _, _, D = coefficients(t)
        return -D * _grid_laplacian(h, grid)

    def transport(t: Tensor, h: Tensor) -> Tensor:  # the explicit part, −R − f·∇h − (g²/2)|∇h|²
        s, f, D = coefficients(t)
        grad = _grid_gradient(h, grid)
        return -residual(s) - f * (coords[None] * grad).sum(1) - D * (grad * grad).sum(1)

    def full_jvp(t: Tensor, h: Tensor, v: Tensor) -> Tensor:  # J v of the whole right-hand side
        _, f, D = coefficients(t)
        grad, grad_v = _grid_gradient(h, grid), _grid_gradient(v, grid)
        return -D * _grid_laplacian(v, grid) - f * (coords[None] * grad_v).sum(1) - 2.0 * D * (grad * grad_v).sum(1)

    def precond(t: Tensor, h: Tensor, hgamma: Tensor, v: Tensor) -> Tensor:
        # (I − hγ J₁)⁻¹ v with J₁ = −D Δ_h: (I − (−hγ D) Δ_h)⁻¹, exact by FFT (hγ < 0 backwards in t)
        _, _, D = coefficients(t)
        return grid.solve_shifted_laplacian(v, -torch.as_tensor(hgamma).reshape(-1).to(v.dtype) * D)

    with torch.no_grad():
        h_T = process.prior_log_density(x) - phi(x, torch.tensor(T, dtype=dtype, device=device)).detach()
    h_T = (h_T - h_T.mean()).reshape(1, *cells)
    saveat = torch.as_tensor(req[::-1].copy())
    problem = SplitODEProblem(diffusion, transport, h_T, (T, t_end), jvp=lambda t, h, v: diffusion(t, v))
    problem.jvp = full_jvp  # the whole right-hand side's JVP, for methods that do not split
    sol = solve(problem, method, "torch", rtol=rtol, atol=atol, saveat=saveat, linsolve="gmres", precond=precond)
    order = torch.arange(sol.t.shape[0] - 1, -1, -1)
    t_out, h = sol.t[order], sol.x[order, 0]
    with torch.no_grad():
        phis = torch.stack([phi(x, t_k).detach().reshape(cells) for t_k in t_out])
    log_p = phis + h
    log_p = log_p - torch.logsumexp(log_p.flatten(1), dim=1).reshape(-1, *([1] * dim)) - math.log(grid.cell_volume)
    return LogRatioSolution(times=t_out, h=h, log_density=log_p, grid=grid, retcode=sol.retcode, stats=sol.stats)
