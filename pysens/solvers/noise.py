"""Brownian paths as replayable objects.

A :class:`BrownianGrid` holds Brownian increments pre-sampled on a fine time grid (the analogue of
Julia's ``NoiseGrid``). Any solver, on any backend, can ask for the increment over ``[t_a, t_b]``
where both ends are grid points: it is the sum of the fine increments in between. So solvers with
different step sizes are compared on the *same* path, and refining the step converges pathwise.

The grid runs in the direction of integration (``times[0]`` is where the solve starts); increments
have variance ``|Δt|`` whichever way time runs.
"""

from __future__ import annotations

import torch
from torch import Tensor


class BrownianGrid:
    """Increments ``dW[k] = W(times[k+1]) - W(times[k])``, shaped ``[n, B, *event_shape]``."""

    def __init__(self, times: Tensor, increments: Tensor):
        times = torch.as_tensor(times)
        if times.dim() != 1 or times.numel() < 2:
            raise ValueError(f"times must be a 1-D grid with at least two points, got shape {tuple(times.shape)}")
        steps = times[1:] - times[:-1]
        if not (bool((steps > 0).all()) or bool((steps < 0).all())):
            raise ValueError("times must be strictly monotone")
        if increments.shape[0] != times.numel() - 1:
            raise ValueError(
                f"increments must have one row per grid interval ({times.numel() - 1}), got {increments.shape[0]}"
            )
        self.times = times.to(torch.float64)
        self.increments = increments
        # W at the grid points, W(times[0]) = 0; prefix sums make any coarse increment one subtraction.
        self.path = torch.cat([torch.zeros_like(increments[:1]), increments.cumsum(0)])

    @classmethod
    def sample(
        cls,
        tspan: tuple[float, float],
        n_steps: int,
        shape: tuple[int, ...] | torch.Size,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> BrownianGrid:
        """A path on ``n_steps`` equal intervals of ``tspan`` for states shaped ``shape``."""
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        times = torch.linspace(float(tspan[0]), float(tspan[1]), n_steps + 1, dtype=torch.float64)
        dt = abs(float(tspan[1]) - float(tspan[0])) / n_steps
        z = torch.randn((n_steps, *shape), generator=generator, dtype=dtype, device=device)
        return cls(times, z * dt**0.5)

    @property
    def shape(self) -> torch.Size:
        return self.increments.shape[1:]

    def index_of(self, t: float) -> int:
        """Grid index of time ``t``; raises when ``t`` is not (within round-off) a grid point."""
        k = int(torch.argmin((self.times - t).abs()))
        span = float((self.times[-1] - self.times[0]).abs())
        if abs(float(self.times[k]) - t) > 1e-9 * max(span, 1.0):
            raise ValueError(f"time {t} is not a point of the Brownian grid; use a step that divides the grid")
        return k

    def increment(self, t_a: float, t_b: float) -> Tensor:
        """W(t_b) - W(t_a) for grid times t_a, t_b (a sum of fine increments)."""
        return self.path[self.index_of(t_b)] - self.path[self.index_of(t_a)]

    def check_covers(self, tspan: tuple[float, float], x0: Tensor) -> None:
        t0, t1 = float(self.times[0]), float(self.times[-1])
        if (t0, t1) != (tspan[0], tspan[1]) and not (
            abs(t0 - tspan[0]) <= 1e-12 * max(1.0, abs(t0)) and abs(t1 - tspan[1]) <= 1e-12 * max(1.0, abs(t1))
        ):
            raise ValueError(
                f"brownian grid spans ({t0}, {t1}) but the problem's tspan is {tspan}; "
                "the grid must start and end where the solve does"
            )
        if self.shape != x0.shape:
            raise ValueError(f"brownian increments are shaped {tuple(self.shape)} per step but x0 is {tuple(x0.shape)}")
