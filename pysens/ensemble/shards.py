"""Shards: fixed ranges of trajectories, and the folder that keeps the finished ones.

A run of N trajectories in batches of ``batch_size`` has shards ``[0, b), [b, 2b), …`` whatever the number of
ranks: the shard is the unit of work (one batched solve), of storage (one file) and of resumption. Because the
shards do not depend on the world size, neither do the batches the solver sees, and so neither do the results.

Folder layout (``out``)::

    manifest.json                 what the run is (kind, fingerprint of its settings), its shards, whether complete
    shards/shard-00003.pt         one finished shard: {"index", "start", "stop", "rank", "wall_time", "payload"}

Each shard file is written atomically (temporary file, fsync, rename) when its shard completes, so a file that
exists is whole. A rerun with the same fingerprint loads the shards that exist and computes only the others; a
rerun with a different fingerprint is refused rather than mixed in.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pysens.artifacts import atomic_write, to_plain

MANIFEST_FORMAT = "pysens-shards/1"


@dataclass(frozen=True)
class ShardPlan:
    """``n`` trajectories cut into shards of ``batch_size`` (the last may be shorter)."""

    n: int
    batch_size: int

    def __post_init__(self) -> None:
        for name in ("n", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    def n_shards(self) -> int:
        return -(-self.n // self.batch_size)

    def bounds(self, index: int) -> range:
        """The trajectories of shard ``index``."""
        return range(index * self.batch_size, min(self.n, (index + 1) * self.batch_size))

    def owned_by(self, rank: int, world_size: int) -> list[int]:
        """Shards rank ``rank`` of ``world_size`` computes: every ``world_size``-th, starting at ``rank``."""
        return list(range(rank, self.n_shards, world_size))


def stable_repr(value: Any) -> str:
    """``repr`` without memory addresses (``<function f at 0x7f…>``), so a fingerprint is the same on a rerun."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


class ShardStore:
    """The shard folder of one run (module docstring): manifest, atomic shard files, resumption."""

    def __init__(self, out: str | Path, plan: ShardPlan, kind: str, fingerprint: dict[str, Any]) -> None:
        self.root = Path(out)
        self.plan, self.kind = plan, kind
        self.fingerprint = to_plain(fingerprint)
        self.manifest_path = self.root / "manifest.json"
        self.shard_dir = self.root / "shards"

    def describe(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "n": self.plan.n,
            "batch_size": self.plan.batch_size,
            "n_shards": self.plan.n_shards,
        }

    def open(self, write: bool) -> None:
        """Check an existing manifest against this run (ValueError naming what differs); write it when absent."""
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"out must be a folder, but {self.root} is a file")
        mine = self.describe()
        if self.manifest_path.exists():
            theirs = json.loads(self.manifest_path.read_text())
            differ = sorted(k for k in mine if theirs.get(k) != mine[k])
            if "fingerprint" in differ:
                old = theirs.get("fingerprint") or {}
                inner = sorted(
                    k for k in set(mine["fingerprint"]) | set(old) if old.get(k) != mine["fingerprint"].get(k)
                )
                differ = [d for d in differ if d != "fingerprint"] + [f"fingerprint.{k}" for k in inner]
            if differ:
                raise ValueError(
                    f"out folder {self.root} holds shards of a different run (differs in: {', '.join(differ)}); "
                    "use a new folder or delete it"
                )
        elif write:
            self.write_manifest(complete=False)

    def write_manifest(self, complete: bool, shards: list[dict] | None = None) -> None:
        body = {**self.describe(), "complete": complete}
        if shards is not None:
            body["shards"] = shards
        text = json.dumps(to_plain(body), indent=2) + "\n"
        atomic_write(self.manifest_path, lambda handle: handle.write(text.encode()))

    def path(self, index: int) -> Path:
        return self.shard_dir / f"shard-{index:05d}.pt"

    def save(self, index: int, record: dict[str, Any]) -> None:
        """Write shard ``index`` atomically (tensors moved to the CPU)."""
        buffer = io.BytesIO()
        torch.save(to_cpu(record), buffer)
        atomic_write(self.path(index), lambda handle: handle.write(buffer.getvalue()))

    def load(self, index: int) -> dict[str, Any] | None:
        """Shard ``index`` if a whole file of this run exists, else None (an unreadable file is recomputed)."""
        path = self.path(index)
        if not path.exists():
            return None
        try:
            # our own files, written by save(); they hold arbitrary outputs, so not weights_only
            record = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unreadable file is recomputed, with a warning
            warnings.warn(f"shard file {path} is unreadable ({err}); computing it again", stacklevel=2)
            return None
        bounds = self.plan.bounds(index)
        if (record.get("start"), record.get("stop")) != (bounds.start, bounds.stop):
            warnings.warn(f"shard file {path} covers other trajectories; computing it again", stacklevel=2)
            return None
        return record


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor inside (dicts, lists, tuples, dataclasses such as ``Solution``) moved to the CPU:
    gathered and stored results must not name a device of another rank."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        moved = copy.copy(obj)
        for f in dataclasses.fields(obj):
            setattr(moved, f.name, to_cpu(getattr(obj, f.name)))
        return moved
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
