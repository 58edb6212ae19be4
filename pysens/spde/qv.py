"""Realized quadratic variation of ensemble projections ⟨u, φ⟩, streamed step by step (SIEM-A's engine).

Digest seed002 §5.2. With particles X^i_k (i = 1..N) at steps k = 0..K and φ^i_k = φ(X^i_k), the ensemble projection
Φ̄_k = (1/N) Σ_i φ^i_k ≈ ⟨u_{τ_k}, φ⟩ and

    raw QV       = Σ_k (Φ̄_{k+1} − Φ̄_k)²,
    corrected QV = Σ_k [(Φ̄_{k+1} − Φ̄_k)² − (1/N) Var̂_i(Δφ^i_k)],

where the subtracted term removes, in expectation, the contribution of the particles' *independent* noise (O(1/N)
per step); what remains is the common-mode QV (the score-error noise) plus the drift² term Σ(drift·Δτ)², O(Δτ).
``detrend="cubic"`` removes a cubic fit of Φ̄ over the window before squaring, which suppresses the drift² term.

Memory is O(R·N) for the previous φ values plus O(K·R) for the per-step terms: never N × d × K.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DETRENDS", "EnsembleQV", "realized_qv"]

DETRENDS = (None, "cubic")


def realized_qv(series: Tensor, dim: int = 0) -> Tensor:
    """Σ_k (x_{k+1} − x_k)² along ``dim`` (a plain realized QV of a sampled path)."""
    return torch.diff(series, dim=dim).pow(2).sum(dim)


class EnsembleQV:
    """Streaming realized QV of Φ̄ for R independent ensembles (rows) of N particles.

    Call :meth:`update` with φ values ``[R, N]`` (or ``[N]`` for one ensemble) at every step k = 0..K; then
    :meth:`value` over any window of increments. Per-step tensors are kept on the device of the φ values.
    """

    def __init__(self) -> None:
        self._prev: Tensor | None = None
        self._means: list[Tensor] = []
        self._noise: list[Tensor] = []
        self.n_particles = 0

    def update(self, phi: Tensor) -> None:
        phi = phi.detach()
        if phi.dim() == 1:
            phi = phi[None]
        if self._prev is not None:
            if phi.shape != self._prev.shape:
                raise ValueError(f"phi changed shape between steps: {tuple(self._prev.shape)} -> {tuple(phi.shape)}")
            delta = phi - self._prev
            n = phi.shape[1]
            # the unbiased variance of the increments over particles, divided by N: Var of their mean
            self._noise.append(delta.var(dim=1, unbiased=True) / n if n > 1 else torch.zeros_like(delta[:, 0]))
        self._prev = phi
        self.n_particles = phi.shape[1]
        self._means.append(phi.mean(1))

    @property
    def steps(self) -> int:
        """Number of increments recorded (K)."""
        return len(self._noise)

    def series(self) -> Tensor:
        """Φ̄_k, ``[K+1, R]`` (on the device of the φ values)."""
        return torch.stack(self._means)

    def particle_noise(self) -> Tensor:
        """(1/N) Var̂_i(Δφ^i_k) per increment, ``[K, R]``."""
        return torch.stack(self._noise)

    def increments(self) -> Tensor:
        """(Φ̄_{k+1} − Φ̄_k)² per increment, ``[K, R]``."""
        return torch.diff(self.series(), dim=0).pow(2)

    def value(
        self, positions: range | list[int] | None = None, correct: bool = True, detrend: str | None = None
    ) -> Tensor:
        """The realized QV over the increments at ``positions`` (default all), ``[R]``.

        Increment k joins steps k and k+1, so a window of reverse steps 0..m−1 uses states 0..m.
        """
        if detrend not in DETRENDS:
            raise ValueError(f"detrend must be one of {DETRENDS}, got {detrend!r}")
        if self.steps == 0:
            raise ValueError("no increments recorded: update() needs at least two steps")
        idx = list(range(self.steps)) if positions is None else list(positions)
        if not idx or min(idx) < 0 or max(idx) >= self.steps:
            raise ValueError(
                f"window positions {idx[:1]}…{idx[-1:]} lie outside the {self.steps} recorded increments of the "
                "trajectory"
            )
        series = self.series()
        if detrend == "cubic":
            states = sorted(set(idx) | {k + 1 for k in idx})
            y = series[states]  # [S, R]
            s = torch.as_tensor(states, dtype=y.dtype, device=y.device)
            s = (s - s.mean()) / s.std().clamp_min(1.0)
            basis = torch.stack([s**p for p in range(min(4, len(states)))], dim=1)
            coef = torch.linalg.lstsq(basis, y).solution
            resid = torch.zeros_like(series)
            resid[states] = y - basis @ coef
            series = resid
        idx_t = torch.as_tensor(idx, device=series.device)
        sq = (series[idx_t + 1] - series[idx_t]).pow(2).sum(0)
        if correct:
            sq = sq - self.particle_noise()[idx_t].sum(0)
        return sq
