"""Perturbation measures: closed-form noised densities, linear combinations, data edits and their ε."""

import math

import pytest
import torch

from pysens.diffusion import VP, EmpiricalScore, GaussianMixtureScore
from pysens.sensitivity import (
    EmpiricalMeasure,
    GaussianMeanShift,
    GaussianMixtureMeasure,
    ModelMeasure,
    SignedMeasure,
    data_edit,
    edit_epsilon,
)

DT = torch.float64


def test_mixture_measure_matches_the_mixture_model_at_every_time():
    g = torch.Generator().manual_seed(0)
    means, cov = torch.randn(4, 3, generator=g, dtype=DT), 0.1 + torch.rand(4, 3, generator=g, dtype=DT)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=DT)  # normalised by both
    process = VP()
    model = GaussianMixtureScore(means, cov, weights, process=process)
    measure = GaussianMixtureMeasure(means, cov, weights)
    x = torch.randn(5, 3, generator=g, dtype=DT)
    t = torch.tensor([1e-3, 0.1, 0.4, 0.7, 1.0], dtype=DT)  # per-sample times
    ld, sc = measure.log_density_and_score(x, t, process)
    assert torch.equal(ld, model.log_density(x, t))
    assert torch.equal(sc, model(x, t))


def test_empirical_measure_is_point_masses_and_bandwidth_smooths():
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(6, 1, 2, 2, generator=g, dtype=DT)
    x = torch.randn(3, 1, 2, 2, generator=g, dtype=DT)
    process = VP()
    exact = EmpiricalScore(pts, process=process)
    ld, sc = EmpiricalMeasure(pts).log_density_and_score(x, 0.3, process)
    assert torch.allclose(ld, exact.log_density(x, 0.3), rtol=0, atol=1e-13)
    assert sc.shape == x.shape and torch.allclose(sc, exact(x, 0.3), rtol=1e-13, atol=1e-13)
    # pre-smoothing by h adds α_t² h² to the variance: the same as point masses at a larger β
    h = 0.2
    smooth = EmpiricalMeasure(pts, bandwidth=h)
    alpha, beta = process.scale(0.3), process.sigma(0.3)
    ref = GaussianMixtureMeasure(pts, torch.full((6,), h**2, dtype=DT))
    assert torch.allclose(smooth.log_density(x, 0.3, process), ref.log_density(x, 0.3, process), rtol=0, atol=1e-13)
    assert float((alpha**2 * h**2 + beta**2) ** 0.5) > float(beta)


def test_high_dimensional_point_masses_stay_in_log_space():
    # d = 784 at small t: log σ_t is thousands of nats; nothing overflows or underflows to nan
    g = torch.Generator().manual_seed(2)
    pts = torch.rand(50, 784, generator=g, dtype=DT) * 2 - 1
    x = pts[:3] + 1e-3 * torch.randn(3, 784, generator=g, dtype=DT)
    ld, sc = EmpiricalMeasure(pts).log_density_and_score(x, 1e-4, VP())
    assert bool(torch.isfinite(ld).all()) and bool(torch.isfinite(sc).all())
    assert float(ld.min()) > 1000.0


def test_signed_combinations_flatten_and_check_dimensions():
    a = EmpiricalMeasure(torch.zeros(2, 3, dtype=DT))
    b = GaussianMixtureMeasure(torch.ones(1, 3, dtype=DT), torch.ones(1, dtype=DT))
    eta = 2.0 * a - b / 4 + ModelMeasure()
    assert [c for c, _ in eta.terms()] == [2.0, -0.25, 1.0]
    assert eta.event_shape == torch.Size([3])
    assert [c for c, _ in (-eta).terms()] == [-2.0, 0.25, -1.0]
    with pytest.raises(ValueError, match="one dimension"):
        _ = a + EmpiricalMeasure(torch.zeros(1, 4, dtype=DT))
    with pytest.raises(ValueError, match="terms is empty"):
        SignedMeasure([])
    with pytest.raises(ValueError, match="finite"):
        SignedMeasure([(float("nan"), a)])


def test_model_measure_and_combination_derivatives_are_linear():
    process = VP()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, generator=g, dtype=DT)
    s = torch.randn(4, 3, generator=g, dtype=DT)
    ell = torch.randn(4, generator=g, dtype=DT)
    a = EmpiricalMeasure(torch.randn(3, 3, generator=g, dtype=DT))
    b = GaussianMixtureMeasure(torch.randn(2, 3, generator=g, dtype=DT), torch.ones(2, dtype=DT))
    da = a.score_derivative(x, 0.5, process, ell, s)
    db = b.score_derivative(x, 0.5, process, ell, s)
    combo = (0.5 * a - 3.0 * b + 7.0 * ModelMeasure()).score_derivative(x, 0.5, process, ell, s)
    assert torch.allclose(combo, 0.5 * da - 3.0 * db, rtol=1e-14, atol=0)
    assert torch.equal(ModelMeasure().score_derivative(x, 0.5, process, ell, s), torch.zeros_like(s))


def test_mean_shift_of_the_model_itself_is_the_constant_closed_form():
    # ρ = σ = N(μ, C) (full C): δs = α_t Σ_t⁻¹ u for every x (digest §2.4)
    process = VP()
    g = torch.Generator().manual_seed(4)
    mu = torch.randn(3, generator=g, dtype=DT)
    a = torch.randn(3, 3, generator=g, dtype=DT)
    C = a @ a.T + 0.3 * torch.eye(3, dtype=DT)
    u = torch.randn(3, generator=g, dtype=DT)
    rho = GaussianMixtureScore(mu[None], C[None], process=process)
    x = torch.randn(5, 3, generator=g, dtype=DT)
    t = 0.3
    ds = GaussianMeanShift(mu, C, u).score_derivative(x, t, process, rho.log_density(x, t), rho(x, t))
    alpha, beta = process.scale(t), process.sigma(t)
    expected = alpha * torch.linalg.solve(alpha**2 * C + beta**2 * torch.eye(3, dtype=DT), u)
    assert torch.allclose(ds, expected.expand(5, 3), rtol=1e-12, atol=1e-14)
    # isotropic and diagonal forms agree with the full one
    iso = GaussianMeanShift(mu, 0.7, u).score_derivative(x, t, process, rho.log_density(x, t), rho(x, t))
    diag = GaussianMeanShift(mu, torch.full((3,), 0.7, dtype=DT), u).score_derivative(
        x, t, process, rho.log_density(x, t), rho(x, t)
    )
    full = GaussianMeanShift(mu, 0.7 * torch.eye(3, dtype=DT), u).score_derivative(
        x, t, process, rho.log_density(x, t), rho(x, t)
    )
    assert torch.allclose(iso, diag, rtol=1e-13) and torch.allclose(iso, full, rtol=1e-12)


def test_edit_epsilon_follows_the_digest():
    assert edit_epsilon(100, added=5) == pytest.approx(5 / 105)
    assert edit_epsilon(100, removed=5) == pytest.approx(5 / 95)
    assert edit_epsilon(100, added=5, convention="additive") == pytest.approx(0.05)
    assert edit_epsilon(100, added=3, removed=2) == pytest.approx(5 / 101)
    with pytest.raises(ValueError, match="removed"):
        edit_epsilon(10, removed=10)
    with pytest.raises(ValueError, match="convention"):
        edit_epsilon(10, added=1, convention="other")
    with pytest.raises(ValueError, match="at least one"):
        edit_epsilon(10)


def test_data_edit_reproduces_the_edited_empirical_law_to_first_order():
    # ρ' = empirical law after the edit; ρ + εη must equal it exactly for point masses (both are mixtures)
    g = torch.Generator().manual_seed(5)
    train = torch.randn(20, 2, generator=g, dtype=DT)
    new = torch.randn(3, 2, generator=g, dtype=DT)
    edit = data_edit(20, added=new, removed=train[:2])
    rho = EmpiricalMeasure(train)
    rho_edit = EmpiricalMeasure(torch.cat([train[2:], new]))
    x = torch.randn(6, 2, generator=g, dtype=DT)
    process, t = VP(), 0.2
    density = rho.log_density(x, t, process).exp()
    terms = {id(p): c for c, p in edit.perturbation.terms()}
    eta = sum(
        (c * (density if isinstance(p, ModelMeasure) else p.log_density(x, t, process).exp()))
        for c, p in edit.perturbation.terms()
    )
    assert len(terms) == 3
    assert torch.allclose(density + edit.epsilon * eta, rho_edit.log_density(x, t, process).exp(), rtol=1e-12)
    assert edit.epsilon == pytest.approx(5 / 21) and (edit.added, edit.removed) == (3, 2)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: EmpiricalMeasure(torch.zeros(0, 3)), "points is empty"),
        (lambda: EmpiricalMeasure(torch.zeros(3)), "points must be"),
        (
            lambda: EmpiricalMeasure(torch.zeros(2, 3), weights=torch.tensor([1.0, -0.5])),
            "weights must be non-negative",
        ),
        (lambda: EmpiricalMeasure(torch.zeros(2, 3), weights=torch.tensor([0.0, 0.0])), "weights must have a positive"),
        (lambda: EmpiricalMeasure(torch.zeros(2, 3), bandwidth=-1.0), "bandwidth"),
        (lambda: GaussianMixtureMeasure(torch.zeros(0, 2)), "means is empty"),
        (lambda: GaussianMixtureMeasure(torch.zeros(2, 2), torch.tensor([-1.0, 1.0])), "non-negative"),
        (lambda: GaussianMeanShift(torch.zeros(3), 1.0, torch.zeros(2)), "direction"),
        (lambda: GaussianMeanShift(torch.zeros(3), torch.ones(2), torch.zeros(3)), "covariance"),
        (lambda: data_edit(10), "added or removed"),
    ],
)
def test_bad_measures_name_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_wrong_dimension_at_evaluation_is_named():
    with pytest.raises(ValueError, match="x: a perturbation of event shape"):
        EmpiricalMeasure(torch.zeros(2, 3, dtype=DT)).log_density(torch.zeros(1, 4, dtype=DT), 0.5, VP())
    assert math.isclose(edit_epsilon(9, removed=1), 1 / 8)
