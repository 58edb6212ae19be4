"""Trainable score networks and their checkpoints.

Both networks return the **score**: internally they predict the noise ε̂(x_t, t) ≈ E[ε | X_t = x_t] of the
transition X_t = α_t X_0 + β_t ε and return s = −ε̂ / β_t (adapters.py). The ε-parameterisation keeps the
network output O(1) at every noise level; the division makes the score blow up like 1/β_t near t = 0, as the
true score does, so evaluate at t ≥ process.t_eps (β_0 = 0 gives inf).

Inputs are preconditioned by c_in = 1/sqrt(α_t² + β_t²), the inverse std of x_t for unit-variance data, so VE
and EDM states with β_t up to σ_max reach the network at O(1) size. The noise level enters through sinusoidal
features of c_noise = log β_t, which spreads the many decades of β_t evenly.

``MLPScore.score_and_divergence`` gives the score with its exact divergence from the layer structure in one pass
(:mod:`pysens.diffusion.network_jacobians`); the likelihood's ``divergence_engine="auto"`` uses it.

Checkpoints (``save_checkpoint`` / ``read_checkpoint`` / ``load_checkpoint``) store the class name, the
``config()`` (including the process's config), the state dict, the parameter dtype and a user ``extra`` dict.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pysens.artifacts import atomic_write
from pysens.diffusion.network_jacobians import mlp_score_and_divergence
from pysens.diffusion.processes import (
    ForwardProcess,
    Time,
    expand_as_batch,
    process_from_config,
    resolve_process,
    time_like,
)
from pysens.validation import check_int, read_torch_payload

__all__ = [
    "CHECKPOINT_FORMAT",
    "SCORE_NETWORKS",
    "Checkpoint",
    "ConvScore",
    "MLPScore",
    "NoiseLevelEmbedding",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "pysens-score-network"
CHECKPOINT_VERSION = 1


class NoiseLevelEmbedding(nn.Module):
    """Sinusoidal features [sin(ω_j c), cos(ω_j c)] of a scalar c ``[B]`` → ``[B, dim]``.

    Frequencies ω_j are geometric in [0.1, 10]: over c = log β_t ∈ [−10, 5] the lowest one is close to
    monotone and the highest resolves changes of ~0.1 in log β_t.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if check_int(dim, "embed_dim") < 2 or dim % 2:
            raise ValueError(f"embed_dim (the noise-level embedding size) must be even and >= 2; got {dim}")
        self.dim = dim
        self.register_buffer("frequencies", torch.logspace(-1.0, 1.0, dim // 2))

    def forward(self, c: Tensor) -> Tensor:
        angles = c[:, None] * self.frequencies.to(c.dtype)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class _ScoreNetwork(nn.Module):
    """Shared ε → score plumbing: preconditioning, noise-level features, and the division by −β_t."""

    process: ForwardProcess
    event_shape: torch.Size

    def preconditioning(self, x: Tensor, t: Time) -> tuple[Tensor, Tensor, Tensor]:
        """``(c_in, c_noise, β_t)`` for ``x`` ``[B, *event_shape]`` (checked) and ``t`` float, 0-d or ``[B]``: c_in and
        β_t 0-d or ``[B]`` like ``t``, c_noise = log β_t ``[B]``."""
        if x.dim() != 1 + len(self.event_shape) or x.shape[1:] != self.event_shape:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, self.event_shape))}]; got {tuple(x.shape)}")
        t = time_like(t, x)
        alpha = self.process.scale(t)
        beta = self.process.sigma(t)
        return torch.rsqrt(alpha**2 + beta**2), torch.log(beta).expand(x.shape[0]), beta

    def forward(self, x: Tensor, t: Time) -> Tensor:
        """Score s_θ(x, t) = −ε̂_θ(x, t)/β_t for ``x`` ``[B, *event_shape]``; ``t`` float, 0-d or ``[B]``."""
        c_in, c_noise, beta = self.preconditioning(x, t)
        eps = self.predict_noise(expand_as_batch(c_in, x) * x, c_noise)
        return -eps / expand_as_batch(beta, x)

    def predict_noise(self, x_in: Tensor, c_noise: Tensor) -> Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _ScoreNetwork:
        params = dict(config)
        params["process"] = process_from_config(params["process"])
        return cls(**params)


class MLPScore(_ScoreNetwork):
    """SiLU MLP score network for flat or small-event data.

    Args:
        event_shape: d (int) or the event shape of a state ``[B, *event_shape]``.
        process: a ``ForwardProcess`` or a name in ``PROCESSES``.
        hidden: width of the hidden layers.
        depth: number of hidden layers (≥ 1); the noise-level embedding is added before each activation.
        embed_dim: size of the sinusoidal noise-level features.
        input_skip: add a noise-level-gated copy of the input to the output, ε̂ = MLP(x_in) + g(c_noise)·x_in with
            a scalar gate g per noise level. Without it ε̂ passes through ``hidden`` features, so a width below
            d cannot represent ε̂ ≈ x_t (the optimum at large noise): on 784-d MNIST a width-256 MLP stalls at a
            DSM loss of ~630 of 784. With it the MLP only learns the low-dimensional denoising part.
    """

    def __init__(
        self,
        event_shape: int | Sequence[int],
        process: ForwardProcess | str,
        hidden: int = 128,
        depth: int = 3,
        embed_dim: int = 32,
        input_skip: bool = False,
    ) -> None:
        super().__init__()
        shape = [event_shape] if isinstance(event_shape, int) else event_shape
        if isinstance(shape, str) or not len(shape):
            raise TypeError(f"event_shape must be a positive int or a sequence of them, got {event_shape!r}")
        self.event_shape = torch.Size([check_int(n, "event_shape") for n in shape])
        hidden, depth = check_int(hidden, "hidden"), check_int(depth, "depth")
        embed_dim = check_int(embed_dim, "embed_dim")
        self.process = resolve_process(process)
        self.hidden, self.depth, self.embed_dim = hidden, depth, embed_dim
        d = math.prod(self.event_shape)
        self.embedding = NoiseLevelEmbedding(embed_dim)
        widths = [d] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.noise_projections = nn.ModuleList(nn.Linear(embed_dim, hidden) for _ in range(depth))
        self.output = nn.Linear(hidden, d)
        if not isinstance(input_skip, bool):
            raise TypeError(f"input_skip must be True or False, got {type(input_skip).__name__}")
        self.input_skip = input_skip
        self.skip_gate = nn.Linear(embed_dim, 1) if input_skip else None

    def hidden_layers(self, flat: Tensor, e: Tensor, slopes: list[Tensor] | None = None) -> Tensor:
        """The hidden layers h_k = silu(W_k h_{k−1} + b_k + P_k e) of the flat input ``[B, d]`` with noise-level
        features ``e``: h_depth ``[B, hidden]``. With a list ``slopes``, silu'(a_k) ``[B, hidden]`` of every layer's
        pre-activation is appended to it (the structured divergence's diagonal factors; the same forward pass)."""
        h = flat
        for layer, projection in zip(self.layers, self.noise_projections, strict=True):
            a = layer(h) + projection(e)
            h = F.silu(a)
            if slopes is not None:
                sig = torch.sigmoid(a)
                slopes.append(sig + h * (1 - sig))  # silu'(a) = σ(a)(1 + a(1 − σ(a)))
        return h

    def predict_noise(self, x_in: Tensor, c_noise: Tensor) -> Tensor:
        e = self.embedding(c_noise)
        flat = x_in.reshape(x_in.shape[0], -1)
        out = self.output(self.hidden_layers(flat, e))
        if self.skip_gate is not None:
            out = out + self.skip_gate(e) * flat
        return out.reshape(x_in.shape)

    def score_and_divergence(self, x: Tensor, t: Time) -> tuple[Tensor, Tensor]:
        """The score (shaped like ``x``) and its exact divergence ∇·s ``[B]`` in one structured pass: all d tangent
        columns pushed through the layers at once, one matrix product per hidden layer, the output layer contracted
        straight into the trace (:mod:`pysens.diffusion.network_jacobians`). Equal to the autodiff engines'
        divergence to round-off; differentiable."""
        return mlp_score_and_divergence(self, x, t)

    def config(self) -> dict[str, Any]:
        return {
            "event_shape": list(self.event_shape),
            "process": self.process.config(),
            "hidden": self.hidden,
            "depth": self.depth,
            "embed_dim": self.embed_dim,
            **({"input_skip": True} if self.input_skip else {}),  # absent: checkpoints from before the option
        }


def _groups(channels: int) -> int:
    # GroupNorm needs the group count to divide the channels; 8 groups when possible.
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class _ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, plus the noise embedding, → GroupNorm → SiLU → conv, with a residual path."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.noise_projection = nn.Linear(embed_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        y = self.conv1(F.silu(self.norm1(h))) + self.noise_projection(e)[:, :, None, None]
        y = self.conv2(F.silu(self.norm2(y)))
        return self.skip(h) + y


class ConvScore(_ScoreNetwork):
    """Small two-level UNet score network for images ``[B, C, H, W]`` (H = W = image_size, even).

    Level 1 (full resolution, ``base_channels``) → strided-conv downsampling → level 2 (half resolution,
    2·``base_channels``, two residual blocks) → nearest upsampling → concatenation with the level-1 skip →
    residual block → output conv. Every residual block uses GroupNorm and SiLU and adds the noise-level
    embedding. Works for 8×8 (digits) and 28×28 (MNIST-sized) images.
    """

    def __init__(
        self,
        process: ForwardProcess | str,
        channels: int = 1,
        image_size: int = 8,
        base_channels: int = 32,
    ) -> None:
        super().__init__()
        channels, base_channels = check_int(channels, "channels"), check_int(base_channels, "base_channels")
        if check_int(image_size, "image_size") < 2 or image_size % 2:
            raise ValueError(f"image_size must be even and >= 2 (one 2x downsampling); got {image_size}")
        self.process = resolve_process(process)
        self.channels, self.image_size, self.base_channels = channels, image_size, base_channels
        self.event_shape = torch.Size([channels, image_size, image_size])
        c = base_channels
        embed_dim = 4 * c
        self.embedding = nn.Sequential(
            NoiseLevelEmbedding(c), nn.Linear(c, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )
        self.input = nn.Conv2d(channels, c, 3, padding=1)
        self.level1 = _ResBlock(c, c, embed_dim)
        self.downsample = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.level2 = nn.ModuleList([_ResBlock(c, 2 * c, embed_dim), _ResBlock(2 * c, 2 * c, embed_dim)])
        self.upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * c, c, 3, padding=1))
        self.merge = _ResBlock(2 * c, c, embed_dim)
        self.output_norm = nn.GroupNorm(_groups(c), c)
        self.output = nn.Conv2d(c, channels, 3, padding=1)
        # Start from ε̂ = 0 (score 0), the minimiser for pure-noise inputs, so early training is calm.
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def predict_noise(self, x_in: Tensor, c_noise: Tensor) -> Tensor:
        e = self.embedding(c_noise)
        skip = self.level1(self.input(x_in), e)
        h = self.downsample(skip)
        for block in self.level2:
            h = block(h, e)
        h = self.merge(torch.cat([self.upsample(h), skip], dim=1), e)
        return self.output(F.silu(self.output_norm(h)))

    def config(self) -> dict[str, Any]:
        return {
            "process": self.process.config(),
            "channels": self.channels,
            "image_size": self.image_size,
            "base_channels": self.base_channels,
        }


SCORE_NETWORKS: dict[str, type[_ScoreNetwork]] = {"MLPScore": MLPScore, "ConvScore": ConvScore}


# -- checkpoints ----------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt ``model``, its ``config`` and the ``extra`` dict saved with it."""

    model: nn.Module
    config: dict[str, Any]
    extra: dict[str, Any]


def save_checkpoint(model: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` (a network from ``SCORE_NETWORKS``) to ``path`` atomically.

    The file holds the class name, ``model.config()`` (with the process config), the state dict (on CPU),
    the parameter dtype and ``extra`` (plain data: tensors, numbers, strings, lists, dicts). It is written to a
    temporary file in the same folder and moved into place with ``os.replace``, so an interrupted save leaves
    either the old file or the new one, never a partial file.
    """
    name = type(model).__name__
    if name not in SCORE_NETWORKS or not hasattr(model, "config"):
        raise TypeError(f"model must be one of {list(SCORE_NETWORKS)} to be checkpointed; got {name}")
    path = Path(path)
    floating = [p for p in model.state_dict().values() if p.is_floating_point()]
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "class": name,
        "config": model.config(),
        "dtype": str(floating[0].dtype).removeprefix("torch.") if floating else "float32",
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    # atomic: an interrupted save leaves the previous checkpoint (if any) untouched
    atomic_write(path, lambda handle: torch.save(payload, handle))


def read_checkpoint(path: str | os.PathLike, map_location: torch.device | str | None = None) -> Checkpoint:
    """Rebuild the network saved at ``path`` (on ``map_location``, CPU when None) with its config and extra.

    Raises ``FileNotFoundError`` when the file is missing and ``ValueError`` when it is not a readable
    pysens score-network checkpoint.
    """
    keys = ("class", "config", "state_dict", "dtype")
    payload = read_torch_payload(path, "score-network checkpoint", CHECKPOINT_FORMAT, keys)
    name = payload["class"]
    if name not in SCORE_NETWORKS:
        raise ValueError(f"{path} holds an unknown network class {name!r}; known: {list(SCORE_NETWORKS)}")
    try:
        model = SCORE_NETWORKS[name].from_config(payload["config"])
        model.to(dtype=getattr(torch, payload["dtype"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError) as err:
        raise ValueError(f"{path}: the saved config or weights do not rebuild a {name}: {err}") from err
    if map_location is not None:
        model.to(map_location)
    return Checkpoint(model=model, config=payload["config"], extra=payload.get("extra", {}))


def load_checkpoint(path: str | os.PathLike, map_location: torch.device | str | None = None) -> nn.Module:
    """The network saved at ``path`` by ``save_checkpoint`` (see ``read_checkpoint`` for errors)."""
    return read_checkpoint(path, map_location).model
