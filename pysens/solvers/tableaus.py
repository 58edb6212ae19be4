"""Explicit Runge–Kutta methods as data: one Butcher tableau per method, run by one engine.

Every tableau gives the nodes ``c``, the strictly lower-triangular matrix ``a`` (row ``i`` holds the
coefficients of stages ``0..i-1``), the solution weights ``b``, and, for adaptive methods, the error
weights ``b_error = b - b_hat`` of an embedded lower-order solution. Methods with a continuous
extension carry ``dense``: the polynomial weights ``b_i(θ)`` (ascending powers of θ) such that
``x(t + θh) = x(t) + h Σ_i b_i(θ) k_i``.

FSAL ("first same as last") tableaus evaluate their last stage at the new solution, so it serves as
the first stage of the next step.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as Fr

import numpy as np


@dataclass(frozen=True)
class ExplicitTableau:
    """A Butcher tableau and what the adaptive engine needs to know about it."""

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...] | None = None
    error_order: int | None = None
    fsal: bool = False
    dense: tuple[tuple[float, ...], ...] | None = None
    # Hairer's DOP853 blends a 5th- and a 3rd-order estimate; ``b_error`` is then the 5th-order one.
    b_error3: tuple[float, ...] | None = None
    reference: str = ""

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s - 1 or any(len(row) != i + 1 for i, row in enumerate(self.a)):
            raise ValueError(f"tableau {self.name}: a must be strictly lower triangular with {s} stages")
        if len(self.b) != s:
            raise ValueError(f"tableau {self.name}: b must have {s} entries")
        for i, row in enumerate(self.a):
            if abs(sum(row) - self.c[i + 1]) > 1e-12:
                raise ValueError(f"tableau {self.name}: row {i + 1} of a does not sum to c")


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _poly_product(*factors) -> np.ndarray:
    """Multiply polynomials given as ascending coefficient sequences."""
    out = np.array([1.0])
    for f in factors:
        out = np.polynomial.polynomial.polymul(out, np.asarray(f, dtype=float))
    return out


def _pad(p: np.ndarray, n: int) -> tuple[float, ...]:
    return _floats(list(p) + [0.0] * (n - len(p)))


# --------------------------------------------------------------------------------------------------
# Low-order methods.

EULER = ExplicitTableau(name="Euler", order=1, c=(0.0,), a=(), b=(1.0,), reference="Euler (1768)")

HEUN = ExplicitTableau(
    name="Heun",
    order=2,
    c=(0.0, 1.0),
    a=((1.0,),),
    b=(0.5, 0.5),
    b_error=(0.5 - 1.0, 0.5),  # embedded Euler
    error_order=1,
    reference="Heun's method (explicit trapezoid) with embedded Euler, as SciML's Heun",
)

RK4 = ExplicitTableau(
    name="RK4",
    order=4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    reference="Kutta (1901), the classical fourth-order method",
)

# --------------------------------------------------------------------------------------------------
# Dormand–Prince 5(4), with Hairer's fourth-order continuous extension (DOPRI5 "contd5").

_DP5_A = (
    (Fr(1, 5),),
    (Fr(3, 40), Fr(9, 40)),
    (Fr(44, 45), Fr(-56, 15), Fr(32, 9)),
    (Fr(19372, 6561), Fr(-25360, 2187), Fr(64448, 6561), Fr(-212, 729)),
    (Fr(9017, 3168), Fr(-355, 33), Fr(46732, 5247), Fr(49, 176), Fr(-5103, 18656)),
    (Fr(35, 384), Fr(0), Fr(500, 1113), Fr(125, 192), Fr(-2187, 6784), Fr(11, 84)),
)
_DP5_B = (Fr(35, 384), Fr(0), Fr(500, 1113), Fr(125, 192), Fr(-2187, 6784), Fr(11, 84), Fr(0))
_DP5_BHAT = (
    Fr(5179, 57600),
    Fr(0),
    Fr(7571, 16695),
    Fr(393, 640),
    Fr(-92097, 339200),
    Fr(187, 2100),
    Fr(1, 40),
)
_DP5_D = (
    Fr(-12715105075, 11282082432),
    Fr(0),
    Fr(87487479700, 32700410799),
    Fr(-10690763975, 1880347072),
    Fr(701980252875, 199316789632),
    Fr(-1453857185, 822651844),
    Fr(69997945, 29380423),
)


def _dp5_dense() -> tuple[tuple[float, ...], ...]:
    # Hairer's form x(θ) = x0 + θ(r1 + (1-θ)(r2 + θ(r3 + (1-θ) r4))) with r1 = h Σ b_i k_i,
    # r2 = h k1 - r1, r3 = 2 r1 - h k1 - h k7, r4 = h Σ d_i k_i is linear in the stages; expand it
    # into per-stage polynomials b_i(θ).
    rows = []
    for i in range(7):
        bi, di = float(_DP5_B[i]), float(_DP5_D[i])
        first, last = float(i == 0), float(i == 6)
        inner = _poly_product([2 * bi - first - last + di, -di])  # r3 + (1-θ) r4
        mid = np.polynomial.polynomial.polyadd([first - bi], _poly_product([0, 1], inner))
        outer = np.polynomial.polynomial.polyadd([bi], _poly_product([1, -1], mid))
        rows.append(_pad(_poly_product([0, 1], outer), 6))
    return tuple(rows)


DP5 = ExplicitTableau(
    name="DP5",
    order=5,
    c=_floats([0, Fr(1, 5), Fr(3, 10), Fr(4, 5), Fr(8, 9), 1, 1]),
    a=tuple(_floats(row) for row in _DP5_A),
    b=_floats(_DP5_B),
    b_error=_floats(b - bh for b, bh in zip(_DP5_B, _DP5_BHAT, strict=True)),
    error_order=4,
    fsal=True,
    dense=_dp5_dense(),
    reference="Dormand & Prince (1980); dense output of Hairer, Nørsett & Wanner, Solving ODEs I, II.6",
)

# --------------------------------------------------------------------------------------------------
# Tsitouras 5(4) (Tsitouras 2011, Comput. Math. Appl. 62, 770–775), with its free interpolant.

_TS_C = (0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0)
_TS_A = (
    (0.161,),
    (-0.008480655492356989, 0.335480655492357),
    (2.897153057105493, -6.359448489975075, 4.3622954328695815),
    (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
    (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383),
    (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774),
)
_TS_B = _TS_A[-1] + (0.0,)
_TS_BHAT = (
    0.09468075576583945,
    0.009183565540343254,
    0.4877705284247616,
    1.234297566930479,
    -2.7077123499835256,
    1.866628418170587,
    1 / 66,
)


def _tsit5_dense() -> tuple[tuple[float, ...], ...]:
    # Tsitouras' interpolation weights, given in the paper in factored form.
    b = [
        _poly_product(
            [-1.0530884977290216], [0, 1], [-1.3299890189751412, 1], [0.7139816917074209, -1.4364028541716351, 1]
        ),
        _poly_product([0.1017], [0, 0, 1], [1.2949852507374631, -2.1966568338249754, 1]),
        _poly_product([2.490627285651252793], [0, 0, 1], [1.57803468208092486, -2.38535645472061657, 1]),
        _poly_product([-16.54810288924490272], [-1.21712927295533244, 1], [-0.61620406037800089, 1], [0, 0, 1]),
        _poly_product([47.37952196281928122], [-1.203071208372362603, 1], [-0.658047292653547382, 1], [0, 0, 1]),
        _poly_product([-34.87065786149660974], [-1.2, 1], [-2 / 3, 1], [0, 0, 1]),
        _poly_product([2.5], [-1, 1], [-0.6, 1], [0, 0, 1]),
    ]
    return tuple(_pad(p, 5) for p in b)


TSIT5 = ExplicitTableau(
    name="Tsit5",
    order=5,
    c=_TS_C,
    a=_TS_A,
    b=_TS_B,
    b_error=tuple(b - bh for b, bh in zip(_TS_B, _TS_BHAT, strict=True)),
    error_order=4,
    fsal=True,
    dense=_tsit5_dense(),
    reference="Tsitouras (2011), Runge–Kutta pairs of order 5(4) satisfying only the first column "
    "simplifying assumption",
)

# --------------------------------------------------------------------------------------------------
# Dormand–Prince 8(5,3) (Hairer's DOP853). The 13th stage is f at the new solution (FSAL) and enters
# only the error estimates. No continuous extension is provided here: saveat points are stepped to.

_DP8_C = (
    0.0,
    0.05260015195876773,
    0.0789002279381516,
    0.1183503419072274,
    0.2816496580927726,
    0.3333333333333333,
    0.25,
    0.3076923076923077,
    0.6512820512820513,
    0.6,
    0.8571428571428571,
    1.0,
)
_DP8_A = (
    (0.05260015195876773,),
    (
        0.0197250569845379,
        0.0591751709536137,
    ),
    (
        0.02958758547680685,
        0.0,
        0.08876275643042054,
    ),
    (
        0.2413651341592667,
        0.0,
        -0.8845494793282861,
        0.924834003261792,
    ),
    (
        0.037037037037037035,
        0.0,
        0.0,
        0.17082860872947386,
        0.12546768756682242,
    ),
    (
        0.037109375,
        0.0,
        0.0,
        0.17025221101954405,
        0.06021653898045596,
        -0.017578125,
    ),
    (
        0.03709200011850479,
        0.0,
        0.0,
        0.17038392571223998,
        0.10726203044637328,
        -0.015319437748624402,
        0.008273789163814023,
    ),
    (
        0.6241109587160757,
        0.0,
        0.0,
        -3.3608926294469414,
        -0.868219346841726,
        27.59209969944671,
        20.154067550477894,
        -43.48988418106996,
    ),
    (
        0.47766253643826434,
        0.0,
        0.0,
        -2.4881146199716677,
        -0.590290826836843,
        21.230051448181193,
        15.279233632882423,
        -33.28821096898486,
        -0.020331201708508627,
    ),
    (
        -0.9371424300859873,
        0.0,
        0.0,
        5.186372428844064,
        1.0914373489967295,
        -8.149787010746927,
        -18.52006565999696,
        22.739487099350505,
        2.4936055526796523,
        -3.0467644718982196,
    ),
    (
        2.273310147516538,
        0.0,
        0.0,
        -10.53449546673725,
        -2.0008720582248625,
        -17.9589318631188,
        27.94888452941996,
        -2.8589982771350235,
        -8.87285693353063,
        12.360567175794303,
        0.6433927460157636,
    ),
)
_DP8_B = (
    0.054293734116568765,
    0.0,
    0.0,
    0.0,
    0.0,
    4.450312892752409,
    1.8915178993145003,
    -5.801203960010585,
    0.3111643669578199,
    -0.1521609496625161,
    0.20136540080403034,
    0.04471061572777259,
)
_DP8_E5 = (
    0.01312004499419488,
    0.0,
    0.0,
    0.0,
    0.0,
    -1.2251564463762044,
    -0.4957589496572502,
    1.6643771824549864,
    -0.35032884874997366,
    0.3341791187130175,
    0.08192320648511571,
    -0.022355307863886294,
    0.0,
)
_DP8_E3 = (
    -0.18980075407240762,
    0.0,
    0.0,
    0.0,
    0.0,
    4.450312892752409,
    1.8915178993145003,
    -5.801203960010585,
    -0.4226823213237919,
    -0.1521609496625161,
    0.20136540080403034,
    0.02265179219836082,
    0.0,
)


DP8 = ExplicitTableau(
    name="DP8",
    order=8,
    c=_DP8_C + (1.0,),
    a=_DP8_A + (_DP8_B,),
    b=_DP8_B + (0.0,),
    b_error=_DP8_E5,
    error_order=5,
    b_error3=_DP8_E3,
    fsal=True,
    reference="Hairer, Nørsett & Wanner, Solving ODEs I (DOP853); coefficients as tabulated there",
)

TABLEAUS: dict[str, ExplicitTableau] = {t.name: t for t in (EULER, HEUN, RK4, DP5, TSIT5, DP8)}
