"""Splitting shards across the ranks of a torch.distributed process group, and gathering them.

Nothing here schedules: ``torchrun`` (or Slurm's ``srun`` with torchrun, or ``torch.multiprocessing``) starts the
processes and sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``; :func:`join_process_group`
initialises the default group from them (``env://``; NCCL when the rank runs on a GPU, gloo on CPUs). Work is split
statically: shard k goes to rank ``k mod world_size`` (:meth:`ShardPlan.owned_by`).

Collectives are kept out of the work loop: every rank runs its shards, catching an exception instead of leaving
the others waiting, and then all ranks meet once (``all_gather_object`` of a small status). A failure on any rank
is re-raised on every rank as :class:`ShardFailure`, naming the rank, the shard's trajectory range and, when known,
the trajectory; finished shards stay on disk. A rank that dies outright (killed, out of memory) never reaches the
meeting: the launcher (torchrun, ``mp.spawn``) then stops the others, and the shards already written are kept for
the rerun.

What is gathered where (always as CPU tensors, so that no result names another rank's device): with ``out``
every rank writes its shards to the shared folder and rank 0 reads them all back (or, with ``gather=False``,
returns only the shard records); without ``out`` the payloads travel to rank 0 by ``gather_object``. Other ranks
return None.
"""

from __future__ import annotations

import datetime
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pysens.ensemble.shards import ShardPlan, ShardStore, to_cpu


@dataclass(frozen=True)
class Group:
    """This process's place in the job: ``rank`` of ``world_size``, ``local_rank`` on its node, its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialised_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def leave(self) -> None:
        """Destroy the default process group if :func:`join_process_group` created it."""
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def join_process_group(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> Group:
    """The current process group, initialising it from the launcher's environment when needed.

    Args:
        device: ``"cpu"``, ``"cuda"`` (then ``cuda:LOCAL_RANK``), an explicit device, or None (``cuda:LOCAL_RANK``
            when CUDA is available, else CPU).
        timeout_s: how long a collective waits for a missing rank before failing (gloo/NCCL timeout).

    Without ``WORLD_SIZE`` in the environment and no initialised group, this is a world of one process.
    """
    local_rank = _env_int("LOCAL_RANK", 0)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda asked for, but torch sees no CUDA device")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size(), local_rank, device)
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return Group(0, 1, local_rank, device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Group(dist.get_rank(), dist.get_world_size(), local_rank, device, initialised_here=True)


class ShardFailure(RuntimeError):
    """A shard failed on some rank; ``failures`` lists ``{"rank", "shard", "start", "stop", "trajectory", "error"}``."""

    def __init__(self, failures: list[dict[str, Any]]) -> None:
        self.failures = failures
        lines = []
        for f in failures:
            where = f" at trajectory {f['trajectory']}" if f.get("trajectory") is not None else ""
            lines.append(
                f"rank {f['rank']} failed on shard {f['shard']} (trajectories [{f['start']}, {f['stop']})){where}: "
                f"{f['error']}"
            )
        super().__init__("; ".join(lines) + " (finished shards are kept; rerun to resume)")


class TrajectoryError(RuntimeError):
    """Raised by work functions to say which trajectory failed (the cause is chained)."""

    def __init__(self, trajectory: int, message: str) -> None:
        self.trajectory = trajectory
        super().__init__(message)


@dataclass
class ShardedRun:
    """What :func:`run_shards` returns on rank 0: the payload of every shard in order (None with ``gather=False``),
    and a record per shard (rank, whether it was resumed from disk, wall time)."""

    payloads: list[Any] | None
    shards: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None

    @property
    def resumed(self) -> list[int]:
        return [s["index"] for s in self.shards if s["resumed"]]


def run_shards(
    plan: ShardPlan,
    work: Callable[[range], Any],
    *,
    group: Group,
    out: str | Path | None = None,
    kind: str = "ensemble",
    fingerprint: dict[str, Any] | None = None,
    gather: bool = True,
) -> ShardedRun | None:
    """Run ``work(trajectories)`` for the shards this rank owns; gather on rank 0 (module docstring).

    ``work`` returns the shard's payload (tensors, lists, any picklable value). With ``out``, finished shards are
    written there atomically as they complete and shards already there are loaded instead of computed.
    Raises :class:`ShardFailure` on every rank when any shard failed.
    """
    store = None
    if out is not None:
        store = ShardStore(out, plan, kind, fingerprint or {})
        store.open(write=group.rank == 0)
    payloads: dict[int, Any] = {}
    records: list[dict[str, Any]] = []
    failure = None
    for index in plan.owned_by(group.rank, group.world_size):
        bounds = plan.bounds(index)
        record = store.load(index) if store is not None else None
        resumed = record is not None
        try:
            if record is None:
                start = time.perf_counter()
                payload = work(bounds)
                record = {
                    "index": index,
                    "start": bounds.start,
                    "stop": bounds.stop,
                    "rank": group.rank,
                    "wall_time": time.perf_counter() - start,
                    "payload": payload,
                }
                if store is not None:
                    store.save(index, record)
        except Exception as err:  # noqa: BLE001 - reported to every rank below, with the traceback
            failure = {
                "rank": group.rank,
                "shard": index,
                "start": bounds.start,
                "stop": bounds.stop,
                "trajectory": getattr(err, "trajectory", None),
                "error": _describe(err),
                "traceback": traceback.format_exc(),
            }
            break
        meta = {k: record[k] for k in ("index", "start", "stop", "rank", "wall_time")}
        records.append({**meta, "resumed": resumed, "computed_by": group.rank})
        if store is None:
            payloads[index] = to_cpu(record["payload"])
    statuses = [(failure, records)]
    if group.distributed:
        statuses = [None] * group.world_size
        dist.all_gather_object(statuses, (failure, records))
    failures = [f for f, _ in statuses if f is not None]
    if failures:
        raise ShardFailure(failures)
    all_records = sorted((r for _, rs in statuses for r in rs), key=lambda r: r["index"])
    if store is None:
        gathered = [payloads]
        if group.distributed:
            gathered = [None] * group.world_size if group.rank == 0 else None
            dist.gather_object(payloads, gathered, dst=0)
        if group.rank != 0:
            return None
        merged = {k: v for part in gathered for k, v in part.items()}
        return ShardedRun([merged[k] for k in range(plan.n_shards)], all_records)
    if group.rank != 0:  # every rank saved its shards before the all_gather above, so rank 0 can read them
        return None
    store.write_manifest(complete=True, shards=all_records)
    if not gather:
        return ShardedRun(None, all_records, store.root)
    loaded = [store.load(k) for k in range(plan.n_shards)]
    missing = [k for k, r in enumerate(loaded) if r is None]
    if missing:
        raise RuntimeError(f"shards {missing} are missing from {store.shard_dir} though every rank reported them done")
    return ShardedRun([r["payload"] for r in loaded], all_records, store.root)


def _describe(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    cause = err.__cause__
    if cause is not None:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text
