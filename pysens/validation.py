"""Shared checks of user arguments and user callables: one place, used by every public verb.

Misuse raises before any work, naming the argument and what was expected:

- ``TypeError`` for a value of the wrong type (a string where a number goes, a bool where a count goes, a tensor of
  an unsupported dtype, a callable returning something that is not a tensor or has the wrong dtype);
- ``ValueError`` for a value of the right type but out of range (a negative learning rate, an infinite ``T``, a
  shape that does not match, a tensor on another device or on the ``meta`` device).

User callables (right-hand sides, noise terms, Jacobians, JVPs, score models, terminal densities, references) are
checked on their first output by :class:`FirstCallCheck`: a wrapper that compares the first returned tensor's
shape, dtype and device to what its inputs call for, then steps aside. The check costs nothing after the first
call and adds no evaluation of the user's function. A wrong shape that would broadcast (``[B, 1]`` for a ``[B, 3]``
state) is an error, never a silent broadcast.

Dtypes: states, data and models are float32 or float64 (:data:`SUPPORTED_DTYPES`). float16 and bfloat16 are
refused: the step controllers, error norms and Newton iterations assume at least float32's 24-bit mantissa (a
float16 error norm saturates at 65504 and rounds tolerances below 1e-3 to steps that never get accepted).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

SUPPORTED_DTYPES = (torch.float32, torch.float64)

# The largest fixed-step grid a solve accepts: 10^7 steps is already hours of Python-side stepping; a larger grid is
# a units mistake (dt in the wrong unit), and 10^12 steps would allocate terabytes before the first step.
MAX_FIXED_STEPS = 10_000_000


# -- numbers -------------------------------------------------------------------------------------------------------


def _is_real_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    return isinstance(value, Tensor) and value.dim() == 0 and not value.is_complex() and value.dtype != torch.bool


def check_number(
    value: Any,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    finite: bool = True,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` as a float, or a clear error naming ``name``.

    Refuses strings (no ``"5"`` → 5.0 coercion), bools, complex numbers and tensors with more than one element;
    ``finite`` refuses NaN and ±inf; ``positive``/``nonnegative`` and ``low``/``high`` (closed unless ``open_*``)
    bound the value.
    """
    if not _is_real_number(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if math.isnan(v) or (finite and not math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    if low is not None and (v < low or (open_low and v == low)):
        raise ValueError(f"{name} must be {'>' if open_low else '>='} {low:g}, got {value!r}")
    if high is not None and (v > high or (open_high and v == high)):
        raise ValueError(f"{name} must be {'<' if open_high else '<='} {high:g}, got {value!r}")
    return v


def check_int(value: Any, name: str, *, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` as an int (a Python or numpy integer, never a bool or a float such as 3.0), within bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {v}")
    return v


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """The entry of ``choices`` equal to ``value`` ignoring case, or a clear error listing them."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(choices)} (a string), got {type(value).__name__} {value!r}")
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_callable(value: Any, name: str, signature: str) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable as {signature}, got {type(value).__name__}")


def check_time_span(tspan: Any, name: str = "tspan") -> tuple[float, float]:
    """``(t0, t1)`` as floats: a pair of two distinct finite real numbers (no strings, no bools)."""
    if isinstance(tspan, (str, bytes)) or isinstance(tspan, Tensor) and tspan.dim() != 1:
        raise TypeError(f"{name} must be a pair (t0, t1) of numbers, got {tspan!r}")
    try:
        items = list(tspan)
    except TypeError:
        raise TypeError(f"{name} must be a pair (t0, t1) of numbers, got {tspan!r}") from None
    if len(items) != 2:
        raise ValueError(f"{name} must be a pair (t0, t1) of numbers, got {len(items)} values: {tspan!r}")
    t0 = check_number(items[0], f"{name}[0]")
    t1 = check_number(items[1], f"{name}[1]")
    if t0 == t1:
        raise ValueError(f"{name} must hold two distinct times, got {tspan!r}")
    return t0, t1


# -- tensors -------------------------------------------------------------------------------------------------------


def check_dtype(dtype: torch.dtype, name: str) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} has dtype {dtype}; pysens computes in float32 or float64 only "
            "(float16/bfloat16 are refused: the error norms and step controllers need float32's precision)"
        )


def check_device(x: Tensor, name: str) -> None:
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds no values; create it on 'cpu' or 'cuda'")


def check_batch(x: Any, name: str, *, min_dim: int = 1, finite: bool = True) -> Tensor:
    """A batched floating tensor ``[B, *event_shape]`` (B >= 1) of a supported dtype on a real device."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped [B, *event_shape], got {type(x).__name__}")
    check_device(x, name)
    if x.dim() < min_dim or x.shape[0] == 0:
        want = "[B, *event_shape]" if min_dim <= 1 else f"[B, *event_shape] with at least {min_dim} axes"
        raise ValueError(f"{name} must be shaped {want} and B >= 1, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {x.dtype}")
    check_dtype(x.dtype, name)
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return x


# -- user callables ------------------------------------------------------------------------------------------------


def check_output(
    out: Any,
    name: str,
    signature: str,
    shape: Sequence[int],
    dtype: torch.dtype | None,
    device: torch.device | None,
    *,
    broadcastable: bool = False,
) -> None:
    """Raise unless ``out`` (what ``name`` returned) is a tensor of ``shape``, ``dtype`` on ``device`` (None: any).

    ``broadcastable`` accepts a 0-d tensor or one with as many axes as ``shape`` whose sizes are each 1 or equal
    (a noise term constant along some axes); never fewer axes, which would broadcast against the wrong axes.
    """
    shape = tuple(shape)
    if not isinstance(out, Tensor):
        raise TypeError(
            f"{name} must return a torch.Tensor shaped {list(shape)} from {signature}, got {type(out).__name__}"
        )
    got = tuple(out.shape)
    if broadcastable:
        ok = got == () or (len(got) == len(shape) and all(g in (1, s) for g, s in zip(got, shape, strict=True)))
    else:
        ok = got == shape
    if not ok:
        extra = " (or a shape broadcasting to it axis by axis)" if broadcastable else ""
        raise ValueError(f"{name} returned shape {list(got)} from {signature}; expected {list(shape)}{extra}")
    if dtype is not None and out.dtype != dtype:
        raise TypeError(f"{name} returned dtype {out.dtype} from {signature}; expected {dtype} (the state's dtype)")
    if device is not None and out.device != device:
        raise ValueError(f"{name} returned a tensor on {out.device} from {signature}; expected {device}")


class FirstCallCheck:
    """``fn`` with its first output checked by :func:`check_output`, then passed through unchanged.

    ``expect(*args)`` gives ``(shape, dtype, device)`` from the call's arguments, so a call on a sub-batch (solvers
    that drop finished samples) is checked against that sub-batch.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        name: str,
        signature: str,
        expect: Callable[..., tuple[Sequence[int], torch.dtype, torch.device]],
        *,
        broadcastable: bool = False,
    ) -> None:
        self.fn, self.name, self.signature, self.expect = fn, name, signature, expect
        self.__wrapped__ = fn  # what engine="auto" keys its measured choices by (the user's callable, not this check)
        self.broadcastable = broadcastable
        self.checked = False

    def __call__(self, *args: Any) -> Tensor:
        out = self.fn(*args)
        if not self.checked:
            shape, dtype, device = self.expect(*args)
            check_output(out, self.name, self.signature, shape, dtype, device, broadcastable=self.broadcastable)
            self.checked = True
        return out


def _like_last(*args: Tensor) -> tuple[Sequence[int], torch.dtype, torch.device]:
    x = args[-1]
    return x.shape, x.dtype, x.device


def _like_second(*args: Tensor) -> tuple[Sequence[int], torch.dtype, torch.device]:
    x = args[1]
    return x.shape, x.dtype, x.device


def _like_first(*args: Tensor) -> tuple[Sequence[int], torch.dtype, torch.device]:
    x = args[0]
    return x.shape, x.dtype, x.device


def _jacobian_of_second(*args: Tensor) -> tuple[Sequence[int], torch.dtype, torch.device]:
    x = args[1]
    d = math.prod(x.shape[1:])
    return (x.shape[0], d, d), x.dtype, x.device


def _batch_of_first(*args: Tensor) -> tuple[Sequence[int], torch.dtype, torch.device]:
    x = args[0]
    return (x.shape[0],), x.dtype, x.device


def checked_rhs(fn: Callable, name: str = "f") -> FirstCallCheck:
    """A right-hand side ``name(t, x) -> [B, *event]`` shaped like ``x``."""
    return FirstCallCheck(fn, name, f"{name}(t, x)", _like_second)


def checked_noise(fn: Callable, name: str = "g") -> FirstCallCheck:
    """A diagonal/additive noise term ``g(t, x)`` shaped like ``x`` (or broadcasting to it axis by axis)."""
    return FirstCallCheck(fn, name, f"{name}(t, x)", _like_second, broadcastable=True)


def checked_jvp(fn: Callable, name: str = "jvp") -> FirstCallCheck:
    """A Jacobian-vector product ``jvp(t, x, v)`` shaped like ``v``."""
    return FirstCallCheck(fn, name, f"{name}(t, x, v)", _like_last)


def checked_jacobian(fn: Callable, name: str = "jac") -> FirstCallCheck:
    """Dense per-sample Jacobians ``jac(t, x) -> [B, d, d]``."""
    return FirstCallCheck(fn, name, f"{name}(t, x)", _jacobian_of_second)


def checked_score(fn: Callable, name: str = "score") -> FirstCallCheck:
    """A score model ``score(x, t)`` shaped like ``x`` (the convention of :mod:`pysens.diffusion`)."""
    return FirstCallCheck(fn, name, f"{name}(x, t)", _like_first)


def checked_log_density(fn: Callable, name: str) -> FirstCallCheck:
    """A log-density ``name(x) -> [B]``, one value per sample."""
    return FirstCallCheck(fn, name, f"{name}(x)", _batch_of_first)


# -- files ---------------------------------------------------------------------------------------------------------


def read_torch_payload(path, what: str, format_tag: str, keys: Sequence[str]) -> dict:
    """The dict saved by ``torch.save`` at ``path``, or a clear error: ``FileNotFoundError`` when it is missing,
    ``ValueError`` when it is truncated, corrupt, foreign (no ``format == format_tag``) or lacks ``keys``."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle garbage, not a torch file at all
        raise ValueError(
            f"{path} is not a readable checkpoint (a {what}: truncated, corrupt or not written by torch.save): {err}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != format_tag:
        raise ValueError(f"{path} is not a pysens {what} (format tag {format_tag!r} missing)")
    missing = sorted(set(keys) - payload.keys())
    if missing:
        raise ValueError(f"{path} is an incomplete {what}: missing {missing}")
    return payload
