"""The log-density FP residual R[φ], its score form and R̃ against exact answers (seed001 §3, §6.1–6.3), float64."""

import math

import pytest
import torch

from pysens.diffusion.datasets import toy_mixture_2d
from pysens.diffusion.processes import OU, VE, VP
from pysens.diffusion.scores import GaussianMixtureScore
from pysens.fokker_planck import (
    NonlinearDriftProcess,
    PotentialScoreNet,
    blob_mixture,
    gauge_fix,
    linear_score_residual,
    log_fp_residual,
    potential_derivatives,
    residual_functional,
    score_fp_residual,
)

DT = torch.float64
PROCESSES = [OU(), VP(), VE()]
IDS = ["OU", "VP", "VE"]


def _points(n: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _exact_laws(process):
    means, covariances, weights = toy_mixture_2d()
    return {
        "gaussian": GaussianMixtureScore(
            torch.tensor([[0.7, -1.2]], dtype=DT), torch.tensor([0.3], dtype=DT), process=process
        ),
        "blob": blob_mixture(process),
        "full-covariance mixture": GaussianMixtureScore(means, covariances, weights, process=process),
    }


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_residual_vanishes_for_exact_log_densities(process):
    # R[log p_t] ≡ 0 for the true marginals (check 1a; GMM: §6.1), at per-sample times across [t_eps, T]
    x = _points(300, 0)
    t = process.t_eps + (process.T - process.t_eps) * torch.rand(
        300, generator=torch.Generator().manual_seed(1), dtype=DT
    )
    t[:100] = 0.01 * process.T * torch.rand(100, generator=torch.Generator().manual_seed(2), dtype=DT) + process.t_eps
    for name, law in _exact_laws(process).items():
        x_t = x * process.sigma(t)[:, None].clamp_min(0.3)  # points at the scale of p_t
        rms = log_fp_residual(law.log_density, process, x_t, t).pow(2).mean().sqrt().item()
        assert rms < 1e-6, f"{name} under {process}: RMS residual {rms:.3g}"


def _random_net(dim: int = 3, seed: int = 0) -> PotentialScoreNet:
    torch.manual_seed(seed)
    net = PotentialScoreNet(dim=dim, process=OU(), hidden=24, depth=2, beta=3.0).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5)
    return net


def _nonlinear_drift_process(with_divergence: bool) -> NonlinearDriftProcess:
    # f(x, t) = −x + sin(x_{i+1}) t (cyclic): its Jacobian is not diagonal-free, ∇·f = −d in closed form.
    def drift(x, t):
        return -x + torch.sin(torch.roll(x, 1, dims=1)) * t[:, None]

    def divergence(x, t):
        return torch.full_like(t, -float(x.shape[1]))

    return NonlinearDriftProcess(
        drift, lambda t: 0.5 + t, T=2.0, drift_divergence=divergence if with_divergence else None
    )


@pytest.mark.parametrize("process", [OU(), VP(), _nonlinear_drift_process(True)], ids=["OU", "VP", "nonlinear"])
def test_gradient_of_residual_is_the_score_residual(process):
    # ∇_x R[φ] equals FP-Diffusion's vector residual of s = ∇φ (check 1b), on a random network
    net = _random_net()
    x = _points(64, 3, 1.0).repeat(1, 2)[:, :3]
    t = 0.05 + 0.9 * torch.rand(64, generator=torch.Generator().manual_seed(4), dtype=DT)
    grad_r = torch.func.grad(lambda y: log_fp_residual(net.potential, process, y, t).sum())(x)
    vector = score_fp_residual(net, process, x, t)
    torch.testing.assert_close(vector, grad_r, rtol=1e-9, atol=1e-10)
    assert vector.abs().max() > 1e-2  # a random network is far from solving the FPE


def test_linear_score_family_matches_its_closed_form():
    # φ = −|x|²/(2a) + c: R = |x|²(a' + 2a − 1)/(2a²) + c' − d + d/(2a) for the authors' OU (check 1c)
    ou = OU()

    def a_fn(t):
        v = 0.09 * torch.exp(-2 * t) + 0.5 * (1 - torch.exp(-2 * t))
        return v * (1 + 0.3 * torch.exp(-t))

    def c_fn(t):
        return torch.sin(3 * t) - t**2

    def phi(x, t):
        return -(x * x).sum(1) / (2 * a_fn(t)) + c_fn(t)

    x = _points(200, 5)
    t = 1e-3 + 9.9 * torch.rand(200, generator=torch.Generator().manual_seed(6), dtype=DT)
    a_dot = torch.func.vmap(torch.func.grad(a_fn))(t)
    c_dot = torch.func.vmap(torch.func.grad(c_fn))(t)
    expected = linear_score_residual(x, t, a_fn(t), a_dot, c_dot, ou)
    torch.testing.assert_close(log_fp_residual(phi, ou, x, t), expected, rtol=1e-11, atol=1e-11)
    # … and the same formula written out for OU, d = 2
    a = a_fn(t)
    by_hand = (x * x).sum(1) * (a_dot + 2 * a - 1) / (2 * a * a) + c_dot - 2 + 2 / (2 * a)
    torch.testing.assert_close(expected, by_hand, rtol=1e-12, atol=1e-12)


def test_gauge_shift_moves_raw_residual_by_c_dot_only():
    # φ → φ + c(t) shifts R by c'(t) and leaves the gauge-fixed residual and the score residual unchanged (§6.3)
    ou = OU()
    law = blob_mixture(ou)
    net = _random_net(dim=2)

    def c(t):
        return 3 * torch.sin(2 * t) + t**2

    x = _points(128, 7)
    t = torch.full((128,), 0.4, dtype=DT).clone()
    t[64:] = 2.5
    for phi in (law.log_density, net.potential):

        def shifted(y, s, phi=phi):
            return phi(y, s) + c(s)

        raw, raw_shifted = log_fp_residual(phi, ou, x, t), log_fp_residual(shifted, ou, x, t)
        c_dot = 6 * torch.cos(2 * t) + 2 * t
        torch.testing.assert_close(raw_shifted - raw, c_dot, rtol=1e-10, atol=1e-10)
        fixed = log_fp_residual(phi, ou, x, t, gauge_fix=True)
        torch.testing.assert_close(log_fp_residual(shifted, ou, x, t, gauge_fix=True), fixed, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(fixed, gauge_fix(raw, t), rtol=0, atol=1e-12)
        for half in (slice(0, 64), slice(64, 128)):
            assert abs(fixed[half].mean().item()) < 1e-10

    def shifted_net(y, s):
        return net.potential(y, s) + c(s)

    # the score of φ + c(t) is the network's own score ∇φ
    torch.testing.assert_close(torch.func.grad(lambda y: shifted_net(y, t).sum())(x), net(x, t), rtol=1e-12, atol=1e-12)


def test_hutchinson_and_finite_differences_agree_with_exact():
    ou = OU()
    net = _random_net(dim=3)
    x = _points(16, 8, 1.0).repeat(1, 2)[:, :3]
    t = 0.2 + torch.rand(16, generator=torch.Generator().manual_seed(9), dtype=DT)
    exact = potential_derivatives(net.potential, x, t)
    gen = torch.Generator().manual_seed(10)
    for kind in ("rademacher", "gaussian"):
        hutch = potential_derivatives(
            net.potential, x, t, laplacian="hutchinson", n_probes=20_000, probe_kind=kind, generator=gen
        )
        torch.testing.assert_close(hutch.grad, exact.grad, rtol=1e-12, atol=1e-12)
        scale = exact.laplacian.abs().mean()
        assert (hutch.laplacian - exact.laplacian).abs().max() < 0.05 * scale, kind
    fd = potential_derivatives(net.potential, x, t, time_derivative="fd", fd_step=1e-4)
    torch.testing.assert_close(fd.phi_t, exact.phi_t, rtol=1e-6, atol=1e-7)
    r_exact = log_fp_residual(net.potential, ou, x, t)
    r_fd = log_fp_residual(net.potential, ou, x, t, time_derivative="fd", fd_step=1e-4)
    torch.testing.assert_close(r_fd, r_exact, rtol=1e-6, atol=1e-6)
    v_fd = score_fp_residual(net, ou, x, t, time_derivative="fd", fd_step=1e-4)
    torch.testing.assert_close(v_fd, score_fp_residual(net, ou, x, t), rtol=1e-5, atol=1e-6)


def test_hutchinson_estimates_a_drift_divergence_that_is_not_given():
    net = _random_net(dim=3)
    x = _points(12, 11, 1.0).repeat(1, 2)[:, :3]
    t = 0.3 + torch.rand(12, generator=torch.Generator().manual_seed(12), dtype=DT)
    probes = torch.randn(20_000, 12, 3, generator=torch.Generator().manual_seed(13), dtype=DT).sign()
    known = log_fp_residual(net.potential, _nonlinear_drift_process(True), x, t, laplacian="hutchinson", probes=probes)
    unknown = log_fp_residual(
        net.potential, _nonlinear_drift_process(False), x, t, laplacian="hutchinson", probes=probes
    )
    # same probes: the only difference is ∇·f estimated (z_ᵀ J_f z) instead of given; J_f's diagonal is −1, so
    # Rademacher probes estimate −d up to the off-diagonal noise, which averages out
    assert (unknown - known).abs().max() < 0.05


def test_residual_is_differentiable_in_the_parameters_like_the_authors_loop():
    # ∂/∂θ mean R² by torch.func equals the authors' nested torch.autograd.grad computation (pinn_utils.pinn_loss)
    torch.manual_seed(1)
    net = PotentialScoreNet(dim=2, hidden=16, depth=3).to(DT)
    x = _points(50, 14, 1.5)
    t = 0.01 + 3 * torch.rand(50, generator=torch.Generator().manual_seed(15), dtype=DT)
    loss = log_fp_residual(net.potential, net.process, x, t).pow(2).mean()
    # the output bias is a constant shift of φ, which R does not see: its gradient is None in both computations
    ours = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)

    tt = t[:, None].clone().requires_grad_(True)
    xx, yy = x[:, :1].clone().requires_grad_(True), x[:, 1:].clone().requires_grad_(True)
    u = net.potential(torch.cat([xx, yy], 1), tt[:, 0])[:, None]
    ones = torch.ones_like(u)
    u_t = torch.autograd.grad(u, tt, ones, create_graph=True)[0]
    u_x = torch.autograd.grad(u, xx, ones, create_graph=True)[0]
    u_xx = torch.autograd.grad(u_x, xx, ones, create_graph=True)[0]
    u_y = torch.autograd.grad(u, yy, ones, create_graph=True)[0]
    u_yy = torch.autograd.grad(u_y, yy, ones, create_graph=True)[0]
    res = u_t - 2 - xx * u_x - yy * u_y - 0.5 * u_x**2 - 0.5 * u_y**2 - 0.5 * (u_xx + u_yy)
    theirs = torch.autograd.grad(res.pow(2).mean(), list(net.parameters()), allow_unused=True)
    torch.testing.assert_close(loss, res.pow(2).mean(), rtol=1e-12, atol=1e-12)
    assert ours[-1] is None and theirs[-1] is None
    for a, b in zip(ours[:-1], theirs[:-1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_residual_functional_designs_on_a_pure_gauge():
    # exact blob potential + c(t): R = c'(t) everywhere, so R̃_raw = E[c'(t)²] over U[t_min, t_max] and the
    # gauge-fixed R̃ is 0. With c = sin(t): E[cos² t] on [0.01, 3] in closed form.
    ou = OU()
    law = blob_mixture(ou)

    def phi(x, t):
        return law.log_density(x, t) + torch.sin(t)

    lo, hi = 0.01, 3.0
    exact = (0.5 * (hi - lo) + 0.25 * (math.sin(2 * hi) - math.sin(2 * lo))) / (hi - lo)
    gen = torch.Generator().manual_seed(16)
    strat = residual_functional(
        phi, ou, n_points=4000, n_slices=100, t_min=lo, t_max=hi, strata="linear", generator=gen
    )
    assert abs(strat.raw - exact) < 4 * strat.raw_se + 1e-3 and strat.raw_se < 0.01
    assert strat.gauge_fixed < 1e-20 and strat.slice_raw.shape == (100,)
    uniform = residual_functional(phi, ou, n_points=4000, design="uniform", t_min=lo, t_max=hi, generator=gen)
    assert abs(uniform.raw - exact) < 4 * uniform.raw_se and uniform.gauge_fixed is None
    log_strat = residual_functional(phi, ou, n_points=4000, n_slices=100, t_min=lo, t_max=hi, generator=gen)
    assert abs(log_strat.raw - exact) < 4 * log_strat.raw_se + 1e-3


def test_bad_input_gives_clear_errors():
    net = _random_net(dim=3)
    x = _points(8, 17, 1.0).repeat(1, 2)[:, :3]
    t = torch.full((8,), 0.5, dtype=DT)
    with pytest.raises(ValueError, match="no closed-form drift divergence"):
        log_fp_residual(net.potential, _nonlinear_drift_process(False), x, t)
    with pytest.raises(ValueError, match="no closed-form drift divergence"):
        score_fp_residual(net, _nonlinear_drift_process(False), x, t, divergence="hutchinson")
    with pytest.raises(ValueError, match="n_probes must be a positive integer"):
        log_fp_residual(net.potential, OU(), x, t, laplacian="hutchinson", n_probes=0)
    with pytest.raises(ValueError, match="at least one probe"):
        log_fp_residual(net.potential, OU(), x, t, laplacian="hutchinson", probes=torch.zeros(0, 8, 3, dtype=DT))
    with pytest.raises(ValueError, match="laplacian must be one of"):
        log_fp_residual(net.potential, OU(), x, t, laplacian="trace")
    with pytest.raises(ValueError, match="two points per time slice"):
        log_fp_residual(net.potential, OU(), x, torch.linspace(0.1, 0.9, 8, dtype=DT), gauge_fix=True)
    with pytest.raises(TypeError, match="ForwardProcess or a NonlinearDriftProcess"):
        log_fp_residual(net.potential, "OU", x, t)


@pytest.mark.parametrize("engine", ["forward", "func", "autograd"])
def test_scalar_time_and_the_module_itself_give_the_batched_residual(engine):
    """A float or 0-d time means the same time for every point, and a PotentialScoreNet stands for its potential."""
    torch.manual_seed(0)
    net = PotentialScoreNet(dim=2, hidden=16, depth=2).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    batched = log_fp_residual(net.potential, OU(), x, torch.full((6,), 0.7, dtype=torch.float64), engine=engine)
    for t in (0.7, torch.tensor(0.7, dtype=torch.float64)):
        for phi in (net.potential, net):
            torch.testing.assert_close(log_fp_residual(phi, OU(), x, t, engine=engine), batched, rtol=0, atol=1e-12)
