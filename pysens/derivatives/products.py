"""Derivative products of batched row-wise callables, each by several interchangeable engines.

A *row-wise* callable ``fn: [B, *event] -> [B, *event_out]`` has row b of ``fn(x)`` depending on ``x[b]`` only
(every right-hand side and score model in pysens is one; per-sample times are closed over). Then
``J(x)`` is block diagonal and one product with a tangent (or cotangent) in every row gives every sample's
product at once. With d = prod(event) and J_b = ∂fn(x)_b/∂x_b:

* :func:`jvp`: J_b v_b, engines ``"forward"`` (``torch.func.jvp``), ``"double-vjp"`` (J v = ∂/∂u (Jᵀu)·v, two
  reverse passes: forward mode without forward-mode kernels), ``"fd"`` (one-sided difference with the JFNK step
  ε_b = √eps (1 + ‖x_b‖)/‖v_b‖, Knoll & Keyes 2004 eq. 14; one call of fn when fn(x) is given; accurate to about
  √eps relative), ``"fd-central"`` (central difference with ε_b = eps^{1/3}(1 + ‖x_b‖)/‖v_b‖; two calls;
  about eps^{2/3} relative);
* :func:`vjp`: J_bᵀ u_b by one reverse pass;
* :func:`jacobian`: the blocks ``[B, d_out, d]``, engines ``"vjp"`` (d_out vmapped reverse passes),
  ``"jvp"`` (d vmapped forward passes), ``"loop"`` (a Python loop of d_out ``torch.autograd.grad`` calls),
  ``"fd"`` (d one-sided differences, not exact);
* :func:`hessian_vector_product`: ∇²φ(x_b) v_b of a per-row scalar φ ``[B, *event] -> [B]`` (Hessian-free),
  ``"forward-over-reverse"`` or ``"reverse-over-reverse"``.

Exact engines agree to round-off (a few ulp of the arithmetic of fn's derivative); ``"fd"`` engines are
approximations for Newton–Krylov products, where a directional derivative to about √eps is what JFNK solvers
(CVODE, SciML's ``AutoFiniteDiff``) use.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Field = Callable[[Tensor], Tensor]

JVP_ENGINES = ("forward", "double-vjp", "fd", "fd-central")
JACOBIAN_ENGINES = ("vjp", "jvp", "loop", "fd")
HVP_ENGINES = ("forward-over-reverse", "reverse-over-reverse")


def check_engine(engine: str, engines: tuple[str, ...], name: str = "engine") -> str:
    """``engine`` if it is one of ``engines``, else a ValueError naming the argument and the choices."""
    if engine not in engines:
        raise ValueError(f"{name} must be one of {engines}, got {engine!r}")
    return engine


def row_norms(v: Tensor) -> Tensor:
    """Euclidean norm of every row ``[B]``."""
    return v.reshape(v.shape[0], -1).norm(dim=1)


def _per_row(c: Tensor, like: Tensor) -> Tensor:
    return c.reshape(-1, *([1] * (like.dim() - 1)))


def fd_step(x: Tensor, v: Tensor, order: int = 1) -> Tensor:
    """Per-row difference step ``[B]``: ε_b = eps^{1/(order+1)} (1 + ‖x_b‖)/‖v_b‖, with ε_b = 0 where v_b = 0.

    The relative rounding error eps/ε balances the truncation error ε^order, so a one-sided difference
    (order 1) is accurate to about √eps and a central one (order 2) to about eps^{2/3} of ‖J‖‖v‖."""
    eps = torch.finfo(x.dtype).eps ** (1.0 / (order + 1))
    nv = row_norms(v)
    safe = torch.where(nv > 0, nv, torch.ones_like(nv))
    return torch.where(nv > 0, eps * (1.0 + row_norms(x)) / safe, torch.zeros_like(nv))


class DifferenceJVP:
    """Repeated one-sided difference JVPs at one linearisation point ``x`` (what Newton–Krylov solvers do): fn(x)
    and the step numerator √eps (1 + ‖x_b‖) are computed once, so each product ``self(v)`` costs one call of fn
    and a few row operations. Same step and value as :func:`jvp` with ``engine="fd"``."""

    def __init__(self, fn: Field, x: Tensor, fx: Tensor | None = None):
        self.fn, self.x = fn, x
        self.fx = fn(x) if fx is None else fx
        self.numerator = torch.finfo(x.dtype).eps ** 0.5 * (1.0 + row_norms(x))

    def __call__(self, v: Tensor) -> Tensor:
        nv = row_norms(v)
        eps = self.numerator / torch.where(nv > 0, nv, torch.full_like(nv, math.inf))  # ε_b = 0 where v_b = 0
        return _per_row(nv / self.numerator, self.fx) * (self.fn(self.x + _per_row(eps, v) * v) - self.fx)


def jvp(fn: Field, x: Tensor, v: Tensor, *, engine: str = "forward", fx: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(fn(x), J v)`` row by row for ``x``, ``v`` ``[B, *event]``.

    ``fx``: fn(x) when the caller has it (the ``"fd"`` engine then costs one call of fn). Rows with v_b = 0 give
    exactly 0 under every engine.
    """
    check_engine(engine, JVP_ENGINES)
    if engine == "forward":
        return torch.func.jvp(fn, (x,), (v,))
    if engine == "double-vjp":
        # g(u) = J(x)ᵀ u is linear in u, so the VJP of g with cotangent v is J(x) v (u = 0 is as good as any)
        fx_, pull = torch.func.vjp(fn, x)
        u0 = torch.zeros_like(fx_)
        _, pull_pull = torch.func.vjp(lambda u: pull(u)[0], u0)
        return fx_, pull_pull(v)[0]
    if engine == "fd":
        point = DifferenceJVP(fn, x, fx)
        return point.fx, point(v)
    eps = fd_step(x, v, 2)
    scale = torch.where(eps > 0, 1.0 / torch.where(eps > 0, eps, torch.ones_like(eps)), torch.zeros_like(eps))
    step = _per_row(eps, v) * v
    plus, minus = fn(x + step), fn(x - step)
    f0 = fn(x) if fx is None else fx
    return f0, _per_row(0.5 * scale, f0) * (plus - minus)


def vjp(fn: Field, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """``(fn(x), Jᵀ u)`` row by row (one reverse pass)."""
    fx, pull = torch.func.vjp(fn, x)
    return fx, pull(u)[0]


def _unit_rows(d: int, shape: torch.Size, like: Tensor) -> Tensor:
    """``[d, *shape]``: e_i in every row of a ``shape = [B, *event]`` tensor (a stride-0 view, not copied)."""
    eye = torch.eye(d, dtype=like.dtype, device=like.device)
    return eye.reshape(d, 1, *shape[1:]).expand(d, *shape)


def vjp_rows_loop(fn: Field, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(fn(x), R)`` with ``R[i] = J_bᵀ e_i`` ``[d_out, B, *event]`` by a Python loop of reverse passes through one
    recorded graph (what FFJORD's ``divergence_bf`` does; cheapest on CPU when the per-pass work dominates)."""
    leaf = x.detach().requires_grad_(True)
    rows = []
    with torch.enable_grad():  # slicing the output must be recorded too, whatever the caller's grad mode
        y = fn(leaf)
        flat = y.reshape(y.shape[0], -1)
        for i in range(flat.shape[1]):
            (g,) = torch.autograd.grad(flat[:, i], leaf, torch.ones_like(flat[:, i]), retain_graph=True)
            rows.append(g)
    return y.detach(), torch.stack(rows)


def jacobian(fn: Field, x: Tensor, *, engine: str = "vjp", chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """``(fn(x), J)`` with the per-sample blocks ``J`` ``[B, d_out, d]`` (d = prod(event)).

    ``chunk_size`` bounds how many of the vmapped products run at once (memory: chunk·B·d)."""
    check_engine(engine, JACOBIAN_ENGINES)
    B, d = x.shape[0], math.prod(x.shape[1:])
    if engine == "jvp":
        values, cols = torch.func.vmap(lambda v: torch.func.jvp(fn, (x,), (v,)), chunk_size=chunk_size)(
            _unit_rows(d, x.shape, x)
        )
        return values[0], cols.reshape(d, B, -1).permute(1, 2, 0)
    if engine == "fd":
        fx = fn(x)
        cols = [jvp(fn, x, e.expand(x.shape), engine="fd", fx=fx)[1] for e in _unit_rows(d, x.shape, x)]
        return fx, torch.stack(cols, -1).reshape(B, -1, d)
    if engine == "loop":
        fx, rows = vjp_rows_loop(fn, x)
        return fx, rows.reshape(-1, B, d).permute(1, 0, 2)
    fx, pull = torch.func.vjp(fn, x)
    d_out = math.prod(fx.shape[1:])
    rows = torch.func.vmap(pull, chunk_size=chunk_size)(_unit_rows(d_out, fx.shape, fx))[0]
    return fx, rows.reshape(d_out, B, d).permute(1, 0, 2)


def time_derivative(
    f: Callable[[Tensor, Tensor], Tensor], t: Tensor, x: Tensor, *, engine: str = "forward", ft: Tensor | None = None
) -> Tensor:
    """∂f/∂t at per-sample times ``t`` ``[B]`` (``ft`` = f(t, x) when known), by forward mode in t or by a
    difference in t (engines as :func:`jvp`; a time derivative is a JVP with tangent 1 in every row)."""
    _, dt = jvp(lambda s: f(s, x), t, torch.ones_like(t), engine=engine, fx=ft)
    return dt


def hessian_vector_product(
    phi: Callable[[Tensor], Tensor], x: Tensor, v: Tensor, *, engine: str = "forward-over-reverse"
) -> tuple[Tensor, Tensor]:
    """``(∇φ(x), ∇²φ(x) v)`` row by row for a per-row scalar ``phi: [B, *event] -> [B]`` (no Hessian formed).

    Batch independence makes ∇_x Σ_b φ(x)_b the per-row gradients, so the HVP of the sum is the per-row HVP."""
    check_engine(engine, HVP_ENGINES)

    def grad(u: Tensor) -> Tensor:
        return torch.func.grad(lambda w: phi(w).sum())(u)

    if engine == "forward-over-reverse":
        return torch.func.jvp(grad, (x,), (v,))
    return vjp(grad, x, v)  # ∇²φ is symmetric: Hᵀ v = H v
