"""Backend-neutral problem definitions.

A problem is data: a right-hand side, an initial state and a time span. Every backend solves the same
problem object.

State layout: ``x0`` is a batched torch tensor ``[B, *event_shape]`` (batch axis first). Right-hand
sides are called as ``f(t, x)`` with ``t`` a ``[B]`` tensor of per-sample times (adaptive solvers step
every sample on its own clock) and ``x`` shaped like ``x0``; they return a tensor shaped like ``x``.

Batch independence: row ``b`` of ``f(t, x)`` may depend only on ``t[b]`` and ``x[b]``. Per-sample step
sizes, block-diagonal Jacobians and per-sample error norms all rest on this, as they do for any batched
sampler of a diffusion model.

Time may run backwards (``tspan = (T, t1)`` with ``t1 < T``), as samplers of diffusion models do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .noise import BrownianGrid

RHS = Callable[[Tensor, Tensor], Tensor]

NOISE_TYPES = ("additive", "diagonal")


def check_state(x: Tensor, name: str) -> None:
    """Raise a clear error unless ``x`` is a finite, floating, batched tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped [B, *event_shape], got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must be shaped [B, *event_shape] with B >= 1, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def check_tspan(tspan) -> tuple[float, float]:
    try:
        t0, t1 = (float(v) for v in tspan)
    except (TypeError, ValueError):
        raise ValueError(f"tspan must be a pair (t0, t1) of numbers, got {tspan!r}") from None
    if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
        raise ValueError(f"tspan must hold two distinct finite times, got {tspan!r}")
    return t0, t1


@dataclass
class ODEProblem:
    """dx/dt = f(t, x), x(tspan[0]) = x0, over batched states.

    Args:
        f: right-hand side ``f(t, x)``; ``t`` is ``[B]``, ``x`` is ``[B, *event_shape]``.
        x0: initial state ``[B, *event_shape]``.
        tspan: ``(t0, t1)``; ``t1 < t0`` integrates backwards in time.
        jvp: optional ``jvp(t, x, v) -> J_f(x) v`` (defaults to ``torch.func.jvp`` of ``f``).
        jac: optional dense per-sample Jacobian ``jac(t, x) -> [B, d, d]`` with ``d = prod(event_shape)``
            (defaults to ``torch.func.jacrev`` of ``f``).
        name: a label for reports.
    """

    f: RHS
    x0: Tensor
    tspan: tuple[float, float]
    jvp: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
    jac: Callable[[Tensor, Tensor], Tensor] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not callable(self.f):
            raise TypeError(f"f must be callable as f(t, x), got {type(self.f).__name__}")
        check_state(self.x0, "x0")
        self.tspan = check_tspan(self.tspan)

    @property
    def batch_size(self) -> int:
        return self.x0.shape[0]

    @property
    def event_shape(self) -> torch.Size:
        return self.x0.shape[1:]

    @property
    def dim(self) -> int:
        return math.prod(self.event_shape)

    def rhs_jvp(self, t: Tensor, x: Tensor, v: Tensor) -> Tensor:
        """J_f(t, x) v for every sample, matrix-free."""
        if self.jvp is not None:
            return self.jvp(t, x, v)
        return torch.func.jvp(lambda y: self.f(t, y), (x,), (v,))[1]

    def rhs_jacobian(self, t: Tensor, x: Tensor) -> Tensor:
        """Dense per-sample Jacobians ``[B, d, d]`` (use only when d is small)."""
        if self.jac is not None:
            return self.jac(t, x)
        b, d = x.shape[0], self.dim

        # Batch independence makes d(sum_b f_b)/dx_b the b-th diagonal block: one reverse pass per
        # output component, vmapped, whatever B is.
        def summed(y):
            return self.f(t, y).reshape(b, d).sum(0)

        jac = torch.func.jacrev(summed)(x).reshape(d, b, d)
        return jac.permute(1, 0, 2)


@dataclass
class SDEProblem:
    """dx = f(t, x) dt + g(t, x) ∘ dW (Itô), x(tspan[0]) = x0, over batched states.

    Args:
        f: drift ``f(t, x)`` shaped like ``x``.
        g: diffusion; for ``noise="diagonal"`` ``g(t, x)`` returns a tensor shaped like ``x`` that
            multiplies the Brownian increment elementwise; for ``noise="additive"`` it must not depend on
            ``x`` (it is still called as ``g(t, x)``).
        x0: initial state ``[B, *event_shape]``.
        tspan: ``(t0, t1)``; may run backwards (reverse-time samplers).
        noise: ``"additive"`` or ``"diagonal"``.
        brownian: an optional pre-sampled :class:`BrownianGrid` to replay; without one, the solver draws
            increments from the ``generator`` given to :func:`pysens.solve`.
    """

    f: RHS
    g: RHS
    x0: Tensor
    tspan: tuple[float, float]
    noise: str = "diagonal"
    brownian: BrownianGrid | None = None
    name: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label in ("f", "g"):
            if not callable(getattr(self, label)):
                raise TypeError(f"{label} must be callable as {label}(t, x)")
        check_state(self.x0, "x0")
        self.tspan = check_tspan(self.tspan)
        if self.noise not in NOISE_TYPES:
            raise ValueError(f"noise must be one of {NOISE_TYPES}, got {self.noise!r}")
        if self.brownian is not None:
            if not isinstance(self.brownian, BrownianGrid):
                raise TypeError(f"brownian must be a BrownianGrid, got {type(self.brownian).__name__}")
            self.brownian.check_covers(self.tspan, self.x0)

    @property
    def batch_size(self) -> int:
        return self.x0.shape[0]

    @property
    def event_shape(self) -> torch.Size:
        return self.x0.shape[1:]
