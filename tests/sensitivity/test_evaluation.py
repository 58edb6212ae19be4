"""Per-seed correlation metrics and the entropic-OT baseline."""

import pytest
import torch

from pysens.sensitivity import entropic_ot_displacement, sensitivity_correlation

DT = torch.float64


def test_correlations_are_per_seed_and_scale_free():
    g = torch.Generator().manual_seed(0)
    actual = torch.randn(5, 1, 4, 4, generator=g, dtype=DT)
    res = sensitivity_correlation(3.0 * actual, actual)
    assert torch.allclose(res.cosine, torch.ones(5, dtype=DT)) and torch.allclose(res.pearson, torch.ones(5, dtype=DT))
    flipped = sensitivity_correlation(-actual, actual)
    assert flipped.mean_cosine == pytest.approx(-1.0)
    # Pearson ignores a constant offset per image, the cosine does not
    shifted = sensitivity_correlation(actual + 10.0, actual)
    assert torch.allclose(shifted.pearson, torch.ones(5, dtype=DT)) and float(shifted.cosine.max()) < 0.9
    zero = sensitivity_correlation(torch.zeros_like(actual), actual)
    assert bool(torch.isnan(zero.cosine).all())
    with pytest.raises(ValueError, match="share one shape"):
        sensitivity_correlation(actual, actual[:2])


def test_ot_baseline_is_zero_without_an_edit_and_moves_towards_added_points():
    g = torch.Generator().manual_seed(1)
    data = torch.randn(40, 2, generator=g, dtype=DT)
    samples = torch.randn(10, 2, generator=g, dtype=DT)
    assert float(entropic_ot_displacement(samples, data, data).abs().max()) < 1e-12
    added = torch.tensor([[4.0, 4.0]], dtype=DT).expand(10, 2)
    move = entropic_ot_displacement(samples, data, torch.cat([data, added]))
    assert float((move @ torch.tensor([1.0, 1.0], dtype=DT)).mean()) > 0
    with pytest.raises(ValueError, match="reg"):
        entropic_ot_displacement(samples, data, data, reg=0.0)
    with pytest.raises(ValueError, match="target"):
        entropic_ot_displacement(samples, data, torch.zeros(3, 5, dtype=DT))
