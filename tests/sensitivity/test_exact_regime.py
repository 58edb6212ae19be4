"""Sample sensitivities where the answer is exact: the model IS the (smoothed or memorising) law of sklearn digits.

The base model is the closed-form noised law of the 1797 digits (:class:`DataLaw`), the perturbed model the same
law with the edit's weights, ρ + ε(ρ − σ_removed): w_i = (1 + ε)/N − ε/m on the m removed images, (1 + ε)/N on the
rest (at the real ε = m/(N − m) the removed weights are exactly 0: the edited training set). Both are sampled on one
fixed grid with one explicit method, and y comes from the tangent system on the same grid, so ε·y is the exact
first-order term of the discrete finite change: cos(ε·y, Δx) → 1 as ε → 0 with error O(ε), and there is no solver
tolerance in between. Full N = 1797 (the closed-form JVPs cost a few ms per stage), 8 noise seeds per case, a
24-step Karras grid (the grid's own accuracy does not enter: both sides are the same discrete sampler).
"""

import pytest
import torch

from pysens.diffusion import VP, digits
from pysens.diffusion.sampling import sample_pf_ode
from pysens.sensitivity import DataLaw, data_edit, karras_timesteps, sample_sensitivity
from pysens.sensitivity.evaluation import sensitivity_correlation

from .conftest import DT

PROCESS = VP()
SAMPLES = 8
STEPS = 24


@pytest.fixture(scope="module")
def images():
    from sklearn.datasets import load_digits

    return digits().to(DT), torch.as_tensor(load_digits().target)


def edited_law(points, removed_index, eps, bandwidth):
    N, m = points.shape[0], removed_index.numel()
    w = torch.full((N,), (1 + eps) / N, dtype=DT)
    w[removed_index] -= eps / m
    return DataLaw(points, PROCESS, bandwidth=bandwidth, weights=w.clamp_min(0.0))


def run(points, removed_index, eps, *, bandwidth, t1, denoise=False, x_T=None, samples=SAMPLES):
    """(ε·y, Δx, base samples, edited samples) on one Karras grid with RK4."""
    law = DataLaw(points, PROCESS, bandwidth=bandwidth)
    edit = data_edit(points.shape[0], removed=points[removed_index], bandwidth=bandwidth)
    grid = karras_timesteps(PROCESS, STEPS, t1=t1)
    if x_T is None:
        x_T = PROCESS.prior_sample((samples, *points.shape[1:]), generator=torch.Generator().manual_seed(5), dtype=DT)
    res = sample_sensitivity(
        law, PROCESS, x_T, edit, t1=t1, method="RK4", timesteps=grid, log_density=law.log_density, denoise=denoise
    )
    perturbed = edited_law(points, removed_index, eps, bandwidth)

    def finish(model, x):
        if not denoise:
            return x
        return (x + PROCESS.sigma(t1) ** 2 * model(x, t1)) / PROCESS.scale(t1)

    base = finish(law, sample_pf_ode(law, PROCESS, x_T, t1=t1, method="RK4", timesteps=grid).x)
    moved = finish(perturbed, sample_pf_ode(perturbed, PROCESS, x_T, t1=t1, method="RK4", timesteps=grid).x)
    assert torch.allclose(res.x, base, rtol=0, atol=1e-12)  # the tangent system carries the same path
    return eps * res.sensitivity[0], moved - base, base, moved


def test_smoothed_digits_remove_40_first_order_is_exact(images):
    points, labels = images
    removed = torch.nonzero(labels == 3).reshape(-1)[:40]
    real_eps = 40 / (1797 - 40)
    # tiny ε: the finite change is its first-order term to O(ε) relative: every cosine ≥ 0.9999
    # 16 noise seeds: the real-ε claim is about a median
    predicted, actual, _, _ = run(points, removed, real_eps / 1000, bandwidth=0.3, t1=1e-3, samples=16)
    cos = sensitivity_correlation(predicted, actual).cosine
    print(f"h = 0.3, ε = {real_eps / 1000:.2e}: min cosine {float(cos.min()):.6f}")
    assert float(cos.min()) >= 0.9999
    # the real edit (ε = 0.0228): near the removed images ε·σ_t/ρ_t reaches ε N/m = 1.02, so second order is
    # visible there. Measured on these 16 seeds: median 0.99835, min 0.959; the target median ≥ 0.999 is NOT
    # met by the one-sided change, and the test pins what holds: median ≥ 0.995. That shortfall is the edit's
    # nonlinearity, not the method or the grid (measured, 24 and 96 Karras steps alike): 1 − median cosine is
    # 1.65e-3 / 3.95e-4 / 9.7e-5 / 2.4e-5 at ε, ε/2, ε/4, ε/8 (×1/4 per halving: the ε² term), and the central
    # difference (Δx(ε) − Δx(−ε))/2, which cancels the ε² term, agrees with ε·y at median 0.999992. Both are
    # asserted: the ×1/4 ratio within [3, 5.5] and the central median ≥ 0.9999 (the 0.999 with margin).
    predicted, actual, _, _ = run(points, removed, real_eps, bandwidth=0.3, t1=1e-3, samples=16)
    cos = sensitivity_correlation(predicted, actual).cosine
    ratio = actual.flatten(1).norm(dim=1) / predicted.flatten(1).norm(dim=1)
    print(f"h = 0.3, real ε: median cosine {float(cos.median()):.5f}, |Δx|/|εy| {ratio.min():.3f}..{ratio.max():.3f}")
    assert float(cos.median()) >= 0.995
    _, backward, _, _ = run(points, removed, -real_eps, bandwidth=0.3, t1=1e-3, samples=16)
    central = sensitivity_correlation(predicted, (actual - backward) / 2).cosine
    _, half, _, _ = run(points, removed, real_eps / 2, bandwidth=0.3, t1=1e-3, samples=16)
    half_gap = 1 - float(sensitivity_correlation(predicted / 2, half).cosine.median())
    shrink = (1 - float(cos.median())) / half_gap
    print(f"  central difference: median cosine {float(central.median()):.7f}; 1 − median shrinks ×1/{shrink:.2f}")
    assert float(central.median()) >= 0.9999
    assert 3.0 <= shrink <= 5.5


def test_memorising_digits_remove_one_at_t1_0_05(images):
    # point masses (the memorising score), remove the image sample 0 is heading for, stop at t1 = 0.05 where the
    # posterior over images is still soft. At ε = (1/1796)/1000 first order holds on every sample that moves
    # (min cosine ≥ 0.999). At the real ε = 1/1796 it cannot on sample 0: there ε·σ_t/ρ_t ≈ ε N π_removed ≈ 1, the
    # perturbation is not small where that sample goes (measured: cosine 0.85 there, ≥ 0.999 elsewhere).
    points, _ = images
    x_T = PROCESS.prior_sample((SAMPLES, 1, 8, 8), generator=torch.Generator().manual_seed(5), dtype=DT)
    law = DataLaw(points, PROCESS)
    grid = karras_timesteps(PROCESS, STEPS, t1=0.05)
    landing = sample_pf_ode(law, PROCESS, x_T, t1=0.05, method="RK4", timesteps=grid)
    removed = torch.cdist(landing.x.flatten(1), points.flatten(1)).argmin(1)[:1]  # where sample 0 is heading
    for eps, floor, skip_first in ((1 / 1796 / 1000, 0.999, False), (1 / 1796, 0.999, True)):
        predicted, actual, _, _ = run(points, removed, eps, bandwidth=None, t1=0.05, x_T=x_T)
        # samples whose change is below 1e-12 (rounding of the ~1 sized samples) carry no direction to compare
        moving = actual.flatten(1).norm(dim=1) > 1e-12
        moving[0] = moving[0] and not skip_first
        cos = sensitivity_correlation(predicted[moving], actual[moving]).cosine
        first = sensitivity_correlation(predicted[:1], actual[:1]).cosine
        print(
            f"memorising, t1 = 0.05, ε = {eps:.2e}: {int(moving.sum())} samples compared, min cosine "
            f"{float(cos.min()):.5f}; sample 0 (on the removed image) {float(first[0]):.4f}"
        )
        assert int(moving.sum()) >= 2 and float(cos.min()) >= floor


def test_memorising_digits_at_t1_1e_3_is_flat_or_jumps(images):
    # at t1 = 1e-3 with the final denoiser, ε ↦ D(x_{t1}) is flat (the denoised sample IS a training image) and a
    # finite edit either leaves it there or jumps to another image: y ≈ 0 and no first-order method can see it
    points, _ = images
    x_T = PROCESS.prior_sample((SAMPLES, 1, 8, 8), generator=torch.Generator().manual_seed(5), dtype=DT)
    law = DataLaw(points, PROCESS)
    grid = karras_timesteps(PROCESS, STEPS, t1=1e-3)
    landing = sample_pf_ode(law, PROCESS, x_T, t1=1e-3, method="RK4", timesteps=grid)
    removed = torch.cdist(landing.x.flatten(1), points.flatten(1)).argmin(1)[:1]
    predicted, actual, base, moved = run(points, removed, 1 / 1796, bandwidth=None, t1=1e-3, denoise=True, x_T=x_T)
    scale = float(points.flatten(1).norm(dim=1).median())  # a typical image norm (~6)
    size = predicted.flatten(1).norm(dim=1)
    print(f"memorising, t1 = 1e-3: max |ε·y| {float(size.max()):.2e} against image norm {scale:.2f}")
    assert float(size.max()) < 1e-6 * scale
    change = actual.flatten(1).norm(dim=1)
    nearest_base = torch.cdist(base.flatten(1), points.flatten(1)).min(1)
    nearest_moved = torch.cdist(moved.flatten(1), points.flatten(1)).min(1)
    jumped = nearest_base.indices != nearest_moved.indices
    # every denoised sample sits on a training image (to the softmax's leakage at β² ≈ 1e-4) ...
    assert float(nearest_base.values.max()) < 1e-3 * scale and float(nearest_moved.values.max()) < 1e-3 * scale
    # ... and the change is 0 (same image) or a jump to another image; sample 0, on the removed image, must jump
    stayed = change < 1e-6 * scale
    print(f"  {int(jumped.sum())} jump, {int(stayed.sum())} stay; jumps move {change[jumped].tolist()}")
    assert bool((stayed ^ jumped).all()) and bool(jumped[0])
