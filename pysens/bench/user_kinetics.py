"""The stiff-speed peers as their users write them: numpy right-hand sides and Jacobians handed to scipy and CVODE.

pysens's scipy backend calls scipy and scikit-sundae with the problem's *torch* right-hand side, which is the right
way to check pysens's numerics against theirs, but not what a scipy or SUNDIALS user runs: they write the kinetics in
numpy (one call costs a few microseconds, where eight torch operations on a 3- or 8-element tensor cost tens), with an
analytic Jacobian from the test set's description, and call the solver directly with its defaults. This module is
that code for the stiff-speed problems (HIRES, ROBER, OREGO, VDPOL, E5, POLLU of the Bari test set, Mazzia &
Magherini), batched the way such a user batches independent copies (the rate formulas are the test set's own,
:mod:`pysens.bench.testset`, evaluated on numpy arrays; POLLU's Jacobian is its stoichiometric matrix times the
derivatives of its 25 mass-action rates):

* **per sample**: one solve per row, a loop (``solve_ivp`` BDF/Radau/LSODA with ``jac``; CVODE dense with ``jacfn``);
* **whole batch**: the rows flattened into one ``B·d`` system, one step size for all (score_sde's layout), the
  Jacobian block-diagonal: sparse CSC for BDF/Radau (scipy's sparse LU), dense for LSODA (it takes no sparse
  Jacobian), and for CVODE both a dense ``jacfn`` and its banded linear solver with CVODE's own difference-quotient
  band Jacobian (half-bandwidth d − 1 covers the blocks: what a SUNDIALS user picks for many small independent
  systems).

The solvers see ``rtol`` and ``atol`` as given (their native per-step meaning); stiff-speed finds each setup's loosest
rtol reaching the digits, so the comparison is time to the same accuracy. Tolerances, ``max_step`` and the rest
stay at the library defaults. Every solve returns ``(x_final [n, d] float64 tensor, retcode, nf)`` as stiff-speed's
setups do; retcode is "Success" or the library's message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.integrate import solve_ivp

from pysens.bench.testset import (
    E5_CONSTANTS,
    POLLU_K,
    POLLU_REACTANTS,
    VDPOL_EPS,
    e5_rates,
    hires_rates,
    orego_rates,
    pollu_balance,
    pollu_rates,
    rober_rates,
    vdpol_rates,
)

Tensor = torch.Tensor
MAX_STEPS = 200_000


def _hires(y: np.ndarray) -> np.ndarray:
    return np.stack(hires_rates(*y.T), 1)


def _hires_jacobian(y: np.ndarray) -> np.ndarray:
    J = np.zeros((y.shape[0], 8, 8))
    J[:, 0, :3] = (-1.71, 0.43, 8.32)
    J[:, 1, :2] = (1.71, -8.75)
    J[:, 2, 2:5] = (-10.03, 0.43, 0.035)
    J[:, 3, 1:4] = (8.32, 1.71, -1.12)
    J[:, 4, 4:7] = (-1.745, 0.43, 0.43)
    J[:, 5, 3:5] = (0.69, 1.71)
    J[:, 5, 5] = -0.43 - 280.0 * y[:, 7]
    J[:, 5, 6] = 0.69
    J[:, 5, 7] = -280.0 * y[:, 5]
    J[:, 6, 5] = 280.0 * y[:, 7]
    J[:, 6, 6] = -1.81
    J[:, 6, 7] = 280.0 * y[:, 5]
    J[:, 7, 5:8] = -J[:, 6, 5:8]
    return J


def _rober(y: np.ndarray) -> np.ndarray:
    return np.stack(rober_rates(*y.T), 1)


def _rober_jacobian(y: np.ndarray) -> np.ndarray:
    y2, y3 = y[:, 1], y[:, 2]
    J = np.zeros((y.shape[0], 3, 3))
    J[:, 0, 0] = -0.04
    J[:, 0, 1] = 1.0e4 * y3
    J[:, 0, 2] = 1.0e4 * y2
    J[:, 2, 1] = 6.0e7 * y2
    J[:, 1] = -J[:, 0] - J[:, 2]
    return J


def _orego(y: np.ndarray) -> np.ndarray:
    return np.stack(orego_rates(*y.T), 1)


def _orego_jacobian(y: np.ndarray) -> np.ndarray:
    y1, y2 = y[:, 0], y[:, 1]
    J = np.zeros((y.shape[0], 3, 3))
    J[:, 0, 0] = 77.27 * (1.0 - 2 * 8.375e-6 * y1 - y2)
    J[:, 0, 1] = 77.27 * (1.0 - y1)
    J[:, 1, 0] = -y2 / 77.27
    J[:, 1, 1] = -(1.0 + y1) / 77.27
    J[:, 1, 2] = 1.0 / 77.27
    J[:, 2, 0] = 0.161
    J[:, 2, 2] = -0.161
    return J


def _vdpol(y: np.ndarray) -> np.ndarray:
    return np.stack(vdpol_rates(*y.T), 1)


def _vdpol_jacobian(y: np.ndarray) -> np.ndarray:
    y1, y2 = y[:, 0], y[:, 1]
    J = np.zeros((y.shape[0], 2, 2))
    J[:, 0, 1] = 1.0
    J[:, 1, 0] = (-2.0 * y1 * y2 - 1.0) / VDPOL_EPS
    J[:, 1, 1] = (1.0 - y1 * y1) / VDPOL_EPS
    return J


def _e5(y: np.ndarray) -> np.ndarray:
    return np.stack(e5_rates(*y.T), 1)


def _e5_jacobian(y: np.ndarray) -> np.ndarray:
    a, b, cm, c = E5_CONSTANTS
    y1, y2, y3 = y[:, 0], y[:, 1], y[:, 2]
    J = np.zeros((y.shape[0], 4, 4))
    J[:, 0, 0] = -a - b * y3
    J[:, 0, 2] = -b * y1
    J[:, 1, 0] = a
    J[:, 1, 1] = -cm * y3
    J[:, 1, 2] = -cm * y2
    J[:, 3, 0] = b * y3
    J[:, 3, 2] = b * y1
    J[:, 3, 3] = -c
    J[:, 2] = J[:, 1] - J[:, 3]  # f3 = f2 - f4
    return J


def _pollu(y: np.ndarray) -> np.ndarray:
    return np.stack(pollu_rates(*y.T), 1)


# POLLU's stoichiometric matrix [20 species, 25 reactions]: f = S r is linear in the reaction rates r, so its columns
# are the species balance of unit rates
_POLLU_STOICHIOMETRY = np.array(pollu_balance(list(np.eye(len(POLLU_K)))))


def _pollu_jacobian(y: np.ndarray) -> np.ndarray:
    """J = S · dr/dy: reaction j's rate k_j·y_a(·y_b) has derivative k_j (·y_b) in y_a."""
    dr = np.zeros((y.shape[0], len(POLLU_K), y.shape[1]))
    for j, (k, reactants) in enumerate(zip(POLLU_K, POLLU_REACTANTS, strict=True)):
        if len(reactants) == 1:
            dr[:, j, reactants[0]] = k
        else:
            a, b = reactants
            dr[:, j, a] = k * y[:, b]
            dr[:, j, b] = k * y[:, a]
    return _POLLU_STOICHIOMETRY @ dr


@dataclass(frozen=True)
class NumpyKinetics:
    """A test-set problem in numpy: ``rhs(y [n, d]) -> [n, d]`` and ``jacobian(y [n, d]) -> [n, d, d]`` (autonomous)."""

    rhs: Callable[[np.ndarray], np.ndarray]
    jacobian: Callable[[np.ndarray], np.ndarray]


PROBLEMS = {
    "hires": NumpyKinetics(_hires, _hires_jacobian),
    "rober": NumpyKinetics(_rober, _rober_jacobian),
    "orego": NumpyKinetics(_orego, _orego_jacobian),
    "vdpol": NumpyKinetics(_vdpol, _vdpol_jacobian),
    "e5": NumpyKinetics(_e5, _e5_jacobian),
    "pollu": NumpyKinetics(_pollu, _pollu_jacobian),
}
SCIPY_METHODS = ("BDF", "Radau", "LSODA")
Solve = Callable[[Tensor, float], tuple[Tensor, str, int]]


def _system(kin: NumpyKinetics, n: int, d: int, jacobian: str):
    """``(f(t, u), jac(t, u))`` of the ``n`` rows flattened into one vector ``u`` of ``n·d`` (row-major)."""

    def f(t: float, u: np.ndarray) -> np.ndarray:
        return kin.rhs(u.reshape(n, d)).reshape(-1)

    def jac(t: float, u: np.ndarray):
        blocks = kin.jacobian(u.reshape(n, d))
        if jacobian == "sparse":
            return sp.block_diag(list(blocks), format="csc")
        return blocks[0] if n == 1 else sp.block_diag(list(blocks)).toarray()

    return f, jac


def scipy_solve(name: str, method: str, tspan: tuple[float, float], atol: Callable[[float], float]) -> Solve:
    """``solve_ivp(method)`` on the numpy problem with its analytic Jacobian: sparse block-diagonal for BDF/Radau on
    several rows, dense otherwise (LSODA takes dense only)."""
    if method not in SCIPY_METHODS:
        raise ValueError(f"method must be one of {SCIPY_METHODS}, got {method!r}")
    kin = PROBLEMS[name]

    def solve(x0: Tensor, rtol: float) -> tuple[Tensor, str, int]:
        n, d = x0.shape
        f, jac = _system(kin, n, d, "sparse" if method != "LSODA" and n > 1 else "dense")
        sol = solve_ivp(f, tspan, x0.double().numpy().reshape(-1), method=method, rtol=rtol, atol=atol(rtol), jac=jac)
        code = "Success" if sol.status == 0 else f"Failure: {sol.message}"
        return torch.from_numpy(sol.y[:, -1].reshape(n, d).copy()), code, int(sol.nfev)

    return solve


def cvode_solve(name: str, tspan: tuple[float, float], atol: Callable[[float], float], linsolver: str) -> Solve:
    """scikit-sundae's CVODE (BDF, Newton) on the numpy problem: ``linsolver="dense"`` with the analytic Jacobian
    (block-diagonal for several rows), ``"band"`` with CVODE's difference-quotient band Jacobian of half-bandwidth
    d − 1."""
    from sksundae import cvode

    if linsolver not in ("dense", "band"):
        raise ValueError(f"linsolver must be 'dense' or 'band', got {linsolver!r}")
    kin = PROBLEMS[name]

    def solve(x0: Tensor, rtol: float) -> tuple[Tensor, str, int]:
        n, d = x0.shape
        f, jac = _system(kin, n, d, "dense")
        calls = [0]

        def rhsfn(t: float, u: np.ndarray, du: np.ndarray) -> None:
            calls[0] += 1
            du[:] = f(t, u)

        options: dict = {"rtol": rtol, "atol": atol(rtol), "max_num_steps": MAX_STEPS}
        if linsolver == "dense":

            def jacfn(t: float, u: np.ndarray, du: np.ndarray, JJ: np.ndarray) -> None:
                JJ[:, :] = jac(t, u)

            options.update(linsolver="dense", jacfn=jacfn)
        else:
            options.update(linsolver="band", lband=d - 1, uband=d - 1)
        out = cvode.CVODE(rhsfn, **options).solve(list(tspan), x0.double().numpy().reshape(-1))
        code = "Success" if out.success else f"Failure: {out.message}"
        return torch.from_numpy(np.array(out.y[-1]).reshape(n, d)), code, calls[0]

    return solve
