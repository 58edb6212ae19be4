"""Peer libraries as work-precision setups: each runs the same pysens problem and returns a pysens :class:`Solution`.

* :func:`torchdiffeq_setup`: ``torchdiffeq.odeint`` on ``problem.f`` (same device and dtype).
* :func:`torchsde_setup`: ``torchsde.sdeint`` (Itô) on an :class:`SDEProblem`, driven by the problem's
  :class:`BrownianGrid` (the path every pysens setup of the sweep uses) through a torchsde Brownian adapter.
* :func:`solve_ivp_setup`: ``scipy.integrate.solve_ivp`` the way score_sde calls it: the whole batch flattened into
  one float64 vector, one step size (and one error norm) for the batch, numpy → torch → numpy on every call.
* :func:`cvode_setup`, :func:`julia_setup`: pysens's own backends (scipy's SUNDIALS ``CVODE_BDF``, ``"julia"``).

Batched time: pysens right-hand sides take per-sample times ``t [B]``; the peers call theirs with one scalar time,
which the runners broadcast to ``[B]``. Numerical failure is a retcode with NaN states, as for pysens solvers. A
factory whose package is missing raises an :class:`ImportError` naming the ``bench`` extra; :func:`available_peers`
says which are importable.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from pysens.bench.work_precision import Setup
from pysens.solvers import BrownianGrid, ODEProblem, SDEProblem, Solution, Stats
from pysens.solvers.options import fixed_grid
from pysens.solvers.solution import DT_LESS_THAN_MIN, FAILURE, MAX_ITERS, SUCCESS, UNSTABLE

BENCH_EXTRA = 'pip install -e ".[bench]"'
_PACKAGES = {
    "torchdiffeq": "torchdiffeq",
    "torchsde": "torchsde",
    "solve_ivp": "scipy",
    "cvode": "sksundae",
    "julia": "juliacall",
}
# torchdiffeq 0.2.5's fixed-grid solvers (they take options["step_size"]); the others adapt their step
TORCHDIFFEQ_FIXED = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")
SOLVE_IVP_METHODS = ("RK23", "RK45", "DOP853", "Radau", "BDF", "LSODA")
TORCHSDE_METHODS = ("euler", "milstein", "srk")
TORCHSDE_NOISE = ("diagonal", "additive", "general")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_peers() -> dict[str, bool]:
    """``{peer: importable}`` for torchdiffeq, torchsde, solve_ivp (scipy), cvode (scikit-sundae) and julia
    (juliacall; Julia itself is found, or reported missing, only when the julia backend first starts)."""
    return {peer: _importable(module) for peer, module in _PACKAGES.items()}


def _require(module: str, factory: str, requirement: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{factory} needs {requirement.split('>=')[0]}, which is not installed: {BENCH_EXTRA} "
            f"(the 'bench' extra), or pip install '{requirement}'"
        ) from exc


def _save_times(problem, saveat) -> tuple[Tensor, bool]:
    """The error times, with tspan[0] in front when missing (peers start their output there); whether it was added."""
    ts = torch.as_tensor(saveat, dtype=torch.float64).reshape(-1)
    t0 = problem.tspan[0]
    if abs(float(ts[0]) - t0) <= 1e-12 * max(1.0, abs(t0)):
        return ts, False
    return torch.cat([torch.tensor([t0], dtype=torch.float64), ts]), True


def _stats(nf: int, wall: float, **known) -> Stats:
    """Counters a peer does not report are None (not zero)."""
    fields = dict.fromkeys(("njvp", "njac", "nlinsolve", "nfactor", "nkrylov", "naccept", "nreject"))
    fields.update(known)
    return Stats(nf=nf, wall_time=wall, **fields)


def _solution(
    problem, saveat, x: Tensor, retcode: str, stats: Stats, method: str, backend: str, message="", extra=None
):
    x0 = problem.x0
    return Solution(
        t=torch.as_tensor(saveat, dtype=torch.float64).to(dtype=x0.dtype, device=x0.device),
        x=x,
        retcode=retcode,
        stats=stats,
        method=method,
        backend=backend,
        sample_retcodes=[retcode] * x0.shape[0],
        message=message,
        extra=extra or {},
    )


def _nan_states(problem, n: int) -> Tensor:
    x0 = problem.x0
    return torch.full((n, *x0.shape), math.nan, dtype=x0.dtype, device=x0.device)


# --------------------------------------------------------------------------------------------------------------------
# torchdiffeq


def _torchdiffeq_retcode(exc: Exception) -> str:
    text = str(exc)
    if "underflow in dt" in text:
        return DT_LESS_THAN_MIN
    if "max_num_steps" in text or "maximum number of iterations" in text:
        return MAX_ITERS
    if "non-finite" in text:
        return UNSTABLE
    return FAILURE


def _run_torchdiffeq(
    problem: ODEProblem,
    *,
    atol,
    rtol,
    saveat,
    dt: float | None = None,
    adaptive: bool | None = None,
    method: str,
    odeint: Callable,
    **options,
) -> Solution:
    """One ``torchdiffeq.odeint`` solve of ``problem.f`` from tspan[0] through the save times."""
    if not isinstance(problem, ODEProblem):
        raise TypeError(f"torchdiffeq solves ODEProblems, got {type(problem).__name__}")
    fixed = method in TORCHDIFFEQ_FIXED
    if fixed:
        if adaptive:
            raise ValueError(f"torchdiffeq's {method} has a fixed step: leave adaptive unset and give dt")
        if dt is None and "step_size" not in options:
            raise ValueError(f"torchdiffeq's {method} has a fixed step: give dts (or step_size)")
        if dt is not None:
            # equal steps no longer than dt, ending on tspan[1]: the grid pysens' fixed-step methods walk
            span = abs(problem.tspan[1] - problem.tspan[0])
            options = {**options, "step_size": span / (fixed_grid(problem.tspan, dt, None, None).numel() - 1)}
    elif dt is not None:
        raise ValueError(f"torchdiffeq's {method} adapts its step: sweep it over tolerances, not dts")
    tol = {k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None}
    x0 = problem.x0
    b = x0.shape[0]
    ts, added = _save_times(problem, saveat)
    nf = 0

    def func(t: Tensor, x: Tensor) -> Tensor:
        nonlocal nf
        nf += 1
        return problem.f(t.expand(b), x)  # torchdiffeq's scalar time, as the [B] times pysens problems take

    start = time.perf_counter()
    retcode, message = SUCCESS, ""
    try:
        with torch.no_grad():
            x = odeint(func, x0, ts.to(dtype=x0.dtype, device=x0.device), method=method, options=options or None, **tol)
        if not bool(torch.isfinite(x).all()):
            retcode, message = UNSTABLE, "non-finite state"
    except (AssertionError, RuntimeError) as exc:  # torchdiffeq signals numerical failure with asserts
        retcode, message = _torchdiffeq_retcode(exc), str(exc)
        x = _nan_states(problem, ts.numel())
    stats = _stats(nf, time.perf_counter() - start)
    return _solution(problem, saveat, x[1:] if added else x, retcode, stats, method, "torchdiffeq", message)


def torchdiffeq_setup(name: str | None = None, method: str = "dopri5", **options) -> Setup:
    """A setup running ``torchdiffeq.odeint(f, x0, t, method=method, rtol, atol, options=options)``.

    Adaptive methods (dopri5, dopri8, bosh3, …) are swept over tolerances with torchdiffeq's own mixed RMS/max norm
    over the whole batch (one step size for the batch). Fixed-grid methods (euler, rk4, …) take the sweep's ``dts``
    (as ``step_size``, equalised to the pysens grid). ``nf`` counts calls of ``f``; torchdiffeq reports no other
    counter. Failures (``underflow in dt``, ``max_num_steps``) become ``DtLessThanMin``/``MaxIters``/``Failure``.
    """
    odeint = _require("torchdiffeq", "torchdiffeq_setup", "torchdiffeq>=0.2.5").odeint

    def runner(problem, **kwargs):
        return _run_torchdiffeq(problem, method=method, odeint=odeint, **kwargs)

    return Setup(name or f"torchdiffeq {method}", method, "torchdiffeq", dict(options), runner=runner)


# --------------------------------------------------------------------------------------------------------------------
# torchsde


@functools.cache
def _torchsde_brownian(base):
    """A torchsde Brownian motion class (a ``torchsde.BaseBrownian``) replaying a pysens
    :class:`BrownianGrid` in torchsde's increasing time s = sign · t."""

    class GridBrownian(base):
        """W(s_b) − W(s_a) (and U = ∫ (W(s) − W(s_a)) ds with ``return_U``) from the grid's prefix sums, ``[B, d]``.

        Query times must be grid points (within round-off); a fixed-step solve on a step that divides the grid
        queries only those.
        """

        def __init__(self, grid: BrownianGrid, sign: float, dtype: torch.dtype, device: torch.device):
            self.grid, self.sign = grid, sign
            self._dtype, self._device = dtype, device
            self._shape = (grid.shape[0], math.prod(grid.shape[1:]))
            times = grid.times
            n = times.numel() - 1
            uniform = torch.linspace(float(times[0]), float(times[-1]), n + 1, dtype=torch.float64)
            span = abs(float(times[-1] - times[0]))
            # equal steps (BrownianGrid.sample): an index is one division, not a search
            self._step = (
                (float(times[-1] - times[0]) / n) if bool(((times - uniform).abs() <= 1e-12 * span).all()) else None
            )
            self._slack = 1e-9 * max(span, 1.0)

        def _index(self, s: float) -> int:
            t = self.sign * s
            if self._step is not None:
                k = round((t - float(self.grid.times[0])) / self._step)
                if 0 <= k < self.grid.times.numel() and abs(float(self.grid.times[k]) - t) <= self._slack:
                    return k
            return self.grid.index_of(t)

        def __call__(self, ta, tb=None, return_U=False, return_A=False):
            if return_A:
                raise ValueError("the pysens Brownian grid carries no Lévy area; use euler, milstein or srk")
            if tb is None:
                ta, tb = self.sign * float(self.grid.times[0]), ta
            k_a, k_b = self._index(float(ta)), self._index(float(tb))
            w = self.grid.increment_between(k_a, k_b).reshape(self._shape).to(dtype=self._dtype, device=self._device)
            if not return_U:
                return w
            u = self.grid.iterated_integral_between(k_a, k_b).reshape(self._shape)
            return w, u.to(dtype=self._dtype, device=self._device)

        def __repr__(self):
            return f"GridBrownian({self.grid.times.numel() - 1} steps, shape={self._shape})"

        @property
        def dtype(self):
            return self._dtype

        @property
        def device(self):
            return self._device

        @property
        def shape(self):
            return self._shape

        @property
        def levy_area_approximation(self):
            return "space-time"  # the grid gives U exactly (with stored time integrals) or by the trapezoid

    return GridBrownian


def _run_torchsde(
    problem: SDEProblem,
    *,
    atol,
    rtol,
    saveat,
    dt: float | None = None,
    method: str,
    noise_type: str,
    torchsde,
    **options,
) -> Solution:
    """``torchsde.sdeint`` (Itô, fixed step) on ``problem``, one call per save interval, on the problem's path."""
    if not isinstance(problem, SDEProblem):
        raise TypeError(f"torchsde solves SDEProblems, got {type(problem).__name__}")
    if dt is None:
        raise ValueError("torchsde_setup steps with a fixed dt: give the sweep dts (a shared path needs fixed steps)")
    x0, (t0, t1) = problem.x0, problem.tspan
    b, event = x0.shape[0], x0.shape[1:]
    d = math.prod(event)
    sign = 1.0 if t1 > t0 else -1.0  # torchsde needs increasing time: s = sign · t, ds = |dt|
    h = abs(t1 - t0) / (fixed_grid(problem.tspan, dt, None, None).numel() - 1)  # the pysens step, equalised
    counts = {"nf": 0, "ng": 0}

    class SDE:
        sde_type = "ito"

        def __init__(self):
            self.noise_type = noise_type

        def f(self, s: Tensor, y: Tensor) -> Tensor:
            counts["nf"] += 1
            return sign * problem.f((sign * s).to(y.dtype).expand(b), y.reshape(b, *event)).reshape(b, d)

        def g(self, s: Tensor, y: Tensor) -> Tensor:
            counts["ng"] += 1
            g = problem.g((sign * s).to(y.dtype).expand(b), y.reshape(b, *event)).reshape(b, d)
            return g if noise_type == "diagonal" else torch.diag_embed(g)  # [B, d, d] for additive/general

    sde = SDE()
    entropy = options.pop("entropy", None)
    if problem.brownian is not None:
        problem.brownian.check_covers(problem.tspan, x0)
        bm = _torchsde_brownian(torchsde.BaseBrownian)(problem.brownian, sign, x0.dtype, x0.device)
    else:  # no shared path: torchsde draws its own (seed it with options["entropy"])
        bm = torchsde.BrownianInterval(
            t0=sign * t0,
            t1=sign * t1,
            size=(b, d),
            dtype=x0.dtype,
            device=x0.device,
            levy_area_approximation="space-time" if method == "srk" else "none",
            entropy=entropy,
        )
    ts, added = _save_times(problem, saveat)
    s = (sign * ts).tolist()
    rows = [x0.reshape(b, d)]
    start = time.perf_counter()
    retcode, message = SUCCESS, ""
    with torch.no_grad():
        for s_a, s_b in zip(s[:-1], s[1:], strict=True):
            # one call per save interval: torchsde walks s_a + k·h and clips at the interval's end, so it never
            # overshoots a save time and interpolates. Its clock runs in float64 whatever the state's dtype, so that
            # its step times still land on the grid's points (the right-hand sides get them cast to the state's).
            span = torch.tensor([s_a, s_b], dtype=torch.float64, device=x0.device)
            y = torchsde.sdeint(sde, rows[-1], span, bm=bm, method=method, dt=h, **options)
            rows.append(y[-1])
            if not bool(torch.isfinite(rows[-1]).all()):
                retcode, message = UNSTABLE, f"non-finite state at t={sign * s_b}"
                break
    x = torch.stack(rows).reshape(len(rows), b, *event)
    if retcode != SUCCESS:
        x = torch.cat([x, _nan_states(problem, ts.numel() - len(rows))])
    stats = _stats(counts["nf"], time.perf_counter() - start)
    extra = {"ng": counts["ng"]}
    return _solution(problem, saveat, x[1:] if added else x, retcode, stats, method, "torchsde", message, extra)


def torchsde_setup(
    name: str | None = None,
    method: str = "euler",
    *,
    dts: Sequence[float] | None = None,
    noise_type: str = "diagonal",
    **options,
) -> Setup:
    """A setup running ``torchsde.sdeint(sde, x0, ts, bm, method=method, dt=...)`` with ``sde_type="ito"``.

    ``method``: ``"euler"`` (Euler–Maruyama, the same update as pysens ``EM``), ``"milstein"`` (derivative of g by
    autograd) or ``"srk"`` (Rößler's strong order 1.5 schemes: SRI2 for diagonal noise, SRA1 for additive noise). The
    step is the sweep's ``dts`` (or this setup's ``dts``), equalised to the grid pysens' fixed-step methods walk;
    torchsde's adaptive stepping would query the path at times off the grid, so it is not offered.

    ``noise_type``: how torchsde sees ``g(t, x)``, which pysens problems give shaped like ``x`` (flattened to
    ``[B, d]``): ``"diagonal"`` (default; pysens' diagonal and additive problems) passes it as the elementwise
    diffusion; ``"additive"`` and ``"general"`` pass the matrix ``diag(g)`` ``[B, d, d]`` (d² memory per sample), to
    run torchsde's additive-noise schemes (srk = SRA1, the same tableau as pysens ``SRA1``) or its general-noise code
    path (euler only).

    **Same path**: when the problem carries a :class:`BrownianGrid` (every SDE sweep's ensemble does), torchsde
    reads its increments, and U = ∫ (W − W(s_a)) ds for srk, from that grid, so its solution is pathwise comparable
    with the pysens setups (torchsde euler equals pysens EM to round-off). Without a grid torchsde draws its own
    ``BrownianInterval`` path (``entropy=`` seeds it). Reverse-time problems run in s = −t. ``nf``/``extra["ng"]``
    count drift/diffusion calls, including the one pair torchsde makes per call to check shapes.
    """
    torchsde = _require("torchsde", "torchsde_setup", "torchsde>=0.2.6")
    if method not in TORCHSDE_METHODS:
        raise ValueError(f"method must be one of {TORCHSDE_METHODS} (Itô), got {method!r}")
    if noise_type not in TORCHSDE_NOISE:
        raise ValueError(f"noise_type must be one of {TORCHSDE_NOISE}, got {noise_type!r}")
    if noise_type == "general" and method != "euler":
        raise ValueError(f"torchsde's {method} does not support general noise; use method='euler'")

    def runner(problem, **kwargs):
        return _run_torchsde(problem, method=method, noise_type=noise_type, torchsde=torchsde, **kwargs)

    return Setup(
        name or f"torchsde {method}",
        method,
        "torchsde",
        dict(options),
        runner=runner,
        dts=None if dts is None else list(dts),
    )


# --------------------------------------------------------------------------------------------------------------------
# scipy solve_ivp, the score_sde way


def _solve_ivp_retcode(message: str) -> str:
    return DT_LESS_THAN_MIN if "step size" in message.lower() else FAILURE


def _run_solve_ivp(
    problem: ODEProblem, *, atol, rtol, saveat, dt: float | None = None, method: str, solve_ivp: Callable, **options
) -> Solution:
    """score_sde's round trip: one float64 vector for the whole batch, torch for every call of ``fun``."""
    if not isinstance(problem, ODEProblem):
        raise TypeError(f"solve_ivp solves ODEProblems, got {type(problem).__name__}")
    if dt is not None:
        raise ValueError(f"solve_ivp's {method} adapts its step: sweep it over tolerances, not dts")
    x0 = problem.x0
    shape, b = x0.shape, x0.shape[0]
    nf = 0

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal nf
        nf += 1
        x = torch.from_numpy(y.reshape(shape)).to(device=x0.device, dtype=x0.dtype)
        tt = torch.full((b,), t, device=x0.device, dtype=x0.dtype)
        return problem.f(tt, x).detach().cpu().numpy().astype(np.float64).reshape(-1)

    tol = {k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None}
    if isinstance(tol.get("atol"), Tensor):
        tol["atol"] = np.broadcast_to(tol["atol"].detach().cpu().double().numpy(), shape).reshape(-1)
    t_eval = torch.as_tensor(saveat, dtype=torch.float64).reshape(-1).numpy()
    y0 = x0.detach().cpu().double().numpy().reshape(-1)
    start = time.perf_counter()
    with torch.no_grad():
        res = solve_ivp(fun, problem.tspan, y0, method=method, t_eval=t_eval, **tol, **options)
    wall = time.perf_counter() - start
    reached = res.y.shape[1]
    x = torch.from_numpy(np.ascontiguousarray(res.y.T)).reshape(reached, *shape).to(device=x0.device, dtype=x0.dtype)
    retcode = SUCCESS if res.success else _solve_ivp_retcode(res.message)
    if retcode == SUCCESS and not bool(torch.isfinite(x).all()):
        retcode = UNSTABLE
    if reached < t_eval.size:
        x = torch.cat([x, _nan_states(problem, t_eval.size - reached)])
    stats = _stats(nf, wall, njac=int(res.njev), nfactor=int(res.nlu))
    return _solution(problem, saveat, x, retcode, stats, method, "solve_ivp", str(res.message), {"nfev": int(res.nfev)})


def solve_ivp_setup(name: str | None = None, method: str = "RK45", **options) -> Setup:
    """A setup running ``scipy.integrate.solve_ivp(fun, tspan, y0, method=method, t_eval=saveat)`` as score_sde's
    likelihood and ODE sampler do: the whole batch flattened into one float64 vector (so one step size, and one RMS
    error norm, for the batch), ``fun`` converting numpy → torch (the problem's device and dtype) → numpy on every
    call. ``options`` go to ``solve_ivp`` (``first_step``, ``max_step``, ``jac_sparsity``, …). ``nf`` counts calls of
    ``fun`` (including the finite-difference Jacobian's, for Radau/BDF/LSODA); ``njac``/``nfactor`` are scipy's
    ``njev``/``nlu``.
    """
    if method not in SOLVE_IVP_METHODS:
        raise ValueError(f"method must be one of {SOLVE_IVP_METHODS}, got {method!r}")
    solve_ivp = _require("scipy.integrate", "solve_ivp_setup", "scipy>=1.11").solve_ivp

    def runner(problem, **kwargs):
        return _run_solve_ivp(problem, method=method, solve_ivp=solve_ivp, **kwargs)

    return Setup(name or f"solve_ivp {method}", method, "solve_ivp", dict(options), runner=runner)


# --------------------------------------------------------------------------------------------------------------------
# pysens' own backends for the peers SciML benchmarks against


def cvode_setup(name: str | None = None, **options) -> Setup:
    """SUNDIALS CVODE (variable-order BDF) through pysens' scipy backend: ``Setup(method="CVODE_BDF",
    backend="scipy")``; ``options`` are that method's (``linsolve``, ``krylov_dim``, ``precond``)."""
    _require("sksundae", "cvode_setup", "scikit-sundae>=1.2")
    return Setup(name or "CVODE_BDF (scipy)", "CVODE_BDF", "scipy", dict(options))


def julia_setup(method: str, name: str | None = None, **options) -> Setup:
    """A method of the julia backend (DifferentialEquations.jl through juliacall). Without Julia the sweep goes on:
    each of its points is NaN with the backend's error (``BackendNotAvailable: ...``) as retcode."""
    return Setup(name or f"{method} (julia)", method, "julia", dict(options))
