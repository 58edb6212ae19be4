"""Shared helpers of the bad-input suite: every case asserts the exception type, that the message names the
argument, and that no file under the case's folder changed (verbs that write are pointed at it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(call, exc: type[BaseException], names: str, folder: Path) -> None:
    """``call()`` raises exactly ``exc`` (or a subclass), its message matches ``names`` (the argument's name), and
    ``folder`` holds the same files with the same bytes afterwards."""
    before = snapshot(folder)
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, exc)
    assert re.search(names, str(info.value)), f"message does not name {names!r}: {info.value}"
    assert snapshot(folder) == before, "a refused call changed files"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A folder holding a previous run's file, which a refused call must leave alone."""
    (tmp_path / "previous.txt").write_text("from an earlier run\n")
    return tmp_path
