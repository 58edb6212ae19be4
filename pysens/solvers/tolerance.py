"""The tolerance model: what ``rtol``/``atol`` promise, and the per-method map that makes the promise hold.

Every adaptive ODE solver bounds the error it *estimates* on each step: ``err ≤ atol + rtol·|x|`` per step. That is the
native (``"local"``) meaning in SciML, scipy's ``solve_ivp``, SUNDIALS CVODE and ODEPACK, and the global error at the
end of the span can be much larger: local errors add up over the steps, and a method that controls the error of its
*propagated* order-p solution per step (no local extrapolation) has a global error ~ tol^(p/(p+1)), not ~ tol
(Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4 "tolerance proportionality"; the LSODE/CVODE guides say the same of
their local error test). On the Bari stiff test set that gap was 1.5–3 digits for the order-2 methods (TRBDF2,
Rosenbrock23) and the variable-order BDF codes (scipy BDF/LSODA, CVODE).

``tolerance_model="proportional"`` (pysens's default) maps the user's tolerances, per method, to the per-step
tolerances handed to the backend so that the *global* error at the end tracks the request::

    rtol_int = max(min(rtol, c_m · rtol^q_m), floor)          atol_int = atol · rtol_int / rtol

with ``q_m = (p+1)/p`` for a method of order p controlling its propagated solution's error per step, ``q_m = 1`` for
methods that propagate the higher-order solution (local extrapolation: Rodas, KenCarp, Radau) whose global error is
already ~ tol, and ``c_m`` a safety factor calibrated on part of the stiff test set (``pysens bench stiff-testset``,
see :data:`TOLERANCE_MAPS` for each method's basis). ``atol/rtol`` is kept fixed, as Hairer's RADAU5 does when it
transforms its own tolerances, so the componentwise mix of relative and absolute control is the user's. The map only
ever tightens (``rtol_int ≤ rtol``); ``floor`` is 10 ulp of the state's dtype (never above ``rtol``), below which no
solver resolves anything. With ``rtol = 0`` (pure absolute control) the factor is computed from the largest ``atol``.

**Calibration** (``pysens bench stiff-testset``, float64). Fit set: HIRES, OREGO, VDPOL and ROBER; the global error is
modelled as ``err = K · tol^(1/q)`` (``tol`` the per-step rtol the backend was given) and ``c = (S / K_max)^q`` with S =
10^0.5, so that on the fit set the global error is at most ~3× rtol, one digit inside the issue's acceptance margin
of 10^1.5, the other half digit left for problems outside the fit set. ``K_max`` (:attr:`ToleranceMap.k_max`) is the
largest K measured on the fit set over every sweep: the first calibration's runs under the local model (scipy/CVODE at
rtol 1e-4 … 1e-10, torch at 1e-4 and 1e-6, KenCarp4 also at 1e-5 … 1e-8 on HIRES and VDPOL), the committed quick sweep
(rtol 1e-4, 1e-6, 1e-8) and a finer grid (rtol 1e-3 … 1e-7, three to four points a decade plus off-grid ones,
``results/stiff_testset_fine.json``). K is not smooth in rtol (step-size and order decisions flip between neighbouring
tolerances): the finer grid found peaks the coarse one missed (QNDF 7.1 at OREGO 2.2e-6 and, rerun under its restated
map, 8.5 at 4.6e-5; ROS34PW2 8.1 at 4.6e-4; LSODA 7.4 at 1e-4 and 7.8 at 2.2e-4), and those maps were restated from
them. ``c`` is given to one or two significant digits; a stated c within 10% of ``(S / K_max)^q`` stands (the test suite
checks it). Validation (held out): POLLU, E5 (the test set's atol and a scale-aware one) and LINEAR (a stiff linear
system with an exact answer). On the finer grid E5/E5s still show wrong answers of QNDF, ROS34PW2 and Rodas5P that no
map removes (rounding along E5's conserved direction; tightening the map moves them, see benchmarks/README.md), and QNDF
one on VDPOL from a Newton iteration accepted with a stale Jacobian: solver matters, not calibration. ``q`` follows the
method's order and error control; CVODE's measured slope (global error ~ tol^1.0–1.1) overrules the order-5 bound.

``tolerance_model="local"`` hands ``rtol``/``atol`` to the backend unchanged: ``Success`` then promises only that each
step's estimated local error met them, as in SciML/scipy/CVODE.

Fixed-step solves and SDE methods are not mapped (their tolerances, where any, are not a global-error request).
Methods without an entry in :data:`TOLERANCE_MAPS` are not mapped either; the test suite checks that every adaptive
ODE method has one, so a new method must state its basis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

TOLERANCE_MODELS = ("proportional", "local")
DEFAULT_TOLERANCE_MODEL = "proportional"
FLOOR_ULPS = 10  # the torch error norm's own floor (pysens.solvers.driver.ErrorNorm)


@dataclass(frozen=True)
class ToleranceMap:
    """``rtol_int = min(rtol, c · rtol^q)`` for one method, and why (order, error control, calibration).

    ``k_max``: the largest ``K = err / tol^(1/q)`` measured on the fit set (module docstring), from which
    ``c ≈ min(1, (S / k_max)^q)``; ``None`` for maps not calibrated here (explicit methods, julia-only methods)."""

    q: float
    c: float
    basis: str
    k_max: float | None = None

    def factor(self, tol: float) -> float:
        """The tightening factor ``rtol_int / rtol`` at tolerance ``tol`` (≤ 1)."""
        if tol <= 0:
            return 1.0
        return min(1.0, self.c * tol ** (self.q - 1.0))


_NONE = ToleranceMap(1.0, 1.0, "")


def _identity(basis: str, k_max: float | None = None) -> ToleranceMap:
    return ToleranceMap(1.0, 1.0, basis, k_max)


CALIBRATION_SAFETY = 10**0.5  # S: the calibrated global error is at most ~S·rtol on the fit set


def calibrated_factor(k_max: float, q: float) -> float:
    """The documented calibration (module docstring): ``c = min(1, (S / K_max)^q)`` from the largest global error per
    tolerance ``K_max`` measured on the fit set."""
    return min(1.0, (CALIBRATION_SAFETY / k_max) ** q)


_EXPLICIT = (
    "explicit pair with local extrapolation (propagates the higher order): global error ~ tol; measured on x' = Ax "
    "(tests/validation property tests, rtol 1e-3..1e-9): no wrong Success, so not mapped"
)
_ORDER2 = "order 2, error per step of the propagated order-2 solution: global ~ tol^(2/3), q = 3/2"
_BDF = "variable-order BDF (order <= 5) controlling its propagated solution per step: q = (5+1)/5"

_CVODE = (
    "variable-order BDF; measured slope d(scd)/d(-log10 rtol) ~ 1.0-1.1 on the fit set (not the 5/6 of order 5), so "
    "q = 1, c from the largest K = err/tol (354, OREGO at rtol 1e-4; the finer grid's largest: 304)"
)

TOLERANCE_MAPS: dict[str, ToleranceMap] = {
    # explicit non-stiff methods: not mapped (measured, see _EXPLICIT)
    "Heun": _identity(_EXPLICIT),
    "DP5": _identity(_EXPLICIT),
    "Tsit5": _identity(_EXPLICIT),
    "DP8": _identity(_EXPLICIT),
    "Vern7": _identity(_EXPLICIT),
    "Vern9": _identity(_EXPLICIT),
    # stiff methods (calibrated on HIRES, OREGO, VDPOL, ROBER; validated on POLLU, E5, E5s, LINEAR; module docstring)
    "Rosenbrock23": ToleranceMap(
        1.5, 0.8, _ORDER2 + "; c from the largest K = err/tol^(2/3) on the fit set (3.6; finer grid 3.0)", 3.6
    ),
    "TRBDF2": ToleranceMap(
        1.5,
        0.2,
        _ORDER2 + "; c from the largest K = err/tol^(2/3) on the fit set (9.5; finer grid 9.3, OREGO 1e-3)",
        9.5,
    ),
    "Rodas4": _identity("order 4(3) with local extrapolation: global ~ tol; K = err/tol <= 1.26 (OREGO 2.2e-4)", 1.26),
    "Rodas4P": _identity("as Rodas4 (julia only)"),
    "Rodas5P": _identity("order 5(4) with local extrapolation: global ~ tol; K = err/tol <= 1.06 (HIRES 1.5e-4)", 1.06),
    "ROS3P": _identity("order 3(2) with local extrapolation (julia only)"),
    "ROS34PW2": ToleranceMap(
        1.0,
        0.39,
        "order 3(2) W-method propagating its order-3 solution: q = 1; K = err/tol up to 8.1 (OREGO 4.6e-4, finer grid;"
        " 6.9 at 1e-4 gave the first c = 0.46)",
        8.14,
    ),
    "KenCarp4": ToleranceMap(
        1.0, 0.08, "order 4(3) ESDIRK, local extrapolation: q = 1; K = err/tol up to 42 (OREGO 1e-8)", 41.8
    ),
    "Kvaerno5": ToleranceMap(1.0, 0.08, "order 5(4) ESDIRK as KenCarp4 (julia only; KenCarp4's factor)"),
    "ImplicitEuler": ToleranceMap(2.0, 0.3, "order 1 without extrapolation: global ~ tol^(1/2), q = 2 (julia only)"),
    "RadauIIA5": _identity("order 5 collocation, propagates the order-5 solution: K = err/tol <= 0.45", 0.45),
    "BDF": ToleranceMap(1.2, 0.4, _BDF + "; K = err/tol^(5/6) up to 7.0 on the fit set (OREGO 2e-5)", 6.97),
    "LSODA": ToleranceMap(
        1.2,
        0.36,
        _BDF + " (stiff part); K = err/tol^(5/6) up to 7.4 on the fit set (OREGO 1e-4; first c 0.6 from 4.8)",
        7.37,
    ),
    "CVODE_BDF": ToleranceMap(1.0, 0.009, _CVODE, 354.0),
    "QNDF": ToleranceMap(
        1.2,
        0.31,
        _BDF + "; torch QNDF: K = err/tol^(5/6) up to 8.5 on the fit set (OREGO 4.6e-5 under c = 0.38; 7.1 at 2.2e-6 "
        "under c = 1, the finer grid's first sweep; c was 1, from err <= 4.1 rtol on the coarse grid). With the Newton "
        "rate measured afresh each step K is 6.4 under c = 0.31 and 5.7 under 0.43, but 0.43 leaves E5s at 1e-3 wrong "
        "(0.71 digits, 1.5 required) where 0.31 has no wrong Success on the finer grid, so c stays; julia's QNDF "
        "shares it",
        8.5,
    ),
    "FBDF": ToleranceMap(1.0, 0.009, "variable-order BDF (julia only): CVODE's map, not measured here"),
}


def check_tolerance_model(model) -> str:
    """``model`` if it names a tolerance model, else a clear error."""
    if not isinstance(model, str):
        raise TypeError(f"tolerance_model must be one of {TOLERANCE_MODELS}, got {type(model).__name__}")
    if model not in TOLERANCE_MODELS:
        raise ValueError(f"tolerance_model must be one of {TOLERANCE_MODELS}, got {model!r}")
    return model


def tolerance_map(method: str) -> ToleranceMap:
    """The map of ``method`` (canonical name); methods without an entry are not mapped."""
    return TOLERANCE_MAPS.get(method, _NONE)


def internal_tolerances(
    method: str, rtol: float, atol: float | Tensor, model: str = DEFAULT_TOLERANCE_MODEL, dtype=torch.float64
) -> tuple[float, float | Tensor]:
    """The per-step ``(rtol_int, atol_int)`` a backend is given for the user's ``(rtol, atol)`` under ``model``.

    ``"local"`` is the identity. ``"proportional"``: ``rtol_int = max(min(rtol, c·rtol^q), floor)`` with the method's
    ``(q, c)`` from :data:`TOLERANCE_MAPS` and ``floor = min(rtol, 10 ulp of dtype)``, and ``atol`` scaled by the same
    factor (``atol_int / rtol_int = atol / rtol``). ``atol`` may be a tensor (scaled elementwise).
    """
    check_tolerance_model(model)
    if model == "local":
        return rtol, atol
    entry = tolerance_map(method)
    largest_atol = float(atol.max()) if isinstance(atol, Tensor) and atol.numel() else float(atol)
    tol = rtol if rtol > 0 else largest_atol
    factor = entry.factor(tol)
    if factor >= 1.0 or tol <= 0:
        return rtol, atol
    floor = min(tol, FLOOR_ULPS * torch.finfo(dtype).eps)
    factor = max(factor, floor / tol)
    if math.isclose(factor, 1.0):
        return rtol, atol
    return rtol * factor, atol * factor
