"""``solve(problem, method, backend=...)``: the one verb that joins a problem and a method."""

from __future__ import annotations

import torch

from .backends import canonical_backend, get_backend
from .entry import (
    check_solve_arguments,
    checked_options,
    checked_problem,
    drop_scalar_axis,
    lift_atol,
    lift_scalar_state,
)
from .methods import TORCH_ONLY_OPTIONS, check_noise, resolve_method
from .options import build_options
from .problem import ODEProblem, SDEProblem
from .solution import Solution
from .tolerance import DEFAULT_TOLERANCE_MODEL, check_tolerance_model, internal_tolerances


def solve(
    problem: ODEProblem | SDEProblem,
    method: str = "Tsit5",
    backend: str = "torch",
    *,
    rtol: float = 1e-3,
    atol=1e-6,
    dt: float | None = None,
    saveat=None,
    adaptive: bool | None = None,
    timesteps=None,
    maxiters: int = 100_000,
    dtmin: float | None = None,
    dtmax: float | None = None,
    generator: torch.Generator | None = None,
    differentiable: bool = False,
    tolerance_model: str = DEFAULT_TOLERANCE_MODEL,
    **options,
) -> Solution:
    """Solve ``problem`` with the SciML-named ``method`` on ``backend``.

    Args:
        problem: an :class:`ODEProblem` or :class:`SDEProblem`, or a :class:`pysens.ensemble.EnsembleProblem`
            (then ``trajectories=``, ``ensemble=`` and ``batch_size=`` are taken; see ``solve_ensemble``).
        method: a SciML method name (``"Tsit5"``, ``"DP5"``, ``"DP8"``, ``"RadauIIA5"``, ``"BDF"``, ``"EM"``…);
            see :data:`pysens.solvers.methods.METHODS`.
        backend: ``"torch"`` (default), ``"scipy"`` or ``"julia"`` (any case, like method names).
        rtol, atol: error tolerances (SciML defaults 1e-3 / 1e-6); ``atol`` may be a tensor broadcastable to the
            state. What they promise is ``tolerance_model``'s. Each backend measures error with its own norm (torch:
            per-sample RMS; scipy: RMS over the whole flattened batch), so compare backends by measured error.
        tolerance_model: ``"proportional"`` (default): pysens maps ``(rtol, atol)`` per method to tighter per-step
            tolerances (``rtol_int = min(rtol, c_m·rtol^q_m)``, ``atol_int = atol·rtol_int/rtol``) so that the
            *global* error at the end tracks the request, on every backend (see :mod:`pysens.solvers.tolerance`).
            ``"local"``: the backend's native meaning, each step's estimated local error is below
            ``atol + rtol·|x|`` (SciML/scipy/CVODE semantics); ``Success`` then promises only that. The per-step
            tolerances used are in ``sol.stats.rtol_internal``/``atol_internal``.
        dt: fixed step (non-adaptive methods, or ``adaptive=False``), or the first step of adaptive ones.
        saveat: times at which to return the state (default: both ends of ``tspan``).
        adaptive: force adaptive (True) or fixed-step (False) mode; default: adaptive if the method is
            and neither ``dt`` nor ``timesteps`` is given.
        timesteps: an explicit fixed-step grid from ``tspan[0]`` to ``tspan[1]`` (e.g. a sampler schedule).
        maxiters: maximum step attempts per sample (retcode ``"MaxIters"`` beyond).
        dtmin, dtmax: step bounds (retcode ``"DtLessThanMin"`` below ``dtmin``).
        generator: random numbers for SDE increments when the problem carries no Brownian grid.
        differentiable: keep the autograd graph through the solve (off by default: solves run under
            ``torch.no_grad()``; ``torch.func`` JVPs inside right-hand sides work either way).

    Returns:
        A :class:`Solution`; numerical failure is its ``retcode`` with the partial solution, never an
        exception. Misuse (bad arguments) raises ``ValueError``/``TypeError`` naming the argument, and so does a
        user callable whose first output has the wrong shape, dtype or device (see :mod:`pysens.solvers.entry`).
        A state ``x0`` shaped ``[B]`` (no event axes) gives ``x`` shaped ``[n_save, B]``.
    """
    if type(problem).__name__ == "EnsembleProblem":  # many trajectories: pysens.ensemble.solve_ensemble
        from pysens.ensemble.problem import solve_ensemble

        args = {"rtol": rtol, "atol": atol, "dt": dt, "saveat": saveat, "adaptive": adaptive, "timesteps": timesteps}
        args |= {"maxiters": maxiters, "dtmin": dtmin, "dtmax": dtmax, "generator": generator}
        args["tolerance_model"] = tolerance_model
        return solve_ensemble(problem, method, backend, differentiable=differentiable, **args, **options)
    if isinstance(problem, SDEProblem):
        kind = "sde"
    elif isinstance(problem, ODEProblem):
        kind = "ode"
    else:
        raise TypeError(f"problem must be an ODEProblem or SDEProblem, got {type(problem).__name__}")
    backend = canonical_backend(backend)
    check_tolerance_model(tolerance_model)
    numbers = check_solve_arguments(
        problem.tspan,
        saveat=saveat,
        timesteps=timesteps,
        adaptive=adaptive,
        differentiable=differentiable,
        rtol=rtol,
        atol=atol,
        dt=dt,
        maxiters=maxiters,
        dtmin=dtmin,
        dtmax=dtmax,
    )
    module = get_backend(backend)
    options = checked_options(options)
    info = resolve_method(method, backend, kind)
    if kind == "sde":
        check_noise(info, problem.noise)
    opts = build_options(
        problem.tspan,
        **numbers,
        saveat=saveat,
        adaptive=adaptive,
        method_adaptive=info.adaptive,
        method_name=info.name,
        timesteps=timesteps,
        generator=generator,
        extra=options,
    )
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        accepted = ", ".join(info.options) or "none"
        raise TypeError(f"unknown solve options for {info.name}: {', '.join(unknown)} (it accepts: {accepted})")
    torch_only = sorted(set(options) & set(TORCH_ONLY_OPTIONS))
    if torch_only and backend != "torch":
        raise TypeError(f"{', '.join(torch_only)}: a torch-backend option; backend {backend!r} does not take it")
    if isinstance(opts.atol, torch.Tensor):
        try:
            torch.broadcast_shapes(opts.atol.shape, problem.x0.shape)
        except RuntimeError:
            raise ValueError(
                f"atol of shape {tuple(opts.atol.shape)} does not broadcast to the state {tuple(problem.x0.shape)}"
            ) from None
    if opts.adaptive and kind == "ode":
        opts.rtol, opts.atol = internal_tolerances(info.name, opts.rtol, opts.atol, tolerance_model, problem.x0.dtype)
    used = (opts.rtol, opts.atol)
    scalar_state = problem.x0.dim() == 1
    problem = checked_problem(problem)
    if scalar_state:
        problem, opts.atol = lift_scalar_state(problem), lift_atol(opts.atol, True)
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        sol = module.solve(problem, info, opts)
    sol.stats.tolerance_model, (sol.stats.rtol_internal, sol.stats.atol_internal) = tolerance_model, used
    return drop_scalar_axis(sol) if scalar_state else sol
