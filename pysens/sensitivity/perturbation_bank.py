"""The score derivatives δs_p of P directions at once (digest eq. ★), with one mixture evaluation for all their parts.

A sensitivity solve needs, at every stage, δs_p(x) for each of its P directions. Every direction is a signed
combination Σ_k c_pk η_k (:class:`~pysens.sensitivity.measures.SignedMeasure`), and a data edit's parts are
empirical measures (a few point masses each). Evaluated direction by direction, each part costs one small
closed-form mixture evaluation of ~20 tensor operations on ``[B, K, d]`` temporaries, so on CPU the per-operation
dispatch cost, not the arithmetic, sets the price of an extra perturbation.

:class:`PerturbationBank` gathers the distinct probability-measure parts of all P directions once. Parts whose
noised law the batched kernel knows (point masses, or isotropic components such as a bandwidth-smoothed edit; the
default ``log_density_and_score`` and ``score_derivative`` of :class:`GaussianMixtureMeasure`) are grouped, their
components padded with zero weights (log w = −inf) to a common count, and each group is evaluated by **one**
pass over ``[M, B, K, d]`` with the formulas of :func:`~pysens.diffusion.mixtures.noised_mixture_log_density_and_score`:

    logit_mbk = log w_mk − |x_b − α m_mk|²/(2 v_mbk) (+ log-normaliser),   log σ_m(x_b) = logsumexp_k logit_mbk,
    ∇log σ_m(x_b) = −Σ_k softmax_k(logit_mb·)_k (x_b − α m_mk)/v_mbk,

then r_m = exp(log σ_m − ℓ) and term_m = r_m (∇log σ_m − s) (eq. ★), and δs_p = Σ_k c_pk term_k in each
direction's own term order (so a term that overflows stays within its direction). Padded components get p = 0
exactly and add exact zeros. Parts the kernel does not know (diagonal or full covariances, other subclasses,
transport directions such as :class:`GaussianMeanShift`) are evaluated by their own methods, as before. The values
equal the direction-by-direction ones to round-off (the same operations; only the reductions run over a padded,
batched layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pysens.diffusion.processes import ForwardProcess, Time, can_inspect_values, time_like
from pysens.sensitivity.measures import (
    GaussianMixtureMeasure,
    ModelMeasure,
    Perturbation,
    ProbabilityMeasure,
)

__all__ = ["PerturbationBank"]

# padded groups may hold at most this many component slots per real component (unequal sizes are split)
_MAX_PADDING = 1.5
# live [M, B, K, d] temporaries per group, to size groups under the memory budget (as the mixture kernel does)
_TEMPORARIES = 4
# default budget for those temporaries. Small on purpose: freshly mapped multi-megabyte buffers cost a page fault per
# 4 KiB on every call (glibc hands them back to the system), which made 8 float64 parts at B = 64, K = 10, d = 64 in
# one 2.6 MB pass slower than eight separate small passes; slices of parts under ~1 MiB per temporary avoid it.
BANK_CHUNK_BYTES = 4 * 2**20


def _batchable(part: Perturbation) -> bool:
    """A part whose δs the batched kernel reproduces: a point-mass or isotropic mixture using the stock methods."""
    return (
        isinstance(part, GaussianMixtureMeasure)
        and type(part).log_density_and_score is GaussianMixtureMeasure.log_density_and_score
        and type(part).score_derivative is ProbabilityMeasure.score_derivative
        and part.covariance.kind in ("point", "isotropic")
    )


@dataclass
class _Group:
    """Parts evaluated by one batched pass: padded means ``[M, K, d]``, log weights ``[M, K]`` (−inf pads) and, for
    isotropic parts, component variances ``[M, K]`` (1 in the pads); ``slots`` are the parts' bank indices."""

    kind: str
    slots: list[int]
    means: Tensor
    log_weights: Tensor
    variances: Tensor | None
    cast: dict


def _build_group(kind: str, slots: list[int], parts: list[GaussianMixtureMeasure]) -> _Group:
    K = max(p.num_components for p in parts)
    d = parts[0].means.shape[1]
    ref = parts[0].means
    means = ref.new_zeros(len(parts), K, d)
    log_weights = torch.full((len(parts), K), -math.inf, dtype=ref.dtype, device=ref.device)
    variances = None if kind == "point" else ref.new_ones(len(parts), K)
    for i, p in enumerate(parts):
        n = p.num_components
        means[i, :n] = p.means.to(ref)
        log_weights[i, :n] = p.log_weights.to(ref)
        if variances is not None:
            variances[i, :n] = p.covariance.variances.to(ref)
    return _Group(kind, slots, means, log_weights, variances, {})


class PerturbationBank:
    """δs_p ``[P, B, *event]`` for a fixed list of P directions, their shared parts evaluated together.

    Args:
        perturbations: the P directions (any :class:`Perturbation`; combinations are read through ``terms()``).
        max_chunk_bytes: memory budget for one group's ``[M, B, K, d]`` temporaries at a given batch size; a group
            that would exceed it is evaluated in slices of parts.
    """

    def __init__(self, perturbations: list[Perturbation], *, max_chunk_bytes: int = BANK_CHUNK_BYTES) -> None:
        self.perturbations = list(perturbations)
        self.max_chunk_bytes = max_chunk_bytes
        self.parts: list[Perturbation] = []  # distinct non-model parts, by identity
        index: dict[int, int] = {}
        # per direction: [(coefficient, bank index)], in the direction's own term order
        self.combinations: list[list[tuple[float, int]]] = []
        for p in self.perturbations:
            combo = []
            for c, part in p.terms():
                if c == 0.0 or isinstance(part, ModelMeasure):  # the ρ part is identically zero (as SignedMeasure)
                    continue
                if id(part) not in index:
                    index[id(part)] = len(self.parts)
                    self.parts.append(part)
                combo.append((c, index[id(part)]))
            self.combinations.append(combo)
        self.single = [i for i, part in enumerate(self.parts) if not _batchable(part)]
        self.groups: list[_Group] = []
        batchable = [i for i, part in enumerate(self.parts) if _batchable(part)]
        for kind in ("point", "isotropic"):
            members = sorted(
                (i for i in batchable if self.parts[i].covariance.kind == kind),
                key=lambda i: (self.parts[i].means.shape[1], self.parts[i].num_components),
            )
            current: list[int] = []
            for i in members:
                trial = [*current, i]
                sizes = [self.parts[j].num_components for j in trial]
                same_d = len({self.parts[j].means.shape[1] for j in trial}) == 1
                dtypes = {(self.parts[j].means.dtype, self.parts[j].means.device) for j in trial}
                if current and (not same_d or len(dtypes) > 1 or max(sizes) * len(sizes) > _MAX_PADDING * sum(sizes)):
                    self.groups.append(_build_group(kind, current, [self.parts[j] for j in current]))
                    trial = [i]
                current = trial
            if current:
                self.groups.append(_build_group(kind, current, [self.parts[j] for j in current]))

    def __len__(self) -> int:
        return len(self.perturbations)

    def _group_terms(
        self, group: _Group, flat: Tensor, alpha: Tensor, beta2: Tensor, log_density: Tensor, score: Tensor
    ) -> Tensor:
        """term_m = r_m (∇log σ_m − s) ``[M, B, d]`` for the group's parts at ``flat`` ``[B, d]``."""
        key = (flat.dtype, flat.device)
        if key not in group.cast:
            to = {"dtype": flat.dtype, "device": flat.device}
            group.cast[key] = (
                group.means.to(**to),
                group.log_weights.to(**to),
                None if group.variances is None else group.variances.to(**to),
            )
        means, log_weights, variances = group.cast[key]
        B, d = flat.shape
        M, K = log_weights.shape
        per_part = _TEMPORARIES * B * K * d * flat.element_size()
        step = max(1, min(M, self.max_chunk_bytes // max(per_part, 1)))
        out = []
        for start in range(0, M, step):
            m, lw = means[start : start + step], log_weights[start : start + step]
            # x − α m ``[Mc, B, K, d]`` in one pass; the squared distances and the weighted gradient read it once each
            diff = torch.addcmul(flat[None, :, None, :], alpha[None, :, None, None], m[:, None, :, :], value=-1.0)
            sq = torch.linalg.vecdot(diff, diff)  # |x − α m|² [Mc, B, K]
            if variances is None:
                var = beta2[None, :, None]  # [1, B, 1]; normaliser added after the softmax
                logits = lw[:, None, :] - 0.5 * sq / var
            else:
                var = (alpha**2)[None, :, None] * variances[start : start + step, None, :] + beta2[None, :, None]
                logits = lw[:, None, :] - 0.5 * sq / var - 0.5 * d * torch.log(2.0 * math.pi * var)
            top = logits.detach().max(dim=2).values  # [Mc, B]; every part has a component of positive weight
            p = torch.exp(logits - top[:, :, None])
            total = p.sum(dim=2)
            grad = -torch.matmul((p / var)[:, :, None, :], diff)[:, :, 0, :]  # Σ_k p_k (−(x − α m_k)/v_k)
            log_sigma = top + torch.log(total)
            if variances is None:
                log_sigma = log_sigma - 0.5 * d * torch.log(2.0 * math.pi * beta2)[None, :]
            score_sigma = grad / total[:, :, None]
            ratio = torch.exp(log_sigma - log_density[None, :])
            out.append(ratio[:, :, None] * (score_sigma - score[None]))
        return torch.cat(out) if len(out) > 1 else out[0]

    def score_derivatives(
        self, x: Tensor, t: Time, process: ForwardProcess, log_density: Tensor, score: Tensor
    ) -> Tensor:
        """δs_p(x) ``[P, B, *event]`` given the model's ``score`` s ``[B, *event]`` and ``log_density`` ℓ ``[B]``
        (the inputs of each direction's :meth:`~pysens.sensitivity.measures.Perturbation.score_derivative`)."""
        terms: list[Tensor | None] = [None] * len(self.parts)
        if self.groups:
            tt = time_like(t, x)
            B = x.shape[0]
            alpha = process.scale(tt).expand(B)
            beta2 = process.sigma(tt).expand(B) ** 2
            points = any(g.kind == "point" for g in self.groups)
            if points and can_inspect_values(beta2) and not bool((beta2 > 0).all()):
                raise ValueError(  # as the mixture kernel: a point mass has no noised density at β_t = 0
                    "beta (β_t) must be positive: some component has zero variance, so its noised density is a point "
                    "mass at β_t = 0 (use t >= process.t_eps)"
                )
            flat, flat_score = x.reshape(B, -1), score.reshape(B, -1)
            for group in self.groups:
                for slot, term in zip(
                    group.slots, self._group_terms(group, flat, alpha, beta2, log_density, flat_score), strict=True
                ):
                    terms[slot] = term.reshape(x.shape)
        for i in self.single:
            part = self.parts[i]
            terms[i] = part.score_derivative(x, t, process, log_density, score)
        out = []
        for combo in self.combinations:
            total = torch.zeros_like(score)
            for c, i in combo:
                total = total + c * terms[i]
            out.append(total)
        if not out:
            return score.new_zeros(0, *score.shape)
        return torch.stack(out)
