"""The grid SPDE as method-of-lines problems for ``pysens.solve``, and the schemes that integrate it.

Digest seed002 §4.2, §8 item 6. :class:`GridSPDE` holds a :class:`~pysens.spde.grid.Grid`, a drift b(τ, x), a
diffusion coefficient D(τ) (= g²/2), a noise model (N1–N4, :mod:`pysens.spde.noise`) and the Itô/Stratonovich
``convention`` of the particle model it represents. With b_S the particles' Stratonovich drift, it poses

    Stratonovich form:  du = [A_S(τ) u] dτ + Σ_k L_k u ∘ dB^k (+ Σ_k ψ_k dB^k for additive N4),
    Itô form:           du = [A_S(τ) u + ½ Σ_k L_k L_k u] dτ + Σ_k L_k u dB^k,

with A_S the finite-volume Fokker–Planck operator of b_S and D, and L_k u = −∇·(σ_k u) (central flux). Both
forms use the *discrete* operators, so the Itô correction is the consistent one (EM without it is L²-unstable,
digest §8).

Problems (state ``u`` ``[B, *cells]``: B independent realisations, each with its own noise path ``[B, K]``):

* :meth:`GridSPDE.ode_problem`: the random ODE du/dτ = A_S u + Σ_k L_k u Ḃ^k for a smooth path
  (:class:`~pysens.spde.noise.SmoothBrownianPath`) or a constant rate (one interval of a Brownian grid): the
  Wong–Zakai approximation, converging to the Stratonovich form. A ``SplitODEProblem`` (f1: the stiff part,
  implicit in IMEX methods; f2: the rest) or a plain ``ODEProblem``; any ODE backend solves it (torch
  KenCarp4/TRBDF2/Rodas, scipy BDF/Radau/CVODE_BDF, julia KenCarp4). The operators are linear, so the
  Jacobian-vector product is the operator itself (no autodiff through a score network) and GMRES gets an FFT
  preconditioner (I − γDΔ_h)⁻¹ (exact for the central flux's diffusion part).
* :meth:`GridSPDE.sde_problem`: the Itô (or, for Stratonovich methods such as EulerHeun, the Stratonovich) form
  as a ``SplitSDEProblem`` for torch/julia SDE methods (EM, EulerHeun, ImplicitEM IMEX; SRA1/SOSRA/SKenCarp for
  additive N4). pysens SDE problems carry diagonal noise, so this form needs K = 1 transport fields (N2, N1 in
  1-D) or additive noise; the K cell-space increments are built from the K common increments.

Schemes of :meth:`GridSPDE.solve` (the ``scheme`` switch):

* ``"split_exact_shift"`` (N1 only): Strang splitting per noise step, shift by σΔB/2 (exact FFT translation) →
  Fokker–Planck substep solved by any ODE backend → shift by σΔB/2. Exact noise for constant σ; mass to round-off.
* ``"wong_zakai"``: per noise step, the random ODE with the constant rate ΔB/Δτ, by any ODE backend; or one
  solve over the whole span for a :class:`SmoothBrownianPath`. Any noise model.
* ``"sde"``: ``pysens.solve`` on :meth:`sde_problem`.

Positivity: the implicit Euler step of an M-matrix operator (Scharfetter–Gummel/Chang–Cooper flux, or central flux
at cell Péclet ≤ 1) and the exact shift keep u ≥ 0 to round-off, provided the linear solves are exact
(``linsolve="dense"``): GMRES stops at a relative residual (``krylov_tol``) and can leave ~1e-11 negatives in the
far tails. Higher-order steppers (KenCarp4, TRBDF2) and explicit transport terms are not positivity preserving in
general (in the tests they stay above −1e-15 on resolved densities). Additive N4 noise can make u negative. All
of it is reported by ``GridSolution.min_value``, never hidden.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pysens.diffusion.processes import ForwardProcess, resolve_process
from pysens.solvers import BrownianGrid, SDEProblem, SplitODEProblem, SplitSDEProblem

from .grid import FLUXES, FokkerPlanckOperator, Grid, _TimeCache, group_times, row_times
from .noise import NOISE_CONVENTIONS, NoiseModel, SmoothBrownianPath
from .schemes import SCHEMES, STRATONOVICH_METHODS, GridSchemes, GridSolution, _times

__all__ = [
    "SCHEMES",
    "SPLITS",
    "STRATONOVICH_METHODS",
    "GridSPDE",
    "GridSolution",
    "sampling_drift",
]

SPLITS = ("auto", "diffusion", "full")
DENSE_JACOBIAN_MAX = 4096  # cells: the dense [B, n, n] Jacobian hook is built only up to this size


def sampling_drift(score: Callable[[Tensor, Tensor], Tensor], process: ForwardProcess | str):
    """(drift, diffusion) of the reverse-time sampler in sampling time τ = T − t (digest §3.2).

    dY_τ = [−f(t) Y + g(t)² s(Y, t)] dτ + g(t) dW_τ, t = T − τ, so drift(τ, x) = −f(t) x + g² s(x, t) (for VP:
    ½β y + β s) and D(τ) = g(t)²/2. With the exact score the density of Y_τ is p_{T−τ}.
    """
    process = resolve_process(process)

    def drift(tau: Tensor, x: Tensor) -> Tensor:
        t = (process.T - tau).to(x.dtype)  # 0-d, or [P]: one time per point
        f, g2 = process.drift_coef(t), process.g2(t)
        if t.dim() == 1:
            f, g2 = f[:, None], g2[:, None]
        return -f * x + g2 * score(x, t)

    def diffusion(tau: float) -> float:
        return 0.5 * float(process.g2(process.T - tau))

    return drift, diffusion


class GridSPDE(GridSchemes):
    """The forward SPDE of the density on a grid (module docstring).

    Args:
        grid: a 1-D or 2-D :class:`Grid`.
        drift: b(τ, x) for ``x`` ``[P, dim]`` and a 0-d or ``[P]`` ``τ`` → ``[P, dim]`` (a score-based sampler drift
            from :func:`sampling_drift`, or any callable); None for none.
        diffusion: D(τ) = g²/2, a number or a function of τ.
        noise: a :class:`~pysens.spde.noise.NoiseModel` or None (the deterministic Fokker–Planck equation).
        convention: ``"ito"`` or ``"strat"``: how the particles' noise is read (module docstring); irrelevant for
            fields constant in x.
        flux: ``"central"``, ``"scharfetter_gummel"`` or ``"chang_cooper"``.
        split: the IMEX split: ``"diffusion"`` (f1 = diffusion, f2 = advection + noise; central flux only),
            ``"full"`` (f1 = the Fokker–Planck operator, f2 = noise), ``"auto"`` (diffusion for central).
        time_dependent: False caches the drift at the faces once.
        peclet: the policy for a grid too coarse for the drift (:class:`FokkerPlanckOperator`).
        peclet_times: times at which the Péclet number is checked on construction (default: none; the solve
            checks its start, middle and end).
    """

    def __init__(
        self,
        grid: Grid,
        drift: Callable[[Tensor, Tensor], Tensor] | None,
        diffusion: float | Callable[[float], float],
        noise: NoiseModel | None = None,
        *,
        convention: str = "ito",
        flux: str = "central",
        split: str = "auto",
        time_dependent: bool = True,
        peclet: str = "error",
    ) -> None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a pysens.spde.Grid, got {type(grid).__name__}")
        if convention not in NOISE_CONVENTIONS:
            raise ValueError(f"convention must be one of {NOISE_CONVENTIONS}, got {convention!r}")
        if flux not in FLUXES:
            raise ValueError(f"flux must be one of {FLUXES}, got {flux!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split == "diffusion" and flux != "central":
            raise ValueError(
                f"split='diffusion' needs the central flux (the {flux} flux does not separate); use 'full'"
            )
        if noise is not None and not isinstance(noise, NoiseModel):
            raise TypeError(f"noise must be a pysens.spde NoiseModel or None, got {type(noise).__name__}")
        self.grid, self.noise, self.convention = grid, noise, convention
        self.split = ("diffusion" if flux == "central" else "full") if split == "auto" else split
        self.base_drift = drift
        self.diffusion = diffusion
        strat_shift = noise is not None and noise.kind == "transport" and not noise.constant_fields
        self.drift = self._stratonovich_drift(drift) if (strat_shift and convention == "ito") else drift
        self.fp = FokkerPlanckOperator(
            grid, self.drift, diffusion, flux=flux, time_dependent=time_dependent or strat_shift, peclet=peclet
        )
        self._noise_cache = _TimeCache()
        self.n_modes = 0 if noise is None else noise.n_modes(grid.dim)

    def _stratonovich_drift(self, drift):
        noise = self.noise

        def b_s(t: Tensor, x: Tensor) -> Tensor:
            base = torch.zeros_like(x) if drift is None else drift(t, x)
            if t.dim() == 0:
                return base + noise.ito_to_strat_drift(float(t), x)
            shift = torch.empty_like(x)
            for value in torch.unique(t).tolist():  # per-point times: one field evaluation per distinct time
                rows = t == value
                shift[rows] = noise.ito_to_strat_drift(value, x[rows])
            return base + shift

        return b_s

    # -- operators ---------------------------------------------------------------------------------------------------
    def _transport_faces(self, t: float, dtype, device) -> list[Tensor]:
        """σ_k·e_axis at the faces normal to each axis, each ``[K, *face_shape]``."""

        def build():
            out = []
            for axis in range(self.grid.dim):
                pts = self.grid.shared_face_points(axis, dtype, device)
                out.append(self.noise.fields(t, pts)[..., axis].reshape(-1, *self.grid.face_shape(axis)))
            return out

        return self._noise_cache.get(("transport", t, dtype, device), build)

    def _sources(self, t: float, dtype, device) -> Tensor:
        """Additive source fields ``[K, *cells]``."""
        return self._noise_cache.get(
            ("sources", t, dtype, device),
            lambda: self.noise.sources(t, self.grid.points(dtype, device)).reshape(-1, *self.grid.cells),
        )

    def _row_faces(self, t: Tensor, u: Tensor) -> list[Tensor]:
        """σ_k·e_axis at the faces per axis, ``[K, *face_shape]`` or, for rows on different clocks, ``[K, B, ...]``."""
        if self.noise is None or self.noise.kind != "transport":
            raise TypeError("transport noise operators need a transport noise model (N1–N3)")
        times = row_times(t, u.shape[0])
        if isinstance(times, list):
            per_row = [self._transport_faces(s, u.dtype, u.device) for s in times]
            return [torch.stack([f[axis] for f in per_row], dim=1) for axis in range(self.grid.dim)]
        return self._transport_faces(times, u.dtype, u.device)

    def _transport_mode(self, faces: list[Tensor], u: Tensor, k: int) -> Tensor:
        return sum(self.grid.divergence(u, 0.5 * s[k], -0.5 * s[k], axis) for axis, s in enumerate(faces))

    def transport(self, t: Tensor, u: Tensor) -> Tensor:
        """L_k u = −∇·(σ_k u) for every mode, ``[K, B, *cells]`` (transport noise only); rows on different clocks
        get their own fields in one vectorised pass."""
        faces = self._row_faces(t, u)
        return torch.stack([self._transport_mode(faces, u, k) for k in range(self.n_modes)])

    def ito_correction(self, t: Tensor, u: Tensor) -> Tensor:
        """½ Σ_k L_k L_k u, the Itô–Stratonovich correction of the transport noise, ``[B, *cells]``."""
        faces = self._row_faces(t, u)
        total = torch.zeros_like(u)
        for k in range(self.n_modes):
            total = total + self._transport_mode(faces, self._transport_mode(faces, u, k), k)
        return 0.5 * total

    def noise_term(self, t: Tensor, u: Tensor, rate: Tensor, linear_only: bool = False) -> Tensor:
        """Σ_k rate_k L_k u (transport) or Σ_k rate_k ψ_k (additive), for ``rate`` ``[B, K]``."""
        if self.noise.kind == "transport":
            return torch.einsum("kb...,bk->b...", self.transport(t, u), rate.to(u.dtype))
        if linear_only:
            return torch.zeros_like(u)
        out = torch.empty_like(u)
        for time_, rows in group_times(t, u.shape[0]):
            src = self._sources(time_, u.dtype, u.device)
            r = rate if rows is None else rate[rows]
            val = torch.einsum("k...,bk->b...", src, r.to(u.dtype))
            if rows is None:
                out = val
            else:
                out[rows] = val
        return out

    def qv_rate(self, t: float, u: Tensor, phi) -> Tensor:
        """d[⟨u, φ⟩]/dτ on the grid, ``[B]``: Σ_k ⟨u, σ_k·∇φ⟩² (transport) or Σ_k ⟨φ, ψ_k⟩² (additive) (§4.2).

        ``phi`` is a :class:`~pysens.spde.test_functions.RadialTestFunction` (its ``grad`` is used at the cell
        centres) or, for additive noise, any callable on the centres ``[P, dim]``.
        """
        self.grid.check_state(u, "u")
        if self.noise is None:
            return torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
        pts = self.grid.points(u.dtype, u.device)
        flat = u.reshape(u.shape[0], -1) * self.grid.cell_volume
        if self.noise.kind == "additive":
            proj = self.noise.sources(t, pts) @ phi(pts).reshape(-1) * self.grid.cell_volume  # [K]
            return proj.pow(2).sum().expand(u.shape[0]).clone()
        sig = self.noise.fields(t, pts)  # [K, P, dim]
        along = (sig * phi.grad(pts)[None]).sum(-1)  # σ_k·∇φ at the centres, [K, P]
        return (flat @ along.T).pow(2).sum(1)

    def fokker_planck(self, t: Tensor, u: Tensor) -> Tensor:
        """A_S(τ) u, ``[B, *cells]``."""
        return self.fp.apply(t, u, "full")

    def _stiff_part(self, ito: bool) -> Callable[[Tensor, Tensor], Tensor]:
        part = "diffusion" if self.split == "diffusion" else "full"

        def f1(t: Tensor, u: Tensor) -> Tensor:
            out = self.fp.apply(t, u, part)
            return out + self.ito_correction(t, u) if ito else out

        return f1

    def preconditioner(self, extra_diffusion: float = 0.0):
        """precond(t, x, γ, v) ≈ (I − γ J₁)⁻¹ v with J₁ ≈ (D + ``extra_diffusion``) Δ_h, by FFT (see
        :meth:`Grid.solve_shifted_laplacian`); the signature of the torch GMRES and scipy CVODE preconditioners."""

        def precond(t: Tensor, x: Tensor, gamma: Tensor, v: Tensor) -> Tensor:
            times = row_times(t, v.shape[0])
            if isinstance(times, list):
                D = torch.tensor([self.fp.diffusion_at(s) for s in times], dtype=v.dtype, device=v.device)
            else:
                D = torch.full((v.shape[0],), self.fp.diffusion_at(times), dtype=v.dtype, device=v.device)
            D = D + extra_diffusion
            return self.grid.solve_shifted_laplacian(v, torch.as_tensor(gamma).reshape(-1).to(v.dtype) * D)

        return precond

    def _dense_jacobian(self, op: Callable[..., Tensor], rate_fn: Callable[[Tensor], Tensor] | None = None):
        """jac(t, u) → ``[B, n, n]`` for a linear operator ``op(t, v, rate)`` by applying it to the unit vectors
        (n ≤ 4096 cells). With a noise rate every row has its own operator (its own path); without, rows that share
        a time share the matrix."""
        if self.grid.size > DENSE_JACOBIAN_MAX:
            return None
        n = self.grid.size

        def jac(t: Tensor, u: Tensor) -> Tensor:
            out = torch.empty(u.shape[0], n, n, dtype=u.dtype, device=u.device)
            eye = torch.eye(n, dtype=u.dtype, device=u.device).reshape(n, *self.grid.cells)
            times = torch.as_tensor(t).reshape(-1).expand(u.shape[0])
            if rate_fn is None:
                for time_, rows in group_times(t, u.shape[0]):
                    cols = op(torch.full((n,), time_, dtype=u.dtype, device=u.device), eye, None).reshape(n, n).T
                    out[slice(None) if rows is None else rows] = cols
                return out
            rates = rate_fn(times)
            for b in range(u.shape[0]):
                tb = torch.full((n,), float(times[b]), dtype=u.dtype, device=u.device)
                out[b] = op(tb, eye, rates[b].expand(n, -1)).reshape(n, n).T
            return out

        return jac

    # -- problems ------------------------------------------------------------------------------------------------------
    def _rate_fn(self, path: SmoothBrownianPath | None, rate: Tensor | None):
        if path is not None and rate is not None:
            raise ValueError("give a smooth path or a constant rate, not both")
        if path is None and rate is None:
            return None
        if self.noise is None:
            raise ValueError("this SPDE has no noise model; a noise path or rate has nothing to drive")
        if path is not None:
            if not isinstance(path, SmoothBrownianPath):
                raise TypeError(f"path must be a SmoothBrownianPath, got {type(path).__name__}")
            if path.shape[1] != self.n_modes:
                raise ValueError(f"the path has {path.shape[1]} modes per row but the noise model has {self.n_modes}")
            return path.rate
        return lambda t: rate

    def ode_problem(
        self,
        u0: Tensor,
        tspan: tuple[float, float],
        *,
        path: SmoothBrownianPath | None = None,
        rate: Tensor | None = None,
        name: str = "",
    ) -> SplitODEProblem:
        """The (random) ODE du/dτ = A_S u + Σ_k L_k u Ḃ^k (Stratonovich/Wong–Zakai) with Ḃ from ``path`` or the
        constant ``rate`` ``[B, K]``; without either, the deterministic Fokker–Planck equation.

        A ``SplitODEProblem``: IMEX methods treat f1 (per the ``split`` setting) implicitly with f1's JVP hook (the
        operator itself) and, up to 4096 cells, a dense Jacobian hook; every other method solves f = f1 + f2 with the
        problem's full JVP/Jacobian hooks (the linear operator with this row's noise rate), so one problem serves
        torch IMEX/ESDIRK/Rosenbrock, scipy BDF/Radau/CVODE and julia alike.
        """
        self.grid.check_state(u0, "u0")
        rate_fn = self._rate_fn(path, rate)
        if rate is not None and rate.shape != (u0.shape[0], self.n_modes):
            raise ValueError(f"rate must be [B, K] = [{u0.shape[0]}, {self.n_modes}], got {tuple(rate.shape)}")
        if path is not None and path.shape[0] != u0.shape[0]:
            raise ValueError(f"the path has {path.shape[0]} rows but u0 has B = {u0.shape[0]}")
        f1 = self._stiff_part(ito=False)
        advect = self.split == "diffusion"

        def f2(t: Tensor, u: Tensor) -> Tensor:
            out = self.fp.apply(t, u, "advection") if advect else torch.zeros_like(u)
            if rate_fn is not None:
                out = out + self.noise_term(t, u, rate_fn(t))
            return out

        def linear(t: Tensor, v: Tensor, rate: Tensor | None) -> Tensor:
            """The linear part of f (f without additive sources), with an explicit per-row noise rate."""
            out = self.fp.apply(t, v, "full")
            if rate is not None:
                out = out + self.noise_term(t, v, rate, linear_only=True)
            return out

        def f1_op(t: Tensor, v: Tensor, rate: Tensor | None) -> Tensor:
            return f1(t, v)

        name = name or f"grid SPDE {self.grid.cells} ({self.fp.flux}, {'random ODE' if rate_fn else 'Fokker–Planck'})"

        def jvp(t: Tensor, u: Tensor, v: Tensor) -> Tensor:
            return linear(t, v, None if rate_fn is None else rate_fn(t))

        problem = SplitODEProblem(
            f1, f2, u0, tspan, jvp=lambda t, u, v: f1(t, v), jac=self._dense_jacobian(f1_op), name=name
        )
        # the hooks of the whole right-hand side, for methods that do not split (SplitODEProblem keeps f1's apart)
        problem.jvp, problem.jac = jvp, self._dense_jacobian(linear, rate_fn)
        return problem

    def sde_problem(
        self, u0: Tensor, tspan: tuple[float, float], brownian: BrownianGrid | None, form: str = "ito"
    ) -> SDEProblem:
        """The SPDE as a ``SplitSDEProblem`` on a Brownian grid of the common noise, ``[n, B, K]`` increments.

        ``form="ito"`` (EM, ImplicitEM, SRA…) adds ½ΣL_kL_k u to f1; ``"strat"`` (EulerHeun) does not. The K
        common increments are mapped to cell space: K = 1 transport noise multiplies L u (diagonal noise with the
        same increment in every cell); additive noise becomes the Q-Wiener increment Σ_k ψ_k ΔB^k (g = 1).
        Without a noise model it is the Fokker–Planck equation with g = 0 (``brownian`` unused), so fixed-step SDE
        methods serve as ODE steppers: ImplicitEM (θ = 1) is the implicit Euler scheme of the digest's oracle.
        """
        self.grid.check_state(u0, "u0")
        if form not in ("ito", "strat"):
            raise ValueError(f"form must be 'ito' or 'strat', got {form!r}")
        if self.noise is None:
            # the deterministic Fokker–Planck equation on the SDE methods (ImplicitEM with θ = 1 is implicit Euler)
            f1 = self._stiff_part(ito=False)

            def f2_det(t: Tensor, u: Tensor) -> Tensor:
                return self.fp.apply(t, u, "advection") if self.split == "diffusion" else torch.zeros_like(u)

            return SplitSDEProblem(
                f1, f2_det, lambda t, u: torch.zeros_like(u), u0, tspan, noise="additive", name="grid Fokker–Planck"
            )
        if not isinstance(brownian, BrownianGrid):
            raise TypeError(f"brownian must be a BrownianGrid of the common noise, got {type(brownian).__name__}")
        if tuple(brownian.shape) != (u0.shape[0], self.n_modes):
            raise ValueError(
                f"the Brownian grid must hold [B, K] = [{u0.shape[0]}, {self.n_modes}] increments per step, got "
                f"{tuple(brownian.shape)}"
            )
        cells = self.grid.cells
        dB = brownian.increments.to(dtype=u0.dtype, device=u0.device)
        if self.noise.kind == "transport":
            if self.n_modes != 1:
                raise ValueError(
                    f"the SDE form needs one transport field (K = 1) because pysens SDE problems carry diagonal noise; "
                    f"this model has K = {self.n_modes}: use scheme='wong_zakai' or 'split_exact_shift'"
                )
            cell_dw = dB[:, :, 0].reshape(*dB.shape[:2], *([1] * len(cells))).expand(*dB.shape[:2], *cells)

            def g(t: Tensor, u: Tensor) -> Tensor:
                return self.transport(t, u)[0]

            noise_type = "diagonal"
        else:
            patterns = self.noise.basis.evaluate(self.grid.points(u0.dtype, u0.device))[0]
            patterns = (self.noise.q.to(dtype=u0.dtype, device=u0.device).sqrt()[:, None] * patterns).reshape(
                -1, *cells
            )
            cell_dw = torch.einsum("k...,nbk->nb...", patterns, dB)
            amp = self.noise.amplitude

            def g(t: Tensor, u: Tensor) -> Tensor:
                scale = torch.tensor([float(amp(s)) if callable(amp) else float(amp) for s in _times(t, u)])
                return scale.to(dtype=u.dtype, device=u.device).reshape(-1, *([1] * len(cells))).expand_as(u)

            noise_type = "additive"
        cell_grid = BrownianGrid(brownian.times, cell_dw.contiguous())
        f1 = self._stiff_part(ito=form == "ito" and self.noise.kind == "transport")
        advect = self.split == "diffusion"

        def f2(t: Tensor, u: Tensor) -> Tensor:
            return self.fp.apply(t, u, "advection") if advect else torch.zeros_like(u)

        return SplitSDEProblem(
            f1, f2, g, u0, tspan, noise=noise_type, brownian=cell_grid, name=f"grid SPDE {cells} ({form} form)"
        )
