"""The cost paths of a sensitivity solve give the values of the plain ones: the batched score derivatives of all P
directions (PerturbationBank) and the reverse-mode / Jacobian-reuse engines of score_jets, against closed forms
and against the direction-by-direction and forward-mode evaluations."""

import math

import pytest
import torch

from pysens.derivatives import jacobian
from pysens.derivatives.autotune import callable_key
from pysens.diffusion import VP, MLPScore
from pysens.sensitivity import (
    EmpiricalMeasure,
    GaussianMeanShift,
    GaussianMixtureMeasure,
    ModelMeasure,
    data_edit,
)
from pysens.sensitivity.perturbation_bank import PerturbationBank
from pysens.sensitivity.tangents import chosen_jet_engines, score_jets

DT = torch.float64
EPS = torch.finfo(DT).eps


def _points(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=DT)


def test_bank_matches_the_closed_form_of_one_point_mass():
    """σ = δ_y: log σ_t = log N(x; α y, β² I), ∇log σ_t = −(x − α y)/β², so δs = e^{log σ_t − ℓ}(∇log σ_t − s)."""
    process, d, B = VP(), 5, 7
    y = _points(1, d, 0)
    x = 0.7 * _points(B, d, 1)
    t = torch.linspace(0.2, 0.9, B, dtype=DT)
    s, ell = _points(B, d, 2), -3.0 + _points(B, 1, 3)[:, 0]
    alpha, beta2 = process.scale(t)[:, None], process.sigma(t)[:, None] ** 2
    diff = x - alpha * y
    log_sigma = -0.5 * (diff**2).sum(1) / beta2[:, 0] - 0.5 * d * torch.log(2 * math.pi * beta2[:, 0])
    exact = torch.exp(log_sigma - ell)[:, None] * (-diff / beta2 - s)
    got = PerturbationBank([EmpiricalMeasure(y)]).score_derivatives(x, t, process, ell, s)[0]
    # the logit |x − α y|²/2β² and ℓ are each rounded to a few ulp of their size; exp turns that into a relative error
    scale = 1.0 + float((log_sigma.abs() + ell.abs()).max())
    assert torch.allclose(got, exact, rtol=64 * EPS * scale, atol=0.0)


def test_bank_equals_direction_by_direction_on_every_kind_of_part():
    """Point-mass edits of different sizes (padded into one group), smoothed (isotropic) edits, a part shared by two
    directions, a diagonal mixture and a mean shift (evaluated on their own), and the model's own law."""
    process, d, B = VP(), 6, 9
    shared = EmpiricalMeasure(_points(4, d, 10))
    directions = [
        data_edit(100, removed=_points(3, d, 11)).perturbation,
        data_edit(100, removed=_points(5, d, 12), added=_points(2, d, 13)).perturbation,
        data_edit(100, added=_points(4, d, 14), bandwidth=0.3).perturbation,
        shared - ModelMeasure(),
        0.5 * shared + 2.0 * EmpiricalMeasure(_points(6, d, 15), bandwidth=0.1),
        GaussianMixtureMeasure(_points(2, d, 16), 0.2 + torch.rand(2, d, dtype=DT)) - ModelMeasure(),
        GaussianMeanShift(torch.zeros(d, dtype=DT), 0.5, _points(1, d, 17)[0]),
        ModelMeasure(),
    ]
    bank = PerturbationBank(directions)
    assert len(bank) == len(directions)
    assert sum(len(g.slots) for g in bank.groups) >= 5  # the empirical parts were batched
    x = 0.5 * _points(B, d, 20)
    s = _points(B, d, 21)
    log_scale = []
    for t in (torch.tensor(0.35, dtype=DT), torch.linspace(0.05, 0.95, B, dtype=DT)):
        ell = -4.0 + _points(B, 1, 22)[:, 0]
        ref = torch.stack([p.score_derivative(x, t, process, ell, s) for p in directions])
        got = bank.score_derivatives(x, t, process, ell, s)
        assert got.shape == ref.shape
        for part in bank.parts:
            if hasattr(part, "log_density"):
                log_scale.append(float(part.log_density(x, t, process).abs().max()))
        scale = 1.0 + max(log_scale) + float(ell.abs().max())
        # same operations up to the order of the reductions over d and K: a few ulp of each logit (size ≤ scale)
        # amplified by exp, relative to the direction's largest entry
        for p in range(len(directions)):
            bound = 64 * EPS * scale * float(ref[p].abs().max())
            assert float((got[p] - ref[p]).abs().max()) <= bound, directions[p]
    assert torch.equal(bank.score_derivatives(x, 0.3, process, ell, s)[-1], torch.zeros_like(s))


def test_bank_chunks_groups_under_a_memory_budget():
    process, d, B = VP(), 4, 5
    directions = [EmpiricalMeasure(_points(3, d, k)) for k in range(5)]
    x, s, ell = _points(B, d, 30), _points(B, d, 31), torch.zeros(B, dtype=DT)
    whole = PerturbationBank(directions).score_derivatives(x, 0.4, process, ell, s)
    tiny = PerturbationBank(directions, max_chunk_bytes=1).score_derivatives(x, 0.4, process, ell, s)
    assert torch.allclose(whole, tiny, rtol=64 * EPS, atol=0.0)


def _linear_score(A):
    """s(x) = −x Aᵀ: J = −A in every row, exactly."""

    def score(x, t):
        return -x @ A.T

    return score


@pytest.mark.parametrize("engine", ["forward", "reverse", "autograd", "jacobian", "auto"])
def test_score_jets_engines_give_the_exact_linear_jets(engine):
    d, B, P = 5, 4, 3
    g = torch.Generator().manual_seed(40)
    A = torch.randn(d, d, generator=g, dtype=DT)
    x, v = torch.randn(B, d, generator=g, dtype=DT), torch.randn(P, B, d, generator=g, dtype=DT)
    probes = torch.randn(2, B, d, generator=g, dtype=DT)
    divergence = "exact" if engine == "jacobian" else "hutchinson"
    jets = score_jets(
        _linear_score(A),
        x,
        0.5,
        v,
        divergence=divergence,
        probes=None if engine == "jacobian" else probes,
        engine=engine,
    )
    exact_products = -v @ A.T
    # each product is a d-term dot product: at most d ulp of Σ_j |A_ij v_j|
    assert torch.allclose(jets.products, exact_products, rtol=0, atol=d * EPS * float((v.abs() @ A.abs().T).max()))
    if divergence == "exact":
        exact_div = torch.full((B,), -float(torch.trace(A)), dtype=DT)
    else:
        exact_div = -torch.einsum("kbi,ij,kbj->kb", probes, A, probes).mean(0)
    bound = 4 * d * d * EPS * float((probes.abs().max() ** 2) * A.abs().sum())
    assert torch.allclose(jets.divergence, exact_div, rtol=0, atol=bound)


def test_reverse_and_jacobian_reuse_equal_forward_mode_on_a_network():
    """On an MLP score (float64): the double-VJP products and the Jacobian-reuse products (J formed by d VJPs, then
    J·y) equal the vmapped forward-mode JVP to round-off of the chain of matmuls (the tolerance: 1e3 ulp of the
    largest product, for chains of ≤ 3 × 32 accumulated terms per entry)."""
    torch.manual_seed(0)
    process = VP()
    model = MLPScore(6, process, hidden=32, depth=2).to(DT).requires_grad_(False)
    g = torch.Generator().manual_seed(41)
    B, P = 5, 3
    x = torch.randn(B, 6, generator=g, dtype=DT)
    t = torch.linspace(0.1, 0.9, B, dtype=DT)
    v = torch.randn(P, B, 6, generator=g, dtype=DT)
    probes = torch.randn(2, B, 6, generator=g, dtype=DT)
    fwd = score_jets(model, x, t, v, divergence="hutchinson", probes=probes, engine="forward")
    rev = score_jets(model, x, t, v, divergence="hutchinson", probes=probes, engine="reverse")
    plain = score_jets(model, x, t, v, divergence="hutchinson", probes=probes, engine="autograd")
    fwd_exact = score_jets(model, x, t, v, divergence="exact", engine="forward")
    jac_exact = score_jets(model, x, t, v, divergence="exact", engine="jacobian")
    tol = 1e3 * EPS * float(fwd.products.abs().max())
    assert torch.equal(fwd.score, rev.score)
    assert float((rev.products - fwd.products).abs().max()) <= tol
    assert float((plain.products - fwd.products).abs().max()) <= tol
    assert float((plain.divergence - fwd.divergence).abs().max()) <= 1e3 * EPS * float(fwd.divergence.abs().max())
    assert float((jac_exact.products - fwd.products).abs().max()) <= tol
    div_tol = 1e3 * EPS * float(fwd_exact.divergence.abs().max())
    assert float((jac_exact.divergence - fwd_exact.divergence).abs().max()) <= div_tol
    assert float((rev.divergence - fwd.divergence).abs().max()) <= 1e3 * EPS * float(fwd.divergence.abs().max())
    # the Jacobian-reuse products are J·y with the same J the divergence reads
    _, J = jacobian(lambda u: model(u, t), x)
    assert torch.allclose(jac_exact.products, torch.einsum("bij,pbj->pbi", J, v), rtol=0, atol=tol)


def test_auto_measures_once_and_caches_its_choice():
    torch.manual_seed(1)
    model = MLPScore(4, VP(), hidden=16, depth=1).to(DT).requires_grad_(False)
    x = torch.randn(3, 4, dtype=DT)
    v = torch.randn(2, 3, 4, dtype=DT)
    probes = torch.randn(1, 3, 4, dtype=DT)
    with torch.no_grad():  # as solves run: the plain-autograd engine is a candidate too
        first = score_jets(model, x, 0.5, v, divergence="hutchinson", probes=probes)
        mine = callable_key(model)
        keys = [k for k in chosen_jet_engines() if k[0].startswith("score_jets:P=2:K=1:") and k[1] == mine]
        assert len(keys) == 1 and chosen_jet_engines()[keys[0]] in ("forward", "reverse", "autograd")
        assert "autograd" in keys[0][0]
        again = score_jets(model, x, 0.5, v, divergence="hutchinson", probes=probes)
    assert torch.allclose(first.products, again.products, rtol=0, atol=1e3 * EPS * float(first.products.abs().max()))


def test_bad_engine_is_named():
    with pytest.raises(ValueError, match="engine must be one of"):
        score_jets(_linear_score(torch.eye(2, dtype=DT)), torch.zeros(1, 2, dtype=DT), 0.5, engine="backward")


@pytest.mark.parametrize("engine", ["forward", "reverse", "autograd", "auto"])
def test_products_without_a_divergence_are_exact_on_a_linear_score(engine):
    d, B, P = 4, 3, 2
    g = torch.Generator().manual_seed(42)
    A = torch.randn(d, d, generator=g, dtype=DT)
    x, v = torch.randn(B, d, generator=g, dtype=DT), torch.randn(P, B, d, generator=g, dtype=DT)
    with torch.no_grad():
        jets = score_jets(_linear_score(A), x, 0.5, v, engine=engine)
    assert jets.divergence is None
    assert torch.allclose(jets.products, -v @ A.T, rtol=0, atol=d * EPS * float((v.abs() @ A.abs().T).max()))
