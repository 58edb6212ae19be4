"""``engine="auto"``: pick the fastest engine by measuring once per (callable, shape, device, dtype), then cache.

Like cuDNN's benchmark mode: the first call with a new key runs every candidate engine :data:`ROUNDS` times,
interleaved (the first round also warms up; each candidate's time is its least, so a load burst on a shared
machine during one run does not decide), keeps the fastest, and returns that engine's result from the measuring run, so
nothing is computed only to be thrown away. Later calls with the same key look the engine up and run it once
(a dictionary lookup; the candidates' closures are built, none is run). On a CPU with one intra-op thread the clock
is this thread's CPU time (all of the call's work runs on it, and other processes' load does not count); otherwise
wall time, after synchronising the device.

The key is ``(key, batch bucket, event shape, device, dtype)``; the batch bucket is the batch size rounded up
to a power of two, so a solver that compacts its batch (fewer rows every step) does not re-measure at every
size. ``key`` names the callable. A callable given as the key (the default: the function being differentiated) is
keyed by where it was defined, not by the object (:func:`callable_key`): a closure or lambda rebuilt on every call
(``divergence(lambda u: score(u, t), x)`` inside a right-hand side) is measured once for its definition site, and the
cache holds no reference to it (keyed by the object, every call measured every engine again and the cache kept every
closure, and what it captured, alive). Engines are exact alternatives (equal to round-off), so a stale or shared
choice costs speed, never accuracy; and where one definition site serves callables that not every engine can run (a
closure over a score that reads its input through numpy, which ``torch.func``'s wrapped tensors cannot do), a cached
choice that raises is measured afresh among the engines that can (:func:`run_cached`). :func:`clear_engine_cache`
forgets every choice; :func:`chosen_engines` shows them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

_CACHE: dict[tuple, str] = {}
ROUNDS = 3


def batch_bucket(n: int) -> int:
    """The power of two ≥ n (1 for n ≤ 1)."""
    return 1 << max(n - 1, 0).bit_length()


def callable_key(fn: Callable) -> Hashable:
    """What ``"auto"`` caches a callable's choice under: a function, lambda or closure by its code object (every closure
    made at one definition site shares it), a bound method by its function's code and its instance's id, a
    :class:`functools.partial` as its function, a wrapper that names what it wraps (``__wrapped__``, as
    :func:`functools.wraps` and pysens's own output checks set it) as that callable, any other callable (an
    ``nn.Module``, an object with ``__call__``) by its id. Never the object itself, so the cache keeps nothing alive;
    an id reused after garbage collection can only hand a new callable an old speed choice."""
    for _ in range(64):  # bounded: a proxy object may answer every attribute
        inner = fn.func if isinstance(fn, functools.partial) else getattr(fn, "__wrapped__", None)
        if inner is None or inner is fn:
            break
        fn = inner
    owner = getattr(fn, "__self__", None)
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is None:
        return ("object", id(fn))
    return ("code", code) if owner is None else ("method", code, id(owner))


def cache_key(kind: str, key: Hashable, x: Tensor) -> tuple:
    shape = x.shape
    if callable(key):
        key = callable_key(key)
    return (kind, key, 1 << max(shape[0] - 1, 0).bit_length(), shape[1:], x.device, x.dtype)  # bucket inlined


def _sync(x: Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def _clock(x: Tensor) -> Callable[[], float]:
    """This thread's CPU seconds on a one-thread CPU run, else wall seconds."""
    if x.device.type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time
    return time.perf_counter


def measure_engines(
    k: tuple, x: Tensor, candidates: dict[str, Callable[[], Any]], *, warmup: bool = False
) -> tuple[str, Any]:
    """Run every candidate :data:`ROUNDS` times, interleaved (after one untimed round with ``warmup``); cache the
    fastest by its best round under ``k``; ``(its name, its result)``. An engine that raises (one the callable does
    not support) is dropped for the remaining rounds."""
    best: dict[str, float] = {}
    results: dict[str, Any] = {}
    errors: dict[str, Exception] = {}
    clock = _clock(x)
    for round_ in range(int(warmup) + ROUNDS):
        for name, run in candidates.items():
            if round_ and name not in results:
                continue  # failed on an earlier round
            _sync(x)
            start = clock()
            try:
                results[name] = run()
            except (RuntimeError, NotImplementedError) as err:  # an engine the callable does not support
                errors.setdefault(name, err)
                continue
            _sync(x)
            if round_ >= int(warmup):
                best[name] = min(best.get(name, float("inf")), clock() - start)
    if not results:
        why = "; ".join(f"{name}: {type(err).__name__}: {err}" for name, err in errors.items())
        raise RuntimeError(
            f"no engine could evaluate this callable (tried {list(candidates)} for {k[0]}): {why}"
        ) from next(iter(errors.values()))
    name = min(results, key=best.__getitem__)
    _CACHE[k] = name
    return name, results[name]


def measured_choice(kind: str, key: Hashable, x: Tensor, candidates: dict[str, Callable[[], Any]]) -> tuple[str, Any]:
    """``(engine, result)``: the cached engine for this key run once, or (first time) every candidate measured."""
    k = cache_key(kind, key, x)
    return run_cached(k, x, candidates)


def run_cached(
    k: tuple,
    x: Tensor,
    candidates: dict[str, Callable[[], Any]],
    *,
    warmup: bool = False,
    run: Callable[[str], Any] | None = None,
) -> tuple[str, Any]:
    """``(engine, result)``: the engine cached under ``k`` run once, else every candidate measured
    (:func:`measure_engines`). A cached engine that raises (a choice made for another callable of the same definition
    site, which this one does not support: ``torch.func`` on a score that calls ``.numpy()``) is forgotten and the
    candidates are measured afresh, so the first error is not the caller's unless no engine can run.
    ``run(name)`` runs a cached name not among ``candidates`` (a parametrised engine such as ``"grad-batched:c"``)."""
    name = _CACHE.get(k)
    if name is not None and (name in candidates or run is not None):
        try:
            return name, candidates[name]() if name in candidates else run(name)
        except (RuntimeError, NotImplementedError):
            _CACHE.pop(k, None)
    return measure_engines(k, x, candidates, warmup=warmup)


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
