"""Solutions and solver statistics, as every backend returns them.

``Solution.x`` is time-major: ``x[i]`` is the batched state ``[B, *event_shape]`` at ``t[i]``. Rows
a failed sample never reached are NaN (the partial solution); ``retcode`` says why it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

SUCCESS = "Success"
MAX_ITERS = "MaxIters"
DT_LESS_THAN_MIN = "DtLessThanMin"
UNSTABLE = "Unstable"
CONVERGENCE_FAILURE = "ConvergenceFailure"
FAILURE = "Failure"
RETCODES = (SUCCESS, MAX_ITERS, DT_LESS_THAN_MIN, UNSTABLE, CONVERGENCE_FAILURE, FAILURE)


@dataclass
class Stats:
    """Work counters, named as SciML's ``sol.stats``.

    ``nf`` counts right-hand-side calls (each call evaluates the whole batch); ``naccept``/``nreject``
    count step attempts of the solver loop, summed over the batch. ``None`` means the backend does not
    report that counter (scipy hides its rejected steps). Backends that step each sample on its own clock also fill
    ``sample_naccept``/``sample_nreject`` (``[B]`` tensors).

    ``tolerance_model``, ``rtol_internal``, ``atol_internal``: the tolerance model :func:`pysens.solve` ran under and
    the per-step tolerances it handed the backend (see :mod:`pysens.solvers.tolerance`); ``None`` when not solved
    through ``solve``.
    """

    nf: int = 0
    njvp: int | None = 0
    njac: int | None = 0
    nlinsolve: int | None = 0
    nfactor: int | None = 0
    nkrylov: int | None = 0
    naccept: int | None = 0
    nreject: int | None = 0
    wall_time: float = 0.0
    sample_naccept: Tensor | None = None
    sample_nreject: Tensor | None = None
    tolerance_model: str | None = None
    rtol_internal: float | None = None
    atol_internal: float | Tensor | None = None

    def as_dict(self) -> dict:
        out = {
            k: getattr(self, k)
            for k in ("nf", "njvp", "njac", "nlinsolve", "nfactor", "nkrylov", "naccept", "nreject", "wall_time")
        }
        for k in ("sample_naccept", "sample_nreject"):
            v = getattr(self, k)
            out[k] = None if v is None else v.tolist()
        out["tolerance_model"], out["rtol_internal"] = self.tolerance_model, self.rtol_internal
        atol = self.atol_internal
        out["atol_internal"] = atol.tolist() if isinstance(atol, Tensor) else atol
        return out


@dataclass
class Solution:
    """What :func:`pysens.solve` returns.

    Attributes:
        t: ``[n]`` save times (caller's dtype and device).
        x: ``[n, B, *event_shape]`` states at ``t``.
        retcode: ``"Success"`` or the first failure among the samples.
        stats: work counters.
        method, backend: what solved it.
        sample_retcodes: per-sample return codes (``[B]`` list of strings).
        t_final: ``[B]`` time each sample reached (the end of ``tspan`` on success).
        message: free text from the backend.
    """

    t: Tensor
    x: Tensor
    retcode: str
    stats: Stats
    method: str
    backend: str
    sample_retcodes: list[str] | None = None
    t_final: Tensor | None = None
    message: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.retcode == SUCCESS

    @property
    def final(self) -> Tensor:
        """The state at the last save time, ``[B, *event_shape]``."""
        return self.x[-1]


class SolvedResult:
    """Mixin for result dataclasses that carry the :class:`Solution` they came from as ``solution``."""

    solution: Solution

    @property
    def stats(self) -> Stats:
        return self.solution.stats

    @property
    def retcode(self) -> str:
        return self.solution.retcode
