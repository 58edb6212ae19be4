"""Radial test functions: gradients and Laplacians against autograd, and the radial-symmetry check."""

import pytest
import torch

from pysens.spde import GaussianBump, Radial, RadialPower, RadialQuadratic, as_radial


def _autograd(phi, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(phi(x).sum(), x, create_graph=True)
    lap = sum(torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))
    return g.detach(), lap.detach()


@pytest.mark.parametrize(
    "phi",
    [
        RadialQuadratic(),
        RadialQuadratic(2.0, center=torch.tensor([0.3, -0.2, 0.1])),
        GaussianBump(),
        GaussianBump(ell2=1.3**2),
        RadialPower(3.0),
        Radial(lambda r: r**4, lambda r: 4 * r**3, lambda r: 12 * r**2),
    ],
)
def test_gradient_and_laplacian_match_autograd(phi):
    x = torch.randn(20, 3, dtype=torch.float64)
    g, lap = _autograd(phi, x)
    torch.testing.assert_close(phi.grad(x), g)
    torch.testing.assert_close(phi.lap(x), lap)
    values, grads = phi.values_grads(x)
    torch.testing.assert_close(values, phi(x))
    torch.testing.assert_close(grads, g)


def test_defaults_scale_with_dimension():
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(RadialQuadratic()(x), (x**2).reshape(4, -1).sum(1) / 64)
    torch.testing.assert_close(GaussianBump()(x), torch.exp(-(x**2).reshape(4, -1).sum(1) / (2 * 64)))


def test_callable_radial_function_is_accepted_with_radial_derivatives():
    phi = as_radial(lambda x: torch.exp(-(x**2).sum(1) / 4), (3,))
    ref = GaussianBump(ell2=2.0)
    x = torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(phi(x), ref(x))
    torch.testing.assert_close(phi.grad(x), ref.grad(x))
    torch.testing.assert_close(phi.lap(x), ref.lap(x))


def test_non_radial_function_passed_as_radial_is_an_error():
    with pytest.raises(ValueError, match="not radial"):
        as_radial(lambda x: (x[:, 0] ** 2) + 0.1 * x[:, 1], (4,))
    with pytest.raises(ValueError, match="event shape"):
        as_radial(lambda x: (x**2).sum(1))
    with pytest.raises(ValueError, match=r"\[N\]"):
        as_radial(lambda x: x**2, (2,))
