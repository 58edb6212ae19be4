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

from pysens.validation import check_batch, check_callable, check_time_span

from .noise import BrownianGrid

RHS = Callable[[Tensor, Tensor], Tensor]

NOISE_TYPES = ("additive", "diagonal")


def check_state(x: Tensor, name: str) -> None:
    """Raise a clear error unless ``x`` is a finite float32/float64 batched tensor ``[B, *event_shape]`` on a real
    device (see :func:`pysens.validation.check_batch`)."""
    check_batch(x, name)


def check_tspan(tspan) -> tuple[float, float]:
    """``(t0, t1)``: two distinct finite numbers (strings and bools are refused, never coerced)."""
    return check_time_span(tspan)


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
        check_callable(self.f, "f", "f(t, x)")
        for label, signature in (("jvp", "jvp(t, x, v)"), ("jac", "jac(t, x)")):
            if getattr(self, label) is not None:
                check_callable(getattr(self, label), label, signature)
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
        return _block_jacobian(self.f, t, x)

    def implicit_jvp(self, t: Tensor, x: Tensor, v: Tensor) -> Tensor:
        """J v of the part IMEX methods treat implicitly: all of f here (see :class:`SplitODEProblem`)."""
        return self.rhs_jvp(t, x, v)

    def implicit_jacobian(self, t: Tensor, x: Tensor) -> Tensor:
        return self.rhs_jacobian(t, x)


def _block_jacobian(f: RHS, t: Tensor, x: Tensor) -> Tensor:
    """Per-sample Jacobians ``[B, d, d]`` of a batch-independent ``f``.

    Batch independence makes d(Σ_b f_b)/dx_b the b-th diagonal block: one reverse pass per output
    component, vmapped, whatever B is; or one reverse pass over d stacked copies of the rows
    (:func:`pysens.derivatives.row_jacobian` picks by measuring once per definition site of the user's ``f``).
    """
    from pysens.derivatives import row_jacobian  # the engine (vmapped VJPs or replicated rows) is measured once

    return row_jacobian(f, t, x)  # keyed by where the user's f was defined: measured once, not once per solve


def _sum_of(f1: RHS, f2: RHS) -> RHS:
    def f(t: Tensor, x: Tensor) -> Tensor:
        return f1(t, x) + f2(t, x)

    return f


class SplitODEProblem(ODEProblem):
    """dx/dt = f1(t, x) + f2(t, x), with f1 stiff (treated implicitly by IMEX methods such as KenCarp4) and
    f2 non-stiff (treated explicitly); SciML's ``SplitODEProblem(f1, f2, u0, tspan)``.

    Methods that are not IMEX solve ``f = f1 + f2`` as a whole. The optional ``jvp``/``jac`` hooks are those
    of f1, the part whose Jacobian IMEX methods need; the full Jacobian defaults to ``torch.func``.
    """

    def __init__(self, f1: RHS, f2: RHS, x0: Tensor, tspan, jvp=None, jac=None, name: str = ""):
        for label, fn in (("f1", f1), ("f2", f2)):
            if not callable(fn):
                raise TypeError(f"{label} must be callable as {label}(t, x), got {type(fn).__name__}")
        self.f1, self.f2 = f1, f2
        self.jvp1, self.jac1 = jvp, jac
        super().__init__(_sum_of(f1, f2), x0, tspan, name=name)

    def implicit_jvp(self, t: Tensor, x: Tensor, v: Tensor) -> Tensor:
        if self.jvp1 is not None:
            return self.jvp1(t, x, v)
        return torch.func.jvp(lambda y: self.f1(t, y), (x,), (v,))[1]

    def implicit_jacobian(self, t: Tensor, x: Tensor) -> Tensor:
        if self.jac1 is not None:
            return self.jac1(t, x)
        return _block_jacobian(self.f1, t, x)


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
            check_callable(getattr(self, label), label, f"{label}(t, x)")
        check_state(self.x0, "x0")
        self.tspan = check_tspan(self.tspan)
        if not isinstance(self.noise, str) or self.noise not in NOISE_TYPES:
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


class SplitSDEProblem(SDEProblem):
    """dx = [f1(t, x) + f2(t, x)] dt + g(t, x) dW with f1 stiff (implicit in IMEX SDE methods such as
    SKenCarp) and f2 explicit; SciML's ``SplitSDEProblem``."""

    def __init__(
        self, f1: RHS, f2: RHS, g: RHS, x0: Tensor, tspan, noise: str = "diagonal", brownian=None, name: str = ""
    ):
        for label, fn in (("f1", f1), ("f2", f2)):
            if not callable(fn):
                raise TypeError(f"{label} must be callable as {label}(t, x), got {type(fn).__name__}")
        self.f1, self.f2 = f1, f2
        super().__init__(_sum_of(f1, f2), g, x0, tspan, noise=noise, brownian=brownian, name=name)
