"""The ESDIRK stage Newton stops after one iteration only when that correction is negligible (issue 12, item 4)."""

import math

import pytest
import torch

from pysens.solvers import ODEProblem
from pysens.solvers.driver import ErrorNorm
from pysens.solvers.esdirk import ESDIRK_TABLEAUS, KAPPA, ESDIRKStepper

DT = torch.float64


@pytest.mark.parametrize("name", ["KenCarp4", "TRBDF2"])
def test_stage_newton_does_not_accept_a_first_correction_of_a_tolerance_unit(name):
    # stage equation z = ψ + hγ f(z) with f = −x², hγ = 1, ψ = 1: z* = (√5 − 1)/2. The Jacobian is taken at
    # x = 0.3 (a kept Jacobian: contraction ≈ 0.4) and the predictor is off by half a tolerance unit. The old rule
    # (rate carried from the last stage, floored at 1e−2) accepted that first correction and left 0.2 tolerance
    # units of Newton error in the stage; the stage must end within κ of z*.
    torch.set_num_threads(1)
    tab = ESDIRK_TABLEAUS[name]
    x = torch.tensor([[0.3]], dtype=DT)
    prob = ODEProblem(lambda t, y: -y * y, x, (0.0, 1.0))
    norm = ErrorNorm(1e-3, 1e-3, x)
    stepper = ESDIRKStepper(prob, tab, norm, {"linsolve": "dense"})
    t = torch.zeros(1, dtype=DT)
    stepper.start(t, x)
    stepper.eta = torch.full((1,), 1e-2, dtype=DT)  # a fast-converging history
    hgamma = torch.ones(1, dtype=DT)
    stepper.linear.set_jacobian(t, x)
    stepper.linear.factor(hgamma)
    z_star = (math.sqrt(5.0) - 1.0) / 2.0
    unit = tab.gamma * float(norm.scale(torch.tensor([[z_star]], dtype=DT)))  # Newton's norm is in units of hF
    psi = torch.ones(1, 1, dtype=DT)
    z0 = torch.full((1, 1), z_star + 0.5 * unit, dtype=DT)
    z, ok, _ = stepper._newton(t, psi, z0, hgamma[:, None], x)
    assert bool(ok.all())
    assert abs(float(z) - z_star) <= 2 * KAPPA * unit, abs(float(z) - z_star) / unit
