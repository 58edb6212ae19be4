"""Every calibrated tolerance map states the K_max it was calibrated from, and its c follows from it."""

import pytest

from pysens.solvers.tolerance import CALIBRATION_SAFETY, TOLERANCE_MAPS

CALIBRATED = sorted(name for name, entry in TOLERANCE_MAPS.items() if entry.k_max is not None)


def test_the_stiff_methods_run_here_are_calibrated():
    stiff = {"Rosenbrock23", "TRBDF2", "Rodas4", "Rodas5P", "ROS34PW2", "KenCarp4", "RadauIIA5", "BDF", "LSODA"}
    assert stiff | {"CVODE_BDF", "QNDF"} <= set(CALIBRATED)


@pytest.mark.parametrize("name", CALIBRATED)
def test_c_is_the_documented_procedure_applied_to_k_max(name):
    # c = min(1, (S / K_max)^q), stated to one or two significant digits: within 10% of the procedure's value
    entry = TOLERANCE_MAPS[name]
    procedure = min(1.0, (CALIBRATION_SAFETY / entry.k_max) ** entry.q)
    assert abs(entry.c / procedure - 1.0) <= 0.1, (name, entry.c, procedure)
