"""What :func:`pysens.solve` does to a problem before any backend sees it.

1. Every user callable of the problem (``f``, ``f1``, ``f2``, ``g``, ``jvp``, ``jac``) is wrapped so that its first
   output is checked for shape, dtype and device (:mod:`pysens.validation`): a right-hand side returning ``[B, 1]``
   for a ``[B, 3]`` state raises a ``ValueError`` naming ``f`` instead of broadcasting into a wrong ``Success``.
   The wrappers sit on a shallow copy of the problem, so the caller's object is untouched, and they apply on every
   backend because the backends only ever call the problem's own attributes.
2. A state without event axes, ``x0`` shaped ``[B]`` (``event_shape = ()``, which the conventions allow), is solved
   as ``[B, 1]`` and the solution is returned shaped ``[n_save, B]`` again; the user's callables still see ``[B]``.
3. Fixed-step grids are counted before any allocation: more than :data:`~pysens.validation.MAX_FIXED_STEPS` steps is
   refused by name (``dt`` or ``timesteps``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor

from pysens.validation import (
    MAX_FIXED_STEPS,
    FirstCallCheck,
    check_int,
    check_number,
    checked_jacobian,
    checked_jvp,
    checked_noise,
    checked_rhs,
)

from .noise import BrownianGrid
from .problem import ODEProblem, SDEProblem, SplitODEProblem, SplitSDEProblem, _sum_of
from .solution import Solution


def checked_problem(problem: ODEProblem | SDEProblem) -> ODEProblem | SDEProblem:
    """A shallow copy of ``problem`` whose user callables check their first output."""
    out = copy.copy(problem)
    if isinstance(problem, (SplitODEProblem, SplitSDEProblem)):
        out.f1, out.f2 = checked_rhs(problem.f1, "f1"), checked_rhs(problem.f2, "f2")
        out.f = _sum_of(out.f1, out.f2)
    else:
        out.f = checked_rhs(problem.f, "f")
    if isinstance(problem, SDEProblem):
        out.g = checked_noise(problem.g, "g")
        return out
    hooks = ("jvp1", "jac1") if isinstance(problem, SplitODEProblem) else ("jvp", "jac")
    jvp_name, jac_name = hooks
    if getattr(problem, jvp_name) is not None:
        setattr(out, jvp_name, checked_jvp(getattr(problem, jvp_name), "jvp"))
    if getattr(problem, jac_name) is not None:
        setattr(out, jac_name, checked_jacobian(getattr(problem, jac_name), "jac"))
    return out


def checked_options(options: dict) -> dict:
    """``solve``'s method options with a user preconditioner ``precond(t, x, gamma, v)`` checked like ``v``."""
    precond = options.get("precond")
    if precond is None:
        return options
    if not callable(precond):
        raise TypeError(f"precond must be callable as precond(t, x, gamma, v), got {type(precond).__name__}")
    like_v = lambda t, x, gamma, v: (v.shape, v.dtype, v.device)  # noqa: E731
    return {**options, "precond": FirstCallCheck(precond, "precond", "precond(t, x, gamma, v)", like_v)}


# -- states without event axes ---------------------------------------------------------------------------------------


def _lift_rhs(fn: Callable | None) -> Callable | None:
    if fn is None:
        return None

    def lifted(t: Tensor, x: Tensor, *rest: Tensor) -> Tensor:
        y = fn(t, x[:, 0], *(v[:, 0] for v in rest))
        return y.unsqueeze(-1) if y.dim() >= 1 else y

    return lifted


def _lift_jacobian(fn: Callable | None) -> Callable | None:
    return None if fn is None else (lambda t, x: fn(t, x[:, 0]))


def _lift_grid(grid: BrownianGrid | None) -> BrownianGrid | None:
    if grid is None:
        return None
    ints = None if grid.time_integrals is None else grid.time_integrals.unsqueeze(-1)
    return BrownianGrid(grid.times, grid.increments.unsqueeze(-1), ints)


def lift_scalar_state(problem: ODEProblem | SDEProblem) -> ODEProblem | SDEProblem:
    """``problem`` with a ``[B]`` state posed on ``[B, 1]`` (callables see ``[B]``, as the user wrote them)."""
    out = copy.copy(problem)
    out.x0 = problem.x0.unsqueeze(-1)
    if isinstance(problem, (SplitODEProblem, SplitSDEProblem)):
        out.f1, out.f2 = _lift_rhs(problem.f1), _lift_rhs(problem.f2)
        out.f = _sum_of(out.f1, out.f2)
    else:
        out.f = _lift_rhs(problem.f)
    if isinstance(problem, SDEProblem):
        out.g = _lift_rhs(problem.g)
        out.brownian = _lift_grid(problem.brownian)
        return out
    for jvp_name, jac_name in (("jvp", "jac"), ("jvp1", "jac1")):
        if hasattr(problem, jvp_name):
            setattr(out, jvp_name, _lift_rhs(getattr(problem, jvp_name)))
            setattr(out, jac_name, _lift_jacobian(getattr(problem, jac_name)))
    return out


def lift_atol(atol, scalar_state: bool):
    """A tensor ``atol`` broadcastable to ``[B]`` reshaped to broadcast to ``[B, 1]``."""
    if scalar_state and isinstance(atol, Tensor) and atol.dim() >= 1:
        return atol.reshape(-1, 1)
    return atol


def drop_scalar_axis(sol: Solution) -> Solution:
    """The solution of a lifted ``[B, 1]`` problem reshaped back to the user's ``[B]`` state."""
    sol.x = sol.x.squeeze(-1)
    return sol


# -- argument checks that must run before any allocation ------------------------------------------------------------


def _times(value, name: str) -> Tensor:
    """``value`` (a sequence, array or tensor of real times) as a float64 tensor, or a TypeError naming ``name``."""
    if (
        isinstance(value, (str, bytes))
        or isinstance(value, Tensor)
        and (value.is_complex() or value.dtype == torch.bool)
    ):
        raise TypeError(f"{name} must be real times (a sequence, array or tensor), got {value!r}")
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be real times (a sequence, array or tensor), got {value!r}: {err}") from None


def check_solve_arguments(
    tspan: tuple[float, float], *, saveat, timesteps, adaptive, differentiable, rtol, atol, dt, maxiters, dtmin, dtmax
) -> dict:
    """The checks of :func:`pysens.solve`'s keyword arguments that the option builder does not make; returns the
    numbers as Python floats/ints (numpy and 0-d tensor scalars are numbers too; strings and bools are not)."""
    maxiters = check_int(maxiters, "maxiters")
    dtmin = None if dtmin is None else check_number(dtmin, "dtmin", positive=True)
    dtmax = None if dtmax is None else check_number(dtmax, "dtmax", positive=True)
    if dt is not None:
        dt = check_number(dt, "dt", positive=True)
    if isinstance(rtol, Tensor) and rtol.dim() > 0:
        raise TypeError("rtol must be a number (use a tensor atol for per-component tolerances)")
    rtol = check_number(rtol, "rtol", nonnegative=True)
    if not (isinstance(atol, Tensor) and atol.dim() > 0):
        atol = check_number(atol, "atol", nonnegative=True)
    if adaptive is not None and not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True, False or None, got {type(adaptive).__name__} {adaptive!r}")
    if not isinstance(differentiable, bool):
        raise TypeError(f"differentiable must be True or False, got {type(differentiable).__name__}")
    if dt is not None and timesteps is not None:
        raise ValueError("give dt (a step size) or timesteps (a grid), not both: dt would be ignored beside timesteps")
    if saveat is not None:
        _times(saveat, "saveat")
    if timesteps is not None:
        n = _times(timesteps, "timesteps").numel()
        if n - 1 > MAX_FIXED_STEPS:
            raise ValueError(f"timesteps holds {n - 1} steps; at most {MAX_FIXED_STEPS} fixed steps are accepted")
    if dt is not None and adaptive is not True:
        steps = math.ceil(abs(tspan[1] - tspan[0]) / dt * (1 - 1e-12))
        if steps > MAX_FIXED_STEPS:
            raise ValueError(
                f"dt={dt:g} over tspan {tspan} makes {steps:.3g} fixed steps; at most {MAX_FIXED_STEPS} are accepted "
                "(is dt in the right unit?)"
            )
    return {"dt": dt, "maxiters": maxiters, "dtmin": dtmin, "dtmax": dtmax, "rtol": rtol, "atol": atol}
