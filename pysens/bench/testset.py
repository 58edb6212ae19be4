"""Stiff problems of the Bari *Test Set for IVP Solvers* with their published reference values at the final time.

Source: F. Mazzia and C. Magherini, *Test Set for Initial Value Problem Solvers*, release 2.4 (2008), University of
Bari and INdAM (https://archimede.uniba.it/~testset/, problem reports ``hires.pdf``, ``orego.pdf``, ``rober.pdf``,
``vdpol.pdf``, ``e5.pdf``, ``pollu.pdf``). Right-hand sides and the reference values are those of the test set's
Fortran files (subroutines ``feval`` and ``solut``: computed by RADAU5 with uround 1.01e-19, rtol = atol = h0 ≈
1.1e-18); the same digits are in SciML's DiffEqProblemLibrary (``pollution_prob.jl``) and in IVPTestSuite.jl
(``hires.jl``, ``rober.jl``, ``vdpol.jl``). E5 is problem E5 of Enright–Hull–Lindberg's stiff DETEST, as the test
set states it.

**scd** (significant correct digits, the test set's measure): ``scd = −log10 max_i |x_i − ref_i| / |ref_i|`` over the
components at the final time, except the components a problem lists in ``absolute`` (reference zero or below any
meaningful relative accuracy, e.g. E5's y1 ≈ 1e−290 and y4 = 0), whose absolute error enters instead.

E5 is measured on derived quantities. Its exact solution keeps the linear invariant y2 − y3 − y4 = 0 (the derivatives
cancel: f2 − f3 = f4), so with y4(1e13) ≈ 0 the exact y2 and y3 agree to ~1e−290; the published y2 and y3 differ by
1.28e−24 (1.45e−3 relative), an error of the reference itself. No solution that keeps the invariant can reach more
than 2.8 scd against the published y2, y3 (scipy Radau, BDF and LSODA at rtol 1e−12 all stop at 2.8–3.2), while
their mean (y2 + y3)/2 agrees with all three to ~1e−5. So E5's scd compares the mean m = (y2 + y3)/2 (relative,
against the published mean) and the invariant relative to it, (y2 − y3 − y4)/m (absolute, against 0); y1 and y4 are
~1e−290 and 0, below any absolute accuracy that matters.

The registry :data:`PROBLEMS` maps a short name to a :class:`StiffTestProblem`; ``p.problem(batch)`` builds a
batched :class:`~pysens.solvers.ODEProblem` (float64 by default, every row the same initial state), ``p.atol(rtol)``
the absolute tolerance the suite pairs with ``rtol``, ``p.scd(x_final)`` the per-row scd.

Tolerance pairing (``atol_ratio`` or a fixed ``atol``): the test set runs each problem with its own absolute
tolerance; here E5 uses its 1.7e−24 (the test set's value, the components of interest are ~1e−22), the others
``atol = atol_ratio · rtol`` with the ratio chosen below the smallest component the scd measures relatively
(HIRES 1e−4 as SciMLBenchmarks' HIRES study, the other problems as listed). ``e5s`` is E5 with a scale-aware
``atol = 1e−24 · rtol`` (below the measured ~9e−23 at every rtol), where the tolerance contract is relative and the
literal rule applies; it measures the mean m only. Its invariant is not measurable to a relative accuracy that small
in float64: the right-hand side's f2 − f3 − f4 is zero only up to the rounding of f3 = f2 − f4 (~1e−28 per unit
time against y2 ~ 1e−22), and every scipy method stops at 2.5–3.4 invariant digits whatever the tolerance (Radau:
3.4 at rtol 1e−8, 2.5 at 1e−10; BDF 3.0 at 1e−8). E5 under the test set's atol keeps the invariant, where the
tolerance, not the rounding, bounds it.

**Right to the tolerance** (:meth:`StiffTestProblem.required_digits`). A solve at ``(rtol, atol)`` promises each
component an error of the order of ``atol + rtol·|x|``; where ``atol`` dominates (``atol > rtol·|ref|``, as for E5's
~1e−22 components under the test set's atol 1.7e−24, where ``atol/|ref| ≈ 0.019``) it does not promise
``−log10(rtol)`` relative digits. A measured quantity i with scale ``s_i`` (``|ref_i|`` by default; the state
magnitude behind a derived quantity, see ``tolerance_scale``) therefore needs
``r_i = −log10(max(rtol, atol/s_i)) − margin`` digits: ``−log10(rtol) − margin`` (the issue's literal rule) whenever
``rtol`` dominates, and the digits the absolute tolerance can promise otherwise (``max`` rather than the sum
``rtol + atol/s_i``: continuous, and at most log10 2 stricter). A point's ``required_digits`` is ``scd − min_i(d_i −
r_i)``, so ``scd < required_digits`` exactly when some quantity misses its own requirement; it never exceeds the
literal ``−log10(rtol) − margin``. Absolute quantities (``absolute``) are compared literally unless a scale is given.

**Float64 floor** (``float64_digits``). Where a measured quantity cannot be computed to more digits in float64 by any
code, a requirement above that floor measures rounding, not tolerance tracking, and is capped at it. E5s's mean is
such a quantity: its error comes from the drift of the invariant y2 − y3 − y4 (a relative error (δ/m)²/8 for a drift
δ), which is rounding, and scipy LSODA, BDF and Radau at per-step rtol 2e−10 … 1e−12 (local model, the scale-aware
atol) return 5.5–7.7 digits with no trend in the tolerance (BDF: 7.7 at 3e−11, 5.5 at 1e−12; LSODA: 6.8 at
1.5e−10, 6.0 at 1.507e−10), so ``float64_digits = 5.4`` (below the smallest measured, 5.46). It bounds only the
rtol 1e−8 requirement (6.5); at 1e−4 and 1e−6 the literal rule stands.

**LINEAR** is a held-out problem with an exact answer (not used to calibrate the tolerance model): x' = Ax,
A = H diag(λ) H with H the 4×4 Hadamard matrix over 2 (symmetric, orthogonal, exact in binary), λ = (−0.1, −0.5,
−1e3, −1e7) (stiffness ratio 1e8), x(0) = (1, 2, 4, 8), on [0, 10]; f evaluates A x in eigen-coordinates, so the
float64 problem is exactly this A, and x(10) = H diag(e^(10λ)) H x(0) is computed to a few ulp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pysens.solvers import ODEProblem

__all__ = ["PROBLEMS", "StiffTestProblem", "component_digits", "scd"]


@dataclass(frozen=True)
class StiffTestProblem:
    """One problem of the test set.

    Attributes:
        name: registry key.
        title: what it is, for tables.
        rhs: ``rhs(t, x) -> dx/dt`` on rows ``x [B, d]`` (row-independent; ``t`` is ``[B]``, unused: autonomous).
        x0: the initial state ``[d]``.
        tspan: ``(t0, t1)``.
        reference: the published values at ``t1`` ``[d]``.
        atol_ratio: ``atol = atol_ratio * rtol`` (ignored when ``atol_fixed`` is set).
        atol_fixed: a fixed absolute tolerance (E5).
        absolute: components whose absolute (not relative) error enters the scd.
        h0: the test set's suggested first step, or None.
        source: where the definition and reference values come from.
        measure: maps final states ``[B, d]`` to the quantities the scd compares (default: the state itself), with
            ``measured_reference`` their reference values.
        tolerance_scale: per measured quantity, the state magnitude the tolerance contract's ``atol`` compares with
            (default ``|reference|`` for relative quantities, none for absolute ones); see ``required_digits``.
        float64_digits: the most digits of the measured quantities float64 arithmetic attains (measured, see the
            module docstring), or None (no floor below what the tolerances ask for).
    """

    name: str
    title: str
    rhs: Callable[[Tensor, Tensor], Tensor]
    x0: tuple[float, ...]
    tspan: tuple[float, float]
    reference: tuple[float, ...]
    atol_ratio: float = 1.0
    atol_fixed: float | None = None
    absolute: tuple[int, ...] = ()
    h0: float | None = None
    source: str = ""
    measure: Callable[[Tensor], Tensor] | None = None
    measured_reference: tuple[float, ...] | None = None
    tolerance_scale: tuple[float, ...] | None = None
    float64_digits: float | None = None

    @property
    def dim(self) -> int:
        return len(self.x0)

    def problem(self, batch: int = 1, dtype: torch.dtype = torch.float64, device=None) -> ODEProblem:
        """The problem as a batched :class:`ODEProblem`: ``batch`` identical rows ``[batch, d]``."""
        if batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        x0 = torch.tensor(self.x0, dtype=dtype, device=device).expand(batch, -1).clone()
        return ODEProblem(self.rhs, x0, self.tspan, name=f"{self.name}: {self.title}")

    def atol(self, rtol: float) -> float:
        """The absolute tolerance paired with ``rtol`` in the suite."""
        return self.atol_fixed if self.atol_fixed is not None else self.atol_ratio * rtol

    def scd(self, x_final: Tensor) -> Tensor:
        """Significant correct digits of every row of ``x_final [B, d]`` (float64 ``[B]``; inf when exact)."""
        return self.digits(x_final).min(1).values

    def digits(self, x_final: Tensor) -> Tensor:
        """Correct digits of every measured quantity, ``[B, k]`` (relative, or absolute for ``absolute``)."""
        if self.measure is None:
            return component_digits(x_final, self.reference, self.absolute)
        x = x_final.detach().to(torch.float64).cpu().reshape(x_final.shape[0], -1)
        return component_digits(self.measure(x), self.measured_reference, self.absolute)

    def required_digits(self, x_final: Tensor, rtol: float, atol: float, margin: float) -> Tensor:
        """The digits ``scd`` must reach for each row of ``x_final`` to be right to ``(rtol, atol)`` (``[B]``).

        ``scd − min_i(d_i − r_i)`` with ``r_i = −log10(max(rtol, atol / s_i)) − margin``, capped at the problem's
        ``float64_digits`` where it has one (module docstring)."""
        digits = self.digits(x_final)
        need = self.tolerance_digits(rtol, atol) - margin
        if self.float64_digits is not None:
            need = need.clamp(max=self.float64_digits)
        return digits.min(1).values - (digits - need).min(1).values

    def tolerance_digits(self, rtol: float, atol: float) -> Tensor:
        """The digits ``(rtol, atol)`` promise each measured quantity, ``−log10(max(rtol, atol / s_i))`` ``[k]``
        (``s_i``: ``tolerance_scale``, else ``|reference|`` for relative quantities and none for absolute ones)."""
        ref = self.measured_reference if self.measure is not None else self.reference
        scale = self.tolerance_scale or tuple(math.inf if i in self.absolute else abs(v) for i, v in enumerate(ref))
        s = torch.tensor(scale, dtype=torch.float64).clamp_min(1e-300)
        return -torch.log10(torch.clamp(atol / s, min=rtol))

    def scd_against(self, x_final: Tensor, reference: Tensor) -> Tensor:
        """The scd of every row of ``x_final [B, d]`` against its own reference state ``reference [B, d]`` (a perturbed
        copy's reference solution, ``[B]``): the measured quantities of each row against those of its reference
        (relative, absolute for ``absolute``), as :meth:`scd` measures the published problem."""
        if reference.shape != x_final.shape:
            raise ValueError(
                f"reference must have x_final's shape {tuple(x_final.shape)}, got {tuple(reference.shape)}"
            )
        x = x_final.detach().to(torch.float64).cpu()
        ref = reference.detach().to(torch.float64).cpu()
        if self.measure is not None:
            x, ref = self.measure(x), self.measure(ref)
        return torch.cat([scd(x[i : i + 1], ref[i], self.absolute) for i in range(x.shape[0])])


def scd(x_final: Tensor, reference, absolute: tuple[int, ...] = ()) -> Tensor:
    """``−log10`` of the largest error of each row of ``x_final [B, d]`` against ``reference [d]``: relative error,
    absolute for the indices in ``absolute``. NaN rows give NaN."""
    return component_digits(x_final, reference, absolute).min(1).values


def component_digits(x_final: Tensor, reference, absolute: tuple[int, ...] = ()) -> Tensor:
    """``−log10`` of each component's error, ``[B, d]``: relative, absolute for the indices in ``absolute``
    (inf where exact; NaN propagates to the row's minimum)."""
    x = x_final.detach().to(torch.float64).cpu().reshape(x_final.shape[0], -1)
    ref = torch.as_tensor(reference, dtype=torch.float64).reshape(1, -1)
    if x.shape[1] != ref.shape[1]:
        raise ValueError(f"x_final must have {ref.shape[1]} components per row, got {x.shape[1]}")
    err = (x - ref).abs()
    rel = torch.ones(ref.shape[1], dtype=torch.bool)
    rel[list(absolute)] = False
    err = torch.where(rel, err / ref.abs().clamp_min(1e-300), err)
    nan_rows = torch.isnan(err).any(1, keepdim=True)
    out = -torch.log10(err)
    return torch.where(nan_rows, torch.full_like(out, math.nan), out)


# ---- right-hand sides (rows of x are independent samples) ----


def hires_rates(y1, y2, y3, y4, y5, y6, y7, y8) -> list:
    """HIRES's eight rates from the species (torch or numpy arrays alike: the formulas once for both peers)."""
    r = 280.0 * y6 * y8
    f7 = r - 1.81 * y7
    return [
        -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
        1.71 * y1 - 8.75 * y2,
        -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
        8.32 * y2 + 1.71 * y3 - 1.12 * y4,
        -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
        -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
        f7,
        -f7,
    ]


def _hires(t: Tensor, y: Tensor) -> Tensor:
    return torch.stack(hires_rates(*y.unbind(1)), 1)


def orego_rates(y1, y2, y3) -> list:
    """OREGO's three rates (torch or numpy arrays alike)."""
    return [77.27 * (y2 + y1 * (1.0 - 8.375e-6 * y1 - y2)), (y3 - (1.0 + y1) * y2) / 77.27, 0.161 * (y1 - y3)]


def _orego(t: Tensor, y: Tensor) -> Tensor:
    return torch.stack(orego_rates(*y.unbind(1)), 1)


def rober_rates(y1, y2, y3) -> list:
    """ROBER's three rates (torch or numpy arrays alike)."""
    f1 = -0.04 * y1 + 1.0e4 * y2 * y3
    f3 = 3.0e7 * y2 * y2
    return [f1, -f1 - f3, f3]


def _rober(t: Tensor, y: Tensor) -> Tensor:
    return torch.stack(rober_rates(*y.unbind(1)), 1)


VDPOL_EPS = 1.0e-6
E5_CONSTANTS = (7.89e-10, 1.1e7, 1.13e9, 1.13e3)  # A, B, CM, C of the test set's e5.f


def vdpol_rates(y1, y2) -> list:
    """VDPOL's two rates, eps = 1e-6 (torch or numpy arrays alike)."""
    return [y2, ((1.0 - y1 * y1) * y2 - y1) / VDPOL_EPS]


def _vdpol(t: Tensor, y: Tensor) -> Tensor:
    return torch.stack(vdpol_rates(*y.unbind(1)), 1)


def e5_rates(y1, y2, y3, y4) -> list:
    """E5's four rates (torch or numpy arrays alike); f3 = f2 − f4 keeps the invariant y2 − y3 − y4."""
    a, b, cm, c = E5_CONSTANTS
    p1, p2, p3, p4 = a * y1, b * y1 * y3, cm * y2 * y3, c * y4
    f2 = p1 - p3
    f4 = p2 - p4
    return [-p1 - p2, f2, f2 - f4, f4]


def _e5(t: Tensor, y: Tensor) -> Tensor:
    return torch.stack(e5_rates(*y.unbind(1)), 1)


def _e5_measure(y: Tensor) -> Tensor:
    """E5's compared quantities: m = (y2 + y3)/2 and the invariant (y2 − y3 − y4)/m (see the module docstring)."""
    m = 0.5 * (y[:, 1] + y[:, 2])
    return torch.stack([m, (y[:, 1] - y[:, 2] - y[:, 3]) / m], 1)


def _e5_mean(y: Tensor) -> Tensor:
    """E5 with a scale-aware atol: the mean m = (y2 + y3)/2 alone (the invariant is below float64's rounding there)."""
    return (0.5 * (y[:, 1] + y[:, 2])).unsqueeze(1)


_E5_REF = (0.1152903278711829e-290, 0.8867655517642120e-22, 0.8854814626268838e-22, 0.0)
_E5_MEAN = 0.5 * (_E5_REF[1] + _E5_REF[2])


# ---- LINEAR: a stiff linear system with an exact answer (held out from the tolerance model's calibration) ----

_LINEAR_LAMBDA = (-0.1, -0.5, -1e3, -1e7)
_LINEAR_X0 = (1.0, 2.0, 4.0, 8.0)
_LINEAR_T1 = 10.0
# H = Hadamard/2: symmetric, orthogonal, its own inverse, and exact in binary floating point
_LINEAR_H = ((0.5, 0.5, 0.5, 0.5), (0.5, -0.5, 0.5, -0.5), (0.5, 0.5, -0.5, -0.5), (0.5, -0.5, -0.5, 0.5))


def _linear(t: Tensor, y: Tensor) -> Tensor:
    h = torch.tensor(_LINEAR_H, dtype=y.dtype, device=y.device)
    lam = torch.tensor(_LINEAR_LAMBDA, dtype=y.dtype, device=y.device)
    return ((y @ h) * lam) @ h  # A x with A = H diag(lambda) H, evaluated in eigen-coordinates


def _linear_reference() -> tuple[float, ...]:
    """x(T) = H diag(exp(T lambda)) H x(0), a few ulp from exact (H is exact, math.exp correctly rounded)."""
    hx0 = [sum(h * x for h, x in zip(row, _LINEAR_X0, strict=True)) for row in _LINEAR_H]
    decayed = [math.exp(_LINEAR_T1 * lam) * v for lam, v in zip(_LINEAR_LAMBDA, hx0, strict=True)]
    return tuple(math.fsum(h * v for h, v in zip(row, decayed, strict=True)) for row in _LINEAR_H)


POLLU_K = (  # the rate constants k_1 ... k_25 of pollu.f
    0.35,
    0.266e2,
    0.123e5,
    0.86e-3,
    0.82e-3,
    0.15e5,
    0.13e-3,
    0.24e5,
    0.165e5,
    0.9e4,
    0.22e-1,
    0.12e5,
    0.188e1,
    0.163e5,
    0.48e7,
    0.35e-3,
    0.175e-1,
    0.1e9,
    0.444e12,
    0.124e4,
    0.21e1,
    0.578e1,
    0.474e-1,
    0.178e4,
    0.312e1,
)


# POLLU's 25 reactions as in pollu.f: reaction j has rate r_j = k_j · Π_{i in POLLU_REACTANTS[j]} y_i
POLLU_REACTANTS = (
    (0,),
    (1, 3),
    (4, 1),
    (6,),
    (6,),
    (6, 5),
    (8,),
    (8, 5),
    (10, 1),
    (10, 0),
    (12,),
    (9, 1),
    (13,),
    (0, 5),
    (2,),
    (3,),
    (3,),
    (15,),
    (15,),
    (16, 5),
    (18,),
    (18,),
    (0, 3),
    (18, 0),
    (19,),
)


def pollu_reaction_rates(*y) -> list:
    """POLLU's 25 reaction rates r_j from the twenty species (torch or numpy arrays alike)."""
    r = []
    for k, reactants in zip(POLLU_K, POLLU_REACTANTS, strict=True):
        rate = k * y[reactants[0]]
        for i in reactants[1:]:
            rate = rate * y[i]
        r.append(rate)
    return r


def pollu_balance(r) -> list:
    """POLLU's twenty species rates from its 25 reaction rates (linear in ``r``: the stoichiometry)."""
    r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13 = r[:13]
    r14, r15, r16, r17, r18, r19, r20, r21, r22, r23, r24, r25 = r[13:]
    return [
        -r1 - r10 - r14 - r23 - r24 + r2 + r3 + r9 + r11 + r12 + r22 + r25,
        -r2 - r3 - r9 - r12 + r1 + r21,
        -r15 + r1 + r17 + r19 + r22,
        -r2 - r16 - r17 - r23 + r15,
        -r3 + 2.0 * r4 + r6 + r7 + r13 + r20,
        -r6 - r8 - r14 - r20 + r3 + 2.0 * r18,
        -r4 - r5 - r6 + r13,
        r4 + r5 + r6 + r7,
        -r7 - r8,
        -r12 + r7 + r9,
        -r9 - r10 + r8 + r11,
        r9,
        -r11 + r10,
        -r13 + r12,
        r14,
        -r18 - r19 + r16,
        -r20,
        r20,
        -r21 - r22 - r24 + r23 + r25,
        -r25 + r24,
    ]


def pollu_rates(*y) -> list:
    """POLLU's twenty rates from the species (torch or numpy arrays alike)."""
    return pollu_balance(pollu_reaction_rates(*y))


def _pollu(t: Tensor, y: Tensor) -> Tensor:
    return torch.stack(pollu_rates(*y.unbind(1)), 1)


_TESTSET = "Mazzia & Magherini, Test Set for IVP Solvers 2.4 (Bari)"

_PROBLEMS = [
    StiffTestProblem(
        "hires",
        "HIRES, plant physiology (8 species)",
        _hires,
        (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057),
        (0.0, 321.8122),
        (
            0.7371312573325668e-3,
            0.1442485726316185e-3,
            0.5888729740967575e-4,
            0.1175651343283149e-2,
            0.2386356198831331e-2,
            0.6238968252742796e-2,
            0.2849998395185769e-2,
            0.2850001604814231e-2,
        ),
        atol_ratio=1e-4,
        source=f"{_TESTSET}, hires.f (solut); IVPTestSuite.jl hires.jl",
    ),
    StiffTestProblem(
        "orego",
        "OREGO, Oregonator (3 species)",
        _orego,
        (1.0, 2.0, 3.0),
        (0.0, 360.0),
        (0.1000814870318523e1, 0.1228178521549917e4, 0.1320554942846706e3),
        atol_ratio=1e-2,
        source=f"{_TESTSET}, orego.f (solut)",
    ),
    StiffTestProblem(
        "rober",
        "ROBER, Robertson kinetics to t = 1e11",
        _rober,
        (1.0, 0.0, 0.0),
        (0.0, 1e11),
        (0.2083340149701255e-07, 0.8333360770334713e-13, 0.9999999791665050),
        atol_ratio=1e-10,
        source=f"{_TESTSET}, rober.f (solut); IVPTestSuite.jl rober.jl",
    ),
    StiffTestProblem(
        "vdpol",
        "VDPOL, Van der Pol with eps = 1e-6",
        _vdpol,
        (2.0, 0.0),
        (0.0, 2.0),
        (0.1706167732170483e1, -0.8928097010247975e0),
        atol_ratio=1.0,
        source=f"{_TESTSET}, vdpol.f (solut); IVPTestSuite.jl vdpol.jl",
    ),
    StiffTestProblem(
        "e5",
        "E5, pyrolysis to t = 1e13 (stiff DETEST)",
        _e5,
        (1.76e-3, 0.0, 0.0, 0.0),
        (0.0, 1e13),
        _E5_REF,
        atol_fixed=1.7e-24,
        absolute=(1,),
        source=f"{_TESTSET}, e5.f (solut)",
        measure=_e5_measure,
        measured_reference=(_E5_MEAN, 0.0),
        tolerance_scale=(_E5_MEAN, _E5_MEAN),
    ),
    StiffTestProblem(
        "pollu",
        "POLLU, air pollution (20 species)",
        _pollu,
        (0.0, 0.2, 0.0, 0.04, 0.0, 0.0, 0.1, 0.3, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.007, 0.0, 0.0, 0.0),
        (0.0, 60.0),
        (
            0.5646255480022769e-01,
            0.1342484130422339e00,
            0.4139734331099427e-08,
            0.5523140207484359e-02,
            0.2018977262302196e-06,
            0.1464541863493966e-06,
            0.7784249118997964e-01,
            0.3245075353396018e00,
            0.7494013383880406e-02,
            0.1622293157301561e-07,
            0.1135863833257075e-07,
            0.2230505975721359e-02,
            0.2087162882798630e-03,
            0.1396921016840158e-04,
            0.8964884856898295e-02,
            0.4352846369330103e-17,
            0.6899219696263405e-02,
            0.1007803037365946e-03,
            0.1772146513969984e-05,
            0.5682943292316392e-04,
        ),
        atol_ratio=1e-6,
        source=f"{_TESTSET}, pollu.f (solut); SciML DiffEqProblemLibrary pollution_prob.jl",
    ),
]

_E5 = next(p for p in _PROBLEMS if p.name == "e5")
_PROBLEMS.insert(
    _PROBLEMS.index(_E5) + 1,
    replace(
        _E5,
        name="e5s",
        title="E5 with a scale-aware atol = 1e-24 rtol",
        atol_ratio=1e-24,
        atol_fixed=None,
        absolute=(),
        source=f"{_TESTSET}, e5.f (solut); atol scaled to the ~1e-22 components",
        measure=_e5_mean,
        measured_reference=(_E5_MEAN,),
        tolerance_scale=None,
        float64_digits=5.4,
    ),
)

_PROBLEMS.append(
    StiffTestProblem(
        "linear",
        "LINEAR, x' = Ax with eigenvalues -0.1 ... -1e7 (exact answer)",
        _linear,
        _LINEAR_X0,
        (0.0, _LINEAR_T1),
        _linear_reference(),
        atol_ratio=1e-3,
        source="closed form x(T) = H exp(T diag(lambda)) H x(0) (this module); not from the test set",
    )
)

PROBLEMS: dict[str, StiffTestProblem] = {p.name: p for p in _PROBLEMS}
