"""compact=True: finished samples leave the batch; every sample's steps and result stay bit-for-bit the same."""

from __future__ import annotations

import pytest
import torch

from pysens.solvers import ODEProblem, solve

DT = torch.float64


def cubic_decay(batch: int = 32) -> ODEProblem:
    # x' = -x^3 - x from x0 spread over 0.1..10: large x0 need many more steps, so the easy rows finish early
    x0 = torch.logspace(-1, 1, batch, dtype=DT)[:, None].repeat(1, 3)
    return ODEProblem(lambda t, x: -(x**3) - x, x0, (0.0, 2.0))


@pytest.mark.parametrize("method", ["Tsit5", "DP5", "DP8", "Heun"])
def test_compaction_changes_the_work_not_the_result(method):
    p = cubic_decay()
    saveat = torch.linspace(0.0, 2.0, 7, dtype=DT)
    rtol = 1e-5 if method == "Heun" else 1e-8  # second order: keep its step count small
    full = solve(p, method, rtol=rtol, atol=1e-10, saveat=saveat)
    compact = solve(p, method, rtol=rtol, atol=1e-10, saveat=saveat, compact=True)
    assert full.retcode == compact.retcode == "Success"
    assert torch.equal(full.x, compact.x)
    assert torch.equal(full.stats.sample_naccept, compact.stats.sample_naccept)
    assert torch.equal(full.stats.sample_nreject, compact.stats.sample_nreject)
    # without compaction every call sees the whole batch; with it the rows follow the per-sample steps
    assert full.extra["f_rows"] == full.stats.nf * 32
    assert compact.extra["f_rows"] < 0.8 * full.extra["f_rows"], (compact.extra["f_rows"], full.extra["f_rows"])


def test_compaction_with_per_sample_tolerances_and_fixed_steps():
    p = cubic_decay(8)
    atol = torch.logspace(-12, -6, 8, dtype=DT)[:, None]  # [B, 1]: one tolerance per sample
    full = solve(p, "Tsit5", rtol=1e-7, atol=atol)
    compact = solve(p, "Tsit5", rtol=1e-7, atol=atol, compact=True)
    assert torch.equal(full.x, compact.x)
    assert torch.equal(full.stats.sample_naccept, compact.stats.sample_naccept)
    fixed = solve(p, "RK4", dt=1e-3, compact=True)  # a fixed grid: every row moves until the end
    assert fixed.retcode == "Success" and torch.equal(fixed.x, solve(p, "RK4", dt=1e-3).x)


def test_compact_must_be_a_bool_and_only_for_methods_that_take_it():
    p = cubic_decay(4)
    with pytest.raises(TypeError, match="compact must be True or False"):
        solve(p, "Tsit5", compact=1)
    with pytest.raises(TypeError, match="unknown solve options for Rodas5P: compact"):
        solve(p, "Rodas5P", compact=True)


def test_compact_is_refused_on_backends_that_do_not_take_it():
    with pytest.raises(TypeError, match="compact: a torch-backend option; backend 'scipy' does not take it"):
        solve(cubic_decay(4), "DP5", "scipy", compact=True)
