"""The Python callbacks Julia calls, driven directly with numpy float64 buffers (no Julia needed).

Julia hands the callbacks its arrays as ``juliacall.ArrayValue`` objects, which ``np.asarray`` views without a
copy (buffer protocol / ``__array_interface__``). These tests stand in for them with contiguous, Fortran-ordered
and strided numpy views and with an object exposing only ``__array_interface__``, and check that results equal
the torch functions, that writes land in the caller's memory, and that devices and dtypes round-trip.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pysens.solvers.backends.julia_callbacks import StateBridge, jvp_callback, noise_callback, rhs_callback

B, EVENT = 3, (2, 2)
SHAPE = torch.Size((B, *EVENT))
N = 12


def f(t, x):
    return -x * t[:, None, None] + torch.sin(x)


def jvp(t, x, v):
    return torch.func.jvp(lambda y: f(t, y), (x,), (v,))[1]


class ArrayInterfaceOnly:
    """Exposes memory only through ``__array_interface__``, as a minimal stand-in for juliacall.ArrayValue."""

    def __init__(self, arr: np.ndarray):
        self._owner = arr
        self.__array_interface__ = arr.__array_interface__


def state(seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def as_buffer(x: torch.Tensor, kind: str):
    """``x`` in Julia's linear order in a buffer of the given kind, and the owning array's view of that data."""
    flat = x.detach().to(torch.float64).reshape(-1).numpy().copy()
    if kind == "contiguous":
        return flat, flat
    if kind == "fortran":  # a Julia d × B matrix: column b is sample b
        arr = np.asfortranarray(flat.reshape(B, -1).T)
        return arr, arr
    if kind == "strided":  # every other element of a larger array
        big = np.full(2 * N, -7.0)
        big[::2] = flat
        return big[::2], big
    if kind == "interface":
        arr = flat.copy()
        return ArrayInterfaceOnly(arr), arr
    raise ValueError(kind)


def logical(owner: np.ndarray, kind: str) -> np.ndarray:
    """The N numbers of a buffer of ``kind``, read from the array that owns the memory."""
    if kind == "strided":
        return owner[::2]
    return owner.reshape(-1, order="F")


def read_back(buf) -> np.ndarray:
    return np.asarray(buf).reshape(-1, order="F")


KINDS = ["contiguous", "fortran", "strided", "interface"]


@pytest.mark.parametrize("out_kind", KINDS)
@pytest.mark.parametrize("in_kind", KINDS)
def test_rhs_matches_torch_and_writes_in_place(in_kind, out_kind):
    x, t = state(), 0.7
    bridge = StateBridge(SHAPE, torch.float64, torch.device("cpu"))
    u, _ = as_buffer(x, in_kind)
    du, owner = as_buffer(torch.zeros(SHAPE), out_kind)
    pointer = np.asarray(du).__array_interface__["data"][0]
    rhs_callback(f, bridge)(du, u, None, t)
    expected = f(torch.full((B,), t, dtype=torch.float64), x).reshape(-1).numpy()
    np.testing.assert_allclose(read_back(du), expected, rtol=0, atol=0)
    # the write landed in the caller's memory: same pointer, shared memory, and the owner sees it
    assert np.asarray(du).__array_interface__["data"][0] == pointer
    assert np.shares_memory(np.asarray(du), owner)
    np.testing.assert_array_equal(logical(owner, out_kind), expected)
    assert bridge.counts["nf"] == 1


def test_strided_write_leaves_the_gaps_alone():
    x = state()
    bridge = StateBridge(SHAPE, torch.float64, torch.device("cpu"))
    big = np.full(2 * N, -7.0)
    rhs_callback(f, bridge)(big[1::2], x.reshape(-1).numpy().copy(), None, 0.3)
    assert np.all(big[::2] == -7.0)
    np.testing.assert_allclose(big[1::2], f(torch.full((B,), 0.3, dtype=torch.float64), x).reshape(-1).numpy())


def test_input_buffer_is_not_aliased_by_the_torch_function():
    # the solver reuses u; a torch function that keeps (or mutates) its input must not see or change Julia memory
    kept = []

    def mutating(t, x):
        kept.append(x)
        x.mul_(0.0)
        return torch.ones_like(x)

    u = state().reshape(-1).numpy().copy()
    before = u.copy()
    du = np.zeros(N)
    rhs_callback(mutating, StateBridge(SHAPE, torch.float64, torch.device("cpu")))(du, u, None, 0.0)
    np.testing.assert_array_equal(u, before)
    assert not np.shares_memory(kept[0].numpy(), u)


@pytest.mark.parametrize("kind", KINDS)
def test_jvp_matches_torch_func(kind):
    x, v, t = state(1), state(2), 0.25
    bridge = StateBridge(SHAPE, torch.float64, torch.device("cpu"))
    u, _ = as_buffer(x, "contiguous")
    vb, _ = as_buffer(v, kind)
    jv, owner = as_buffer(torch.zeros(SHAPE), kind)
    jvp_callback(jvp, bridge)(jv, vb, u, None, t)
    expected = jvp(torch.full((B,), t, dtype=torch.float64), x, v).reshape(-1).numpy()
    np.testing.assert_allclose(read_back(jv), expected, rtol=1e-15, atol=1e-15)
    assert np.shares_memory(np.asarray(jv), owner)
    np.testing.assert_array_equal(logical(owner, kind), read_back(jv))
    assert bridge.counts["njvp"] == 1


def test_noise_is_broadcast_to_the_state_and_keeps_its_sign_under_time_flip():
    x = state()
    bridge = StateBridge(SHAPE, torch.float64, torch.device("cpu"))

    def g(t, x):  # additive noise, one scale per sample: shaped [B, 1, 1]
        return (1.0 + t)[:, None, None]

    du = np.zeros(N)
    noise_callback(g, bridge, sign=-1.0)(du, x.reshape(-1).numpy().copy(), None, -0.5)  # s = -0.5 is t = 0.5
    np.testing.assert_allclose(du, np.full(N, 1.5))
    assert bridge.counts["ng"] == 1


def test_time_flip_negates_the_drift_and_reads_t_from_s():
    x = state()
    bridge = StateBridge(SHAPE, torch.float64, torch.device("cpu"))
    du = np.zeros(N)
    rhs_callback(f, bridge, sign=-1.0)(du, x.reshape(-1).numpy().copy(), None, -0.8)
    expected = -f(torch.full((B,), 0.8, dtype=torch.float64), x).reshape(-1).numpy()
    np.testing.assert_allclose(du, expected)


def test_float32_problem_runs_in_float32_and_writes_float64():
    x = state(dtype=torch.float32)
    seen = {}

    def spy(t, x):
        seen["x"], seen["t"] = (x.dtype, x.device), (t.dtype, t.shape)
        return 2 * x

    bridge = StateBridge(SHAPE, torch.float32, torch.device("cpu"))
    du = np.zeros(N)
    rhs_callback(spy, bridge)(du, x.to(torch.float64).reshape(-1).numpy().copy(), None, 0.1)
    assert seen["x"] == (torch.float32, torch.device("cpu"))
    assert seen["t"] == (torch.float32, torch.Size([B]))
    np.testing.assert_allclose(du, 2 * x.to(torch.float64).reshape(-1).numpy(), rtol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here; the CPU round trip is tested above")
def test_cuda_round_trip():
    device = torch.device("cuda")
    x = state()
    seen = {}

    def on_gpu(t, x):
        seen["device"] = x.device
        return x * 3

    bridge = StateBridge(SHAPE, torch.float64, device)
    du = np.zeros(N)
    rhs_callback(on_gpu, bridge)(du, x.reshape(-1).numpy().copy(), None, 0.0)
    assert seen["device"].type == "cuda"
    np.testing.assert_allclose(du, 3 * x.reshape(-1).numpy())


def test_bad_buffers_are_refused_with_a_clear_error():
    bridge = StateBridge(SHAPE, torch.float64, torch.device("cpu"))
    rhs = rhs_callback(f, bridge)
    u = state().reshape(-1).numpy().copy()
    with pytest.raises(TypeError, match="float64"):
        rhs(np.zeros(N, dtype=np.float32), u, None, 0.0)
    with pytest.raises(ValueError, match="holds 11 numbers"):
        rhs(np.zeros(N - 1), u, None, 0.0)
    frozen = np.zeros(N)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        rhs(frozen, u, None, 0.0)
    with pytest.raises(ValueError, match="expected"):
        rhs_callback(lambda t, x: x[:, 0], bridge)(np.zeros(N), u, None, 0.0)


def test_the_first_exception_is_kept_for_solve_to_reraise():
    bridge = StateBridge(SHAPE, torch.float64, torch.device("cpu"))

    def broken(t, x):
        raise ZeroDivisionError("inside the score model")

    with pytest.raises(ZeroDivisionError):
        rhs_callback(broken, bridge)(np.zeros(N), np.zeros(N), None, 0.0)
    assert isinstance(bridge.error, ZeroDivisionError)
