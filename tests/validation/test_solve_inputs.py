"""Bad inputs to problems and ``solve``: refused before any work, by name, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pysens.solvers import BrownianGrid, ODEProblem, SDEProblem, SplitODEProblem, solve

from ..julia.fake_session import FakeJuliaSession
from .conftest import assert_refused

B, D = 3, 2


def x0(dtype=torch.float64):
    return torch.ones(B, D, dtype=dtype)


def decay(t, x):
    return -x


def ode(f=decay, **kw):
    return ODEProblem(f, x0(), (0.0, 1.0), **kw)


# -- problem construction --------------------------------------------------------------------------------------------

PROBLEM_CASES = [
    pytest.param(lambda: ODEProblem(decay, [[1.0, 2.0]], (0, 1)), TypeError, "x0", id="x0-list"),
    pytest.param(lambda: ODEProblem(decay, torch.ones(3, 2, dtype=torch.int64), (0, 1)), TypeError, "x0", id="x0-int"),
    pytest.param(lambda: ODEProblem(decay, x0(torch.float16), (0, 1)), TypeError, "x0.*float16", id="x0-float16"),
    pytest.param(lambda: ODEProblem(decay, x0(torch.bfloat16), (0, 1)), TypeError, "x0.*bfloat16", id="x0-bfloat16"),
    pytest.param(lambda: ODEProblem(decay, x0(torch.complex128), (0, 1)), TypeError, "x0", id="x0-complex"),
    pytest.param(
        lambda: ODEProblem(decay, torch.ones(3, 2, device="meta"), (0, 1)), ValueError, "x0.*meta", id="x0-meta"
    ),
    pytest.param(lambda: ODEProblem(decay, torch.tensor(1.0), (0, 1)), ValueError, "x0", id="x0-0d"),
    pytest.param(lambda: ODEProblem(decay, torch.ones(0, 2), (0, 1)), ValueError, "x0", id="x0-empty-batch"),
    pytest.param(lambda: ODEProblem(decay, x0() * float("nan"), (0, 1)), ValueError, "x0", id="x0-nan"),
    pytest.param(lambda: ODEProblem(decay, x0() * float("inf"), (0, 1)), ValueError, "x0", id="x0-inf"),
    pytest.param(lambda: ODEProblem(decay, x0(), "05"), TypeError, "tspan", id="tspan-string"),
    pytest.param(lambda: ODEProblem(decay, x0(), (0, "1")), TypeError, r"tspan\[1\]", id="tspan-string-end"),
    pytest.param(lambda: ODEProblem(decay, x0(), (True, 1.0)), TypeError, r"tspan\[0\]", id="tspan-bool"),
    pytest.param(lambda: ODEProblem(decay, x0(), (0, float("inf"))), ValueError, "tspan", id="tspan-inf"),
    pytest.param(lambda: ODEProblem(decay, x0(), (0, float("nan"))), ValueError, "tspan", id="tspan-nan"),
    pytest.param(lambda: ODEProblem(decay, x0(), (1.0, 1.0)), ValueError, "tspan", id="tspan-empty"),
    pytest.param(lambda: ODEProblem(decay, x0(), (0, 1, 2)), ValueError, "tspan", id="tspan-three"),
    pytest.param(lambda: ODEProblem(decay, x0(), 5.0), TypeError, "tspan", id="tspan-number"),
    pytest.param(lambda: ODEProblem(decay, x0(), (0, 1j)), TypeError, "tspan", id="tspan-complex"),
    pytest.param(lambda: ODEProblem("f", x0(), (0, 1)), TypeError, "f must be callable", id="f-string"),
    pytest.param(lambda: ODEProblem(decay, x0(), (0, 1), jac=3), TypeError, "jac", id="jac-not-callable"),
    pytest.param(lambda: ODEProblem(decay, x0(), (0, 1), jvp="x"), TypeError, "jvp", id="jvp-not-callable"),
    pytest.param(lambda: SDEProblem(decay, None, x0(), (0, 1)), TypeError, "g must be callable", id="g-none"),
    pytest.param(lambda: SDEProblem(decay, decay, x0(), (0, 1), noise="weird"), ValueError, "noise", id="noise-name"),
    pytest.param(lambda: SDEProblem(decay, decay, x0(), (0, 1), noise=3), ValueError, "noise", id="noise-int"),
    pytest.param(lambda: SDEProblem(decay, decay, x0(), (0, 1), brownian=3), TypeError, "brownian", id="brownian-type"),
    pytest.param(
        lambda: SDEProblem(decay, decay, x0(), (0, 1), brownian=BrownianGrid.sample((0.0, 2.0), 4, (B, D))),
        ValueError,
        "brownian",
        id="brownian-span",
    ),
    pytest.param(lambda: SplitODEProblem(decay, 1.0, x0(), (0, 1)), TypeError, "f2", id="f2-not-callable"),
    pytest.param(lambda: BrownianGrid.sample((0, 1), 10**13, (B, D)), ValueError, "n_steps", id="brownian-absurd-grid"),
    pytest.param(lambda: BrownianGrid.sample((0, 1), True, (B, D)), TypeError, "n_steps", id="brownian-steps-bool"),
    pytest.param(lambda: BrownianGrid.sample("01", 4, (B, D)), TypeError, "tspan", id="brownian-tspan-string"),
    pytest.param(
        lambda: BrownianGrid.sample((0, 1), 4, (B, D), dtype=torch.float16), TypeError, "dtype", id="brownian-float16"
    ),
]


@pytest.mark.parametrize("call, exc, names", PROBLEM_CASES)
def test_problem_refuses(call, exc, names, out_dir):
    assert_refused(call, exc, names, out_dir)


# -- solve keyword arguments -----------------------------------------------------------------------------------------

SOLVE_CASES = [
    pytest.param(lambda: solve("problem"), TypeError, "problem", id="problem-type"),
    pytest.param(lambda: solve(ode(), 3), TypeError, "method", id="method-int"),
    pytest.param(lambda: solve(ode(), "Nope"), ValueError, "method", id="method-unknown"),
    pytest.param(lambda: solve(ode(), "EM"), ValueError, "EM", id="method-wrong-kind"),
    pytest.param(lambda: solve(ode(), "Tsit5", "nope"), ValueError, "backend", id="backend-unknown"),
    pytest.param(lambda: solve(ode(), "Tsit5", 3), TypeError, "backend", id="backend-int"),
    pytest.param(lambda: solve(ode(), rtol=-1e-3), ValueError, "rtol", id="rtol-negative"),
    pytest.param(lambda: solve(ode(), rtol="1e-3"), TypeError, "rtol", id="rtol-string"),
    pytest.param(lambda: solve(ode(), rtol=float("nan")), ValueError, "rtol", id="rtol-nan"),
    pytest.param(lambda: solve(ode(), rtol=torch.ones(2)), TypeError, "rtol", id="rtol-tensor"),
    pytest.param(lambda: solve(ode(), atol=-1.0), ValueError, "atol", id="atol-negative"),
    pytest.param(lambda: solve(ode(), atol=torch.ones(4)), ValueError, "atol", id="atol-shape"),
    pytest.param(lambda: solve(ode(), rtol=0.0, atol=0.0), ValueError, "rtol and atol", id="tolerances-zero"),
    pytest.param(lambda: solve(ode(), "Euler", dt=0.0), ValueError, "dt", id="dt-zero"),
    pytest.param(lambda: solve(ode(), "Euler", dt=-0.1), ValueError, "dt", id="dt-negative"),
    pytest.param(lambda: solve(ode(), "Euler", dt="0.1"), TypeError, "dt", id="dt-string"),
    pytest.param(lambda: solve(ode(), "Euler", dt=float("inf")), ValueError, "dt", id="dt-inf"),
    pytest.param(lambda: solve(ode(), "Euler", dt=1e-12), ValueError, "dt=1e-12", id="dt-absurd-grid"),
    pytest.param(
        lambda: solve(ode(), "Euler", dt=0.1, timesteps=[0.0, 0.5, 1.0]), ValueError, "dt.*timesteps", id="dt-and-grid"
    ),
    pytest.param(
        lambda: solve(ode(), "Euler", timesteps=[0.0, 0.7, 0.5, 1.0]), ValueError, "timesteps", id="grid-order"
    ),
    pytest.param(lambda: solve(ode(), "Euler", timesteps=[0.0, 0.5]), ValueError, "timesteps", id="grid-ends"),
    pytest.param(lambda: solve(ode(), "Euler", timesteps="0 1"), TypeError, "timesteps", id="grid-string"),
    pytest.param(lambda: solve(ode(), "Euler"), ValueError, "dt", id="fixed-step-without-dt"),
    pytest.param(lambda: solve(ode(), "Euler", adaptive=True, dt=0.1), ValueError, "Euler", id="euler-adaptive"),
    pytest.param(lambda: solve(ode(), maxiters=True), TypeError, "maxiters", id="maxiters-bool"),
    pytest.param(lambda: solve(ode(), maxiters=0), ValueError, "maxiters", id="maxiters-zero"),
    pytest.param(lambda: solve(ode(), maxiters=10.5), TypeError, "maxiters", id="maxiters-float"),
    pytest.param(lambda: solve(ode(), dtmin=-1.0), ValueError, "dtmin", id="dtmin-negative"),
    pytest.param(lambda: solve(ode(), dtmax="a"), TypeError, "dtmax", id="dtmax-string"),
    pytest.param(lambda: solve(ode(), saveat=[0.5, 2.0]), ValueError, "saveat", id="saveat-outside"),
    pytest.param(lambda: solve(ode(), saveat=[0.5, 0.2]), ValueError, "saveat", id="saveat-order"),
    pytest.param(lambda: solve(ode(), saveat="0.5"), TypeError, "saveat", id="saveat-string"),
    pytest.param(lambda: solve(ode(), saveat=[0.5, "x"]), TypeError, "saveat", id="saveat-mixed"),
    pytest.param(lambda: solve(ode(), saveat=[0.5, float("nan")]), ValueError, "saveat", id="saveat-nan"),
    pytest.param(lambda: solve(ode(), "Euler", timesteps=[0.0, "a", 1.0]), TypeError, "timesteps", id="grid-mixed"),
    pytest.param(lambda: solve(ode(), adaptive="yes"), TypeError, "adaptive", id="adaptive-string"),
    pytest.param(lambda: solve(ode(), differentiable=1), TypeError, "differentiable", id="differentiable-int"),
    pytest.param(lambda: solve(ode(), generator=3), TypeError, "generator", id="generator-int"),
    pytest.param(lambda: solve(ode(), foo=1), TypeError, "foo", id="unknown-option"),
    pytest.param(lambda: solve(ode(), "DP5", "scipy", compact=True), TypeError, "compact", id="torch-option-on-scipy"),
    pytest.param(lambda: solve(ode(), "DP5", "scipy", dt=0.1, adaptive=False), ValueError, "scipy", id="scipy-fixed"),
]


@pytest.mark.parametrize("call, exc, names", SOLVE_CASES)
def test_solve_refuses(call, exc, names, out_dir):
    assert_refused(call, exc, names, out_dir)


# -- user callables: their first output is checked on every backend ---------------------------------------------------


@pytest.fixture
def fake_julia(monkeypatch):
    from pysens.solvers.backends import julia_backend as jb

    monkeypatch.setattr(jb, "_status", (True, "fake Julia (non-numerical test double)"))
    monkeypatch.setattr(jb, "_session_cache", FakeJuliaSession())


BACKEND_METHODS = [("torch", "Tsit5"), ("scipy", "DP5"), ("julia", "Tsit5"), ("torch", "Rodas5P"), ("scipy", "BDF")]

BAD_RHS = [
    pytest.param(
        lambda t, x: -x[:, :1], ValueError, r"f returned shape \[3, 1\].*expected \[3, 2\]", id="f-broadcasts"
    ),
    pytest.param(lambda t, x: -x.sum(1), ValueError, r"f returned shape \[3\]", id="f-drops-axis"),
    pytest.param(lambda t, x: -x[..., None], ValueError, r"f returned shape \[3, 2, 1\]", id="f-extra-axis"),
    pytest.param(lambda t, x: (-x).float(), TypeError, "f returned dtype torch.float32", id="f-dtype"),
    pytest.param(lambda t, x: (-x).numpy(), TypeError, "f must return a torch.Tensor", id="f-numpy"),
    pytest.param(lambda t, x: [0.0] * 6, TypeError, "f must return a torch.Tensor", id="f-list"),
    pytest.param(
        lambda t, x: torch.empty(3, 2, dtype=x.dtype, device="meta"), ValueError, "f returned.*meta", id="f-meta"
    ),
]


@pytest.mark.parametrize("backend, method", BACKEND_METHODS)
@pytest.mark.parametrize("f, exc, names", BAD_RHS)
def test_wrong_right_hand_side_is_named_on_every_backend(backend, method, f, exc, names, fake_julia, out_dir):
    assert_refused(lambda: solve(ode(f), method, backend), exc, names, out_dir)


def test_wrong_jacobian_is_named(out_dir):
    bad = ode(jac=lambda t, x: -torch.ones(B, D, dtype=x.dtype))
    assert_refused(lambda: solve(bad, "Rodas5P"), ValueError, r"jac returned shape \[3, 2\].*\[3, 2, 2\]", out_dir)
    assert_refused(lambda: solve(bad, "RadauIIA5", "scipy"), ValueError, "jac returned shape", out_dir)


def test_wrong_jvp_is_named(out_dir):
    bad = ode(jvp=lambda t, x, v: -v[:, :1])
    call = lambda: solve(bad, "CVODE_BDF", "scipy", linsolve="gmres")  # noqa: E731
    pytest.importorskip("sksundae")
    assert_refused(call, ValueError, r"jvp returned shape \[3, 1\]", out_dir)


def test_wrong_split_part_is_named(out_dir):
    bad = SplitODEProblem(decay, lambda t, x: x[:, :1], x0(), (0.0, 1.0))
    assert_refused(lambda: solve(bad, "KenCarp4"), ValueError, "f2 returned shape", out_dir)
    assert_refused(lambda: solve(bad, "Tsit5"), ValueError, "f2 returned shape", out_dir)


@pytest.mark.parametrize(
    "g, exc, names",
    [
        (lambda t, x: torch.ones(B, dtype=x.dtype), ValueError, r"g returned shape \[3\]"),
        (lambda t, x: torch.ones(B, D, 2, dtype=x.dtype), ValueError, "g returned shape"),
        (lambda t, x: torch.ones(B, D, dtype=torch.float32), TypeError, "g returned dtype"),
    ],
    ids=["g-drops-axis", "g-extra-axis", "g-dtype"],
)
def test_wrong_noise_term_is_named(g, exc, names, out_dir):
    prob = SDEProblem(decay, g, x0(), (0.0, 1.0), noise="diagonal")
    assert_refused(lambda: solve(prob, "EM", dt=0.1, generator=torch.Generator().manual_seed(0)), exc, names, out_dir)


def test_wrong_sde_drift_is_named(out_dir):
    prob = SDEProblem(lambda t, x: x[:, :1], lambda t, x: torch.ones_like(x), x0(), (0.0, 1.0), noise="additive")
    assert_refused(lambda: solve(prob, "EM", dt=0.1), ValueError, "f returned shape", out_dir)


def test_noise_term_may_broadcast_axis_by_axis():
    """A noise constant along the event axes (``[B, 1]``) or a 0-d one broadcasts without ambiguity: accepted."""
    for g in (lambda t, x: 0.1 * torch.ones(B, 1, dtype=x.dtype), lambda t, x: torch.tensor(0.1, dtype=x.dtype)):
        prob = SDEProblem(decay, g, x0(), (0.0, 1.0), noise="diagonal")
        sol = solve(prob, "EM", dt=0.1, generator=torch.Generator().manual_seed(0))
        assert sol.retcode == "Success" and sol.x.shape == (2, B, D)


def test_numpy_scalar_arguments_are_numbers():
    sol = solve(ode(), "Tsit5", rtol=np.float64(1e-6), atol=np.float32(1e-8), maxiters=np.int64(1000))
    assert sol.retcode == "Success"


def test_wrong_preconditioner_is_named(out_dir):
    def precond(t, x, gamma, v):
        return v[:, :1]

    prob = ODEProblem(lambda t, x: -100 * x, torch.ones(B, D, dtype=torch.float64), (0.0, 1.0))
    call = lambda: solve(prob, "KenCarp4", linsolve="gmres", precond=precond)  # noqa: E731
    assert_refused(call, ValueError, r"precond returned shape \[3, 1\]", out_dir)
    assert_refused(lambda: solve(prob, "KenCarp4", linsolve="gmres", precond=3), TypeError, "precond", out_dir)
