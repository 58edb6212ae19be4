"""Named blocks of an augmented state, packed into one batched tensor ``[B, D]``.

Augmented systems (a sample with its log-density, tangents, ...) are solved as one state so that every
backend sees a plain ODE. A layout names the blocks once, e.g. ``StateLayout(x=(1, 8, 8), logp=())`` packs
``x [B, 1, 8, 8]`` and ``logp [B]`` into ``[B, 65]`` (blocks in the order given), and unpacks views back.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class StateLayout:
    def __init__(self, **blocks: tuple[int, ...]):
        if not blocks:
            raise ValueError("a layout needs at least one block")
        self.shapes = {name: tuple(shape) for name, shape in blocks.items()}
        self.slices: dict[str, slice] = {}
        start = 0
        for name, shape in self.shapes.items():
            n = math.prod(shape)
            self.slices[name] = slice(start, start + n)
            start += n
        self.size = start

    def pack(self, **values: Tensor) -> Tensor:
        """Concatenate ``[B, *shape]`` blocks (all of them, in layout order) into ``[B, D]``."""
        if set(values) != set(self.shapes):
            raise ValueError(f"pack needs exactly the blocks {list(self.shapes)}, got {list(values)}")
        batch = next(iter(values.values())).shape[0]
        parts = []
        for name, shape in self.shapes.items():
            v = values[name]
            if tuple(v.shape) != (batch, *shape):
                raise ValueError(f"block {name!r} must be shaped {(batch, *shape)}, got {tuple(v.shape)}")
            parts.append(v.reshape(batch, -1))
        return torch.cat(parts, dim=1)

    def unpack(self, z: Tensor) -> dict[str, Tensor]:
        """Views ``[..., *shape]`` of each block of ``z [..., D]`` (leading axes kept: batch, or time and batch)."""
        lead = z.shape[:-1]
        return {name: z[..., self.slices[name]].reshape(*lead, *shape) for name, shape in self.shapes.items()}
