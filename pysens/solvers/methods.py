"""The method table: SciML names as the shared vocabulary, mapped to what each backend has.

A user changes solver by changing one string. Names are SciML's (``Tsit5``, ``DP5``, ``Rodas5P``...);
scipy's spellings are accepted as aliases (``RK45`` is DP5, ``DOP853`` is DP8, ``Radau`` is RadauIIA5).
An unknown name, or a name a backend lacks, is an error listing what exists; nothing is substituted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str
    kind: str  # "ode" or "sde"
    order: int
    adaptive: bool
    stiff: bool
    backends: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    description: str = ""


_TABLE = (
    MethodInfo("Euler", "ode", 1, False, False, ("torch",), (), "explicit Euler, fixed step"),
    MethodInfo("Heun", "ode", 2, True, False, ("torch",), (), "explicit trapezoid with embedded Euler"),
    MethodInfo("RK4", "ode", 4, False, False, ("torch",), (), "classical Runge–Kutta, fixed step"),
    MethodInfo(
        "DP5",
        "ode",
        5,
        True,
        False,
        ("torch", "scipy"),
        ("RK45", "dopri5"),
        "Dormand–Prince 5(4) with 4th-order dense output",
    ),
    MethodInfo("Tsit5", "ode", 5, True, False, ("torch",), (), "Tsitouras 5(4) with dense output"),
    MethodInfo("DP8", "ode", 8, True, False, ("torch", "scipy"), ("DOP853", "dop853"), "Dormand–Prince 8(5,3)"),
    MethodInfo(
        "RadauIIA5",
        "ode",
        5,
        True,
        True,
        ("scipy",),
        ("Radau",),
        "3-stage Radau IIA collocation (scipy Radau), dense Jacobian",
    ),
    MethodInfo(
        "BDF", "ode", 5, True, True, ("scipy",), (), "variable-order BDF (scipy's NDF-based BDF), dense Jacobian"
    ),
    MethodInfo(
        "LSODA", "ode", 12, True, True, ("scipy",), (), "ODEPACK LSODA: Adams/BDF with automatic stiffness switching"
    ),
    MethodInfo(
        "EM",
        "sde",
        1,
        False,
        False,
        ("torch",),
        ("EulerMaruyama",),
        "Euler–Maruyama (strong order 0.5, 1.0 for additive noise), fixed step",
    ),
)

METHODS: dict[str, MethodInfo] = {m.name: m for m in _TABLE}
_ALIASES: dict[str, str] = {alias.lower(): m.name for m in _TABLE for alias in (m.name, *m.aliases)}


class MethodNotAvailable(ValueError):
    """A method name that does not exist, or that the chosen backend does not provide."""


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
