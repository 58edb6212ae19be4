"""DSM training of a potential network with the Fokker–Planck residual as a regulariser (seed001 §4).

    loss(θ) = L_DSM(θ) + w_R · mean_{(x, t) ∈ collocation} R[φ_θ](x, t)²

* DSM as the authors (``diffusion_utils.denoising_loss``): x_t = α_t x0 + β_t ε, target the kernel score
  −ε/β_t, weighting λ(t) = 1, the squared error averaged over batch **and** coordinates; t = T·Beta(1, 2) + ε
  (``t_sampling="beta12"``, more weight at small t) or t ~ U[ε, T] (``"uniform"``).
* Residual points: fresh each step, t ~ U[ε, T] and x ~ U[−box, box]^d (``collocation="box"``, the authors'; or
  with t log-stratified and weighted, ``residual_t="stratified"``, an unbiased lower-variance estimate of the same
  mean) or at the DSM's perturbed data x_t (``"perturbed"``, FP-Diffusion's choice, the one that scales to images).
* Adam with a piecewise-constant schedule given as (lr, fraction of steps) phases — the authors' is
  ((1e-3, 0.25), (1e-4, 0.65), (1e-5, 0.10)) of 100k steps — with a fresh Adam state per phase, as they did.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pysens.artifacts import atomic_write
from pysens.diffusion.processes import expand_as_batch, process_from_config
from pysens.fokker_planck.potential import PotentialScoreNet
from pysens.fokker_planck.residual import log_fp_residual
from pysens.validation import check_batch, check_choice, check_int, check_number, read_torch_payload

__all__ = [
    "AUTHORS_LR_SCHEDULE",
    "FPTrainResult",
    "authors_dsm_loss",
    "load_potential_checkpoint",
    "save_potential_checkpoint",
    "train_fp_regularised",
]

AUTHORS_LR_SCHEDULE: tuple[tuple[float, float], ...] = ((1e-3, 0.25), (1e-4, 0.65), (1e-5, 0.10))
DataSource = Tensor | Callable[[int, torch.Generator], Tensor]
POTENTIAL_CHECKPOINT_FORMAT = "pysens-potential-network"


def authors_dsm_loss(net: PotentialScoreNet, x0: Tensor, t: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """mean over batch and coordinates of (∇φ_θ(x_t, t) + ε/β_t)², with x_t = α_t x0 + β_t ε (seed001 §4).

    ``x0``, ``noise`` ``[B, d]``, ``t`` ``[B]``. Returns ``(loss, x_t, t)`` so the residual can reuse the points.
    """
    process = net.process
    alpha = expand_as_batch(process.scale(t), x0)
    beta = expand_as_batch(process.sigma(t), x0)
    x_t = alpha * x0 + beta * noise
    loss = (net(x_t, t) + noise / beta).pow(2).mean()
    return loss, x_t, t


@dataclass
class FPTrainResult:
    """Per-step ``dsm`` and ``residual`` (mean R² on that step's points; NaN on steps where it was not evaluated)
    losses ``[steps]`` (float64, CPU), the weight ``w_residual``, ``steps``, ``wall_time`` (s) and ``seed``."""

    dsm: Tensor
    residual: Tensor
    w_residual: float
    steps: int
    wall_time: float
    seed: int

    def as_dict(self) -> dict:
        tail = max(1, self.steps // 10)
        res = self.residual[-tail:]
        res = res[torch.isfinite(res)]
        return {
            "w_residual": self.w_residual,
            "steps": self.steps,
            "wall_time": self.wall_time,
            "seed": self.seed,
            "final_dsm": float(self.dsm[-tail:].mean()),
            "final_residual": float(res.mean()) if res.numel() else None,
        }


def save_potential_checkpoint(
    net: PotentialScoreNet, path: str | os.PathLike, extra: dict[str, Any] | None = None
) -> None:
    """Write ``net`` (config, CPU state dict, dtype, ``extra``) to ``path`` atomically (an interrupted save leaves the
    previous file)."""
    floating = [p for p in net.state_dict().values() if p.is_floating_point()]
    payload = {
        "format": POTENTIAL_CHECKPOINT_FORMAT,
        "config": net.config(),
        "dtype": str(floating[0].dtype).removeprefix("torch."),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "extra": dict(extra or {}),
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_potential_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = None
) -> PotentialScoreNet:
    """Rebuild a network written by :func:`save_potential_checkpoint`; ``ValueError`` for a foreign file."""
    payload = read_torch_payload(
        path, "potential-network checkpoint", POTENTIAL_CHECKPOINT_FORMAT, ("config", "state_dict", "dtype")
    )
    try:
        config = dict(payload["config"])
        config["process"] = process_from_config(config["process"])
        net = PotentialScoreNet(**config).to(getattr(torch, payload["dtype"]))
        net.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError) as err:
        raise ValueError(f"{path}: the saved config or weights do not rebuild a PotentialScoreNet: {err}") from err
    return net if map_location is None else net.to(map_location)


def _phase_lrs(schedule: Sequence[tuple[float, float]], steps: int) -> list[tuple[int, float]]:
    """(first step, lr) per phase; fractions are normalised and rounded so the phases cover every step."""
    total = sum(frac for _, frac in schedule)
    if not schedule or total <= 0 or any(lr <= 0 or frac < 0 for lr, frac in schedule):
        raise ValueError(f"lr_schedule must be (lr > 0, fraction >= 0) phases with a positive total; got {schedule}")
    starts, acc = [], 0.0
    for lr, frac in schedule:
        starts.append((round(acc / total * steps), lr))
        acc += frac
    return starts


def train_fp_regularised(
    net: PotentialScoreNet,
    data: DataSource,
    *,
    w_residual: float,
    steps: int = 2000,
    dsm_batch: int = 4096,
    residual_batch: int = 2048,
    lr_schedule: Sequence[tuple[float, float]] = AUTHORS_LR_SCHEDULE,
    t_sampling: str = "beta12",
    t_eps: float = 1e-5,
    collocation: str = "box",
    residual_t: str = "uniform",
    box: float = 3.5,
    laplacian: str = "exact",
    n_probes: int = 1,
    seed: int = 0,
    progress: bool = True,
    log_residual_every: int = 10,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
) -> FPTrainResult:
    """Fit ``net`` by DSM + ``w_residual`` · mean R² (seed001 §4); runs on the parameters' device and dtype.

    ``data``: a tensor ``[N, d]`` (batches drawn with replacement) or a sampler ``data(n, generator)`` (fresh
    samples each step, as the authors). ``laplacian``/``n_probes`` choose the residual's Laplacian (Hutchinson for
    large d). ``residual_t`` (box collocation): "uniform" t ~ U[ε, T] as the authors, or "stratified": one point per
    log-spaced time stratum weighted by its width, the same expectation with much less variance. With
    ``w_residual = 0`` the residual is only evaluated, without a graph, every ``log_residual_every`` steps (0: never)
    for the log. Checkpoints (atomic) every ``checkpoint_every`` steps and at the end. Deterministic given ``seed``.
    """
    t_sampling = check_choice(t_sampling, "t_sampling", ("beta12", "uniform"))
    collocation = check_choice(collocation, "collocation", ("box", "perturbed"))
    residual_t = check_choice(residual_t, "residual_t", ("uniform", "stratified"))
    steps, dsm_batch = check_int(steps, "steps"), check_int(dsm_batch, "dsm_batch")
    residual_batch, n_probes = check_int(residual_batch, "residual_batch"), check_int(n_probes, "n_probes")
    seed = check_int(seed, "seed", minimum=0)
    log_residual_every = check_int(log_residual_every, "log_residual_every", minimum=0)
    w_residual = check_number(w_residual, "w_residual", nonnegative=True)
    t_eps, box = check_number(t_eps, "t_eps", positive=True), check_number(box, "box", positive=True)
    if not t_eps < net.process.T:
        raise ValueError(f"t_eps must lie in (0, T) = (0, {net.process.T:g}); got {t_eps}")
    if checkpoint_every is not None:
        if check_int(checkpoint_every, "checkpoint_every") and checkpoint_path is None:
            raise ValueError(f"checkpoint_every={checkpoint_every} needs checkpoint_path")
    if isinstance(data, Tensor):
        check_batch(data, "data", min_dim=2)
    elif not callable(data):
        raise TypeError(f"data must be a tensor [N, d] or a sampler data(n, generator); got {type(data).__name__}")
    process = net.process
    param = next(net.parameters())
    device, dtype = param.device, param.dtype
    generator = torch.Generator(device=device).manual_seed(seed)
    data_generator = generator if callable(data) else torch.Generator(device=data.device).manual_seed(seed + 1)
    if isinstance(data, Tensor) and (data.dim() != 2 or data.shape[1] != net.dim or data.shape[0] == 0):
        raise ValueError(f"data must be a non-empty [N, {net.dim}] tensor; got {tuple(data.shape)}")
    phases = _phase_lrs(lr_schedule, steps)

    def draw_data(n: int) -> Tensor:
        if callable(data):
            return data(n, data_generator).to(device=device, dtype=dtype)
        index = torch.randint(data.shape[0], (n,), generator=data_generator, device=data.device)
        return data[index].to(device=device, dtype=dtype)

    def draw_times(n: int) -> Tensor:
        if t_sampling == "beta12":
            # T·Beta(1, 2) + ε by inversion of the Beta(1, 2) cdf 1 − (1 − b)², so the draw uses our generator
            u = torch.rand(n, generator=generator, device=device, dtype=dtype)
            return process.T * (1.0 - torch.sqrt(1.0 - u)) + t_eps
        return t_eps + (process.T - t_eps) * torch.rand(n, generator=generator, device=device, dtype=dtype)

    span = process.T - t_eps
    if residual_t == "stratified":
        # one point per log-spaced time stratum, weighted by the stratum's width: an unbiased estimate of the same
        # E_{t ~ U}[R²] with far less variance, since R² concentrates at small t (seed001 §5.3)
        edges = torch.logspace(math.log10(t_eps), math.log10(process.T), residual_batch + 1, dtype=torch.float64)
        edges[0], edges[-1] = t_eps, process.T
        lower = edges[:-1].to(device=device, dtype=dtype)
        widths = (edges[1:] - edges[:-1]).to(device=device, dtype=dtype)
        point_weights = widths / span

    def residual_points(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        if collocation == "perturbed":
            return x_t[:residual_batch].detach(), t[:residual_batch], None
        x = (2.0 * torch.rand(residual_batch, net.dim, generator=generator, device=device, dtype=dtype) - 1.0) * box
        u = torch.rand(residual_batch, generator=generator, device=device, dtype=dtype)
        if residual_t == "stratified":
            return x, lower + widths * u, point_weights
        return x, t_eps + span * u, None

    def mean_r2(x: Tensor, t: Tensor, weights: Tensor | None) -> Tensor:
        r = log_fp_residual(net.potential, process, x, t, laplacian=laplacian, n_probes=n_probes, generator=generator)
        return (r * r).mean() if weights is None else (weights * r * r).sum()

    dsm_log = torch.zeros(steps, dtype=torch.float64)
    res_log = torch.full((steps,), math.nan, dtype=torch.float64)

    def save(step: int) -> None:
        save_potential_checkpoint(
            net,
            checkpoint_path,
            extra={
                "step": step,
                "w_residual": w_residual,
                "seed": seed,
                "dsm": dsm_log[:step],
                "residual": res_log[:step],
            },
        )

    start = time.perf_counter()
    optimizer: torch.optim.Optimizer | None = None
    phase_starts = dict(phases)
    bar = tqdm(range(steps), disable=not progress, desc=f"DSM + {w_residual:g}·R²", leave=False)
    for step in bar:
        if step in phase_starts:
            # a fresh Adam per phase, as the authors' loop re-creates its optimiser at each learning rate
            optimizer = torch.optim.Adam(net.parameters(), lr=phase_starts[step])
        assert optimizer is not None
        x0 = draw_data(dsm_batch)
        t = draw_times(dsm_batch)
        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)
        dsm, x_t, t = authors_dsm_loss(net, x0, t, noise)
        loss = dsm
        if w_residual > 0:
            r2 = mean_r2(*residual_points(x_t, t))
            loss = loss + w_residual * r2
            res_log[step] = float(r2.detach())
        elif log_residual_every and step % log_residual_every == 0:
            with torch.no_grad():
                res_log[step] = float(mean_r2(*residual_points(x_t, t)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        dsm_log[step] = float(dsm.detach())
        if progress and step % 50 == 0:
            bar.set_postfix(dsm=f"{dsm_log[max(0, step - 49) : step + 1].mean():.4g}", r2=f"{res_log[step]:.3g}")
        if checkpoint_every is not None and (step + 1) % checkpoint_every == 0:
            save(step + 1)
    bar.close()
    if checkpoint_path is not None:
        save(steps)
    return FPTrainResult(
        dsm=dsm_log,
        residual=res_log,
        w_residual=float(w_residual),
        steps=steps,
        wall_time=time.perf_counter() - start,
        seed=seed,
    )
