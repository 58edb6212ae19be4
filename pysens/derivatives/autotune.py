"""``engine="auto"``: pick the fastest engine by measuring once per (callable, shape, device, dtype), then cache.

Like cuDNN's benchmark mode: the first call with a new key runs every candidate engine twice, interleaved
(round 1 warms up, round 2 is timed; on a shared machine a load burst then falls on one round of every
candidate alike), keeps the fastest, and returns that engine's result from the measuring run, so nothing is
computed only to be thrown away. Later calls with the same key run the cached engine once.

The key is ``(key, batch bucket, event shape, device, dtype)``; the batch bucket is the batch size rounded up
to a power of two, so a solver that compacts its batch (fewer rows every step) does not re-measure at every
size. ``key`` names the callable: pass something stable (the score model, its id) because closures are rebuilt
every call. Engines are exact alternatives (equal to round-off), so a stale or shared choice costs speed,
never accuracy. :func:`clear_engine_cache` forgets every choice; :func:`chosen_engines` shows them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

_CACHE: dict[tuple, str] = {}


def batch_bucket(n: int) -> int:
    """The power of two ≥ n (1 for n ≤ 1)."""
    return 1 << max(n - 1, 0).bit_length()


def cache_key(kind: str, key: Hashable, x: Tensor) -> tuple:
    return (kind, key, batch_bucket(x.shape[0]), tuple(x.shape[1:]), str(x.device), x.dtype)


def _sync(x: Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def measured_choice(kind: str, key: Hashable, x: Tensor, candidates: dict[str, Callable[[], Any]]) -> tuple[str, Any]:
    """``(engine, result)``: the cached engine for this key run once, or (first time) every candidate measured."""
    k = cache_key(kind, key, x)
    if k in _CACHE and _CACHE[k] in candidates:
        name = _CACHE[k]
        return name, candidates[name]()
    best: dict[str, float] = {}
    results: dict[str, Any] = {}
    for _ in range(2):
        for name, run in candidates.items():
            _sync(x)
            start = time.perf_counter()
            try:
                results[name] = run()
            except (RuntimeError, NotImplementedError):  # an engine the callable does not support
                best[name] = float("inf")
                continue
            _sync(x)
            best[name] = time.perf_counter() - start  # round 2 overwrites round 1 (the warm-up)
    usable = {n: s for n, s in best.items() if n in results}
    if not usable:
        raise RuntimeError(f"no {kind} engine could evaluate this callable (tried {list(candidates)})")
    name = min(usable, key=usable.get)
    _CACHE[k] = name
    return name, results[name]


def clear_engine_cache() -> None:
    """Forget every measured choice (the next ``engine="auto"`` call measures again)."""
    _CACHE.clear()


def chosen_engines() -> dict[tuple, str]:
    """A copy of the cache: ``{(kind, key, batch bucket, event shape, device, dtype): engine}``."""
    return dict(_CACHE)


def inside_transform(x: Tensor) -> bool:
    """True inside ``torch.func`` transforms (vmap, jvp, grad), where measuring is meaningless and the loop engine
    (plain autograd) cannot run."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))
