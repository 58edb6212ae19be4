"""Shard plans, the shard folder (manifest, resumption, refusal of other runs) and per-trajectory random numbers."""

from __future__ import annotations

import json

import pytest
import torch

import pysens
from pysens.ensemble import (
    ShardFailure,
    ShardPlan,
    join_process_group,
    run_shards,
    sharded_sample_pf_ode,
    sharded_sample_sde,
    trajectory_seed,
)
from pysens.ensemble.seeding import brownian_paths, prior_noise, probe_vectors
from tests.ensemble import workloads


def test_plan_cuts_fixed_shards_and_deals_them_round_robin():
    plan = ShardPlan(10, 4)
    assert plan.n_shards == 3 and [list(plan.bounds(k)) for k in range(3)][-1] == [8, 9]
    assert plan.owned_by(0, 2) == [0, 2] and plan.owned_by(1, 2) == [1]
    assert plan.owned_by(2, 4) == [2] and plan.owned_by(3, 4) == []
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ShardPlan(10, 0)


def test_random_numbers_follow_the_trajectory_not_the_batch():
    vp = pysens.VP()
    whole = prior_noise(vp, 3, range(0, 8), (2,), dtype=torch.float32, device="cpu")
    parts = torch.cat(
        [prior_noise(vp, 3, r, (2,), dtype=torch.float32, device="cpu") for r in (range(0, 3), range(3, 8))]
    )
    assert torch.equal(whole, parts)
    probes = probe_vectors(3, range(0, 8), 2, (2,), kind="rademacher", dtype=torch.float64, device="cpu")
    assert probes.shape == (2, 8, 2) and set(probes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(
        probes[:, 5:], probe_vectors(3, range(5, 8), 2, (2,), kind="rademacher", dtype=torch.float64, device="cpu")
    )
    path = brownian_paths(3, range(2, 4), (1.0, 0.1), 10, (2,), dtype=torch.float64, device="cpu", iterated=True)
    assert path.increments.shape == (10, 2, 2) and path.time_integrals.shape == (10, 2, 2)
    assert len({trajectory_seed(0, i, s) for i in range(100) for s in range(3)}) == 300
    with pytest.raises(ValueError, match="index must be a non-negative integer"):
        trajectory_seed(0, -1)


def test_resume_loads_finished_shards_and_refuses_other_runs(tmp_path):
    group = join_process_group("cpu")
    calls, broken = [], [True]

    def work(indices):
        calls.append(indices.start)
        if indices.start == 6 and broken[0]:
            raise ValueError("transient failure")
        return torch.arange(indices.start, indices.stop)

    plan = ShardPlan(10, 2)
    with pytest.raises(ShardFailure, match=r"rank 0 failed on shard 3 \(trajectories \[6, 8\)\)") as info:
        run_shards(plan, work, group=group, out=tmp_path, fingerprint={"a": 1})
    assert info.value.failures[0]["error"] == "ValueError: transient failure"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["n_shards"] == 5
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [f"shard-0000{k}.pt" for k in range(3)]
    calls.clear()
    broken[0] = False
    run = run_shards(plan, work, group=group, out=tmp_path, fingerprint={"a": 1})
    assert calls == [6, 8] and run.resumed == [0, 1, 2]
    assert torch.equal(torch.cat(run.payloads), torch.arange(10))
    assert json.loads((tmp_path / "manifest.json").read_text())["complete"] is True
    with pytest.raises(ValueError, match=r"different run \(differs in: fingerprint.a\)"):
        run_shards(plan, work, group=group, out=tmp_path, fingerprint={"a": 2})
    with pytest.raises(ValueError, match="differs in: batch_size"):
        run_shards(ShardPlan(10, 5), work, group=group, out=tmp_path, fingerprint={"a": 1})
    (tmp_path / "shards" / "shard-00004.pt").write_bytes(b"torn")  # an unreadable file is computed again
    calls.clear()
    with pytest.warns(UserWarning, match="unreadable"):
        run = run_shards(plan, work, group=group, out=tmp_path, fingerprint={"a": 1})
    assert calls == [8]


def test_sharded_sampling_depends_on_seed_and_batch_size_only(tmp_path):
    model = workloads.small_model()
    kw = {"seed": 4, "dtype": torch.float64, "t1": 1e-2, "rtol": 1e-4, "atol": 1e-4}
    a = sharded_sample_pf_ode(model, "VP", 6, batch_size=3, **kw)
    b = sharded_sample_pf_ode(model, "VP", 6, batch_size=3, out=tmp_path, **kw)
    c = sharded_sample_pf_ode(model, "VP", 6, batch_size=3, out=tmp_path, **kw)  # resumed from the files
    assert c.resumed == [0, 1]
    for r in (b, c):
        assert torch.equal(a["x"], r["x"]) and torch.equal(a["x_T"], r["x_T"])
    # the same x_T through the plain verb: equal to the solver's tolerance (batch composition may move last bits)
    plain = pysens.sample_pf_ode(model, "VP", a["x_T"], t1=1e-2, rtol=1e-4, atol=1e-4)
    assert torch.allclose(plain.x, a["x"], rtol=0, atol=1e-3)
    sde = sharded_sample_sde(model, "VP", 4, batch_size=2, seed=1, n_steps=20, dtype=torch.float64)
    again = sharded_sample_sde(model, "VP", 4, batch_size=4, seed=1, n_steps=20, dtype=torch.float64)
    assert sde["x"].shape == (4, 2) and torch.allclose(sde["x"], again["x"], rtol=0, atol=1e-12)


def test_sharded_verbs_refuse_bad_input():
    model = workloads.small_model()
    with pytest.raises(ValueError, match="n must be a positive integer"):
        sharded_sample_pf_ode(model, "VP", 0, batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        sharded_sample_pf_ode(model, "VP", 4, batch_size=0)
    with pytest.raises(ValueError, match="n = 3 but x_T holds 2 rows"):
        sharded_sample_pf_ode(model, "VP", 3, batch_size=2, x_T=torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="divergence='exact'"):
        from pysens.ensemble import sharded_sample_sensitivity

        sharded_sample_sensitivity(model, "VP", 2, None, batch_size=2, divergence="hutchinson")


def test_log_likelihood_takes_given_probes():
    """The hook sharded likelihoods use: given probes are the probes a generator would have drawn."""
    from pysens.diffusion.divergence import hutchinson_probes

    model = workloads.small_model()
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kw = {"divergence": "hutchinson", "t0": 1e-2, "rtol": 1e-4, "atol": 1e-4}
    drawn = pysens.log_likelihood(model, "VP", x, n_probes=2, generator=torch.Generator().manual_seed(9), **kw)
    probes = hutchinson_probes(2, x.shape, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    given = pysens.log_likelihood(model, "VP", x, probes=probes, **kw)
    assert torch.equal(drawn.log_density, given.log_density)
    assert given.stats.njvp == given.stats.nf * 2
    with pytest.raises(ValueError, match=r"probes must be shaped \[K, 3, 2\]"):
        pysens.log_likelihood(model, "VP", x, probes=probes[:, :2], **kw)
