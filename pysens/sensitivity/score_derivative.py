"""The directional derivative of the score map ρ ↦ s_t[ρ] (digest §2.1, eq. ★; Algorithm A, §4.1).

For a direction η of the data law (a probability measure σ, or σ − ρ, or any signed combination),

    δs_t(x) = d/dε|₀ ∇log(ρ_t + εη_t)(x) = ∇(η_t/ρ_t)(x) = exp(log σ_t(x) − log ρ_t(x)) · (∇log σ_t(x) − s_t(x)),

where σ_t comes in closed form from the perturbation (:mod:`pysens.sensitivity.measures`) and ρ_t is the model's
own density: given, or computed by the probability-flow change of variables (:func:`pysens.log_likelihood`, exact
or Hutchinson divergence) from x at t to T. Only the score and its Jacobian traces are needed, never a Hessian.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pysens.diffusion.likelihood import LikelihoodResult, log_likelihood
from pysens.diffusion.processes import ForwardProcess, Time, as_time, resolve_process, time_like
from pysens.diffusion.sampling import ScoreModel, check_score_model
from pysens.sensitivity.measures import DataEdit, Perturbation, as_perturbations
from pysens.sensitivity.reference import REFERENCES, DataLaw, ReferenceDiagnostics, resolve_reference
from pysens.sensitivity.tangents import DIVERGENCES, check_differentiable
from pysens.solvers.problem import check_state

__all__ = ["ScoreDerivativeResult", "score_derivative"]

LogDensity = Tensor | Callable[[Tensor, Time], Tensor]


@dataclass
class ScoreDerivativeResult:
    """``derivative`` δs ``[P, B, *event]`` (one row per perturbation), the model's ``score`` s_t(x)
    ``[B, *event]``, the ``log_density`` log ρ_t(x) ``[B]`` the ratio used (the model's, or the training set's
    under ``reference="data"``/``"data-ratio"``), the likelihood solves that produced the model's (``likelihoods``,
    empty when it was given or not needed), and ``diagnostics`` (model-vs-data log-ratio when both are known)."""

    derivative: Tensor
    score: Tensor
    log_density: Tensor
    likelihoods: list[LikelihoodResult]
    diagnostics: ReferenceDiagnostics | None = None

    @property
    def retcode(self) -> str:
        bad = [r.retcode for r in self.likelihoods if r.retcode != "Success"]
        return bad[0] if bad else "Success"


def score_derivative(
    score: ScoreModel,
    process: ForwardProcess | str,
    x: Tensor,
    t: Time,
    perturbations: Perturbation | DataEdit | Sequence[Perturbation | DataEdit],
    log_density: LogDensity | None = None,
    *,
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    terminal_log_density: Callable[[Tensor], Tensor] | None = None,
    method: str = "Tsit5",
    backend: str = "torch",
    rtol: float = 1e-6,
    atol: float = 1e-6,
    chunk_size: int | None = None,
    reference: str = "model",
    data: Tensor | DataLaw | None = None,
) -> ScoreDerivativeResult:
    """δs_t(x) = exp(log σ_t − log ρ_t)(∇log σ_t − s_t) for each perturbation (digest eq. ★, Algorithm A).

    Args:
        score, process: the model s_t and its forward process.
        x: ``[B, *event]`` query points.
        t: float, 0-d or ``[B]`` times in (0, T].
        perturbations: one direction or a sequence of P (:mod:`pysens.sensitivity.measures`).
        log_density: log ρ_t(x): a ``[B]`` tensor, or a callable ``log_density(x, t) -> [B]`` (e.g. an exact model's
            ``log_density``). When None it is the model's probability-flow log-likelihood from t to T
            (``divergence`` "exact" or "hutchinson" with ``n_probes`` probes of kind ``probe`` drawn from
            ``generator``; ``terminal_log_density`` defaults to the prior; ``method``, ``backend``, ``rtol``,
            ``atol``, ``chunk_size`` go to the solve). An error c in log ρ_t scales δs by e^{−c} (digest §3.3).
        reference, data: which law (★) reads its ratio and score from, and the training set ``[N, *event]`` (or a
            :class:`~pysens.sensitivity.reference.DataLaw`); see :mod:`pysens.sensitivity.reference`. When the
            ratio comes from the data and ``log_density`` is None, no likelihood is solved.

    Returns:
        :class:`ScoreDerivativeResult` with ``derivative`` ``[P, B, *event]``.

    Float32: the ratio is formed in log space, so it never overflows spuriously; the difference ∇log σ_t − s_t
    loses digits like eps·|x|/β_t² at small t.
    """
    process = resolve_process(process)
    check_state(x, "x")
    check_score_model(score, x, "x")
    process.check_time(t, "t")
    t = time_like(t, x, "t")
    if not bool((t > 0).all()):
        raise ValueError("t must be positive: the noised densities of point masses do not exist at t = 0")
    items = as_perturbations(perturbations, x)
    resolved = resolve_reference(reference, data, process, x.shape[1:])
    ratio_from, score_from = REFERENCES[resolved.name]
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}; got {divergence!r}")

    s = score(x, t)
    likelihoods: list[LikelihoodResult] = []
    ell: Tensor | None = None
    if log_density is None and ratio_from == "data":
        pass  # the ratio comes from the training set's law: the model's density is not needed
    elif log_density is None:
        check_differentiable(score, x, t, "score")  # the likelihood's divergence needs JVPs
        ell, likelihoods = _flow_log_density(
            score,
            process,
            x,
            t,
            divergence=divergence,
            n_probes=n_probes,
            probe=probe,
            generator=generator,
            terminal_log_density=terminal_log_density,
            method=method,
            backend=backend,
            rtol=rtol,
            atol=atol,
            chunk_size=chunk_size,
        )
    elif callable(log_density):
        ell = log_density(x, t)
    else:
        ell = torch.as_tensor(log_density, dtype=x.dtype, device=x.device)
    if ell is not None and ell.shape != (x.shape[0],):
        raise ValueError(f"log_density must give one value per sample, shape [{x.shape[0]}]; got {tuple(ell.shape)}")
    diagnostics = ReferenceDiagnostics(resolved.name)
    ratio_ell, difference_score = ell, s
    if resolved.data is not None:
        data_ell, data_score = resolved.data.log_density_and_score(x, t)
        if ell is not None:
            diagnostics.log_ratio = (ell - data_ell).detach()
        ratio_ell = data_ell if ratio_from == "data" else ell
        difference_score = data_score if score_from == "data" else s
    derivative = torch.stack([p.score_derivative(x, t, process, ratio_ell, difference_score) for p in items])
    return ScoreDerivativeResult(
        derivative=derivative, score=s, log_density=ratio_ell, likelihoods=likelihoods, diagnostics=diagnostics
    )


def _flow_log_density(score, process, x, t, **options) -> tuple[Tensor, list[LikelihoodResult]]:
    """log ρ_t(x) by the PF-ODE change of variables; per-sample times are solved one distinct time at a time
    (a likelihood solve starts every sample at the same t0)."""
    times = t.expand(x.shape[0]) if t.dim() == 0 else t
    ell = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    results = []
    for value in torch.unique(times):
        rows = times == value
        t0 = float(as_time(value))
        if t0 >= process.T:
            # at T the flow has nothing to integrate: the density is the terminal one
            terminal = options["terminal_log_density"] or process.prior_log_density
            ell[rows] = terminal(x[rows])
            continue
        res = log_likelihood(score, process, x[rows], t0=t0, **options)
        ell[rows] = res.log_density
        results.append(res)
    return ell, results
