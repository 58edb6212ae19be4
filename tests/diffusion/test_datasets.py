"""Bundled data: sklearn's digits and the 2-D toy mixture."""

import sys

import pytest
import torch

from pysens.diffusion.datasets import digits, toy_mixture_2d


def test_digits_shape_range_and_dtype():
    images = digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0
    raw = digits(normalize=False)
    assert float(raw.min()) == 0.0 and float(raw.max()) == 16.0
    torch.testing.assert_close(images, raw / 8 - 1, rtol=0, atol=0)


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        digits()


def test_toy_mixture_is_a_valid_full_covariance_mixture():
    means, covariances, weights = toy_mixture_2d()
    assert means.shape == (4, 2) and covariances.shape == (4, 2, 2) and weights.shape == (4,)
    torch.testing.assert_close(covariances, covariances.mT, rtol=0, atol=0)
    eigenvalues = torch.linalg.eigvalsh(covariances)
    torch.testing.assert_close(eigenvalues, torch.tensor([[0.15**2, 0.6**2]] * 4, dtype=torch.float64))
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-15)
