"""The explicit RK engine against exact solutions: orders, adaptivity, per-sample steps, saving."""

import math

import pytest
import torch

from pysens.solvers import ODEProblem, solve

DT = torch.float64
A = torch.tensor([[-0.3, 1.7], [-1.1, -0.2]], dtype=DT)


def linear_problem(x0, tspan=(0.0, 1.0)):
    """x' = cos(t) A x, exact x(t) = expm(sin(t) A) x0 (non-autonomous, so the nodes c_i matter)."""

    def f(t, x):
        return torch.cos(t)[:, None] * (x @ A.T)

    return ODEProblem(f, x0, tspan)


def exact_linear(x0, t):
    return x0 @ torch.linalg.matrix_exp(math.sin(t) * A).T


X0 = torch.tensor([[1.0, 0.5], [-0.7, 2.0]], dtype=DT)


def fit_slope(ns, errs):
    logs = torch.log(torch.tensor(errs, dtype=DT))
    logh = torch.log(1.0 / torch.tensor(ns, dtype=DT))
    return float(((logh - logh.mean()) * (logs - logs.mean())).sum() / ((logh - logh.mean()) ** 2).sum())


@pytest.mark.parametrize(
    "method,order,span,ns",
    [
        ("Euler", 1, 2.0, [32, 64, 128, 256]),
        ("Heun", 2, 2.0, [16, 32, 64, 128]),
        ("RK4", 4, 2.0, [8, 16, 32, 64]),
        ("DP5", 5, 2.0, [8, 16, 32, 64]),
        # Tsit5's principal error coefficient is tiny by design, so its asymptotic range starts late
        ("Tsit5", 5, 8.0, [128, 256, 512, 1024]),
        ("DP8", 8, 2.0, [4, 6, 8, 12]),
    ],
)
def test_fixed_step_convergence_order(method, order, span, ns):
    p = linear_problem(X0, (0.0, span))
    exact = exact_linear(X0, span)
    errs = [float((solve(p, method, dt=span / n).final - exact).abs().max()) for n in ns]
    assert abs(fit_slope(ns, errs) - order) < 0.3, errs


@pytest.mark.parametrize("method", ["DP5", "Tsit5"])
def test_dense_output_order(method):
    # interpolated midpoints converge at the interpolant's order (4) while steps stay fixed
    p = linear_problem(X0, (0.0, 2.0))
    ns = [8, 16, 32, 64]
    errs = []
    for n in ns:
        h = 2.0 / n
        mids = [h * (k + 0.37) for k in range(n)]
        sol = solve(p, method, dt=h, saveat=mids)
        errs.append(max(float((sol.x[i] - exact_linear(X0, s)).abs().max()) for i, s in enumerate(mids)))
    assert fit_slope(ns, errs) > 3.7, errs


@pytest.mark.parametrize("method", ["DP5", "Tsit5", "DP8"])
def test_adaptive_reaches_tolerance(method):
    p = linear_problem(X0, (0.0, 3.0))
    sol = solve(p, method, rtol=1e-10, atol=1e-12)
    assert sol.retcode == "Success"
    assert float((sol.final - exact_linear(X0, 3.0)).abs().max()) < 1e-8


@pytest.mark.parametrize("method", ["Tsit5", "DP8"])
def test_saveat_dense_and_stepped(method):
    p = linear_problem(X0, (0.0, 3.0))
    ts = [0.0, 0.3, 1.1, 2.5, 3.0]
    sol = solve(p, method, rtol=1e-10, atol=1e-12, saveat=ts)
    assert sol.x.shape == (5, 2, 2)
    for i, s in enumerate(ts):
        assert float((sol.x[i] - exact_linear(X0, s)).abs().max()) < 1e-8


def test_backward_in_time():
    x1 = torch.tensor([[1.0], [3.0]], dtype=DT)
    p = ODEProblem(lambda t, x: x * t[:, None], x1, (2.0, 0.5))  # x = x1 exp((t^2 - 4)/2)
    sol = solve(p, "Tsit5", rtol=1e-10, atol=1e-12, saveat=[2.0, 1.0, 0.5])
    for i, s in enumerate([2.0, 1.0, 0.5]):
        assert torch.allclose(sol.x[i], x1 * math.exp((s * s - 4) / 2), rtol=1e-8, atol=0)
    assert torch.allclose(sol.t, torch.tensor([2.0, 1.0, 0.5], dtype=DT))


def decay(lam):
    return lambda t, x: -lam[:, None] * x


def test_per_sample_steps_independent_of_batch_mates():
    # one easy sample (rate 1) and one stiff-ish sample (rate 2000): the easy one must take exactly the
    # steps it takes alone, and reach the same value, bit for bit
    x0 = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=DT)
    both = solve(
        ODEProblem(decay(torch.tensor([1.0, 2000.0], dtype=DT)), x0, (0.0, 1.0)), "Tsit5", rtol=1e-8, atol=1e-10
    )
    alone = solve(ODEProblem(decay(torch.tensor([1.0], dtype=DT)), x0[:1], (0.0, 1.0)), "Tsit5", rtol=1e-8, atol=1e-10)
    assert both.stats.sample_naccept[0] == alone.stats.sample_naccept[0]
    assert both.stats.sample_nreject[0] == alone.stats.sample_nreject[0]
    assert both.stats.sample_naccept[1] > 5 * both.stats.sample_naccept[0]
    assert torch.equal(both.final[0], alone.final[0])
    assert torch.allclose(both.final[0], x0[0] * math.exp(-1.0), rtol=1e-8)


def test_float32_runs_and_floors_at_single_precision():
    x0 = X0.float()
    A32 = A.float()
    p = ODEProblem(lambda t, x: torch.cos(t)[:, None] * (x @ A32.T), x0, (0.0, 1.0))
    sol = solve(p, "Tsit5", rtol=1e-6, atol=1e-7)
    assert sol.x.dtype == torch.float32 and sol.t.dtype == torch.float32
    assert float((sol.final.double() - exact_linear(X0, 1.0)).abs().max()) < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    p = linear_problem(X0, (0.0, 1.0))
    cpu = solve(p, "Tsit5", rtol=1e-9, atol=1e-11).final
    A_gpu = A.cuda()
    pg = ODEProblem(lambda t, x: torch.cos(t)[:, None] * (x @ A_gpu.T), X0.cuda(), (0.0, 1.0))
    gpu = solve(pg, "Tsit5", rtol=1e-9, atol=1e-11)
    assert gpu.final.device.type == "cuda"
    assert torch.allclose(gpu.final.cpu(), cpu, atol=1e-10)
