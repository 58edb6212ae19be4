"""Validated solver options shared by every backend."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SolveOptions:
    """What :func:`pysens.solve` passes to a backend, already checked.

    ``saveat`` is a float64 ``[n]`` tensor of times in the direction of integration that always holds
    both ends of ``tspan``. ``timesteps`` (fixed-step mode) is a float64 grid from ``tspan[0]`` to
    ``tspan[1]``. ``atol`` may be a tensor broadcastable to the state (per-component tolerances).
    """

    rtol: float
    atol: float | Tensor
    saveat: Tensor
    adaptive: bool
    dt: float | None
    timesteps: Tensor | None
    maxiters: int
    dtmin: float | None
    dtmax: float | None
    generator: torch.Generator | None
    extra: dict


TIME_ULPS = 8
"""Two times closer than this many ulp of the larger are the same time (save points, grid nodes, span ends)."""


def time_slack(a, b):
    """The distance below which times ``a`` and ``b`` are the same: ``TIME_ULPS`` ulp of the larger magnitude.

    Relative to the times in question, never to the span: on tspan (0, 1e13) the times 1e-3 and 0.99 stay
    distinct. Works on floats and (broadcasting) float64 tensors."""
    eps = TIME_ULPS * 2.220446049250313e-16
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return eps * torch.maximum(
            torch.as_tensor(a, dtype=torch.float64).abs(), torch.as_tensor(b, dtype=torch.float64).abs()
        )
    return eps * max(abs(a), abs(b))


def _check_tol(value, name: str) -> None:
    if isinstance(value, Tensor):
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError(f"{name} must be finite and non-negative")
        return
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")


def make_saveat(saveat, tspan: tuple[float, float]) -> Tensor:
    t0, t1 = tspan
    if saveat is None:
        return torch.tensor([t0, t1], dtype=torch.float64)
    ts = torch.as_tensor(saveat, dtype=torch.float64).detach().cpu().reshape(-1)
    if ts.numel() == 0:
        raise ValueError("saveat must hold at least one time")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError("saveat must be finite")
    direction = 1.0 if t1 > t0 else -1.0
    lo, hi = min(t0, t1), max(t0, t1)
    if bool((ts < lo - time_slack(lo, ts)).any()) or bool((ts > hi + time_slack(hi, ts)).any()):
        raise ValueError(f"saveat times must lie within tspan {tspan}, got range [{ts.min():g}, {ts.max():g}]")
    steps = (ts[1:] - ts[:-1]) * direction
    if bool((steps <= 0).any()):
        raise ValueError("saveat must be strictly monotone in the direction of integration (t0 towards t1)")
    return ts.clamp(lo, hi)


def fixed_grid(tspan: tuple[float, float], dt: float | None, timesteps, saveat: Tensor | None) -> Tensor:
    """The time grid of a fixed-step solve.

    With ``dt``: the smallest number of equal steps no longer than ``dt`` (so the grid ends exactly at
    ``tspan[1]``). With ``timesteps``: that grid, which must run from ``tspan[0]`` to ``tspan[1]``.
    ``saveat`` times not on the grid are inserted as extra nodes when given (methods without dense
    output step to them).
    """
    t0, t1 = tspan
    if timesteps is not None:
        grid = torch.as_tensor(timesteps, dtype=torch.float64).detach().cpu().reshape(-1)
        if grid.numel() < 2 or not bool(torch.isfinite(grid).all()):
            raise ValueError("timesteps must be a finite 1-D grid with at least two times")
        g0, g1 = float(grid[0]), float(grid[-1])
        if abs(g0 - t0) > time_slack(g0, t0) or abs(g1 - t1) > time_slack(g1, t1):
            raise ValueError(f"timesteps must run from tspan[0]={t0} to tspan[1]={t1}")
        if bool(((grid[1:] - grid[:-1]) * (1 if t1 > t0 else -1) <= 0).any()):
            raise ValueError("timesteps must be strictly monotone from tspan[0] to tspan[1]")
        grid[0], grid[-1] = t0, t1
    else:
        n = max(1, math.ceil(abs(t1 - t0) / dt * (1 - 1e-12)))
        grid = torch.linspace(t0, t1, n + 1, dtype=torch.float64)
    if saveat is not None:
        missing = [float(s) for s in saveat if bool(((grid - s).abs() > time_slack(grid, float(s))).all())]
        if missing:
            merged = torch.cat([grid, torch.tensor(missing, dtype=torch.float64)])
            grid = merged.sort(descending=t1 < t0).values
    return grid


def build_options(
    tspan: tuple[float, float],
    *,
    rtol,
    atol,
    dt,
    saveat,
    adaptive,
    method_adaptive: bool,
    method_name: str,
    timesteps,
    maxiters,
    dtmin,
    dtmax,
    generator,
    extra: dict,
) -> SolveOptions:
    _check_tol(rtol, "rtol")
    _check_tol(atol, "atol")
    if isinstance(rtol, Tensor):
        raise TypeError("rtol must be a number (use a tensor atol for per-component tolerances)")
    if dt is not None and (not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0):
        raise ValueError(f"dt must be a positive finite step size, got {dt!r}")
    if adaptive is None:
        adaptive = method_adaptive and dt is None and timesteps is None
    if adaptive and not method_adaptive:
        raise ValueError(f"method {method_name!r} has no error estimate; it runs only with a fixed dt")
    if adaptive:
        if rtol == 0 and not (bool((atol > 0).all()) if isinstance(atol, Tensor) else atol > 0):
            raise ValueError("rtol and atol cannot both be zero")
        if timesteps is not None:
            raise ValueError("timesteps is a fixed-step grid; pass adaptive=False (or leave adaptive unset)")
    elif dt is None and timesteps is None:
        raise ValueError(f"method {method_name!r} is fixed-step here: give dt (a step size) or timesteps (a grid)")
    if not isinstance(maxiters, int) or maxiters < 1:
        raise ValueError(f"maxiters must be a positive integer, got {maxiters!r}")
    for name, v in (("dtmin", dtmin), ("dtmax", dtmax)):
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return SolveOptions(
        rtol=float(rtol),
        atol=atol,
        saveat=make_saveat(saveat, tspan),
        adaptive=bool(adaptive),
        dt=None if dt is None else float(dt),
        timesteps=timesteps,
        maxiters=maxiters,
        dtmin=dtmin,
        dtmax=dtmax,
        generator=generator,
        extra=extra,
    )
