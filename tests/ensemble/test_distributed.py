"""Real process groups (gloo, 2 CPU processes via torch.multiprocessing) against the one-process run."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pysens.ensemble import join_process_group
from tests.ensemble import workloads

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch built without gloo"
)


def _start(worker, init_file: str, target: str) -> None:
    """Two ranks of ``worker``; forked (no re-import of torch: seconds per test on a loaded 2-core machine)."""
    mp.start_processes(worker, args=(2, init_file, target), nprocs=2, join=True, start_method="fork")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One 2-rank job running every identity workload (spawning processes is the expensive part)."""
    folder = tmp_path_factory.mktemp("identity")
    result_file = str(folder / "rank0.pt")
    _start(workloads.worker_identity, str(folder / "init"), result_file)
    return torch.load(result_file, weights_only=False), torch.load(result_file + ".rank1", weights_only=False)


def _one_process(result) -> dict:
    return workloads._plain(result)


def test_ensemble_of_64_ode_solves_matches_one_process_bit_for_bit(two_ranks):
    distributed = two_ranks[0]["ensemble"]
    single = _one_process(workloads.run_ensemble(join_process_group("cpu")))
    assert distributed["u"].shape == (64, 2)
    assert torch.equal(distributed["u"], single["u"])
    assert {s["computed_by"] for s in distributed["shards"]} == {0, 1}  # the work really was split


def test_sharded_likelihood_matches_one_process_bit_for_bit(two_ranks):
    distributed = two_ranks[0]["likelihood"]
    single = _one_process(workloads.run_likelihood())
    for name, value in single["values"].items():
        assert torch.equal(distributed["values"][name], value), name
    assert distributed["retcodes"] == single["retcodes"] == ["Success"] * 12


def test_sharded_sensitivity_matches_one_process_bit_for_bit(two_ranks):
    distributed = two_ranks[0]["sensitivity"]
    single = _one_process(workloads.run_sensitivity())
    assert distributed["values"]["sensitivity"].shape == (1, 8, 2)
    for name, value in single["values"].items():
        assert torch.equal(distributed["values"][name], value), name


def test_failing_prob_func_names_rank_and_trajectory_on_every_rank(two_ranks):
    for result in two_ranks:
        message = result["failure"]
        assert message is not None
        assert "rank 1 failed on shard 3 (trajectories [24, 32)) at trajectory 29" in message
        assert "no parameters for trajectory 29" in message


def test_killed_rank_rerun_resumes_from_completed_shards(tmp_path):
    out = tmp_path / "run"
    # rank 1 is SIGKILLed; whether the job then reports its exit or rank 0's broken collective first is a race
    with pytest.raises((mp.ProcessExitedException, mp.ProcessRaisedException)):
        _start(workloads.worker_killed, str(tmp_path / "init"), str(out))
    written = sorted(p.name for p in (out / "shards").glob("shard-*.pt"))
    assert "shard-00001.pt" in written  # rank 1 finished shard 1 before it was killed at shard 3
    assert "shard-00003.pt" not in written
    rerun = workloads.run_ensemble(join_process_group("cpu"), out=out)  # resumed by one process
    assert set(rerun.shards and [s["index"] for s in rerun.shards if s["resumed"]]) == {
        int(name[6:11]) for name in written
    }
    reference = workloads.run_ensemble(join_process_group("cpu"))
    assert torch.equal(torch.stack(rerun.u), torch.stack(reference.u))
