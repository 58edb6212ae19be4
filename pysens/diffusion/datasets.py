"""Small data sets that need no download: sklearn's 8×8 digits and a 2-D Gaussian mixture."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["digits", "toy_mixture_2d"]


def digits(normalize: bool = True) -> Tensor:
    """The 1797 8×8 handwritten digits shipped with scikit-learn, as float32 ``[1797, 1, 8, 8]``.

    Pixel values are 0..16; with ``normalize`` they are mapped linearly to [−1, 1] (0 → −1, 16 → 1).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "digits() needs scikit-learn (it ships the data set, no download): pip install scikit-learn "
            "(or pip install 'pysens[data]')"
        ) from err
    images = torch.as_tensor(load_digits().images, dtype=torch.float32)[:, None]
    if normalize:
        images = images / 8.0 - 1.0
    return images


def toy_mixture_2d(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """A 2-D Gaussian mixture with full covariances for demos and tests: ``(means [4, 2], covariances
    [4, 2, 2], weights [4])``.

    Four elongated components at the corners of a square of half-side 2, each stretched along a different
    direction (std 0.6 along its axis, 0.15 across), with unequal weights (0.4, 0.3, 0.2, 0.1). The data spread
    is about 2 per axis: O(1), as the networks' input scaling assumes.
    """
    means = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]], dtype=dtype)
    angles = torch.tensor([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4], dtype=dtype)
    along, across = 0.6**2, 0.15**2
    directions = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # [4, 2]
    normals = torch.stack([-torch.sin(angles), torch.cos(angles)], dim=1)
    # C_k = along · u_k u_kᵀ + across · n_k n_kᵀ for the unit direction u_k and its normal n_k.
    covariances = along * torch.einsum("ki,kj->kij", directions, directions) + across * torch.einsum(
        "ki,kj->kij", normals, normals
    )
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=dtype)
    return means, covariances, weights
