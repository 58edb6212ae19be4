"""The Python functions DifferentialEquations.jl calls back: a problem's torch functions on Julia's buffers.

Every callback reads its Julia buffers as numpy views (``np.asarray`` of a ``juliacall.ArrayValue`` is zero-copy),
in Julia's linear (column-major) index order, runs the torch function on the problem's device and dtype, and writes
the result into the output buffer in place (:mod:`pysens.solvers.backends.julia_backend` has the state layout).
Nothing here imports juliacall: these run, and are tested, without Julia.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["StateBridge", "jvp_callback", "noise_callback", "rhs_callback"]


class StateBridge:
    """Moves Julia's flat float64 buffers to batched torch states ``[B, *event_shape]`` and back.

    A buffer is anything ``np.asarray`` views as float64 (``juliacall.ArrayValue``, a numpy array, an object with
    ``__array_interface__``) holding ``N = B * d`` numbers; a multi-dimensional buffer is read and written in
    Julia's linear (column-major) index order, the order in which Julia would see it as a vector.
    """

    def __init__(self, shape: torch.Size, dtype: torch.dtype, device: torch.device):
        self.shape, self.dtype, self.device = torch.Size(shape), dtype, device
        self.numel = math.prod(self.shape)
        self.counts = {"nf": 0, "nf2": 0, "njvp": 0, "ng": 0}
        self.error: Exception | None = None

    def _view(self, buf: Any, name: str) -> np.ndarray:
        arr = np.asarray(buf)
        if arr.dtype != np.float64:
            raise TypeError(f"Julia buffer {name} must hold float64, got {arr.dtype}")
        if arr.size != self.numel:
            raise ValueError(f"Julia buffer {name} holds {arr.size} numbers, expected B * d = {self.numel}")
        return arr

    def read(self, buf: Any, name: str = "u") -> Tensor:
        """``[B, *event_shape]`` on the problem's device and dtype, copied out of the buffer.

        Copied, not aliased: the solver reuses its buffers, and a torch function may keep its input.
        """
        arr = self._view(buf, name)
        flat = np.array(arr.reshape(-1, order="F"), dtype=np.float64, copy=True)
        return torch.from_numpy(flat).reshape(self.shape).to(device=self.device, dtype=self.dtype)

    def write(self, buf: Any, value: Tensor, name: str = "du") -> None:
        """Write ``value`` (``N`` numbers, batch-major) into ``buf`` in place: no copy of the buffer is made."""
        arr = self._view(buf, name)
        if not arr.flags.writeable:
            raise ValueError(f"Julia buffer {name} is read-only")
        if value.numel() != self.numel:
            raise ValueError(f"the function returned {tuple(value.shape)}, expected {tuple(self.shape)}")
        out = value.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()
        np.copyto(arr, out if arr.ndim == 1 else out.reshape(arr.shape, order="F"))

    def times(self, t: float) -> Tensor:
        return torch.full((self.shape[0],), float(t), dtype=self.dtype, device=self.device)

    def guarded(self, counter: str, body: Callable[..., None]) -> Callable[..., None]:
        """``body`` counted under ``counter``; the first exception is kept so :func:`solve` re-raises it as is
        (Julia would otherwise wrap it in a JuliaError)."""

        def callback(*args: Any) -> None:
            self.counts[counter] += 1
            try:
                with torch.no_grad():
                    body(*args)
            except Exception as exc:
                if self.error is None:
                    self.error = exc
                raise

        callback.__name__ = getattr(body, "__name__", counter)
        return callback


def rhs_callback(f: Callable[[Tensor, Tensor], Tensor], bridge: StateBridge, sign: float = 1.0, counter: str = "nf"):
    """``rhs(du, u, p, t)``: ``du = sign * f(sign * t, u)`` in place (``sign = -1`` runs an SDE in ``s = -t``)."""

    def rhs(du: Any, u: Any, p: Any, t: float) -> None:
        y = f(bridge.times(sign * t), bridge.read(u))
        bridge.write(du, y if sign == 1.0 else -y)

    return bridge.guarded(counter, rhs)


def jvp_callback(jvp: Callable[[Tensor, Tensor, Tensor], Tensor], bridge: StateBridge, sign: float = 1.0):
    """``jvp(Jv, v, u, p, t)``: ``Jv = sign * J_f(sign * t, u) v`` in place."""

    def jvp_inplace(Jv: Any, v: Any, u: Any, p: Any, t: float) -> None:
        y = jvp(bridge.times(sign * t), bridge.read(u), bridge.read(v, "v"))
        bridge.write(Jv, y if sign == 1.0 else -y, "Jv")

    return bridge.guarded("njvp", jvp_inplace)


def noise_callback(g: Callable[[Tensor, Tensor], Tensor], bridge: StateBridge, sign: float = 1.0):
    """``g(du, u, p, t)``: the diagonal of the noise matrix, ``g(sign * t, u)`` broadcast to the state, in place.

    ``g`` keeps its sign when time is flipped: ``g dW`` in ``t`` equals ``g dW`` in ``s`` with ``W(s) = W(-s)``.
    """

    def noise(du: Any, u: Any, p: Any, t: float) -> None:
        x = bridge.read(u)
        bridge.write(du, torch.broadcast_to(g(bridge.times(sign * t), x), x.shape))

    return bridge.guarded("ng", noise)
