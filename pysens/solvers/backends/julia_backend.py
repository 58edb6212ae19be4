"""The julia backend: DifferentialEquations.jl through juliacall (optional).

Only the availability probe lives here so far; the solver entry points arrive with the Julia package
under ``julia/``. The probe follows the pitfalls recorded in the project's research notes:

* ``import juliacall`` starts Julia at import time and raises a bare ``Exception`` (not ImportError)
  when no Julia is found, so the import is lazy, inside :func:`available`, and catches ``Exception``.
* Without offline mode juliapkg tries to download Julia; the probe sets ``PYTHON_JULIAPKG_OFFLINE=yes``
  unless the user opted into installation with ``PYSENS_JULIA_INSTALL=1``, so it answers fast.
* The answer is cached for the process.
"""

from __future__ import annotations

import importlib.util
import os

NAME = "julia"

INSTALL_HINT = (
    'install Julia (>= 1.10, e.g. with juliaup) so that `julia` is on PATH, then `pip install "pysens[julia]"`; '
    "set PYSENS_JULIA_INSTALL=1 to let juliapkg download Julia and the packages on first use"
)

_status: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """``(True, version)`` when Julia starts through juliacall, else ``(False, why)``; never raises."""
    global _status
    if _status is not None:
        return _status
    if importlib.util.find_spec("juliacall") is None:
        _status = (False, f"Julia is not installed: the juliacall package is missing; {INSTALL_HINT}")
        return _status
    if os.environ.get("PYSENS_JULIA_INSTALL", "") != "1":
        os.environ.setdefault("PYTHON_JULIAPKG_OFFLINE", "yes")
    os.environ.setdefault("PYTHON_JULIACALL_HANDLE_SIGNALS", "yes")
    os.environ.setdefault("PYTHON_JULIACALL_THREADS", "1")
    try:
        import juliacall  # noqa: F401  (starts Julia)

        version = str(juliacall.Main.seval("string(VERSION)"))
    except Exception as exc:  # juliacall raises a bare Exception when Julia is missing
        _status = (False, f"Julia is not installed or did not start ({exc}); {INSTALL_HINT}")
        return _status
    _status = (True, f"Julia {version}")
    return _status


def solve(problem, method, opts):
    from ..methods import MethodNotAvailable

    raise MethodNotAvailable(
        f"the julia backend's solver entry points (julia/PySensSolvers) are not part of this release; "
        f"method {method.name!r} runs on: {', '.join(method.backends)}"
    )
