"""Backends: each solves the same problem objects and returns the same Solution.

A backend module provides ``NAME``, ``available() -> (bool, reason)`` (never raises, cached) and
``solve(problem, method_info, options) -> Solution``. Backends are imported only when used, so a
missing optional dependency (Julia) never affects the others.
"""

from __future__ import annotations

import importlib

BACKENDS = {
    "torch": "pysens.solvers.backends.torch_backend",
    "scipy": "pysens.solvers.backends.scipy_backend",
    "julia": "pysens.solvers.backends.julia_backend",
}


class BackendNotAvailable(RuntimeError):
    """The chosen backend is not installed or cannot start here."""


def canonical_backend(name: str) -> str:
    """``name`` as spelt in :data:`BACKENDS`; case does not matter (``"SciPy"`` is ``"scipy"``), as for methods."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name (str), one of {', '.join(BACKENDS)}; got {type(name).__name__}")
    key = name.strip().lower()
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")
    return key


def get_backend(name: str):
    """The backend module for ``name``, or a clear error naming what exists / why it cannot run."""
    name = canonical_backend(name)
    module = importlib.import_module(BACKENDS[name])
    ok, reason = module.available()
    if not ok:
        raise BackendNotAvailable(f"backend {name!r} is not available: {reason}")
    return module


def backend_status() -> dict[str, tuple[bool, str]]:
    """``{name: (available, reason)}`` for every backend."""
    return {name: importlib.import_module(path).available() for name, path in BACKENDS.items()}
