"""Exact score models: the empirical score, high-dimensional stability, dtype handling and input checks."""

import pytest
import torch

from pysens.diffusion.processes import EDM, VE, VP
from pysens.diffusion.scores import EmpiricalScore, GaussianMixtureScore


@pytest.mark.parametrize("process", [VP(), VE(), EDM()], ids=["VP", "VE", "EDM"])
def test_empirical_score_equals_finite_differences_of_its_log_density(process):
    g = torch.Generator().manual_seed(0)
    points = torch.randn(7, 3, generator=g, dtype=torch.float64)
    weights = torch.rand(7, generator=g, dtype=torch.float64)
    model = EmpiricalScore(points, weights, process=process)
    t = torch.tensor([0.05, 0.2, 0.5, 0.9], dtype=torch.float64) * process.T
    x = process.scale(t)[:, None] * points[:4] + process.sigma(t)[:, None] * torch.randn(
        4, 3, generator=g, dtype=torch.float64
    )
    h = 1e-5 * process.sigma(t)[:, None]  # step relative to the local length scale β_t
    fd = torch.empty_like(x)
    for j in range(3):
        e = torch.zeros_like(x)
        e[:, j] = 1.0
        fd[:, j] = (model.log_density(x + h * e, t) - model.log_density(x - h * e, t)) / (2 * h[:, 0])
    torch.testing.assert_close(model(x, t), fd, rtol=1e-6, atol=1e-6)


def test_empirical_score_is_tweedie_of_the_posterior_over_points():
    # s = (α E[Y | x] − x)/β² with posterior ∝ w_i exp(−|x − α y_i|²/(2β²)), evaluated directly.
    g = torch.Generator().manual_seed(1)
    points = torch.randn(5, 2, 2, generator=g, dtype=torch.float64)
    model = EmpiricalScore(points, process=VP())
    x = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    t = 0.3
    a, b = VP().scale(t), VP().sigma(t)
    sq = ((x[:, None] - a * points[None]) ** 2).sum(dim=(2, 3))
    posterior = torch.softmax(-sq / (2 * b**2), dim=1)
    expected = (a * torch.einsum("bn,nij->bij", posterior, points) - x) / b**2
    torch.testing.assert_close(model(x, t), expected, rtol=1e-12, atol=1e-12)
    assert model.points.shape == (5, 2, 2) and model.event_shape == (2, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("process", [VP(), VE()], ids=["VP", "VE"])
def test_empirical_score_is_stable_in_784_dimensions(process, dtype):
    g = torch.Generator().manual_seed(2)
    points = torch.rand(100, 784, generator=g, dtype=torch.float64) * 2 - 1
    model64 = EmpiricalScore(points, process=process)
    model = EmpiricalScore(points, process=process).to(dtype)  # Module.to is in place: build a second model
    assert model.means.dtype == dtype
    z = torch.randn(4, 784, generator=g, dtype=torch.float64)
    for t in (process.t_eps, 1e-3, 0.5, process.T):
        a, b = process.scale(t), process.sigma(t)
        x64 = a * points[[3, 17, 42, 99]] + b * z
        x = x64.to(dtype)
        result = model.log_density_and_score(x, t)
        assert result.score.dtype == dtype
        assert bool(torch.isfinite(result.score).all()) and bool(torch.isfinite(result.log_density).all())
        if t <= 1e-3:
            # Each x sits on its own point's noised copy and every other point is ~ |y_i − y_j|²/β² ≳ 1e5 nats
            # less likely, so the posterior is one-hot and the score is exactly −z/β.
            exact = model64(x64, t)
            torch.testing.assert_close(exact, -z / b, rtol=1e-9, atol=1e-9)
        # Against float64 at the same (rounded) input: x − α y cancels down to β z, so float32 keeps about
        # eps32·|x|/β of the score's scale |s| ~ 1/β; that is the float32 floor at small t.
        reference = model64.log_density_and_score(x.double(), t)
        scale = float(reference.score.abs().max())
        floor = 1e-5 + 4 * torch.finfo(dtype).eps * float(x.abs().max()) / float(b)
        torch.testing.assert_close(result.score.double(), reference.score, rtol=0, atol=floor * scale)


def test_model_moves_dtype_and_still_agrees():
    means = torch.randn(3, 2, dtype=torch.float64)
    model = GaussianMixtureScore(means, torch.ones(3, dtype=torch.float64) * 0.3)
    x = torch.randn(4, 2, dtype=torch.float64)
    s64 = model(x, 0.4)
    model32 = model.to(torch.float32)
    s32 = model32(x.float(), torch.tensor([0.4] * 4))
    assert s32.dtype == torch.float32
    torch.testing.assert_close(s32.double(), s64, rtol=1e-5, atol=1e-5)


# -- input checks: each bad input raises and names the argument -----------------------------------------------


@pytest.fixture(scope="module")
def model():
    return EmpiricalScore(torch.randn(4, 3, dtype=torch.float64), process=VP())


def test_wrong_x_shape_names_x(model):
    with pytest.raises(ValueError, match=r"x must have shape \[B, 3\]"):
        model(torch.zeros(2, 4, dtype=torch.float64), 0.5)
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.zeros(3, dtype=torch.float64), 0.5)


def test_non_finite_row_stays_in_its_row(model):
    """A NaN row (a solver stage gone non-finite for one sample) gives NaN in that row only, never an exception that
    would abort the whole batch; the other rows equal their values computed without it."""
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3)
    clean = model.log_density_and_score(x, 0.5)
    x[1, 2] = float("nan")
    dirty = model.log_density_and_score(x, 0.5)
    assert torch.equal(dirty.score[0], clean.score[0]) and torch.equal(dirty.log_density[0], clean.log_density[0])
    assert bool(dirty.score[1].isnan().all()) and bool(dirty.log_density[1].isnan())


@pytest.mark.parametrize("t", [-0.1, 1.5, float("nan"), torch.tensor([0.5, 2.0], dtype=torch.float64)])
def test_time_outside_the_interval_names_t(model, t):
    with pytest.raises(ValueError, match="^t must"):
        model(torch.zeros(2, 3, dtype=torch.float64), t)


def test_time_batch_mismatch_names_t(model):
    with pytest.raises(ValueError, match="^t must be"):
        model(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0.5, 0.5, 0.5]))


def test_dtype_mismatch_names_x_and_the_expected_dtype(model):
    with pytest.raises(TypeError, match="x has dtype torch.float32 but the model is torch.float64"):
        model(torch.zeros(2, 3, dtype=torch.float32), 0.5)


def test_device_mismatch_names_x(model):
    # The meta device stands in for a second device on CPU-only machines.
    with pytest.raises(ValueError, match="x is on device meta but the model is on cpu"):
        model(torch.zeros(2, 3, dtype=torch.float64, device="meta"), 0.5)


def test_negative_weights_name_weights():
    with pytest.raises(ValueError, match="weights must be non-negative"):
        EmpiricalScore(torch.randn(3, 2), weights=torch.tensor([0.5, -0.1, 0.6]))
    with pytest.raises(ValueError, match="weights must have a positive sum"):
        EmpiricalScore(torch.randn(3, 2), weights=torch.zeros(3))
    with pytest.raises(ValueError, match=r"weights must have shape \[K\] = \[3\]"):
        EmpiricalScore(torch.randn(3, 2), weights=torch.ones(2))


def test_empty_point_sets_are_rejected():
    with pytest.raises(ValueError, match="points must contain at least one point"):
        EmpiricalScore(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="means must contain at least one component"):
        GaussianMixtureScore(torch.zeros(0, 2))


def test_point_masses_at_zero_noise_are_rejected(model):
    with pytest.raises(ValueError, match="beta.*t_eps"):
        model(torch.zeros(2, 3, dtype=torch.float64), 0.0)


def test_weights_are_normalised_and_uniform_by_default():
    m = EmpiricalScore(torch.randn(4, 2), weights=torch.tensor([1.0, 1.0, 2.0, 0.0]))
    torch.testing.assert_close(m.weights, torch.tensor([0.25, 0.25, 0.5, 0.0]))
    torch.testing.assert_close(EmpiricalScore(torch.randn(4, 2)).weights, torch.full((4,), 0.25))
