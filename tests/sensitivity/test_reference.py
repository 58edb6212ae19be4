"""DataLaw (the training set's closed-form noised law) and the reference readings of eq. (★) against exact answers."""

import pytest
import torch

from pysens.diffusion import VP, GaussianMixtureScore
from pysens.sensitivity import DataLaw, EmpiricalMeasure, data_edit, sample_sensitivity, score_derivative
from pysens.sensitivity.tangents import score_jets

from .conftest import DT


def cloud(n=40, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=DT) * 2 - 1, g


@pytest.mark.parametrize("bandwidth", [None, 0.3])
@pytest.mark.parametrize("t", [1e-3, 0.05, 0.5, 1.0])
def test_density_score_jvp_and_divergence_match_the_mixture_kernel(bandwidth, t):
    # the reference: pysens's diff-based mixture kernel, with autograd JVPs and the d-column exact trace through it.
    # Tolerance: the expansion |x|² − 2x·μ + |μ|² loses u (|x|² + |μ|²)/2v ≈ 1e-16·10/2e-4 = 5e-12 nats at t = 1e-3
    points, g = cloud()
    process = VP()
    law = DataLaw(points, process, bandwidth=bandwidth, chunk_bytes=2_000)  # several chunks: the streaming path
    cov = None if bandwidth is None else torch.full((points.shape[0],), bandwidth**2, dtype=DT)
    exact = GaussianMixtureScore(points, cov, process=process)
    x = process.scale(torch.tensor(t)) * points[:6] + process.sigma(torch.tensor(t)) * torch.randn(
        6, 5, generator=g, dtype=DT
    )
    ell, s = law.log_density_and_score(x, t)
    tangents = torch.randn(3, 6, 5, generator=g, dtype=DT)
    jets = law.closed_form_jets(x, t, tangents, divergence="exact")
    ref = score_jets(exact, x, t, tangents, divergence="exact")
    scale = float(ref.products.abs().max())
    assert float((ell - exact.log_density(x, t)).abs().max()) < 1e-9
    assert float((s - exact(x, t)).abs().max()) < 1e-12 * float(exact(x, t).abs().max()) * 1e3
    assert float((jets.products - ref.products).abs().max()) < 1e-9 * scale
    assert float((jets.divergence - ref.divergence).abs().max()) < 1e-9 * float(ref.divergence.abs().max())
    # Hutchinson through the closed form: the mean of zᵀJz over the probes, exactly
    probes = torch.randn(4, 6, 5, generator=g, dtype=DT)
    hutch = law.closed_form_jets(x, t, None, divergence="hutchinson", probes=probes)
    expected = (law.closed_form_jets(x, t, probes).products * probes).sum(2).mean(0)
    assert torch.allclose(hutch.divergence, expected, rtol=1e-12, atol=0)


def test_score_jets_uses_the_closed_form_and_weights_are_honoured():
    points, g = cloud(n=7, d=3, seed=1)
    process = VP()
    w = torch.arange(1.0, 8.0, dtype=DT)
    law = DataLaw(points, process, weights=w)
    exact = GaussianMixtureScore(points, None, w, process=process)
    x = torch.randn(4, 3, generator=g, dtype=DT)
    v = torch.randn(2, 4, 3, generator=g, dtype=DT)
    jets = score_jets(law, x, 0.2, v, divergence="exact")  # dispatches to closed_form_jets
    ref = score_jets(exact, x, 0.2, v, divergence="exact")
    assert torch.allclose(jets.score, ref.score, rtol=1e-12, atol=1e-12)
    assert torch.allclose(jets.products, ref.products, rtol=1e-10, atol=1e-10)
    assert torch.allclose(jets.divergence, ref.divergence, rtol=1e-10, atol=1e-10)
    # float32 states go in and come out float32 (computed in float64 inside)
    out = law(x.float(), 0.2)
    assert out.dtype == torch.float32 and torch.allclose(out.double(), ref.score, rtol=1e-5, atol=1e-5)


def test_readings_follow_their_formulas_for_a_model_that_is_not_its_data():
    # model: a Gaussian mixture ρ_θ; training set: other points; σ: the removed points. Each reading is eq. (★)
    # with its ratio and score from the stated law, and the diagnostic is ℓ_θ − log ρ^data exactly.
    points, g = cloud(n=30, d=4, seed=2)
    process = VP()
    model = GaussianMixtureScore(points[:3] * 0.5, torch.full((3,), 0.2, dtype=DT), process=process)
    law = DataLaw(points, process)
    removed = EmpiricalMeasure(points[:5])
    x = torch.randn(6, 4, generator=g, dtype=DT) * 0.7
    t = 0.3
    ell_m, s_m = model.log_density(x, t), model(x, t)
    ell_d, s_d = law.log_density_and_score(x, t)
    log_sigma, score_sigma = removed.log_density_and_score(x, t, process)
    expected = {
        "model": (ell_m, s_m),
        "data": (ell_d, s_d),
        "data-ratio": (ell_d, s_m),
        "data-score": (ell_m, s_d),
    }
    for reference, (ell, s) in expected.items():
        res = score_derivative(
            model, process, x, t, removed, log_density=model.log_density, reference=reference, data=law
        )
        want = torch.exp(log_sigma - ell)[:, None] * (score_sigma - s)
        assert torch.allclose(res.derivative[0], want, rtol=1e-12, atol=1e-300), reference
        assert torch.allclose(res.diagnostics.log_ratio, ell_m - ell_d, rtol=1e-12, atol=1e-12)
    # the data readings need no model density at all: no likelihood is solved
    res = score_derivative(model, process, x, t, removed, reference="data", data=points)
    assert res.likelihoods == [] and res.diagnostics.log_ratio is None


def test_memorising_model_all_readings_agree_and_diagnostics_are_exact():
    # the model IS the training set's law: every reading is the same (★) and the log-ratio is 0 along the path
    points, g = cloud(n=25, d=3, seed=3)
    process = VP()
    law = DataLaw(points, process, bandwidth=0.2)
    edit = data_edit(25, removed=points[:3], bandwidth=0.2)
    x_T = process.prior_sample((5, 3), generator=g, dtype=DT)
    grid = torch.linspace(process.T, 1e-2, 21, dtype=DT)
    runs = {
        r: sample_sensitivity(
            law, process, x_T, edit, t1=1e-2, method="RK4", timesteps=grid, log_density=law.log_density,
            reference=r, data=law,
        )
        for r in ("model", "data", "data-ratio", "data-score")
    }  # fmt: skip
    y = runs["model"].sensitivity
    for r, res in runs.items():
        assert torch.allclose(res.sensitivity, y, rtol=1e-12, atol=1e-14), r
        assert float(res.diagnostics.log_ratio.abs().max()) < 1e-9
    assert float(y.abs().max()) > 0


def test_off_range_flag_and_nearest_distance():
    from pysens.sensitivity.reference import Reference, reference_diagnostics

    # nearest-neighbour distances within the data: 1 (points 0, 1), 1, 3 (point 2): coverage radius 3
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 0.0]], dtype=DT)
    law = DataLaw(points, VP(), chunk_bytes=40)  # one row per chunk
    assert law.coverage_radius == 3.0
    x = torch.tensor([[0.5, 0.0], [4.0, 2.9], [-3.1, 0.0]], dtype=DT)
    diag = reference_diagnostics(Reference("data", law), x, torch.zeros(3, dtype=DT), 0.5, x)
    assert diag.off_range.tolist() == [False, False, True]
    assert torch.allclose(diag.nearest_distance, torch.tensor([0.5, 2.9, 3.1], dtype=DT))
    assert diag.as_dict()["radius"] == 3.0 and diag.as_dict()["reference"] == "data"
    assert DataLaw(points[:1], VP()).coverage_radius == 0.0


def test_bad_reference_arguments_are_named():
    points, _ = cloud(n=5, d=3)
    process = VP()
    model = GaussianMixtureScore(points, None, process=process)
    x = torch.zeros(2, 3, dtype=DT)
    edit = data_edit(5, removed=points[:1])
    with pytest.raises(ValueError, match="reference must be one of"):
        score_derivative(model, process, x, 0.5, edit, log_density=model.log_density, reference="mdoel")
    with pytest.raises(ValueError, match="needs the training set"):
        sample_sensitivity(model, process, x, edit, reference="data")
    with pytest.raises(ValueError, match="data: training points of dimension 4"):
        sample_sensitivity(model, process, x, edit, reference="data", data=torch.zeros(5, 4, dtype=DT))
    with pytest.raises(TypeError, match="data must be the training points"):
        sample_sensitivity(model, process, x, edit, reference="data", data=[[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="bandwidth"):
        DataLaw(points, process, bandwidth=-1.0)
    with pytest.raises(ValueError, match="points must be a non-empty"):
        DataLaw(torch.zeros(0, 3), process)
    with pytest.raises(ValueError, match="d = 3"):
        DataLaw(points, process)(torch.zeros(2, 4, dtype=DT), 0.5)


def test_every_mode_reads_the_reference_and_reports_diagnostics():
    # a model that is not its data: the discrete sampler's ε-JVP equals the tangent system on the same grid under
    # reference="data" too (the reading only changes δs), and the ODE, discrete and SDE results all carry diagnostics
    from pysens.sensitivity import discrete_sample_sensitivity, karras_timesteps, sde_sample_sensitivity

    from .conftest import make_oracle

    oracle = make_oracle("VP", 2, seed=3)
    process = oracle.process
    points, g = cloud(n=20, d=2, seed=4)
    x_T = process.prior_sample((3, 2), generator=g, dtype=DT)
    grid = karras_timesteps(process, 6, t1=1e-2)
    edit = data_edit(20, removed=points[:4])
    common = {"reference": "data", "data": points}
    discrete = discrete_sample_sensitivity(oracle.model, process, x_T, edit, timesteps=grid, method="Heun", **common)
    tangent = sample_sensitivity(
        oracle.model, process, x_T, edit, t1=1e-2, method="Heun", adaptive=False, timesteps=grid, **common
    )
    model_reading = sample_sensitivity(
        oracle.model, process, x_T, edit, t1=1e-2, method="Heun", adaptive=False, timesteps=grid, data=points
    )
    scale = float(tangent.sensitivity.abs().max())
    assert scale > 1e-6
    assert float((discrete.sensitivity - tangent.sensitivity).abs().max()) <= 1e-10 * scale
    assert float((model_reading.sensitivity - tangent.sensitivity).abs().max()) > 1e-3 * scale  # readings differ
    sde = sde_sample_sensitivity(oracle.model, process, x_T, edit, t1=1e-2, n_steps=8, generator=g, **common)
    for res in (discrete, tangent, model_reading, sde):
        diag = res.diagnostics
        assert diag.log_ratio.shape == (3,) and bool(torch.isfinite(diag.log_ratio).all())
        assert diag.off_range.dtype == torch.bool and diag.nearest_distance.shape == (3,)
    assert tangent.diagnostics.reference == "data" and model_reading.diagnostics.reference == "model"
    # without data the diagnostics say which reading was used and nothing else
    plain = sample_sensitivity(oracle.model, process, x_T, edit, t1=1e-2, method="Heun", adaptive=False, timesteps=grid)
    assert plain.diagnostics.reference == "model" and plain.diagnostics.log_ratio is None
