"""Wrong ``Success`` found by the stiff test set's finer rtol grid (benchmarks/README.md, "Finer rtol grid").

QNDF accepts a Newton iteration on its first correction when the contraction rate measured with the same W at an
earlier step says it has converged (``pysens.solvers.bdf.CARRY_RATE``). On VDPOL (ε = 1e−6) a Jacobian taken in the
middle of a relaxation jump is kept onto the slow branch; its corrections are tiny, the carried rate accepts them, and
two steps of 0.5 leave y2 off the slow manifold: ``Success`` with 0.6 correct digits where 2.5 are required, at
per-step tolerances 1.037e−4 and 8.185e−5 (between them 3 digits). Measuring the rate anew on every step (scipy's
rule) removes every QNDF wrong answer of the finer grid (E5, E5s, VDPOL) for 4–18% more RHS calls; the fix belongs
to bdf.py's owner, so the default case is marked xfail (strict: it fails once fixed, and the marker must go).
"""

import math

import pytest
import torch

from pysens import solve
from pysens.bench.stiff_testset import DIGITS_MARGIN
from pysens.bench.testset import PROBLEMS
from pysens.solvers import bdf, bdf_coupled

torch.set_num_threads(1)

RTOLS = (1.037e-4, 8.185e-5)  # per-step (local) tolerances where the carried rate accepts an unconverged Newton


def _scd(rtol: float, batch: str = "per-sample") -> tuple[str, float]:
    p = PROBLEMS["vdpol"]
    kw = {"batch": "coupled"} if batch == "coupled" else {}
    sol = solve(p.problem(1), "QNDF", rtol=rtol, atol=p.atol(rtol), tolerance_model="local", maxiters=20000, **kw)
    return sol.retcode, float(p.scd(sol.final)[0])


@pytest.mark.parametrize("rtol", RTOLS)
def test_qndf_measuring_the_newton_rate_anew_is_right_on_vdpol(monkeypatch, rtol):
    monkeypatch.setattr(bdf, "CARRY_RATE", False)
    monkeypatch.setattr(bdf_coupled, "CARRY_RATE", False)
    for batch in ("per-sample", "coupled"):
        retcode, scd = _scd(rtol, batch)
        assert retcode != "Success" or scd >= -math.log10(rtol) - DIGITS_MARGIN, (batch, scd)


@pytest.mark.xfail(strict=True, reason="QNDF's carried Newton rate accepts an unconverged iteration (bdf.CARRY_RATE)")
@pytest.mark.parametrize("rtol", RTOLS)
def test_qndf_default_is_right_on_vdpol(rtol):
    retcode, scd = _scd(rtol)
    assert retcode != "Success" or scd >= -math.log10(rtol) - DIGITS_MARGIN, scd
