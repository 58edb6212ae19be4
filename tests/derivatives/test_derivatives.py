"""The derivative layer against closed forms: a row-wise field with a hand-derived Jacobian, and the Gaussian
mixture score (its Jacobian and divergence in closed form). Exact engines agree with the closed forms to a few
ulp of O(1) arithmetic (1e-12); finite-difference engines to their truncation/rounding balance."""

import importlib
import math

import numpy as np
import pytest
import torch

from pysens import derivatives as D
from pysens.derivatives.autotune import batch_bucket
from pysens.diffusion import VP, EmpiricalScore, GaussianMixtureScore

B, d = 5, 4
EXACT_DIVERGENCE = ("vjp", "grad-batched", "jvp", "loop", "auto")


def _field():
    """F(x)_b = A tanh(x_b) + c x_b² (elementwise square): J_b = A diag(1 − tanh² x_b) + 2c diag(x_b)."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    c = 0.7

    def f(x):
        return torch.tanh(x) @ A.T + c * x**2

    def jac(x):
        return A[None] * (1 - torch.tanh(x) ** 2)[:, None, :] + torch.diag_embed(2 * c * x)

    return f, jac


@pytest.fixture
def xv():
    g = torch.Generator().manual_seed(4)
    return torch.randn(B, d, generator=g, dtype=torch.float64), torch.randn(B, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("engine", D.JACOBIAN_ENGINES)
def test_jacobian_engines_match_closed_form(engine, xv):
    f, jac = _field()
    x, _ = xv
    fx, J = D.jacobian(f, x, engine=engine)
    tol = 1e-12 if engine != "fd" else 1e-6  # one-sided difference: about sqrt(eps)·(1 + |x|)·|f''|
    assert torch.allclose(fx, f(x), atol=1e-14, rtol=0)
    assert (J - jac(x)).abs().max() < tol


@pytest.mark.parametrize("engine", D.JVP_ENGINES)
def test_jvp_engines_match_closed_form(engine, xv):
    f, jac = _field()
    x, v = xv
    v[2] = 0.0  # a zero tangent row gives exactly zero under every engine
    _, jv = D.jvp(f, x, v, engine=engine)
    exact = torch.einsum("bij,bj->bi", jac(x), v)
    tol = {"fd": 1e-6, "fd-central": 1e-9}.get(engine, 1e-12)
    assert (jv - exact).abs().max() < tol
    assert bool((jv[2] == 0).all())


def test_vjp_and_time_derivative(xv):
    f, jac = _field()
    x, u = xv
    _, jtu = D.vjp(f, x, u)
    assert (jtu - torch.einsum("bji,bj->bi", jac(x), u)).abs().max() < 1e-12
    t = torch.linspace(0.1, 0.9, B, dtype=torch.float64)

    def g(s, y):  # ∂g/∂t = cos(t) y
        return torch.sin(s)[:, None] * y

    for engine, tol in (("forward", 1e-14), ("double-vjp", 1e-14), ("fd", 1e-7), ("fd-central", 1e-9)):
        assert (D.time_derivative(g, t, x, engine=engine) - torch.cos(t)[:, None] * x).abs().max() < tol, engine


@pytest.mark.parametrize("engine", EXACT_DIVERGENCE)
def test_divergence_engines_match_trace(engine, xv):
    f, jac = _field()
    x, _ = xv
    D.clear_engine_cache()
    fx, div = D.divergence(f, x, engine=engine)
    assert torch.allclose(fx, f(x), atol=1e-14, rtol=0)
    assert (div - jac(x).diagonal(dim1=1, dim2=2).sum(-1)).abs().max() < 1e-12


def test_auto_caches_its_choice_per_key_and_bucket(xv):
    f, _ = _field()
    x, _ = xv
    D.clear_engine_cache()
    D.divergence(f, x, key="field")
    D.divergence(f, x[:3], key="field")  # batch 3 and 5 fall in different buckets (4, 8)
    D.divergence(f, x, key="field")
    chosen = D.chosen_engines()
    assert len(chosen) == 2 and set(chosen.values()) <= {"vjp", "jvp", "loop"}
    assert batch_bucket(5) == 8 and batch_bucket(8) == 8 and batch_bucket(1) == 1


def test_auto_measures_a_closure_rebuilt_every_call_once_and_keeps_none_alive(xv, monkeypatch):
    # the natural use inside a right-hand side: divergence(lambda u: score(u, t), x) with a fresh closure per call
    import functools
    import gc
    import weakref

    f, jac = _field()
    x, _ = xv
    autotune = importlib.import_module("pysens.derivatives.autotune")
    measured = []
    real = autotune.measure_engines

    def counting(k, *args, **kwargs):
        measured.append(k)
        return real(k, *args, **kwargs)

    monkeypatch.setattr(autotune, "measure_engines", counting)
    D.clear_engine_cache()
    alive = []
    for scale in (1.0, 2.0, 3.0):

        def field(u, s=scale):  # a new closure each time, the same definition site
            return s * f(u)

        alive.append(weakref.ref(field))
        _, div = D.divergence(field, x)
        assert torch.allclose(div, scale * torch.diagonal(jac(x), dim1=1, dim2=2).sum(-1), rtol=1e-12, atol=1e-12)
        del field
    gc.collect()
    assert len(measured) == 1 and len(D.chosen_engines()) == 1
    assert all(ref() is None for ref in alive)  # the cache holds no closure (nor what it captured)
    # bound methods: per instance; partials: as their function; other callables: by id
    key = autotune.callable_key

    class Model:
        def __call__(self, u):
            return f(u)

        def score(self, u):
            return f(u)

    a, b = Model(), Model()
    assert key(a.score) == key(a.score) != key(b.score)
    assert key(functools.partial(f)) == key(f) and key(a) == ("object", id(a)) != key(b)

    @functools.wraps(f)
    def wrapped(u):
        return f(u)

    from pysens.validation import checked_rhs

    assert key(wrapped) == key(f) and key(checked_rhs(a.score)) == key(a.score)


def test_solves_of_one_problem_measure_its_jacobian_engine_once(monkeypatch):
    # the solver's Jacobians are keyed by the user's right-hand side, not by the per-solve wrapper that checks its
    # output: a second solve (a tolerance sweep) runs the cached engine instead of measuring both again
    import pysens

    autotune = importlib.import_module("pysens.derivatives.autotune")
    measured = []
    real = autotune.measure_engines
    monkeypatch.setattr(autotune, "measure_engines", lambda k, *a, **kw: measured.append(k) or real(k, *a, **kw))
    A = torch.tensor([[-1.0, 0.5], [0.0, -1e3]], dtype=torch.float64)
    problem = pysens.ODEProblem(lambda t, x: x @ A.T, torch.ones(3, 2, dtype=torch.float64), (0.0, 1.0))
    exact = torch.ones(3, 2, dtype=torch.float64) @ torch.linalg.matrix_exp(A).T
    D.clear_engine_cache()
    for rtol in (1e-4, 1e-6):
        sol = pysens.solve(problem, "Rodas5P", rtol=rtol, atol=rtol)
        assert sol.success and torch.allclose(sol.final, exact, rtol=30 * rtol, atol=30 * rtol)
    assert [k[0] for k in measured] == ["row_jacobian"] and len(D.chosen_engines()) == 1


def test_a_cached_choice_the_next_callable_cannot_run_is_measured_afresh(xv):
    # one definition site, two scores: the choice made for the first (here a functorch engine) must not fail the
    # second, which reads its input through numpy (torch.func's wrapped tensors have no storage to read); the
    # plain-autograd engines can run it
    autotune = importlib.import_module("pysens.derivatives.autotune")
    f, jac = _field()
    x, _ = xv
    exact = jac(x).diagonal(dim1=1, dim2=2).sum(-1)

    def reads_numpy(u):
        return f(u) if np.isfinite(u.detach().numpy()).all() else torch.full_like(u, math.nan)

    def div_of(score):
        with torch.no_grad():
            return D.divergence(lambda u: score(u), x)[1]

    D.clear_engine_cache()
    assert (div_of(f) - exact).abs().max() < 1e-12
    (k,) = D.chosen_engines()
    for functorch_choice in ("vjp", "jvp"):
        autotune._CACHE[k] = functorch_choice  # what a measurement may pick for f, by timing alone
        assert (div_of(reads_numpy) - exact).abs().max() < 1e-12
        assert D.chosen_engines()[k] in ("grad-batched", "loop")
    assert (div_of(f) - exact).abs().max() < 1e-12  # and the new choice still serves the first score


def test_auto_with_no_engine_that_can_run_names_the_callables_own_error(xv):
    # a bug in the user's field must reach the user as its own error, not as "no engine could evaluate" alone
    x, _ = xv
    wrong = torch.ones(d + 1, d + 1, dtype=x.dtype)

    D.clear_engine_cache()
    for grad in (False, True):
        with torch.set_grad_enabled(grad), pytest.raises(RuntimeError, match="no engine could evaluate") as info:
            D.divergence(lambda u: u @ wrong, x.clone().requires_grad_(grad))
        assert "vjp: RuntimeError: " in str(info.value) and "cannot be multiplied" in str(info.value)
        assert isinstance(info.value.__cause__, RuntimeError)


def test_bad_engine_names_are_refused(xv):
    f, _ = _field()
    x, v = xv
    with pytest.raises(ValueError, match="engine"):
        D.divergence(f, x, engine="trace")
    with pytest.raises(ValueError, match="engine"):
        D.jvp(f, x, v, engine="reverse")
    with pytest.raises(ValueError, match="analytic"):
        D.divergence(f, x, engine="analytic")


def _mixtures():
    g = torch.Generator().manual_seed(5)
    means = torch.randn(3, d, generator=g, dtype=torch.float64)
    a = torch.randn(3, d, d, generator=g, dtype=torch.float64)
    return {
        "full": GaussianMixtureScore(means, 0.2 * a @ a.mT + 0.05 * torch.eye(d, dtype=torch.float64), process=VP()),
        "diagonal": GaussianMixtureScore(means, torch.rand(3, d, generator=g, dtype=torch.float64), process=VP()),
        "isotropic": GaussianMixtureScore(means, torch.rand(3, generator=g, dtype=torch.float64), process=VP()),
        "empirical": EmpiricalScore(means, process=VP()),
    }


@pytest.mark.parametrize("kind", ["full", "diagonal", "isotropic", "empirical"])
def test_mixture_closed_forms_match_autodiff(kind, xv):
    model = _mixtures()[kind]
    x, _ = xv
    t = torch.linspace(0.05, 0.9, B, dtype=torch.float64)

    def field(u):
        return model(u, t)

    s, J = model.score_and_jacobian(x, t)
    s2, div = model.score_and_divergence(x, t)
    _, J_ad = D.jacobian(field, x, engine="vjp")
    scale = J_ad.abs().max()
    assert torch.allclose(s, field(x), atol=1e-13 * (1 + s.abs().max()), rtol=0)
    assert (J - J_ad).abs().max() < 1e-12 * scale
    assert (div - J_ad.diagonal(dim1=1, dim2=2).sum(-1)).abs().max() < 1e-12 * d * scale
    _, div_auto = D.divergence(field, x, analytic=lambda u: model.score_and_divergence(u, t))
    assert torch.equal(div_auto, div)


def test_hessian_vector_product_of_log_density(xv):
    model = _mixtures()["full"]
    x, v = xv
    t = torch.full((B,), 0.3, dtype=torch.float64)
    s, J = model.score_and_jacobian(x, t)  # the Hessian of log p_t is the score's Jacobian
    for engine in D.HVP_ENGINES:
        grad, hv = D.hessian_vector_product(lambda u: model.log_density(u, t), x, v, engine=engine)
        assert (grad - s).abs().max() < 1e-12
        assert (hv - torch.einsum("bij,bj->bi", J, v)).abs().max() < 1e-12 * (1 + J.abs().max())


def test_hutchinson_engines_agree_and_are_unbiased_for_rademacher(xv):
    f, jac = _field()
    x, _ = xv
    probes = D.hutchinson_probes(4096, x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    _, a = D.hutchinson_divergence(f, x, probes, engine="jvp")
    _, b = D.hutchinson_divergence(f, x, probes, engine="vjp")
    assert (a - b).abs().max() < 1e-12
    exact = jac(x).diagonal(dim1=1, dim2=2).sum(-1)
    # Rademacher: variance Σ_{i≠j} (J_ij² + J_ij J_ji) / K per sample; 6 standard deviations
    J = jac(x)
    off = J - torch.diag_embed(J.diagonal(dim1=1, dim2=2))
    sd = torch.sqrt(((off**2) + off * off.mT).sum((1, 2)).clamp_min(0) / 4096)
    assert bool(((a - exact).abs() <= 6 * sd + 1e-12).all())
    assert math.isfinite(float(a.sum()))


def test_engines_work_under_no_grad_as_inside_solves(xv):
    f, jac = _field()
    x, _ = xv
    exact = jac(x).diagonal(dim1=1, dim2=2).sum(-1)
    D.clear_engine_cache()
    with torch.no_grad():
        for engine in EXACT_DIVERGENCE:
            assert (D.divergence(f, x, engine=engine)[1] - exact).abs().max() < 1e-12, engine
        assert (D.jacobian(f, x, engine="loop")[1] - jac(x)).abs().max() < 1e-12


@pytest.mark.parametrize("engine", D.ROW_JACOBIAN_ENGINES)
def test_row_jacobian_engines_with_per_sample_times(engine, xv):
    f, jac = _field()
    x, _ = xv
    t = torch.linspace(0.5, 2.0, B, dtype=torch.float64)

    def g(s, y):  # J_b = t_b · (A diag(1 − tanh²) + 2c diag(x_b))
        return s[:, None] * f(y)

    D.clear_engine_cache()
    with torch.no_grad():
        J = D.row_jacobian(g, t, x, engine=engine)
    assert (J - t[:, None, None] * jac(x)).abs().max() < 1e-12


@pytest.mark.parametrize("chunk", [1, 3, 4, 8])
def test_grad_batched_in_chunks_matches_trace(chunk, xv):
    f, jac = _field()
    x, _ = xv
    exact = jac(x).diagonal(dim1=1, dim2=2).sum(-1)
    with torch.no_grad():
        fx, div = D.divergence(f, x, engine="grad-batched", chunk_size=chunk)
    assert torch.allclose(fx, f(x), atol=1e-14, rtol=0)
    assert (div - exact).abs().max() < 1e-12


def test_auto_measures_the_chunked_engine_for_large_batches_and_keeps_graph_calls_apart(xv, monkeypatch):
    dv = importlib.import_module("pysens.derivatives.divergence")  # the package exports a function of that name

    f, jac = _field()
    x, _ = xv
    exact = jac(x).diagonal(dim1=1, dim2=2).sum(-1)
    assert dv.cache_chunk(256, 64) == 4 and dv.cache_chunk(64, 16) is None and dv.cache_chunk(1 << 20, 8) == 1
    monkeypatch.setattr(dv, "CACHE_ELEMENTS", 2 * B * d)  # so that a batch of 5 rows of 4 counts as large: chunk 2
    assert dv.cache_chunk(B, d) == 2
    D.clear_engine_cache()
    with torch.no_grad():
        for _ in range(2):  # the measuring call, then the cached engine
            assert (D.divergence(f, x, key="field")[1] - exact).abs().max() < 1e-12
    (choice,) = D.chosen_engines().values()
    assert choice in ("vjp", "grad-batched", "grad-batched:2", "loop", "jvp")
    # a call that needs a graph is cached apart and never served by an evaluation-only engine
    leaf = x.clone().requires_grad_(True)
    _, div = D.divergence(f, leaf, key="field")
    (g,) = torch.autograd.grad(div.sum(), leaf)
    assert torch.isfinite(g).all() and len(D.chosen_engines()) == 2
    assert set(D.chosen_engines().values()) - {choice} <= {"vjp", "jvp"}
