"""The schemes that integrate a :class:`~pysens.spde.solver.GridSPDE` (split exact shift, Wong–Zakai, SDE), and
the :class:`GridSolution` they return; see :mod:`pysens.spde.solver` for the problems and the scheme switch.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pysens.solvers import BrownianGrid, Solution, Stats
from pysens.solvers import solve as solve_problem
from pysens.solvers.methods import METHODS

from .grid import Grid
from .noise import CommonNoise, SmoothBrownianPath

__all__ = ["SCHEMES", "STRATONOVICH_METHODS", "GridSchemes", "GridSolution"]

SCHEMES = ("split_exact_shift", "wong_zakai", "sde")
# SDE methods that converge to the Stratonovich solution; all other pysens SDE methods are Itô
STRATONOVICH_METHODS = ("EulerHeun",)


@dataclass
class GridSolution:
    """What :meth:`GridSPDE.solve` returns.

    Attributes:
        t: ``[n]`` save times; u: ``[n, B, *cells]`` densities there (NaN rows where a failed solve never got).
        retcode: ``"Success"`` or the first failure; stats: work summed over every inner solve.
        scheme, method, backend: how it was solved.
        observed_t: ``[m]`` the times of every noise step (step schemes) or of ``saveat`` (single solves);
        projections: ``{name: [m, B]}`` ⟨u, φ⟩ at ``observed_t`` for the ``observe`` test functions.
    """

    t: Tensor
    u: Tensor
    grid: Grid
    retcode: str
    stats: Stats
    scheme: str
    method: str
    backend: str
    observed_t: Tensor | None = None
    projections: dict[str, Tensor] = field(default_factory=dict)

    @property
    def final(self) -> Tensor:
        return self.u[-1]

    @property
    def mass(self) -> Tensor:
        """∫u at every save time, ``[n, B]``."""
        return torch.stack([self.grid.mass(u) for u in self.u])

    @property
    def min_value(self) -> Tensor:
        """min u at every save time, ``[n, B]``."""
        return self.u.reshape(self.u.shape[0], self.u.shape[1], -1).min(-1).values

    def mean(self) -> Tensor:
        """∫x u/∫u at every save time, ``[n, B, dim]``."""
        return torch.stack([self.grid.mean(u) for u in self.u])


class GridSchemes:
    """The ``solve`` side of :class:`~pysens.spde.solver.GridSPDE`: its schemes over noise steps and whole spans (a
    mixin: it reads the grid, the operators and the problems that ``GridSPDE`` builds)."""

    def solve(
        self,
        u0: Tensor,
        tspan: tuple[float, float],
        *,
        scheme: str | None = None,
        brownian: BrownianGrid | None = None,
        path: SmoothBrownianPath | None = None,
        stride: int = 1,
        method: str = "KenCarp4",
        backend: str = "torch",
        saveat=None,
        observe: dict[str, Callable[[Tensor], Tensor]] | None = None,
        **solve_options,
    ) -> GridSolution:
        """Integrate from ``u0`` ``[B, *cells]`` over ``tspan`` (module docstring for the schemes).

        Args:
            scheme: ``"split_exact_shift"``, ``"wong_zakai"`` or ``"sde"``; default: none without noise,
                ``"wong_zakai"`` with a smooth ``path``, ``"split_exact_shift"`` for N1 on a ``brownian`` grid and
                ``"wong_zakai"`` otherwise.
            brownian: the common noise ``[n, B, K]`` on a grid spanning ``tspan``; noise steps are ``stride`` grid
                intervals each.
            path: a :class:`SmoothBrownianPath` (one solve over the whole span).
            method, backend: the ODE method for inner solves (or the SDE method for ``scheme="sde"``).
            saveat: times to return u at; for the stepping schemes they must be noise-step times (default: both ends,
                ``"all"``: every step).
            observe: test functions φ (called on cell centres ``[P, dim]``) whose ⟨u, φ⟩ is recorded at every
                noise step (stepping schemes) or save time.
            solve_options: passed to ``pysens.solve`` (rtol, atol, dt, adaptive, linsolve, precond, …). Implicit
                torch and CVODE methods default to GMRES with the FFT preconditioner.
        """
        self.grid.check_state(u0, "u0")
        t0, t1 = float(tspan[0]), float(tspan[1])
        self._check_peclet(t0, t1, u0)
        scheme = self._pick_scheme(scheme, brownian, path)
        observe = dict(observe or {})
        info = METHODS.get(method)
        options = self._default_options(info, backend, solve_options, scheme)
        if scheme is None or (scheme == "wong_zakai" and path is not None):
            return self._solve_once(u0, (t0, t1), path, method, backend, saveat, observe, scheme, options)
        if scheme == "sde":
            return self._solve_sde(u0, (t0, t1), brownian, stride, method, backend, saveat, observe, options)
        if brownian is None:
            raise ValueError(f"scheme {scheme!r} needs the common noise as a BrownianGrid (brownian=)")
        return self._solve_steps(u0, (t0, t1), brownian, stride, scheme, method, backend, saveat, observe, options)

    def _pick_scheme(self, scheme, brownian, path) -> str | None:
        if scheme is not None and scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES} or None, got {scheme!r}")
        if self.noise is None:
            if brownian is not None or path is not None:
                raise ValueError("this SPDE has no noise model, but a noise path was given")
            if scheme not in (None, "sde"):
                raise ValueError(
                    f"without noise the SPDE is the Fokker–Planck ODE: scheme None (any ODE method) or "
                    f"'sde' (fixed-step SDE methods, e.g. ImplicitEM = implicit Euler), not {scheme!r}"
                )
            return scheme
        if brownian is not None and path is not None:
            raise ValueError("give either a Brownian grid or a smooth path, not both")
        if brownian is None and path is None:
            raise ValueError(
                "a noisy SPDE needs its common noise: brownian=BrownianGrid(...) or path=SmoothBrownianPath"
            )
        if path is not None:
            if scheme not in (None, "wong_zakai"):
                raise ValueError(f"a smooth path is integrated as one random ODE (scheme='wong_zakai'), not {scheme!r}")
            return "wong_zakai"
        if scheme is None:
            scheme = "split_exact_shift" if isinstance(self.noise, CommonNoise) else "wong_zakai"
        if scheme == "split_exact_shift" and not isinstance(self.noise, CommonNoise):
            raise ValueError("the exact-shift splitting is exact only for common constant noise (N1, CommonNoise)")
        return scheme

    def _check_peclet(self, t0: float, t1: float, u0: Tensor) -> None:
        for s in (t0, 0.5 * (t0 + t1), t1):
            self.fp.check_peclet(s, u0.dtype, u0.device)

    def _default_options(self, info, backend: str, options: dict, scheme: str | None) -> dict:
        options = dict(options)
        if info is None or not info.stiff or "precond" in options or options.get("linsolve") == "dense":
            return options
        wants_gmres = (backend == "torch" and self.grid.size > 64) or (backend == "scipy" and info.name == "CVODE_BDF")
        if wants_gmres and options.get("linsolve", "gmres") in ("gmres", "auto"):
            extra = 0.0
            if scheme == "sde" and isinstance(self.noise, CommonNoise):
                extra = 0.5 * self.noise.amplitude(0.0) ** 2  # the Itô correction's diffusion
            options.update(linsolve="gmres", precond=self.preconditioner(extra))
        return options

    def _observe(self, observe: dict, u: Tensor) -> dict[str, Tensor]:
        return {name: self.grid.project(u, phi) for name, phi in observe.items()}

    def _solve_once(self, u0, tspan, path, method, backend, saveat, observe, scheme, options) -> GridSolution:
        problem = self.ode_problem(u0, tspan, path=path)
        sol = solve_problem(problem, method, backend, saveat=saveat, **options)
        projections = {k: torch.stack([self.grid.project(u, phi) for u in sol.x]) for k, phi in observe.items()}
        return GridSolution(
            t=sol.t,
            u=sol.x,
            grid=self.grid,
            retcode=sol.retcode,
            stats=sol.stats,
            scheme=scheme or "fokker_planck",
            method=sol.method,
            backend=sol.backend,
            observed_t=sol.t,
            projections=projections,
        )

    def _step_times(self, brownian: BrownianGrid, tspan, stride: int) -> list[int]:
        brownian.check_covers(tspan, torch.empty(brownian.shape))
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        n = brownian.times.numel() - 1
        if n % stride:
            raise ValueError(f"stride {stride} must divide the {n} intervals of the Brownian grid")
        return list(range(0, n + 1, stride))

    def _save_indices(self, saveat, times: Tensor) -> list[int]:
        if saveat is None:
            return [0, times.numel() - 1]
        if isinstance(saveat, str):
            if saveat != "all":
                raise ValueError(f"saveat must be times, None or 'all', got {saveat!r}")
            return list(range(times.numel()))
        wanted = torch.as_tensor(saveat, dtype=torch.float64).reshape(-1)
        out = []
        span = float((times[-1] - times[0]).abs())
        for s in wanted.tolist():
            k = int((times - s).abs().argmin())
            if abs(float(times[k]) - s) > 1e-9 * max(span, 1.0):
                raise ValueError(f"saveat time {s} is not a noise-step time of this solve (steps at the Brownian grid)")
            out.append(k)
        return out

    def _solve_steps(self, u0, tspan, brownian, stride, scheme, method, backend, saveat, observe, options):
        start = time.perf_counter()
        index = self._step_times(brownian, tspan, stride)
        times = brownian.times[index]
        save = self._save_indices(saveat, times)
        u = u0
        saved = {0: u0} if 0 in save else {}
        obs = {k: [v] for k, v in self._observe(observe, u0).items()}
        totals, retcode = Stats(), "Success"
        for n in range(len(index) - 1):
            ta, tb = float(times[n]), float(times[n + 1])
            dB = brownian.increment_between(index[n], index[n + 1]).to(dtype=u.dtype, device=u.device)
            if scheme == "split_exact_shift":
                half = 0.5 * self.noise.amplitude(0.5 * (ta + tb)) * dB
                u = self.grid.shift(u, half)
                sol = solve_problem(self.ode_problem(u, (ta, tb)), method, backend, **options)
                u_new = self.grid.shift(sol.final, half) if sol.success else sol.final
            else:
                rate = dB / (tb - ta)
                sol = solve_problem(self.ode_problem(u, (ta, tb), rate=rate), method, backend, **options)
                u_new = sol.final
            _accumulate(totals, sol.stats)
            if not sol.success:
                retcode = sol.retcode
                break
            u = u_new
            if n + 1 in save:
                saved[n + 1] = u
            for k, v in self._observe(observe, u).items():
                obs[k].append(v)
        totals.wall_time = time.perf_counter() - start
        nan = torch.full_like(u0, math.nan)
        return GridSolution(
            t=times[save].to(u0.dtype),
            u=torch.stack([saved.get(k, nan) for k in save]),
            grid=self.grid,
            retcode=retcode,
            stats=totals,
            scheme=scheme,
            method=method,
            backend=backend,
            observed_t=times[: len(next(iter(obs.values()))) if obs else len(times)].to(u0.dtype),
            projections={k: torch.stack(v) for k, v in obs.items()},
        )

    def _solve_sde(self, u0, tspan, brownian, stride, method, backend, saveat, observe, options) -> GridSolution:
        if brownian is None:
            if self.noise is not None:
                raise ValueError("scheme 'sde' needs the common noise as a BrownianGrid (brownian=)")
            dt = options.pop("dt", None)
            if dt is None:
                raise ValueError("the noiseless 'sde' scheme runs on a fixed grid: give dt")
            n = max(1, math.ceil(abs(tspan[1] - tspan[0]) / dt * (1 - 1e-12)))
            times = torch.linspace(tspan[0], tspan[1], n + 1, dtype=torch.float64)
        else:
            times = brownian.times[self._step_times(brownian, tspan, stride)]
        form = "strat" if method in STRATONOVICH_METHODS else "ito"
        info = METHODS.get(method)
        if info is not None and not info.stiff:
            # explicit diffusion is stable only for |Δτ| ≤ h²/(2 D dim) (digest §8): say so before it blows up
            h = float((times[1:] - times[:-1]).abs().max())
            D = max(self.fp.diffusion_at(float(times[0])), self.fp.diffusion_at(float(times[-1])))
            limit = min(self.grid.h) ** 2 / (2.0 * max(D, 1e-300) * self.grid.dim)
            if h > limit:
                warnings.warn(
                    f"{method} is explicit: its diffusion step is stable only for dt <= h^2/(2 D dim) = {limit:.3g}, "
                    f"but the noise steps are {h:.3g}; use ImplicitEM (IMEX) or a finer Brownian grid",
                    stacklevel=3,
                )
        problem = self.sde_problem(u0, tspan, brownian, form=form)
        save = self._save_indices(saveat, times)
        # ⟨u, φ⟩ at every noise step needs every step saved: then save all and pick the requested rows
        keep = times if observe else times[save]
        sol: Solution = solve_problem(problem, method, backend, timesteps=times, saveat=keep, **options)
        projections = {k: torch.stack([self.grid.project(x, phi) for x in sol.x]) for k, phi in observe.items()}
        rows = save if observe else list(range(len(save)))
        return GridSolution(
            t=sol.t[rows],
            u=sol.x[rows],
            grid=self.grid,
            retcode=sol.retcode,
            stats=sol.stats,
            scheme="sde",
            method=sol.method,
            backend=sol.backend,
            observed_t=times.to(u0.dtype),
            projections=projections,
        )


def _times(t: Tensor, u: Tensor) -> list[float]:
    return torch.as_tensor(t).reshape(-1).expand(u.shape[0]).tolist()


def _accumulate(total: Stats, part: Stats) -> None:
    for name in ("nf", "njvp", "njac", "nlinsolve", "nfactor", "nkrylov", "naccept", "nreject"):
        value = getattr(part, name)
        if value is not None:
            setattr(total, name, (getattr(total, name) or 0) + value)
