"""Which law eq. (★) is evaluated against: the model's own, the training set's, or one of each.

The score derivative δs_t(x) = exp(log σ_t(x) − log ρ_t(x)) · (∇log σ_t(x) − s_t(x)) (digest §2.1, eq. ★) is the
derivative of the *ideal* score map ρ ↦ ∇log ρ_t at the law ρ. Two readings of ρ_t and s_t are possible:

============== ======================== =========================== ===========================================
``reference``  ratio σ_t/ρ_t from        score difference from       valid when
============== ======================== =========================== ===========================================
``"model"``    the model's ℓ = log ρ_t   ∇log σ_t − s_θ              the model is its data's noised law along the
               (change of variables)                                 path (paper-faithful; the default)
``"data"``     the training set's        ∇log σ_t − ∇log ρ^data_t     the model's *change* under the edit follows
               noised law ρ^data_t                                   the ideal map's change at the data (a good
                                                                     fit), even where ρ_θ ≠ ρ^data
``"data-ratio"`` ρ^data_t                ∇log σ_t − s_θ              the model's score is accurate but its
                                                                     density (ℓ along the path) is not
``"data-score"`` the model's ℓ           ∇log σ_t − ∇log ρ^data_t     the density is accurate but the score error
                                                                     exceeds the score change (large t)
============== ======================== =========================== ===========================================

In every reading the *network* drives the path (x, J_s·y, the final denoiser): only the two inputs of (★) switch.
"model" is exact when s_θ is the data law's score (a memorising or smoothed model: then "model" and "data"
coincide). A trained network's ℓ can exceed log ρ^data_t by tens of nats along its paths, which scales (★) by
e^{−gap}; :class:`ReferenceDiagnostics` reports that gap per sample so a reader sees when "model" is off.

:class:`DataLaw` is the training set's noised law ρ^data_t = Σ_i w_i N(α_t y_i, (α_t² h² + β_t²) I) (point masses when
the bandwidth h is None) in closed form: log-density, score, Jacobian-vector products and divergence, by one
streaming (chunked) logsumexp over the N points, so any N fits in memory. It is itself a score model (callable
``(x, t)``, ``log_density``), and :func:`~pysens.sensitivity.tangents.score_jets` uses its closed-form JVP instead
of autograd through the mixture. With v = α² h² + β², μ_i = α y_i and π_i(x) = softmax_i(log w_i − |x − μ_i|²/2v):

    ∇log ρ = (μ̄ − x)/v,   J u = −u/v + (Σ_i π_i μ_i (μ_i·u) − μ̄ (μ̄·u))/v²,   ∇·s = −d/v + (Σ_i π_i |μ_i|² − |μ̄|²)/v²

with μ̄ = Σ_i π_i μ_i. All of it runs in float64 (inputs are cast; outputs take the input dtype). Squared distances
use |x|² − 2 x·μ + |μ|², whose rounding error u (|x|² + |μ|²) / 2v nats is below 1e-9 for images in [−1, 1]^d with
d ≤ 784 at v ≥ 1e-4 (VP at t ≥ 1e-3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pysens.diffusion.processes import ForwardProcess, Time, resolve_process, time_like
from pysens.sensitivity.tangents import ScoreJets

__all__ = ["REFERENCES", "DataLaw", "Reference", "ReferenceDiagnostics", "reference_diagnostics", "resolve_reference"]

# reference name -> (source of the ratio's log-density, source of the score difference)
REFERENCES = {
    "model": ("model", "model"),
    "data": ("data", "data"),
    "data-ratio": ("data", "model"),
    "data-score": ("model", "data"),
}

# [P, B, K_chunk] float64 temporaries are kept under this many bytes
_CHUNK_BYTES = 64 * 2**20


@dataclass
class _Moments:
    log_density: Tensor  # [B]
    mean: Tensor  # μ̄ / α = Σ π_i y_i, [B, d]
    second_along: Tensor | None  # Σ π_i y_i (y_i·u_p), [P, B, d]
    second_trace: Tensor | None  # Σ π_i |y_i|², [B]


class DataLaw:
    """The noised law of a training set, ρ^data_t = Σ_i w_i N(α_t y_i, (α_t² h² + β_t²) I), in closed form.

    Args:
        points: ``[N, *event_shape]`` training points y_i (N ≥ 1, finite).
        process: the forward process (α_t = ``scale``, β_t = ``sigma``) or its name.
        bandwidth: None (point masses, the empirical law) or h > 0 (each point smoothed to N(y_i, h² I)).
        weights: ``[N]`` non-negative with a positive sum (normalised); uniform when None.
        chunk_bytes: memory budget of the ``[P, B, N_chunk]`` temporaries of one pass.

    Callable as a score model ``law(x, t) -> [B, *event]``; ``log_density(x, t) -> [B]``; ``closed_form_jets``
    gives the score, JVPs and divergence together (module docstring).
    """

    def __init__(
        self,
        points: Tensor,
        process: ForwardProcess | str = "VP",
        *,
        bandwidth: float | None = None,
        weights: Tensor | None = None,
        chunk_bytes: int = _CHUNK_BYTES,
    ) -> None:
        points = torch.as_tensor(points)
        if points.dim() < 2 or points.shape[0] == 0:
            raise ValueError(f"points must be a non-empty [N, *event_shape] tensor; got shape {tuple(points.shape)}")
        if not bool(torch.isfinite(points.double()).all()):
            raise ValueError("points must be finite")
        if bandwidth is not None and not (
            isinstance(bandwidth, (int, float))
            and not isinstance(bandwidth, bool)
            and math.isfinite(bandwidth)
            and bandwidth > 0
        ):
            raise ValueError(f"bandwidth must be a positive number or None; got {bandwidth!r}")
        if not (isinstance(chunk_bytes, int) and chunk_bytes > 0):
            raise ValueError(f"chunk_bytes must be a positive integer; got {chunk_bytes!r}")
        self.process = resolve_process(process)
        self.event_shape = torch.Size(points.shape[1:])
        N = points.shape[0]
        self.points = points.reshape(N, -1).to(torch.float64).detach().clone()
        if weights is None:
            self.log_weights = torch.full((N,), -math.log(N), dtype=torch.float64, device=points.device)
        else:
            w = torch.as_tensor(weights, dtype=torch.float64, device=points.device)
            if w.shape != (N,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
                raise ValueError(f"weights must be [N] = [{N}], finite, non-negative, with a positive sum")
            self.log_weights = torch.log(w / w.sum())
        self.squared_norms = (self.points**2).sum(1)  # |y_i|², [N]
        self.bandwidth = None if bandwidth is None else float(bandwidth)
        self.chunk_bytes = chunk_bytes
        self._coverage_radius: float | None = None

    @property
    def num_points(self) -> int:
        return self.points.shape[0]

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    def __repr__(self) -> str:
        h = "" if self.bandwidth is None else f", bandwidth={self.bandwidth:g}"
        return f"DataLaw(N={self.num_points}, event_shape={tuple(self.event_shape)}{h})"

    # -- the kernel ------------------------------------------------------------------------------------------
    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() < 2 or math.prod(x.shape[1:]) != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be [B, *event] with d = {self.dim} (the data's); got {shape}")

    def _variance(self, t: Tensor, B: int) -> tuple[Tensor, Tensor]:
        alpha = self.process.scale(t).to(torch.float64).expand(B)
        beta2 = self.process.sigma(t).to(torch.float64).expand(B) ** 2
        h2 = 0.0 if self.bandwidth is None else self.bandwidth**2
        var = alpha**2 * h2 + beta2
        return alpha, var

    def _moments(self, x: Tensor, alpha: Tensor, var: Tensor, tangents: Tensor | None, trace: bool) -> _Moments:
        """One streaming pass over the points: logsumexp of the logits and the π-weighted moments."""
        B, d = x.shape
        Y, sq, log_w = self.points.to(x.device), self.squared_norms.to(x.device), self.log_weights.to(x.device)
        P = 0 if tangents is None else tangents.shape[0]
        chunk = max(1, min(self.num_points, self.chunk_bytes // (8 * B * (P + 4))))
        x2 = (x**2).sum(1)
        run_max = torch.full((B,), -math.inf, dtype=torch.float64, device=x.device)
        total = x.new_zeros(B)
        first = x.new_zeros(B, d)
        along = x.new_zeros(P, B, d) if P else None
        second = x.new_zeros(B) if trace else None
        for start in range(0, self.num_points, chunk):
            y, y2 = Y[start : start + chunk], sq[start : start + chunk]
            dist2 = (x2[:, None] - 2 * alpha[:, None] * (x @ y.T) + alpha[:, None] ** 2 * y2).clamp_min(0.0)
            logits = log_w[start : start + chunk] - 0.5 * dist2 / var[:, None]  # [B, Kc]
            new_max = torch.maximum(run_max, logits.max(1).values)
            rescale = torch.exp(run_max - new_max)
            p = torch.exp(logits - new_max[:, None])
            total = total * rescale + p.sum(1)
            first = first * rescale[:, None] + p @ y
            if P:
                proj = torch.einsum("pbd,kd->pbk", tangents, y)  # y_i·u_p
                along = along * rescale[None, :, None] + torch.einsum("pbk,kd->pbd", proj * p, y)
            if trace:
                second = second * rescale + p @ y2
            run_max = new_max
        log_density = run_max + torch.log(total) - 0.5 * d * torch.log(2 * math.pi * var)
        return _Moments(
            log_density,
            first / total[:, None],
            None if along is None else along / total[None, :, None],
            None if second is None else second / total,
        )

    def closed_form_jets(
        self,
        x: Tensor,
        t: Time,
        tangents: Tensor | None = None,
        *,
        divergence: str | None = None,
        probes: Tensor | None = None,
    ) -> ScoreJets:
        """Score ``[B, *event]``, J·tangents ``[P, B, *event]`` and the divergence ``[B]`` in closed form
        (module docstring); ``divergence`` "exact" is the closed-form trace, "hutchinson" the mean of
        zᵀJz over ``probes`` ``[K, B, *event]`` (exact products, as autograd would give)."""
        self._check(x)
        B = x.shape[0]
        t = time_like(t, x)
        flat = x.reshape(B, -1).to(torch.float64)
        alpha, var = self._variance(t, B)
        stack = []
        if tangents is not None:
            stack.append(tangents.reshape(tangents.shape[0], B, -1).to(torch.float64))
        if divergence == "hutchinson":
            if probes is None:
                raise ValueError("divergence='hutchinson' needs probes [K, B, *event]")
            stack.append(probes.reshape(probes.shape[0], B, -1).to(torch.float64))
        elif divergence not in (None, "exact"):
            raise ValueError(f"divergence must be None, 'exact' or 'hutchinson'; got {divergence!r}")
        u = torch.cat(stack) if stack else None
        m = self._moments(flat, alpha, var, u, trace=divergence == "exact")
        mean = alpha[:, None] * m.mean  # μ̄, [B, d]
        score = (mean - flat) / var[:, None]
        products = None
        if u is not None:
            a2, v2 = (alpha**2)[None, :, None], (var**2)[None, :, None]
            cov_u = a2 * m.second_along - mean[None] * (mean[None] * u).sum(2, keepdim=True)
            products = -u / var[None, :, None] + cov_u / v2
        div = None
        if divergence == "exact":
            d = flat.shape[1]
            div = -d / var + (alpha**2 * m.second_trace - (mean**2).sum(1)) / var**2
        elif divergence == "hutchinson":
            n_probe = probes.shape[0]
            div = (products[-n_probe:] * u[-n_probe:]).sum(2).mean(0)
        P = 0 if tangents is None else tangents.shape[0]
        out_products = None if tangents is None else products[:P].reshape(tangents.shape).to(x.dtype)
        return ScoreJets(score.reshape(x.shape).to(x.dtype), out_products, None if div is None else div.to(x.dtype))

    def log_density_and_score(self, x: Tensor, t: Time) -> tuple[Tensor, Tensor]:
        """log ρ^data_t(x) ``[B]`` and its score ``[B, *event]``."""
        self._check(x)
        B = x.shape[0]
        t = time_like(t, x)
        flat = x.reshape(B, -1).to(torch.float64)
        alpha, var = self._variance(t, B)
        m = self._moments(flat, alpha, var, None, trace=False)
        score = (alpha[:, None] * m.mean - flat) / var[:, None]
        return m.log_density.to(x.dtype), score.reshape(x.shape).to(x.dtype)

    def log_density(self, x: Tensor, t: Time) -> Tensor:
        """log ρ^data_t(x), ``[B]``."""
        return self.log_density_and_score(x, t)[0]

    def __call__(self, x: Tensor, t: Time) -> Tensor:
        """The score ∇log ρ^data_t(x), ``[B, *event]``."""
        return self.log_density_and_score(x, t)[1]

    @property
    def coverage_radius(self) -> float:
        """The largest distance from a training point to its nearest other training point (leave-one-out), computed
        once, in chunks of rows: a sample farther than this from every training point is farther from the data
        than any training image is from the rest (0 for a single point)."""
        if self._coverage_radius is None:
            N = self.num_points
            radius = 0.0
            rows = max(1, self.chunk_bytes // (8 * N))
            for start in range(0, N, rows):
                block = torch.cdist(self.points[start : start + rows], self.points)
                idx = torch.arange(start, min(start + rows, N), device=block.device)
                block[idx - start, idx] = math.inf
                if N > 1:
                    radius = max(radius, float(block.min(1).values.max()))
            self._coverage_radius = radius
        return self._coverage_radius

    def nearest_distance(self, x: Tensor) -> Tensor:
        """Euclidean distance of each row of ``x`` ``[B, *event]`` to its nearest training point, ``[B]``."""
        self._check(x)
        return torch.cdist(x.reshape(x.shape[0], -1).to(torch.float64), self.points.to(x.device)).min(1).values


@dataclass(frozen=True)
class Reference:
    """A resolved ``reference`` reading (module table) with its training-set law (None for "model" without data)."""

    name: str
    data: DataLaw | None

    def inputs(self, x: Tensor, t: Tensor, log_density: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
        """The log-density and score that (★) uses, given the model's ``log_density`` ``[B]`` and ``score``."""
        ratio_from, score_from = REFERENCES[self.name]
        if ratio_from == "model" and score_from == "model":
            return log_density, score
        data_ell, data_score = self.data.log_density_and_score(x, t)
        return (
            data_ell if ratio_from == "data" else log_density,
            data_score if score_from == "data" else score,
        )


def resolve_reference(
    reference: str, data: Tensor | DataLaw | None, process: ForwardProcess, event_shape: torch.Size
) -> Reference:
    """Check ``reference`` (a key of :data:`REFERENCES`) and ``data`` (the training points ``[N, *event]`` or a
    :class:`DataLaw`; required unless ``reference="model"``) and build the :class:`Reference`.

    Raises ``ValueError``/``TypeError`` naming the argument."""
    if not isinstance(reference, str) or reference not in REFERENCES:
        raise ValueError(f"reference must be one of {tuple(REFERENCES)}; got {reference!r}")
    law = None
    if data is not None:
        if isinstance(data, DataLaw):
            law = data
        elif isinstance(data, Tensor):
            law = DataLaw(data, process)
        else:
            raise TypeError(f"data must be the training points [N, *event] or a DataLaw; got {type(data).__name__}")
        if law.dim != math.prod(event_shape):
            raise ValueError(
                f"data: training points of dimension {law.dim} do not fit states of event shape {tuple(event_shape)}"
            )
    elif reference != "model":
        raise ValueError(f"reference={reference!r} needs the training set: pass data=[N, *event] points or a DataLaw")
    return Reference(reference, law)


@dataclass
class ReferenceDiagnostics:
    """Per-sample evidence of how far the model is from its training set's law, in every sensitivity result.

    Attributes:
        reference: the ``reference`` reading (★) was evaluated with.
        log_ratio: ``[B]`` ℓ_θ − log ρ^data_{t1} at the samples x_{t1} before any final denoising (nats; positive:
            the model puts more mass there than its data's noised law), or None without ``data``.
        nearest_distance: ``[B]`` distance of each returned sample to its nearest training point, or None.
        off_range: ``[B]`` bool, a returned sample is farther from every training point than ``radius`` (the model
            sampled where its data never were), or None.
        radius: the training set's coverage radius (:attr:`DataLaw.coverage_radius`), or None.
    """

    reference: str
    log_ratio: Tensor | None = None
    nearest_distance: Tensor | None = None
    off_range: Tensor | None = None
    radius: float | None = None

    def as_dict(self) -> dict:
        def listed(v: Tensor | None):
            return None if v is None else v.tolist()

        return {
            "reference": self.reference,
            "log_ratio": listed(self.log_ratio),
            "nearest_distance": listed(self.nearest_distance),
            "off_range": listed(self.off_range),
            "radius": self.radius,
        }


def reference_diagnostics(
    reference: Reference, x_t1: Tensor, ell_t1: Tensor, t1: float, x_out: Tensor
) -> ReferenceDiagnostics:
    """The :class:`ReferenceDiagnostics` of samples ``x_t1`` ``[B, *event]`` at ``t1`` with model log-density
    ``ell_t1`` ``[B]`` and returned samples ``x_out`` (``x_t1`` or its denoised version)."""
    law = reference.data
    if law is None:
        return ReferenceDiagnostics(reference.name)
    with torch.no_grad():
        log_ratio = ell_t1.detach() - law.log_density(x_t1.detach(), t1).to(ell_t1.dtype)
        nearest = law.nearest_distance(x_out.detach())
        radius = law.coverage_radius
        return ReferenceDiagnostics(reference.name, log_ratio, nearest, nearest > radius, radius)
