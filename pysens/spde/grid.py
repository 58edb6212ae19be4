"""Finite-volume grids and the Fokker–Planck and transport operators of the grid SPDE (1-D and 2-D).

Digest seed002 §3.2, §8 item 6. A :class:`Grid` is a box ``[lower, upper]`` split into ``cells`` equal cells per
axis; a density on it is a batched tensor ``u`` ``[B, *cells]`` of cell averages (batch first: B independent
realisations), and ∫u = Σ u · |cell|.

The Fokker–Planck operator in flux form, for drift b(τ, x) and diffusion coefficient D(τ) (= g²/2),

    ∂_τ u = −∇·(b u) + D Δu = −∇·F,        du_j/dτ = −Σ_axes (F_{j+½} − F_{j−½}) / h,

with face fluxes F = a u_L − c u_R (L, R the cells on either side). Because every face flux leaves one cell and
enters the next, Σ_j du_j = 0: mass is conserved to round-off whatever the time stepper. Face coefficients
(v = b·e_axis at the face, w = v h/D the cell Péclet number):

* ``"central"``: a = v/2 + D/h, c = D/h − v/2. Second order; the implicit scheme keeps u ≥ 0 (an M-matrix) only
  while |v| h/(2D) ≤ 1, which :class:`FokkerPlanckOperator` checks (error or warning, ``peclet=``).
* ``"scharfetter_gummel"``: a = (D/h) B(−w), c = (D/h) B(w), B(z) = z/(eᶻ − 1): exact for the 1-D flux with
  constant v, D across the face; positive for any w, and discrete equilibria e^{−V} of gradient drifts are exact.
* ``"chang_cooper"``: F = v[(1 − δ)u_L + δ u_R] − D(u_R − u_L)/h with δ = 1/w − 1/(eʷ − 1) (Chang & Cooper 1970).
  For a linear Fokker–Planck operator with face-evaluated v and D this is algebraically the Scharfetter–Gummel
  flux (a and c coincide); both names are kept because the literature (and the issue) use both, and the test
  suite checks that they agree to round-off.

Boundaries: ``"noflux"`` (zero flux through the outer faces) or ``"periodic"``. Transport noise uses the
central (skew) flux of −∇·(σ_k u), so it also conserves mass.

Shapes: points are ``[P, dim]``; the drift is called as ``drift(t, x)`` with ``x`` ``[P, dim]`` and ``t`` a 0-d
tensor, or a ``[P]`` tensor (one time per point) when the rows of a batch are on different clocks (adaptive torch
solves), like a score model's per-sample times; it returns ``[P, dim]``.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import scipy.fft
import torch
from torch import Tensor

from pysens.validation import check_batch

__all__ = [
    "BOUNDARIES",
    "FLUXES",
    "PECLET_POLICIES",
    "FokkerPlanckOperator",
    "Grid",
    "GridTooCoarseWarning",
    "bernoulli",
]

FLUXES = ("central", "scharfetter_gummel", "chang_cooper")
BOUNDARIES = ("noflux", "periodic")
PECLET_POLICIES = ("error", "warn", "ignore")

Drift = Callable[[Tensor, Tensor], Tensor]


class GridTooCoarseWarning(UserWarning):
    """The cell Péclet number |v| h/(2D) exceeds 1: the grid does not resolve the drift."""


def bernoulli(z: Tensor) -> Tensor:
    """B(z) = z/(eᶻ − 1), with B(0) = 1 and the series 1 − z/2 + z²/12 near 0 (no 0/0)."""
    small = z.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1.0 - z / 2.0 + z * z / 12.0, safe / torch.expm1(safe))


class Grid:
    """A box of equal finite-volume cells in 1 or 2 dimensions.

    Args:
        lower, upper: box corners (floats for 1-D, pairs for 2-D).
        cells: cells per axis (an int for 1-D, a pair for 2-D).
        bc: ``"noflux"`` or ``"periodic"``.
    """

    def __init__(self, lower, upper, cells, bc: str = "noflux") -> None:
        lower = [float(v) for v in torch.as_tensor(lower, dtype=torch.float64).reshape(-1).tolist()]
        upper = [float(v) for v in torch.as_tensor(upper, dtype=torch.float64).reshape(-1).tolist()]
        cells = [cells] if isinstance(cells, int) else list(cells)
        if not (len(lower) == len(upper) == len(cells)) or len(cells) not in (1, 2):
            raise ValueError(f"a grid is 1-D or 2-D: lower, upper and cells must have 1 or 2 entries, got {cells!r}")
        if any(not isinstance(m, int) or m < 3 for m in cells):
            raise ValueError(f"cells must be integers >= 3 per axis, got {cells!r}")
        if any(not (math.isfinite(a) and math.isfinite(b) and b > a) for a, b in zip(lower, upper, strict=True)):
            raise ValueError(f"need finite lower < upper per axis, got lower={lower}, upper={upper}")
        if bc not in BOUNDARIES:
            raise ValueError(f"bc must be one of {BOUNDARIES}, got {bc!r}")
        self.lower, self.upper, self.cells, self.bc = tuple(lower), tuple(upper), tuple(cells), bc
        self.dim = len(cells)
        self.h = tuple((b - a) / m for a, b, m in zip(lower, upper, cells, strict=True))
        self.cell_volume = math.prod(self.h)
        self._laplacian_eigs: dict = {}  # (dtype, device) -> Δ_h's eigenvalues on the FFT grid of the solve
        self._face_points: dict = {}  # (axis, dtype, device) -> face_points, for the operators' per-time builds

    @property
    def shape(self) -> tuple[int, ...]:
        return self.cells

    @property
    def size(self) -> int:
        return math.prod(self.cells)

    def centers(self, axis: int, dtype=torch.float64, device=None) -> Tensor:
        """Cell centres along ``axis``, ``[cells[axis]]``."""
        return self.lower[axis] + (torch.arange(self.cells[axis], dtype=dtype, device=device) + 0.5) * self.h[axis]

    def _mesh(self, coords: list[Tensor]) -> Tensor:
        grids = torch.meshgrid(*coords, indexing="ij")
        return torch.stack([g.reshape(-1) for g in grids], dim=1)

    def points(self, dtype=torch.float64, device=None) -> Tensor:
        """Cell centres ``[size, dim]`` in the C order of ``u.reshape(B, -1)``."""
        return self._mesh([self.centers(i, dtype, device) for i in range(self.dim)])

    def face_shape(self, axis: int) -> tuple[int, ...]:
        """Faces normal to ``axis`` that carry flux: interior faces (noflux) or all M (periodic, with the wrap)."""
        shape = list(self.cells)
        if self.bc == "noflux":
            shape[axis] -= 1
        return tuple(shape)

    def face_points(self, axis: int, dtype=torch.float64, device=None) -> Tensor:
        """Centres of the flux-carrying faces normal to ``axis``, ``[prod(face_shape), dim]``; face j lies between
        cells j and j+1 along ``axis``."""
        coords = [self.centers(i, dtype, device) for i in range(self.dim)]
        n = self.face_shape(axis)[axis]
        coords[axis] = self.lower[axis] + torch.arange(1, n + 1, dtype=dtype, device=device) * self.h[axis]
        return self._mesh(coords)

    def shared_face_points(self, axis: int, dtype=torch.float64, device=None) -> Tensor:
        """:meth:`face_points`, built once per axis, dtype and device and shared: read-only (the operators build
        drift and noise fields at the faces for every new time, a few times per stage and sample)."""
        key = (axis, dtype, None if device is None else torch.device(device))
        pts = self._face_points.get(key)
        if pts is None:
            pts = self._face_points[key] = self.face_points(axis, dtype, device)
        return pts

    def check_state(self, u: Tensor, name: str = "u") -> None:
        if not isinstance(u, Tensor) or u.dim() != 1 + self.dim or tuple(u.shape[1:]) != self.cells:
            shape = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(
                f"{name} must be a density [B, {', '.join(map(str, self.cells))}] on this grid, got {shape}"
            )
        check_batch(u, name, finite=False)  # dtype and device, named as the caller's argument (not the problem's x0)

    # -- functionals -----------------------------------------------------------------------------------------------
    def integrate(self, u: Tensor, values: Tensor | None = None) -> Tensor:
        """∫ u · values (values ``[*cells]`` or ``[B, *cells]``; None: 1), ``[B]``."""
        w = u if values is None else u * values
        return w.reshape(u.shape[0], -1).sum(1) * self.cell_volume

    def mass(self, u: Tensor) -> Tensor:
        """∫ u, ``[B]``."""
        return self.integrate(u)

    def mean(self, u: Tensor) -> Tensor:
        """∫ x u / ∫ u, ``[B, dim]``."""
        pts = self.points(u.dtype, u.device)
        flat = u.reshape(u.shape[0], -1)
        return (flat @ pts) / flat.sum(1, keepdim=True)

    def project(self, u: Tensor, phi: Callable[[Tensor], Tensor]) -> Tensor:
        """⟨u, φ⟩ = ∫ u φ for a test function called on the cell centres ``[size, dim]`` → ``[size]``, ``[B]``."""
        values = phi(self.points(u.dtype, u.device)).reshape(self.cells)
        return self.integrate(u, values)

    def discretize(
        self, density: Callable[[Tensor], Tensor], dtype=torch.float64, device=None, normalize=True
    ) -> Tensor:
        """A density sampled at the cell centres, ``[1, *cells]``; with ``normalize`` rescaled to unit mass."""
        values = density(self.points(dtype, device)).reshape(1, *self.cells).to(dtype)
        return values / self.mass(values)[0] if normalize else values

    def kl(self, u: Tensor, log_pi: Tensor) -> Tensor:
        """KL(u | π) = ∫ u log(u/π) for ``log_pi`` ``[*cells]`` (a normalised log density at the centres), ``[B]``.

        Round-off negatives of u (≥ −1e-12) count as 0 (0 log 0 = 0).
        """
        pos = u.clamp_min(0.0)
        logu = torch.log(torch.where(pos > 0, pos, torch.ones_like(pos)))
        return self.integrate(pos, logu - log_pi)

    # -- face-flux application -------------------------------------------------------------------------------------
    def divergence(self, u: Tensor, a: Tensor, c: Tensor, axis: int) -> Tensor:
        """−(F_{j+½} − F_{j−½})/h along ``axis`` for F = a u_L − c u_R (a, c broadcast to ``[B, *face_shape]``)."""
        ax = 1 + axis
        m = self.cells[axis]
        h = self.h[axis]
        if self.bc == "periodic":
            flux = a * u - c * torch.roll(u, -1, ax)
            return -(flux - torch.roll(flux, 1, ax)) / h
        flux = a * u.narrow(ax, 0, m - 1) - c * u.narrow(ax, 1, m - 1)
        zero = torch.zeros_like(flux.narrow(ax, 0, 1))
        padded = torch.cat([zero, flux, zero], dim=ax)
        return -(padded.narrow(ax, 1, m) - padded.narrow(ax, 0, m)) / h

    # -- exact translation (N1 noise substep) ----------------------------------------------------------------------
    def shift(self, u: Tensor, displacement: Tensor) -> Tensor:
        """u(x − s) for a per-row displacement ``s`` ``[B, dim]``: an exact translation by an FFT phase shift on the
        box taken as periodic (mass is the zero mode, so it is kept to round-off).

        On a no-flux grid the box is still treated as a torus: keep the density negligible near the boundary
        (a warning is raised when more than 1e-9 of the mass sits in the outer cells).
        """
        if displacement.shape != (u.shape[0], self.dim):
            raise ValueError(
                f"displacement must be [B, dim] = [{u.shape[0]}, {self.dim}], got {tuple(displacement.shape)}"
            )
        if self.bc == "noflux":
            edge = sum(
                torch.cat([u.narrow(1 + i, 0, 1), u.narrow(1 + i, self.cells[i] - 1, 1)], 1 + i).abs().sum()
                for i in range(self.dim)
            )
            if float(edge) * self.cell_volume > 1e-9 * max(float(self.mass(u).abs().sum()), 1e-300):
                warnings.warn(
                    "the exact shift wraps density across the no-flux boundary (more than 1e-9 of the mass sits in the "
                    "outer cells); enlarge the box",
                    GridTooCoarseWarning,
                    stacklevel=2,
                )
        dims = tuple(range(1, 1 + self.dim))
        spec = torch.fft.rfftn(u, dim=dims)
        phase = torch.zeros(spec.shape, dtype=u.dtype, device=u.device)
        for i in range(self.dim):
            m = self.cells[i]
            # frequencies in the state's dtype: float32 frequencies would put a 1e-7 relative error on every phase
            kind = torch.fft.rfftfreq if i == self.dim - 1 else torch.fft.fftfreq
            freqs = kind(m, d=self.h[i], dtype=u.dtype, device=u.device)
            view = [1] * (1 + self.dim)
            view[0], view[1 + i] = u.shape[0], freqs.numel()
            phase = phase + (displacement[:, i : i + 1] * freqs[None]).reshape(view)
        spec = spec * torch.polar(torch.ones_like(phase), -2.0 * math.pi * phase)
        return torch.fft.irfftn(spec, s=self.cells, dim=dims)

    # -- (I − γ D Δ_h)⁻¹ by FFT: a preconditioner (exact for the diffusion-only implicit part) ------------------------
    def solve_shifted_laplacian(self, v: Tensor, coef: Tensor) -> Tensor:
        """Solve (I − coef · Δ_h) w = v per row, ``coef`` ``[B]`` (γ D), with Δ_h the grid's finite-volume Laplacian.

        Periodic: Δ_h is diagonal in the FFT basis. No-flux: the cell-centred Neumann Laplacian equals the periodic
        one on the even reflection of the box (2M cells per axis), so the same FFT solve applies there; that is the
        DCT-II of the box itself (eigenvalues −4/h² sin²(πk/2M)), which on the CPU, outside autograd, is used
        directly (scipy.fft: a quarter of the reflected 2-D transform's data, 4× faster on 256²).
        """
        if (
            self.bc == "noflux"
            and v.device.type == "cpu"
            and v.dtype in (torch.float32, torch.float64)
            and not (v.requires_grad or torch.as_tensor(coef).requires_grad)
        ):
            return self._solve_shifted_laplacian_dct(v, coef)
        x = v
        if self.bc == "noflux":
            for i in range(self.dim):
                x = torch.cat([x, torch.flip(x, dims=(1 + i,))], dim=1 + i)
        sizes = x.shape[1:]
        dims = tuple(range(1, 1 + self.dim))
        spec = torch.fft.rfftn(x, dim=dims)
        eig = self._laplacian_eigs.get((v.dtype, v.device))
        if eig is None:  # the same for every solve on this grid: built once (the preconditioner runs per product)
            eig = torch.zeros(spec.shape[1:], dtype=v.dtype, device=v.device)
            for i in range(self.dim):
                n = sizes[i]
                k = torch.arange(spec.shape[1 + i], dtype=v.dtype, device=v.device)
                if i < self.dim - 1:
                    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=v.dtype, device=v.device)
                lam = -4.0 / self.h[i] ** 2 * torch.sin(math.pi * k / n) ** 2
                view = [1] * self.dim
                view[i] = lam.numel()
                eig = eig + lam.reshape(view)
            self._laplacian_eigs[(v.dtype, v.device)] = eig
        denom = 1.0 - coef.to(v.dtype).reshape(-1, *([1] * self.dim)) * eig[None]
        w = torch.fft.irfftn(spec / denom, s=sizes, dim=dims)
        for i in range(self.dim):
            w = w.narrow(1 + i, 0, self.cells[i])
        return w

    def _solve_shifted_laplacian_dct(self, v: Tensor, coef: Tensor) -> Tensor:
        axes = tuple(range(1, 1 + self.dim))
        key = ("dct", v.dtype)
        eig = self._laplacian_eigs.get(key)
        if eig is None:
            dtype = np.float32 if v.dtype == torch.float32 else np.float64
            eig = np.zeros(self.cells, dtype=dtype)
            for i, (m, h) in enumerate(zip(self.cells, self.h, strict=True)):
                view = [1] * self.dim
                view[i] = m
                eig = eig + (-4.0 / h**2 * np.sin(np.pi * np.arange(m) / (2 * m)) ** 2).astype(dtype).reshape(view)
            self._laplacian_eigs[key] = eig
        spec = scipy.fft.dctn(v.detach().numpy(), type=2, axes=axes)
        c = torch.as_tensor(coef).detach().to(v.dtype).reshape(-1, *([1] * self.dim)).numpy()
        spec /= 1.0 - c * eig[None]
        return torch.from_numpy(scipy.fft.idctn(spec, type=2, axes=axes))


class _TimeCache:
    """A small LRU cache of per-time quantities (drift at faces, noise fields): implicit solvers evaluate the same
    times many times (stages, Jacobian-vector products), and the drift may be a network on every face."""

    def __init__(self, size: int = 16) -> None:
        self.size, self.store = size, OrderedDict()

    def peek(self, key):
        return self.store.get(key)

    def put(self, key, value) -> None:
        self.store[key] = value
        self.store.move_to_end(key)
        if len(self.store) > self.size:
            self.store.popitem(last=False)

    def get(self, key: float, build: Callable[[], object]):
        if key in self.store:
            self.store.move_to_end(key)
            return self.store[key]
        value = build()
        self.store[key] = value
        if len(self.store) > self.size:
            self.store.popitem(last=False)
        return value


def group_times(t: Tensor, batch: int) -> list[tuple[float, Tensor | None]]:
    """Per-sample times ``[B]`` (or 0-d) grouped as (time, rows) pairs; rows None means every row."""
    t = torch.as_tensor(t)
    if t.dim() == 0 or t.numel() == 1:
        return [(float(t.reshape(-1)[0]), None)]
    values = t.detach().to(torch.float64).cpu()
    if bool((values == values[0]).all()):
        return [(float(values[0]), None)]
    uniq = torch.unique(values)
    return [(float(v), torch.nonzero(values == v).reshape(-1).to(t.device)) for v in uniq]


def row_times(t: Tensor, batch: int) -> float | list[float]:
    """One float when every row shares its time (the common case: fixed steps, scipy), else the per-row list."""
    values = torch.as_tensor(t).detach().to(torch.float64).cpu().reshape(-1).tolist()
    first = values[0]
    return first if all(v == first for v in values) else values


class FokkerPlanckOperator:
    """The finite-volume operator u ↦ −∇·(b u) + D Δu on a :class:`Grid` (module docstring), linear in u.

    Args:
        grid: the grid.
        drift: b(t, x) for x ``[P, dim]`` and t a 0-d or ``[P]`` tensor → ``[P, dim]``; None for pure diffusion.
        diffusion: D(t), a number or a function of t (float) returning a number.
        flux: one of :data:`FLUXES`.
        time_dependent: False caches the face drift once (e.g. an OU drift).
        peclet: ``"error"`` (default), ``"warn"`` or ``"ignore"`` when the central flux meets a cell Péclet number
            |v| h/(2D) > 1, where it loses positivity; the positive fluxes only warn (they stay positive but are
            first-order upwind there, i.e. the grid does not resolve the drift).
    """

    def __init__(
        self,
        grid: Grid,
        drift: Drift | None,
        diffusion: float | Callable[[float], float],
        *,
        flux: str = "central",
        time_dependent: bool = True,
        peclet: str = "error",
    ) -> None:
        if flux not in FLUXES:
            raise ValueError(f"flux must be one of {FLUXES}, got {flux!r}")
        if peclet not in PECLET_POLICIES:
            raise ValueError(f"peclet must be one of {PECLET_POLICIES}, got {peclet!r}")
        if drift is not None and not callable(drift):
            raise TypeError(f"drift must be callable as drift(t, x) with x [P, dim], got {type(drift).__name__}")
        if not callable(diffusion) and not (isinstance(diffusion, (int, float)) and diffusion >= 0):
            raise ValueError(f"diffusion must be a non-negative number or a function of t, got {diffusion!r}")
        self.grid, self.drift, self.diffusion, self.flux = grid, drift, diffusion, flux
        self.time_dependent, self.peclet = time_dependent, peclet
        # a few MB of cached face drifts: enough for every row of a batch on its own clock, across stages
        faces = sum(math.prod(grid.face_shape(axis)) for axis in range(grid.dim))
        self._cache = _TimeCache(max(16, min(512, 2**22 // faces)))
        self._diffusion_cache = _TimeCache(1024)
        self.max_peclet = 0.0
        self.drift_calls = 0

    def diffusion_at(self, t: float) -> float:
        if not callable(self.diffusion):
            value = float(self.diffusion)
        else:  # cached: implicit solves ask for the same stage times many times
            value = self._diffusion_cache.peek(t)
            if value is None:
                value = float(self.diffusion(t))
                self._diffusion_cache.put(t, value)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"diffusion D({t}) = {value} must be finite and non-negative")
        return value

    def face_velocity(self, t: float, dtype, device) -> list[Tensor]:
        """b·e_axis at the faces normal to each axis, each ``[*face_shape]``."""
        return self.face_velocities([t], dtype, device)[0]

    def face_velocities(self, times: list[float], dtype, device) -> list[list[Tensor]]:
        """:meth:`face_velocity` for several times, evaluating every uncached time in **one** drift call (points of
        all axes and times stacked, with a ``[P]`` time per point), so a batch on per-row clocks costs one network
        evaluation per stage, not one per row."""
        key = (lambda s: (0.0, dtype, device)) if not self.time_dependent else (lambda s: (s, dtype, device))
        missing = list(dict.fromkeys(s for s in times if self._cache.peek(key(s)) is None))
        if missing:
            for s, vel in zip(missing, self._velocities(missing, dtype, device), strict=True):
                self._cache.put(key(s), vel)
        return [self._cache.get(key(s), lambda: None) for s in times]

    def _velocities(self, times: list[float], dtype, device) -> list[list[Tensor]]:
        shapes = [self.grid.face_shape(axis) for axis in range(self.grid.dim)]
        if self.drift is None:
            return [[torch.zeros(shape, dtype=dtype, device=device) for shape in shapes] for _ in times]
        pts = [self.grid.shared_face_points(axis, dtype, device) for axis in range(self.grid.dim)]
        sizes = [p.shape[0] for p in pts]
        stacked = torch.cat(pts)
        n = len(times)
        if n == 1:
            t = torch.tensor(times[0], dtype=dtype, device=device)
            x = stacked
        else:
            t = torch.tensor(times, dtype=dtype, device=device).repeat_interleave(stacked.shape[0])
            x = stacked.repeat(n, 1)
        b = self.drift(t, x)
        self.drift_calls += 1
        if b.shape != x.shape:
            raise ValueError(f"drift(t, x) must return [P, dim] = {tuple(x.shape)}, got {tuple(b.shape)}")
        b = b.reshape(n, stacked.shape[0], self.grid.dim)
        out = []
        for row in b:
            parts = torch.split(row, sizes)
            out.append([parts[axis][:, axis].reshape(shapes[axis]) for axis in range(self.grid.dim)])
        return out

    def check_peclet(self, t: float, dtype=torch.float64, device=None) -> float:
        """max |v| h/(2D) over the faces at time t; acts on ``peclet`` when it exceeds 1 (the grid is too coarse)."""
        D = self.diffusion_at(t)
        vel = self.face_velocity(t, dtype, device)
        vmax = max(float(v.abs().max()) * h for v, h in zip(vel, self.grid.h, strict=True)) if vel else 0.0
        pe = math.inf if D == 0 and vmax > 0 else (vmax / (2.0 * D) if D > 0 else 0.0)
        self.max_peclet = max(self.max_peclet, pe)
        if pe > 1.0 and self.peclet != "ignore":
            msg = (
                f"cell Péclet number |v| h/(2D) = {pe:.3g} > 1 at t = {t:g}: the grid (h = "
                f"{', '.join(f'{h:.3g}' for h in self.grid.h)}) is too coarse for the drift (|v| up to "
                f"{max(float(v.abs().max()) for v in vel):.3g}, D = {D:.3g})"
            )
            if self.flux == "central":
                msg += "; the central flux loses positivity there: refine the grid or use flux='scharfetter_gummel'"
                if self.peclet == "error":
                    raise ValueError(msg)
            else:
                msg += f"; the {self.flux} flux stays positive but is first-order upwind there"
            warnings.warn(msg, GridTooCoarseWarning, stacklevel=2)
        return pe

    def coefficients(self, t, dtype, device, part: str = "full") -> list[tuple[Tensor, Tensor]]:
        """Face coefficients (a, c) per axis for F = a u_L − c u_R; ``part`` is ``"full"``, ``"diffusion"`` or
        ``"advection"`` (the latter two only for the central flux, whose flux is their sum).

        ``t`` is one time (coefficients ``[*face_shape]``) or a list of per-row times (``[B, *face_shape]``: each row
        its own drift and D, so rows on different clocks are still applied in one vectorised pass).
        """
        if part == "diffusion":  # D/h at every face: the drift is not needed (nor evaluated)
            many = isinstance(t, (list, tuple))
            D = torch.tensor(
                [self.diffusion_at(s) for s in t] if many else self.diffusion_at(t), dtype=dtype, device=device
            )
            D = D.reshape(-1, *([1] * self.grid.dim)) if many else D
            lead = (len(t),) if many else ()
            out = []
            for axis, h in enumerate(self.grid.h):
                d = (D / h).expand(*lead, *self.grid.face_shape(axis))
                out.append((d, d))
            return out
        if isinstance(t, (list, tuple)):
            D = torch.tensor([self.diffusion_at(s) for s in t], dtype=dtype, device=device)
            per_time = self.face_velocities(t, dtype, device)
            vel = [torch.stack([v[axis] for v in per_time]) for axis in range(self.grid.dim)]
            D = D.reshape(-1, *([1] * self.grid.dim))
        else:
            D = torch.tensor(self.diffusion_at(t), dtype=dtype, device=device)
            vel = self.face_velocity(t, dtype, device)
        out = []
        for v, h in zip(vel, self.grid.h, strict=True):
            d = (D / h).expand_as(v)
            if part == "advection":
                if self.flux != "central":
                    raise ValueError(f"the {self.flux} flux does not split into diffusion + advection; use part='full'")
                out.append((0.5 * v, -0.5 * v))
                continue
            if self.flux == "central":
                out.append((0.5 * v + d, d - 0.5 * v))
                continue
            # the positive fluxes; without diffusion (D = 0) their limit is first-order upwind
            none = D == 0
            w = v * h / torch.where(none, torch.ones_like(D), D)
            if self.flux == "scharfetter_gummel":
                a, c = d * bernoulli(-w), d * bernoulli(w)
            else:  # Chang–Cooper δ-weights; δ = 1/w − 1/(eʷ − 1) → ½ − w/12 near 0
                small = w.abs() < 1e-6
                safe = torch.where(small, torch.ones_like(w), w)
                delta = torch.where(small, 0.5 - w / 12.0, 1.0 / safe - 1.0 / torch.expm1(safe))
                a, c = v * (1.0 - delta) + d, d - v * delta
            out.append((torch.where(none, v.clamp_min(0.0), a), torch.where(none, (-v).clamp_min(0.0), c)))
        return out

    def apply(self, t: Tensor, u: Tensor, part: str = "full") -> Tensor:
        """The operator on ``u`` ``[B, *cells]`` at per-sample times ``t`` (``[B]`` or 0-d), in one vectorised pass."""
        coefs = self.coefficients(row_times(t, u.shape[0]), u.dtype, u.device, part)
        return sum(self.grid.divergence(u, a, c, axis) for axis, (a, c) in enumerate(coefs))
