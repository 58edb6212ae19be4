"""Faithful re-implementations of the likelihood pipelines users would otherwise run, with THEIR divergence code.

Written here from the projects' designs (anchors_solvers.md §4; neither project is a pip-installable likelihood
library), labelled by the project they follow. Both integrate the probability-flow ODE of a VP/VE process on the
augmented state (x, Δ) from t0 to T, dx/dt = f(t) x − ½ g(t)² s(x, t), dΔ/dt = ∇·(dx/dt), and return
log p_T(x_T) + Δ(T):

* :func:`kdiffusion_log_likelihood` (k-diffusion's ``sampling.log_likelihood``): ``torchdiffeq.odeint`` dopri5 on the
  tuple state (x, Δ), one step size for the batch, the right-hand side evaluated under ``torch.enable_grad`` on a
  detached ``x.requires_grad_()``. Divergence: ``"hutchinson"`` is k-diffusion's own (one reverse pass of
  ``(d · v).sum()``, a Rademacher v drawn per solve); ``"exact"`` is FFJORD's ``divergence_bf`` (the brute-force
  exact trace k-diffusion users reach for): a Python loop of d ``torch.autograd.grad(dx[:, i].sum(), x,
  create_graph=True)`` calls on one recorded graph.
* :func:`score_sde_log_likelihood` (score_sde_pytorch's ``likelihood.get_likelihood_fn``): the batch and Δ
  flattened into one float64 numpy vector, ``scipy.integrate.solve_ivp(method="RK45")``, numpy → torch → numpy
  every call, the drift from one score call and the divergence from a second (``get_div_fn`` recomputes the
  drift under grad). Divergence: ``"hutchinson"`` is score_sde's (``autograd.grad(sum(fn(x) * eps), x)``);
  ``"exact"`` replaces it by the same brute-force loop inside that second call.

torchdiffeq steps past its last output time and interpolates back; scores are undefined beyond [0, T], so the
k-diffusion path clips the crossing step onto T (``step_t``), changing only that step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pysens.diffusion.processes import ForwardProcess, expand_as_batch

PEER_DIVERGENCES = ("exact", "hutchinson")
# (t [B], x [B, *event]) -> (dx/dt, dΔ/dt [B]): an augmented field to drive a peer's integrator with in place of its
# own drift and divergence (the matched-RHS comparison of :mod:`pysens.bench.diffusion_likelihood`)
AugmentedField = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class PeerLikelihood:
    """log p_{t0}(x) ``[B]`` from a peer path, its right-hand-side calls and a pysens-style retcode."""

    log_density: Tensor
    nf: int
    retcode: str = "Success"


def divergence_bf(dx: Tensor, y: Tensor) -> Tensor:
    """FFJORD's brute-force exact trace (``lib/layers/odefunc.py``): one ``autograd.grad`` per dimension, with
    ``create_graph=True`` as there."""
    sum_diag = 0.0
    flat = dx.reshape(dx.shape[0], -1)
    for i in range(flat.shape[1]):
        grad = torch.autograd.grad(flat[:, i].sum(), y, create_graph=True)[0]
        sum_diag = sum_diag + grad.contiguous().reshape(y.shape[0], -1)[:, i].contiguous()
    return sum_diag


def _drift(score, process: ForwardProcess, x: Tensor, t: Tensor) -> Tensor:
    """f(t) x − ½ g(t)² s(x, t) for per-sample ``t`` ``[B]``."""
    f, g2 = process.drift_coef(t).to(x.dtype), process.g2(t).to(x.dtype)
    return expand_as_batch(f, x) * x - 0.5 * expand_as_batch(g2, x) * score(x, t)


def _check_divergence(divergence: str, probes: Tensor | None) -> None:
    if divergence not in PEER_DIVERGENCES:
        raise ValueError(f"divergence must be one of {PEER_DIVERGENCES}, got {divergence!r}")
    if divergence == "hutchinson" and probes is None:
        raise ValueError("divergence='hutchinson' needs probes shaped like x (the peers draw one per solve)")


def kdiffusion_log_likelihood(
    score,
    process: ForwardProcess,
    x: Tensor,
    *,
    t0: float,
    rtol: float,
    atol: float,
    divergence: str = "exact",
    probes: Tensor | None = None,
    terminal_log_density: Callable[[Tensor], Tensor] | None = None,
    field: AugmentedField | None = None,
) -> PeerLikelihood:
    """k-diffusion's likelihood path (see the module docstring); ``probes`` ``[B, *event]`` is its v. With ``field``
    (see :data:`AugmentedField`) the same integrator drives that field instead of its own drift and divergence."""
    from torchdiffeq import odeint

    if field is None:
        _check_divergence(divergence, probes)
    B = x.shape[0]
    fevals = 0

    def ode_fn(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nonlocal fevals
        if field is not None:
            fevals += 1
            with torch.no_grad():
                return field(t.expand(B), state[0])
        with torch.enable_grad():
            xx = state[0].detach().requires_grad_()
            d = _drift(score, process, xx, t.expand(B))
            fevals += 1
            if divergence == "exact":
                d_ll = divergence_bf(d, xx)
            else:
                grad = torch.autograd.grad((d * probes).sum(), xx)[0]
                d_ll = (probes * grad).flatten(1).sum(1)
        return d.detach(), d_ll.detach()

    ts = torch.tensor([t0, process.T], dtype=x.dtype, device=x.device)
    xs, deltas = odeint(ode_fn, (x, x.new_zeros(B)), ts, rtol=rtol, atol=atol, method="dopri5", options={"step_t": ts})
    latent = xs[-1]
    log_pT = (terminal_log_density or process.prior_log_density)(latent)
    return PeerLikelihood(log_pT + deltas[-1], fevals)


def score_sde_log_likelihood(
    score,
    process: ForwardProcess,
    x: Tensor,
    *,
    t0: float,
    rtol: float,
    atol: float,
    divergence: str = "exact",
    probes: Tensor | None = None,
    terminal_log_density: Callable[[Tensor], Tensor] | None = None,
    field: AugmentedField | None = None,
) -> PeerLikelihood:
    """score_sde's likelihood path (see the module docstring); ``probes`` ``[B, *event]`` is its epsilon. With
    ``field`` (see :data:`AugmentedField`) the same round trip drives that field (one call per right-hand side)."""
    from scipy.integrate import solve_ivp

    if field is None:
        _check_divergence(divergence, probes)
    B, shape, dtype, device = x.shape[0], x.shape, x.dtype, x.device

    def drift_fn(sample: Tensor, vec_t: Tensor) -> Tensor:
        return _drift(score, process, sample, vec_t)

    def div_fn(sample: Tensor, vec_t: Tensor) -> Tensor:
        with torch.enable_grad():
            sample.requires_grad_(True)
            if divergence == "exact":
                div = divergence_bf(drift_fn(sample, vec_t), sample)
            else:
                fn_eps = torch.sum(drift_fn(sample, vec_t) * probes)
                grad_fn_eps = torch.autograd.grad(fn_eps, sample)[0]
                div = torch.sum(grad_fn_eps * probes, dim=tuple(range(1, len(sample.shape))))
        sample.requires_grad_(False)
        return div.detach()

    def ode_func(t: float, y: np.ndarray) -> np.ndarray:
        sample = torch.from_numpy(y[:-B]).reshape(shape).to(device=device, dtype=dtype)
        vec_t = torch.ones(B, dtype=dtype, device=device) * t
        if field is not None:
            with torch.no_grad():
                dx, ddelta = field(vec_t, sample)
            return torch.cat([dx.reshape(-1), ddelta]).to(torch.float64).cpu().numpy()
        with torch.no_grad():
            drift = drift_fn(sample, vec_t).detach().cpu().numpy().reshape(-1)
        logp_grad = div_fn(sample, vec_t).cpu().numpy().reshape(-1)
        return np.concatenate([drift, logp_grad], axis=0)

    init = np.concatenate([x.detach().cpu().numpy().reshape(-1), np.zeros(B)], axis=0)
    sol = solve_ivp(ode_func, (t0, process.T), init, rtol=rtol, atol=atol, method="RK45")
    zp = torch.from_numpy(sol.y[:, -1].copy()).to(device=device, dtype=dtype)
    latent = zp[:-B].reshape(shape)
    log_pT = (terminal_log_density or process.prior_log_density)(latent)
    retcode = "Success" if sol.success else f"Failure: {sol.message}"
    return PeerLikelihood(log_pT + zp[-B:], int(sol.nfev), retcode)
