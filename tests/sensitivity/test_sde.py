"""Pathwise SDE sensitivity on a fixed Brownian path, and the Itô log-density with the Milstein term (digest §3.5)."""

import torch

from pysens.diffusion.sampling import sample_sde
from pysens.sensitivity import sde_sample_sensitivity
from pysens.solvers import BrownianGrid

from .conftest import make_oracle, richardson

T1 = 1e-2


def test_pathwise_sensitivity_converges_to_the_finite_difference_on_a_fixed_path():
    oracle = make_oracle("VP", 2, seed=1)
    process = oracle.process
    x_T = process.prior_sample((2, 2), generator=torch.Generator().manual_seed(2))
    fine = 1024
    path = BrownianGrid.sample((process.T, T1), fine, x_T.shape, generator=torch.Generator().manual_seed(3))
    # reference: the finite difference of the exact perturbed model's EM solution on the finest grid of the path
    fd = richardson(lambda e: sample_sde(oracle.perturbed(e), process, x_T, t1=T1, n_steps=fine, brownian=path).x, 1e-4)
    errors = []
    for n in (64, 256, 1024):
        res = sde_sample_sensitivity(
            oracle.model,
            process,
            x_T,
            oracle.sigma,
            t1=T1,
            n_steps=n,
            brownian=path,
            terminal_log_density=oracle.terminal,
        )
        assert res.retcode == "Success" and res.brownian is path
        errors.append(float((res.sensitivity[0] - fd).norm() / fd.norm()))
    print("pathwise sensitivity relative error at 64/256/1024 steps:", [f"{e:.2e}" for e in errors])
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 5e-2


def test_ito_log_density_converges_with_the_milstein_term():
    oracle = make_oracle("VP", 2, seed=4)
    process = oracle.process
    x_T = process.prior_sample((4, 2), generator=torch.Generator().manual_seed(5))
    path = BrownianGrid.sample((process.T, T1), 1024, x_T.shape, generator=torch.Generator().manual_seed(6))
    errors = {}
    for milstein in (True, False):
        for n in (128, 1024):
            res = sde_sample_sensitivity(
                oracle.model,
                process,
                x_T,
                t1=T1,
                n_steps=n,
                brownian=path,
                milstein=milstein,
                terminal_log_density=oracle.terminal,
            )
            errors[milstein, n] = float((res.log_density - oracle.model.log_density(res.x, T1)).abs().mean())
    print({k: f"{v:.2e}" for k, v in errors.items()})
    assert errors[True, 1024] < errors[True, 128] / 4  # order 1: ~8x per 8x steps
    assert errors[True, 1024] < errors[False, 1024]


def test_hutchinson_milstein_trace_is_replayable_and_close():
    oracle = make_oracle("VP", 2, seed=7)
    process = oracle.process
    x_T = process.prior_sample((3, 2), generator=torch.Generator().manual_seed(8))
    runs = [
        sde_sample_sensitivity(
            oracle.model,
            process,
            x_T,
            oracle.sigma,
            t1=T1,
            n_steps=200,
            milstein_trace="hutchinson",
            generator=torch.Generator().manual_seed(9),
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0].sensitivity, runs[1].sensitivity)  # same seed, same path and probes
    exact = sde_sample_sensitivity(
        oracle.model, process, x_T, oracle.sigma, t1=T1, n_steps=200, brownian=runs[0].brownian
    )
    assert torch.equal(exact.x, runs[0].x)  # the trace touches ℓ only
    assert float((exact.log_density - runs[0].log_density).abs().max()) < 0.5
