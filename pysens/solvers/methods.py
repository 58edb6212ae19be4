"""The method table: SciML names as the shared vocabulary, mapped to what each backend has.

A user changes solver by changing one string. Names are SciML's (``Tsit5``, ``DP5``, ``Rodas5P``...);
scipy's spellings are accepted as aliases (``RK45`` is DP5, ``DOP853`` is DP8, ``Radau`` is RadauIIA5).
An unknown name, or a name a backend lacks, is an error listing what exists; nothing is substituted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    """One method: what it solves and which backends provide it.

    ``imex`` methods treat ``SplitODEProblem.f1`` (``SplitSDEProblem.f1``) implicitly and ``f2`` explicitly;
    ``noise`` lists the SDE noise types a method supports.
    """

    name: str
    kind: str  # "ode" or "sde"
    order: int
    adaptive: bool
    stiff: bool
    backends: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    description: str = ""
    imex: bool = False
    noise: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # method-specific keyword options solve() accepts


# linear-solver options of the implicit methods (see pysens.solvers.linalg)
LINEAR_OPTIONS = ("linsolve", "krylov_dim", "krylov_restarts", "krylov_tol", "precond", "jvp_engine")


_ADD, _DIAG = ("additive",), ("additive", "diagonal")
_LIN = LINEAR_OPTIONS
# compact=True (torch): once 5% of the batch has finished, evaluate f on the unfinished rows only. Needs an f
# whose rows do not depend on which other rows are passed (no closure over per-sample tensors). Torch only.
EXPLICIT_OPTIONS = ("compact",)
TORCH_ONLY_OPTIONS = ("compact", "max_order", "batch")
_EXPL = EXPLICIT_OPTIONS
_TABLE = (
    # explicit ODE methods
    MethodInfo("Euler", "ode", 1, False, False, ("torch", "julia"), (), "explicit Euler, fixed step", options=_EXPL),
    MethodInfo(
        "Heun", "ode", 2, True, False, ("torch", "julia"), (), "explicit trapezoid with embedded Euler", options=_EXPL
    ),
    MethodInfo(
        "RK4",
        "ode",
        4,
        False,
        False,
        ("torch", "julia"),
        (),
        "classical Runge–Kutta (fixed step on torch)",
        options=_EXPL,
    ),
    MethodInfo(
        "DP5",
        "ode",
        5,
        True,
        False,
        ("torch", "scipy", "julia"),
        ("RK45", "dopri5"),
        "Dormand–Prince 5(4) with 4th-order dense output",
        options=_EXPL,
    ),
    MethodInfo(
        "Tsit5", "ode", 5, True, False, ("torch", "julia"), (), "Tsitouras 5(4) with dense output", options=_EXPL
    ),
    MethodInfo(
        "DP8",
        "ode",
        8,
        True,
        False,
        ("torch", "scipy", "julia"),
        ("DOP853", "dop853"),
        "Dormand–Prince 8(5,3)",
        options=_EXPL,
    ),
    MethodInfo("Vern7", "ode", 7, True, False, ("julia",), (), "Verner's efficient 7(6)"),
    MethodInfo("Vern9", "ode", 9, True, False, ("julia",), (), "Verner's efficient 9(8)"),
    # stiff ODE methods
    MethodInfo(
        "Rosenbrock23",
        "ode",
        2,
        True,
        True,
        ("torch", "julia"),
        (),
        "Rosenbrock-W 2(3), L-stable (ode23s)",
        options=_LIN,
    ),
    MethodInfo(
        "Rodas4", "ode", 4, True, True, ("torch", "julia"), (), "Rosenbrock 4(3), stiffly accurate", options=_LIN
    ),
    MethodInfo("Rodas4P", "ode", 4, True, True, ("julia",), (), "Rodas4 with order conditions for PDEs", options=_LIN),
    MethodInfo(
        "Rodas5P", "ode", 5, True, True, ("torch", "julia"), (), "Rosenbrock 5(4), stiffly accurate", options=_LIN
    ),
    MethodInfo(
        "ROS34PW2",
        "ode",
        3,
        True,
        True,
        ("torch",),
        (),
        "Rosenbrock-W 3(2), L-stable, stiffly accurate (Rang-Angermann); torch: per-sample Jacobian kept over steps",
        options=(*_LIN, "max_jac_age"),
    ),
    MethodInfo(
        "ROS3P",
        "ode",
        3,
        True,
        True,
        ("julia",),
        (),
        "Lang–Verwer 3(2) Rosenbrock for parabolic PDEs",
        options=_LIN,
    ),
    MethodInfo(
        "TRBDF2", "ode", 2, True, True, ("torch", "julia"), (), "ESDIRK trapezoid + BDF2 (ode23tb)", options=_LIN
    ),
    MethodInfo(
        "KenCarp4",
        "ode",
        4,
        True,
        True,
        ("torch", "julia"),
        (),
        "additive ESDIRK/ERK 4(3) (IMEX on split problems)",
        imex=True,
        options=_LIN,
    ),
    MethodInfo("Kvaerno5", "ode", 5, True, True, ("julia",), (), "ESDIRK 5(4)", options=_LIN),
    MethodInfo("ImplicitEuler", "ode", 1, True, True, ("julia",), (), "backward Euler", options=_LIN),
    MethodInfo(
        "QNDF",
        "ode",
        5,
        True,
        True,
        ("torch", "julia"),
        (),
        "variable-order quasi-constant-step NDF 1-5 (ode15s-like); torch: per-sample step, order, J and LU, "
        "or the batch as one system (batch='coupled')",
        options=("max_order", "batch", *_LIN),
    ),
    MethodInfo("FBDF", "ode", 5, True, True, ("julia",), (), "fixed-leading-coefficient BDF", options=_LIN),
    MethodInfo(
        "RadauIIA5",
        "ode",
        5,
        True,
        True,
        ("scipy", "julia"),
        ("Radau",),
        "3-stage Radau IIA collocation (scipy Radau), dense Jacobian",
        options=_LIN,
    ),
    MethodInfo("BDF", "ode", 5, True, True, ("scipy",), (), "variable-order BDF (scipy's NDF-based BDF)", options=_LIN),
    MethodInfo(
        "LSODA",
        "ode",
        12,
        True,
        True,
        ("scipy",),
        (),
        "ODEPACK LSODA: Adams/BDF with automatic stiffness switching",
        options=_LIN,
    ),
    MethodInfo(
        "CVODE_BDF",
        "ode",
        5,
        True,
        True,
        ("scipy", "julia"),
        (),
        "SUNDIALS CVODE BDF; on scipy through scikit-sundae with GMRES on the torch JVP",
        options=_LIN,
    ),
    # SDE methods (on torch they run on a fixed grid; julia adapts where the method does)
    MethodInfo(
        "EM",
        "sde",
        1,
        False,
        False,
        ("torch", "julia"),
        ("EulerMaruyama",),
        "Euler–Maruyama (strong order 0.5, 1.0 for additive noise), fixed step",
        noise=_DIAG,
    ),
    MethodInfo(
        "EulerHeun",
        "sde",
        1,
        False,
        False,
        ("torch", "julia"),
        (),
        "Euler–Heun (Stratonovich; equals Itô for additive noise)",
        noise=_DIAG,
    ),
    MethodInfo(
        "SRA1",
        "sde",
        2,
        True,
        False,
        ("torch", "julia"),
        (),
        "Rößler SRA1, strong order 1.5 for additive noise",
        noise=_ADD,
    ),
    MethodInfo(
        "SOSRA",
        "sde",
        2,
        True,
        False,
        ("torch", "julia"),
        (),
        "stability-optimised SRA (Rackauckas & Nie), strong order 1.5, additive noise",
        noise=_ADD,
    ),
    MethodInfo(
        "ImplicitEM",
        "sde",
        1,
        False,
        True,
        ("torch", "julia"),
        (),
        "drift-implicit θ-method Euler–Maruyama (IMEX on split problems: f1 implicit)",
        options=("theta", "newton_tol", "newton_maxiters", *LINEAR_OPTIONS),
        noise=_DIAG,
        imex=True,
    ),
    MethodInfo(
        "SKenCarp",
        "sde",
        2,
        True,
        True,
        ("julia",),
        (),
        "IMEX stochastic KenCarp for additive noise",
        imex=True,
        noise=_ADD,
    ),
)

METHODS: dict[str, MethodInfo] = {m.name: m for m in _TABLE}
_ALIASES: dict[str, str] = {alias.lower(): m.name for m in _TABLE for alias in (m.name, *m.aliases)}


class MethodNotAvailable(ValueError):
    """A method name that does not exist, or that the chosen backend does not provide."""


def with_compaction(method: str, backend: str, solve_kwargs: dict) -> dict:
    """``solve_kwargs`` with ``compact=True`` added when ``method`` runs on torch and takes it (explicit methods),
    unless the caller chose; for pysens's own samplers, whose right-hand sides are row-wise in the state."""
    info = METHODS.get(_ALIASES.get(method.lower(), ""), None) if isinstance(method, str) else None
    on_torch = str(backend).lower() == "torch"
    if on_torch and info is not None and "compact" in info.options and "compact" not in solve_kwargs:
        return {**solve_kwargs, "compact": True}
    return solve_kwargs


def methods_for(backend: str, kind: str | None = None) -> list[str]:
    return [m.name for m in _TABLE if backend in m.backends and (kind is None or m.kind == kind)]


def resolve_method(method: str, backend: str, kind: str) -> MethodInfo:
    """Look ``method`` up for ``backend`` and problem ``kind`` ("ode"/"sde"), or raise a clear error."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a method name (str), got {type(method).__name__}")
    canonical = _ALIASES.get(method.lower())
    if canonical is None:
        raise MethodNotAvailable(
            f"unknown method {method!r}; known methods: {', '.join(METHODS)} "
            f"(aliases: {', '.join(a for m in _TABLE for a in m.aliases)})"
        )
    info = METHODS[canonical]
    if info.kind != kind:
        raise MethodNotAvailable(
            f"method {info.name!r} solves {info.kind.upper()}s, but the problem is an {kind.upper()}; "
            f"{kind.upper()} methods on backend {backend!r}: {', '.join(methods_for(backend, kind)) or 'none'}"
        )
    if backend not in info.backends:
        raise MethodNotAvailable(
            f"method {info.name!r} is not provided by backend {backend!r} (it is on: "
            f"{', '.join(info.backends)}); {kind.upper()} methods on {backend!r}: "
            f"{', '.join(methods_for(backend, kind)) or 'none'}"
        )
    return info


def check_noise(info: MethodInfo, noise: str) -> None:
    """Raise when SDE ``info`` does not support the problem's noise type."""
    if noise not in info.noise:
        raise MethodNotAvailable(
            f"method {info.name!r} supports {', '.join(info.noise)} noise, but the problem has {noise!r} noise"
        )
