"""Denoising score matching (Vincent 2011; Song et al. 2021) for any score model with a ``process``.

With x_t = α_t x_0 + β_t ε, ε ~ N(0, I), the conditional score is −ε/β_t, and the λ(t) = β_t² weighted loss is

    L(θ) = E_{t, x_0, ε} ‖β_t s_θ(x_t, t) + ε‖²,      t ~ U[t_min, T]  (or log-uniform),

whose minimiser is the true score of the noised data law. Norms are summed over the event axes and averaged
over the batch. For the networks in networks.py, β_t s_θ = −ε̂_θ, so this is the usual ε-prediction loss.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pysens.diffusion.networks import SCORE_NETWORKS, save_checkpoint
from pysens.diffusion.processes import ForwardProcess, expand_as_batch
from pysens.validation import check_batch, check_choice, check_dtype, check_int, check_number, checked_score

__all__ = ["T_SAMPLING", "LR_SCHEDULES", "TrainResult", "dsm_loss", "train"]

T_SAMPLING = ("uniform", "log_uniform")
LR_SCHEDULES = ("cosine", "step", "constant")


@dataclass
class TrainResult:
    """What ``train`` did: per-step ``losses`` ``[steps]`` (float64, CPU), ``steps``, ``wall_time`` (s), ``seed``."""

    losses: Tensor
    steps: int
    wall_time: float
    seed: int


def dsm_loss(model: nn.Module, process: ForwardProcess, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Mean over the batch of ‖β_t s_θ(α_t x0 + β_t ε, t) + ε‖² (event axes summed); ``t`` is ``[B]``."""
    alpha = expand_as_batch(process.scale(t), x0)
    beta = expand_as_batch(process.sigma(t), x0)
    x_t = alpha * x0 + beta * noise
    residual = beta * model(x_t, t) + noise
    return residual.pow(2).reshape(x0.shape[0], -1).sum(dim=1).mean()


def train(
    model: nn.Module,
    data: Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    t_sampling: str = "uniform",
    t_min: float | None = None,
    progress: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    ema_decay: float | None = None,
    lr_schedule: str = "cosine",
    grad_clip: float = 1.0,
) -> TrainResult:
    """Fit ``model`` (any score model with a ``process`` attribute) to ``data`` ``[N, *event_shape]``.

    Training runs on the device and dtype of the model's parameters; ``data`` may live anywhere (batches are
    moved). Adam with learning rate ``lr`` decayed by ``lr_schedule`` ("cosine" to 0, "step": ×0.1 at 50% and
    75% of the steps, or "constant"), gradient-norm clipping at ``grad_clip``. Times t ~ U[t_min, T] for
    ``t_sampling="uniform"`` or log t ~ U[log t_min, log T] for "log_uniform" (EDM-like processes);
    ``t_min`` defaults to ``process.t_eps``. Batches are drawn with replacement.

    Deterministic given ``seed``: batch indices use a ``torch.Generator`` on the data's device, times and noise
    one on the model's device (the model's initial weights are the caller's).

    With ``ema_decay`` an exponential moving average of the weights is kept and copied into the model at the
    end (and into every checkpoint). Its decay at step k is min(ema_decay, (1 + k)/(10 + k)) (the usual warm-up):
    with a fixed 0.999 the initial weights keep a share 0.999^k, 13.5% after 2000 steps, and a UNet trained so for
    the retraining study sampled off the data's range (pixels to ±14 for data in [−1, 1]).

    With ``checkpoint_path`` the model is saved (atomically) every ``checkpoint_every`` steps and at the end, with
    ``extra={"step", "losses", "seed"}``.
    """
    process: ForwardProcess | None = getattr(model, "process", None)
    if not isinstance(process, ForwardProcess):
        raise TypeError("model must have a `process` attribute (a ForwardProcess) to be trained by DSM")
    t_sampling = check_choice(t_sampling, "t_sampling", T_SAMPLING)
    lr_schedule = check_choice(lr_schedule, "lr_schedule", LR_SCHEDULES)
    steps, batch_size = check_int(steps, "steps"), check_int(batch_size, "batch_size")
    seed = check_int(seed, "seed", minimum=0)
    lr = check_number(lr, "lr", positive=True)
    grad_clip = check_number(grad_clip, "grad_clip", positive=True, finite=False)  # inf: no clipping
    check_batch(data, "data", min_dim=2)
    event_shape = getattr(model, "event_shape", None)
    if event_shape is not None and tuple(data.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"data must be shaped [N, {', '.join(map(str, event_shape))}] for this model (event shape "
            f"{tuple(event_shape)}); got {tuple(data.shape)}"
        )
    if ema_decay is not None:
        ema_decay = check_number(ema_decay, "ema_decay", low=0.0, high=1.0, open_low=True, open_high=True)
    if checkpoint_every is not None:
        checkpoint_every = check_int(checkpoint_every, "checkpoint_every")
        if checkpoint_path is None:
            raise ValueError(f"checkpoint_every={checkpoint_every} needs checkpoint_path")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {type(progress).__name__}")
    if checkpoint_path is not None and type(model).__name__ not in SCORE_NETWORKS:
        # Fail before training, not at the first save.
        raise TypeError(f"only {list(SCORE_NETWORKS)} can be checkpointed; got {type(model).__name__}")
    t_min = process.t_eps if t_min is None else check_number(t_min, "t_min")
    if not 0.0 < t_min < process.T:
        raise ValueError(f"t_min must lie in (0, T) = (0, {process.T:g}); got {t_min}")

    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("model has no trainable parameters")
    device, dtype = parameters[0].device, parameters[0].dtype
    check_dtype(dtype, "model")  # float16/bfloat16 weights: refused, as states are
    if device.type == "meta":
        raise ValueError(
            "model is on the meta device (its weights hold no values); materialise it with model.to_empty()"
        )
    data_generator = torch.Generator(device=data.device).manual_seed(seed)
    noise_generator = torch.Generator(device=device).manual_seed(seed + 1)

    optimizer = torch.optim.Adam(parameters, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(lr_schedule, steps))
    ema = copy.deepcopy(model).requires_grad_(False) if ema_decay is not None else None

    # Losses stay on the training device so a GPU step never waits for a host copy; read back at the end.
    losses = torch.zeros(steps, dtype=torch.float64, device=device)

    def save(step: int) -> None:
        target = ema if ema is not None else model
        extra = {"step": step, "losses": losses[:step].cpu(), "seed": seed}
        save_checkpoint(target, checkpoint_path, extra=extra)

    start = time.perf_counter()
    bar = tqdm(range(steps), disable=not progress, desc="DSM", leave=False)
    for step in bar:
        index = torch.randint(data.shape[0], (batch_size,), generator=data_generator, device=data.device)
        x0 = data[index].to(device=device, dtype=dtype)
        u = torch.rand(batch_size, generator=noise_generator, device=device, dtype=dtype)
        if t_sampling == "uniform":
            t = t_min + (process.T - t_min) * u
        else:
            t = torch.exp(math.log(t_min) + (math.log(process.T) - math.log(t_min)) * u)
        noise = torch.randn(x0.shape, generator=noise_generator, device=device, dtype=dtype)

        # the first step checks that the model returns [B, *event_shape] in the data's dtype and device
        loss = dsm_loss(checked_score(model, "model") if step == 0 else model, process, x0, t, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            with torch.no_grad():
                decay = min(ema_decay, (1.0 + step) / (10.0 + step))  # warm-up: see the docstring
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1.0 - decay)
        losses[step] = loss.detach()
        if progress and (step % 50 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{losses[max(0, step - 49) : step + 1].mean().item():.4g}")
        if checkpoint_path is not None and checkpoint_every is not None and (step + 1) % checkpoint_every == 0:
            save(step + 1)
    bar.close()

    if ema is not None:
        model.load_state_dict(ema.state_dict())
    if checkpoint_path is not None:
        save(steps)
    return TrainResult(losses=losses.cpu(), steps=steps, wall_time=time.perf_counter() - start, seed=seed)


def _lr_factor(schedule: str, steps: int) -> Callable[[int], float]:
    if schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))
    if schedule == "step":
        return lambda step: 0.1 ** ((step >= steps // 2) + (step >= (3 * steps) // 4))
    return lambda step: 1.0
