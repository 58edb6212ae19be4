"""A NON-NUMERICAL stand-in for Julia, for orchestration tests of the julia backend.

``FakeJuliaSession`` records every call the backend makes to ``PySensSolvers`` and answers with a made-up
result of the right shape. It is not a solver: the state it returns at a saved time ``t_k`` is one explicit
"step" from the initial state, ``u0 + (t_k - t_0) f(t_0, u0)`` (plus ``g(t_0, u0) W(t_k)`` for an SDE on a
replayed grid), evaluated through the backend's own callbacks on numpy buffers exactly as Julia would call them.
That makes the answer depend on the callbacks writing in place, on the time mapping and on the grids handed
over, which is what these tests check; it says nothing about DifferentialEquations.jl's numerics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FakeResult:
    """Shaped like the ``NamedTuple`` PySensSolvers returns: ``t [m]``, ``u [N, m]``, ``retcode``, ``stats``."""

    t: np.ndarray
    u: np.ndarray
    retcode: str
    stats: dict


@dataclass
class FakeJuliaSession:
    retcode: str = "Success"
    reach: int | None = None  # return only the first `reach` saved times (a partial solution)
    stats: dict = field(
        default_factory=lambda: {
            "nf": 11,
            "nf2": 0,
            "nw": 3,
            "nsolve": 5,
            "njacs": 2,
            "nnonliniter": 4,
            "nnonlinconvfail": 0,
            "naccept": 7,
            "nreject": 1,
        }
    )
    calls: list = field(default_factory=list)

    def seval(self, code: str) -> Any:
        self.calls.append(("seval", code))
        return None

    def call(self, function: str, *args: Any, **kwargs: Any) -> FakeResult:
        self.calls.append((function, args, kwargs))
        if function in ("solve_ode", "solve_split_ode"):
            fs = args[:2] if function == "solve_split_ode" else args[:1]
            u0, tspan = args[len(fs)], args[len(fs) + 1]
            g, t_grid, w_grid = None, None, None
        else:
            fs = args[:2] if function == "solve_split_sde" else args[:1]
            g = args[len(fs)]
            u0, tspan = args[len(fs) + 1], args[len(fs) + 2]
            t_grid, w_grid = args[len(fs) + 4], args[len(fs) + 5]
        u0 = np.asarray(u0, dtype=np.float64)
        t0 = float(tspan[0])
        drift = np.zeros_like(u0)
        buf = np.empty_like(u0)
        for f in fs:  # Julia calls f(du, u, p, t) with its own buffers; the callbacks fill them in place
            f(buf, u0.copy(), None, t0)
            drift += buf
        noise = np.zeros_like(u0)
        if g is not None:
            g(noise, u0.copy(), None, t0)
        saveat = np.asarray(kwargs["saveat"], dtype=np.float64)
        cols = []
        for tk in saveat:
            col = u0 + (tk - t0) * drift
            if t_grid is not None:
                k = int(np.argmin(np.abs(np.asarray(t_grid) - tk)))
                col = col + noise * np.asarray(w_grid)[k]
            cols.append(col)
        m = len(cols) if self.reach is None else self.reach
        u = np.stack(cols[:m], axis=1) if m else np.zeros((u0.size, 0))
        return FakeResult(t=saveat[:m].copy(), u=u, retcode=self.retcode, stats=dict(self.stats))
