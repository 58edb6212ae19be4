"""Brownian paths as replayable objects.

A :class:`BrownianGrid` holds Brownian increments pre-sampled on a fine time grid (the analogue of
Julia's ``NoiseGrid``). Any solver, on any backend, can ask for the increment over ``[t_a, t_b]``
where both ends are grid points: it is the sum of the fine increments in between. So solvers with
different step sizes are compared on the *same* path, and refining the step converges pathwise.

The grid runs in the direction of integration (``times[0]`` is where the solve starts); increments
have variance ``|Δt|`` whichever way time runs.

Strong order-1.5 methods for additive noise (SRA1, SOSRA) also need the iterated integral

    ΔZ = I_(1,0) = ∫_{t_a}^{t_b} (W(s) - W(t_a)) |ds|,

measured in elapsed time ``|ds|`` so that it relates to ΔW the same way forwards and backwards:
``E[ΔZ ΔW] = |h|²/2``, ``Var ΔZ = |h|³/3`` (Kloeden & Platen, *Numerical Solution of SDEs*, §5.8).
:meth:`BrownianGrid.iterated_integral` gives it from the stored path (exactly, when the grid also stores the
per-interval integrals: ``BrownianGrid.sample(..., iterated=True)``); :func:`sample_increments` draws ``(ΔW, ΔZ)``
jointly when no path is given.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pysens.validation import MAX_FIXED_STEPS, check_dtype, check_int, check_time_span


class BrownianGrid:
    """Increments ``dW[k] = W(times[k+1]) - W(times[k])``, shaped ``[n, B, *event_shape]``.

    Optionally also the per-interval time integrals ``time_integrals[k] = ∫_{times[k]}^{times[k+1]} (W(s) - W(times[k]))
    |ds|`` (same shape), sampled jointly with the increments (``sample(..., iterated=True)``). With them the grid
    represents the Brownian path itself for the methods that need ΔZ (SRA1, SOSRA); without them it represents the
    piecewise-linear path through its points.
    """

    def __init__(self, times: Tensor, increments: Tensor, time_integrals: Tensor | None = None):
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
        if time_integrals is not None and time_integrals.shape != increments.shape:
            raise ValueError(
                f"time_integrals must be shaped like increments {tuple(increments.shape)}, "
                f"got {tuple(time_integrals.shape)}"
            )
        self.times = times.to(torch.float64).cpu()
        self.increments = increments
        self.time_integrals = time_integrals
        # W at the grid points, W(times[0]) = 0; prefix sums make any coarse increment one subtraction.
        self.path = torch.cat([torch.zeros_like(increments[:1]), increments.cumsum(0)])
        self._ascending = bool(steps[0] > 0)
        self._z_prefix: Tensor | None = None  # built on the first iterated_integral call

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
        iterated: bool = False,
    ) -> BrownianGrid:
        """A path on ``n_steps`` equal intervals of ``tspan`` for states shaped ``shape``; with ``iterated``, also
        the per-interval time integrals, drawn jointly (after all the increments, so the increments are the same
        numbers as without)."""
        tspan = check_time_span(tspan)
        n_steps = check_int(n_steps, "n_steps", maximum=MAX_FIXED_STEPS)  # checked before a huge allocation
        check_dtype(dtype, "dtype")
        times = torch.linspace(float(tspan[0]), float(tspan[1]), n_steps + 1, dtype=torch.float64)
        dt = abs(float(tspan[1]) - float(tspan[0])) / n_steps
        dw, dz = sample_increments(
            dt, (n_steps, *shape), iterated=iterated, generator=generator, dtype=dtype, device=device
        )
        return cls(times, dw, dz)

    @property
    def shape(self) -> torch.Size:
        return self.increments.shape[1:]

    def indices(self, ts) -> list[int]:
        """Grid indices of the times ``ts``; raises when one is not (within round-off) a grid point."""
        ts = torch.as_tensor(ts, dtype=torch.float64).detach().cpu().reshape(-1)
        # searchsorted needs ascending keys; a backward grid is ascending in -t
        sign = 1.0 if self._ascending else -1.0
        keys, query = sign * self.times, sign * ts
        right = torch.searchsorted(keys, query).clamp(1, keys.numel() - 1)
        left = right - 1
        nearest = torch.where((keys[right] - query).abs() < (query - keys[left]).abs(), right, left)
        span = float((self.times[-1] - self.times[0]).abs())
        off = (self.times[nearest] - ts).abs() > 1e-9 * max(span, 1.0)
        if bool(off.any()):
            t = float(ts[off][0])
            raise ValueError(
                f"time {t} is not a point of the Brownian grid (grid from {float(self.times[0])} to "
                f"{float(self.times[-1])} in {self.times.numel() - 1} steps); use a step that divides the grid"
            )
        return nearest.tolist()

    def index_of(self, t: float) -> int:
        """Grid index of time ``t``; raises when ``t`` is not (within round-off) a grid point."""
        return self.indices([t])[0]

    def increment(self, t_a: float, t_b: float) -> Tensor:
        """W(t_b) - W(t_a) for grid times t_a, t_b (a sum of fine increments), ``[B, *event_shape]``."""
        k_a, k_b = self.indices([t_a, t_b])
        return self.increment_between(k_a, k_b)

    def increment_between(self, k_a: int, k_b: int) -> Tensor:
        """W(times[k_b]) - W(times[k_a]) by grid index."""
        return self.path[k_b] - self.path[k_a]

    def iterated_integral(self, t_a: float, t_b: float) -> Tensor:
        """ΔZ = ∫_{t_a}^{t_b} (W(s) - W(t_a)) |ds| for grid times t_a, t_b, ``[B, *event_shape]``.

        Exact for the path the grid represents: the sum over the fine intervals k of
        ``Z_k + |τ_k| (W_k - W(t_a))``, with ``Z_k`` the stored time integrals, or, when the grid has none, the
        trapezoid ``Z_k = |τ_k| ΔW_k / 2`` of the piecewise-linear path through the grid points. Against a Brownian
        path through the same points the trapezoid misses a Brownian-bridge term of standard deviation
        ``sqrt(h δ² / 12)`` on a step h over fine intervals δ: far below the O(h^1.5) error of the methods that use
        ΔZ when δ << h, but it sets a floor of order δ on pathwise errors against an exact solution.
        """
        k_a, k_b = self.indices([t_a, t_b])
        return self.iterated_integral_between(k_a, k_b)

    def iterated_integral_between(self, k_a: int, k_b: int) -> Tensor:
        """ΔZ between grid indices ``k_a <= k_b``, by prefix sums.

        With ``C[k] = Σ_{j<k} (Z_j + |τ_j| W_j)``, ``ΔZ = C[k_b] - C[k_a] - |t_b - t_a| W_{k_a}``. The prefix sums are
        kept in float64 (the difference cancels O(1) terms down to O(h^1.5)); the result is returned in the path's
        dtype, where float32 floors it near ``1e-7 * |t_end - t_0| * max |W|``.
        """
        if self._z_prefix is None:
            w = self.path.to(torch.float64)
            tau = (self.times[1:] - self.times[:-1]).abs().to(w.device).reshape(-1, *([1] * (w.dim() - 1)))
            if self.time_integrals is None:
                z = 0.5 * tau * (w[1:] - w[:-1])
            else:
                z = self.time_integrals.to(torch.float64)
            self._z_prefix = torch.cat([torch.zeros_like(w[:1]), (z + tau * w[:-1]).cumsum(0)])
        elapsed = abs(float(self.times[k_b] - self.times[k_a]))
        w_a = self.path[k_a].to(torch.float64)
        return (self._z_prefix[k_b] - self._z_prefix[k_a] - elapsed * w_a).to(self.path.dtype)

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


def sample_increments(
    h: float,
    shape: tuple[int, ...] | torch.Size,
    *,
    iterated: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Fresh ``(ΔW, ΔZ)`` over a step of signed length ``h``; ``ΔZ`` is None unless ``iterated``.

    ``ΔW ~ N(0, |h|)``; ``ΔZ = |h| (ΔW + ΔU / √3) / 2`` with ``ΔU ~ N(0, |h|)`` independent, which has the joint law
    of (W(h), ∫_0^h W(s) ds) (Kloeden & Platen §10.4; the same pair StochasticDiffEq.jl's SRA methods use).
    ΔW is drawn first, so a draw without ``iterated`` consumes the generator exactly as Euler–Maruyama always has.
    """
    root = math.sqrt(abs(h))
    dw = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device) * root
    if not iterated:
        return dw, None
    du = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device) * root
    return dw, 0.5 * abs(h) * (dw + du / math.sqrt(3.0))
