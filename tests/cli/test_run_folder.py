"""Run folders: a run's files appear together or not at all, one live run per folder, nothing orphaned.

The SIGKILL cases run ``run_writer.py`` (a real subprocess that loads only ``pysens/artifacts.py``) and kill it
after each file it stages and before every file-system step of its commit; after each kill the folder must hold
the previous run whole or the new run whole, and the next start must leave nothing else beside it.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pysens.artifacts import MANIFEST, RunFolder, RunFolderError, settle_run_folders, verify_run_folder, write_json

WRITER = Path(__file__).with_name("run_writer.py")
FILES = {"report.json", "model.bin", "figures/a.png"}


def _write(stage: Path, label: str, names=("report.json", "model.pt")) -> None:
    for name in names:
        write_json(stage / name, {"label": label, "name": name})


def _labels(folder: Path) -> set:
    return {
        json.loads(p.read_text())["label"]
        for p in folder.iterdir()
        if p.suffix in (".json", ".pt") and p.name != MANIFEST
    }


def _writer(out: Path, label: str, *options: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WRITER), str(out), label, *options], capture_output=True, text=True, timeout=60, **kwargs
    )


def _run_id(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.split("\n")[0].removeprefix("run ")


def _leftovers(home: Path, keep: set) -> list:
    return sorted(p.name for p in home.iterdir() if p.name not in keep)


def test_a_run_replaces_the_whole_folder_and_writes_a_manifest(tmp_path):
    out = tmp_path / "out"
    with RunFolder(out, kind="demo") as stage:
        _write(stage, "A", ("report.json", "model.pt", "old_only.json"))
    first = verify_run_folder(out)
    assert set(first["files"]) == {"report.json", "model.pt", "old_only.json"}
    with RunFolder(out, kind="demo") as stage:
        assert not (stage / "report.json").exists()  # a fresh stage, not a copy of the old folder
        _write(stage, "B")
    second = verify_run_folder(out)
    assert second["run_id"] != first["run_id"]
    assert _labels(out) == {"B"} and not (out / "old_only.json").exists()
    assert _leftovers(tmp_path, {"out"}) == []


def test_a_failed_run_leaves_the_previous_folder_untouched(tmp_path):
    out = tmp_path / "out"
    with RunFolder(out, kind="demo") as stage:
        _write(stage, "A")
    before = verify_run_folder(out)
    with pytest.raises(RuntimeError, match="training diverged"):
        with RunFolder(out, kind="demo") as stage:
            _write(stage, "B", ("report.json",))
            raise RuntimeError("training diverged")
    assert verify_run_folder(out)["run_id"] == before["run_id"] and _labels(out) == {"A"}
    assert _leftovers(tmp_path, {"out"}) == []


def test_a_second_live_run_is_refused_with_the_holder_named(tmp_path):
    out = tmp_path / "out"
    first = RunFolder(out, kind="demo")
    first.open()
    with pytest.raises(RunFolderError, match=r"--out .*out is in use by another live run: pysens demo \(pid"):
        RunFolder(out, kind="demo").open()
    first.commit()
    second = RunFolder(out, kind="demo")  # free again once the first has ended
    second.open()
    second.abort()
    assert _leftovers(tmp_path, {"out"}) == []


def test_a_folder_holding_other_files_is_refused_not_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"--out .* holds files that no pysens demo run wrote \(notes.txt\)"):
        RunFolder(tmp_path, kind="demo", outputs=("report.json",)).open()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    legacy = tmp_path / "legacy"  # written by a pysens before manifests: the verb's own file names are accepted
    legacy.mkdir()
    (legacy / "report.json").write_text("{}")
    (legacy / ".report.json.x1.tmp").write_text("half")  # a temporary file of a killed writer
    with RunFolder(legacy, kind="demo", outputs=("report.json", "*.png")) as stage:
        _write(stage, "new")
    assert set(verify_run_folder(legacy)["files"]) == {"report.json", "model.pt"}
    file_out = tmp_path / "notes.txt"
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        RunFolder(file_out, kind="demo").open()


def test_verify_names_what_differs(tmp_path):
    out = tmp_path / "out"
    with RunFolder(out, kind="demo") as stage:
        _write(stage, "A")
    (out / "model.pt").write_text("changed")
    (out / "extra.json").write_text("{}")
    with pytest.raises(RunFolderError, match="model.pt differs from the manifest; extra.json is not in the manifest"):
        verify_run_folder(out)
    with pytest.raises(RunFolderError, match="no readable run manifest"):
        verify_run_folder(tmp_path)


def test_groups_share_a_folder_and_each_replaces_only_its_files(tmp_path):
    with RunFolder(tmp_path, kind="bench stiff", group="stiff") as stage:
        _write(stage, "stiff-1", ("stiff.json", "stiff_old.json"))
    with RunFolder(tmp_path, kind="bench spde", group="spde") as stage:
        _write(stage, "spde-1", ("spde.json",))
    # two groups may run at once in one folder; a second run of one group may not
    a, b = RunFolder(tmp_path, kind="bench stiff", group="stiff"), RunFolder(tmp_path, kind="bench spde", group="spde")
    _write(a.open(), "stiff-2", ("stiff.json",))
    with pytest.raises(RunFolderError, match="in use by another live run"):
        RunFolder(tmp_path, kind="bench stiff", group="stiff").open()
    _write(b.open(), "spde-2", ("spde.json",))
    a.commit()
    b.commit()
    assert json.loads((tmp_path / "stiff.json").read_text())["label"] == "stiff-2"
    assert json.loads((tmp_path / "spde.json").read_text())["label"] == "spde-2"
    assert not (tmp_path / "stiff_old.json").exists()  # the group's previous run wrote it, this one did not
    verify_run_folder(tmp_path, group="stiff")
    verify_run_folder(tmp_path, group="spde")
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"stiff.json", "spde.json", ".stiff.pysens-manifest.json", ".spde.pysens-manifest.json"}


def _assert_whole(out: Path, allowed: set) -> str:
    manifest = verify_run_folder(out)
    assert manifest["run_id"] in allowed
    return manifest["run_id"]


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_sigkill_at_every_moment_leaves_the_old_or_the_new_whole(tmp_path, exchange):
    out = tmp_path / "out"
    options = () if exchange else ("--no-exchange",)
    first = _writer(out, "old", *options)
    assert first.returncode == 0, first.stderr
    old_id = _run_id(first)
    seen = set()
    cases = [("--die-after-file", str(k)) for k in (1, 3)] + [("--die-at-op", str(k)) for k in range(1, 12)]
    for flag, k in cases:
        proc = _writer(out, "new", *options, flag, k)
        new_id = _run_id(proc)
        if proc.returncode == 0:  # k is past the commit's last step
            assert flag == "--die-at-op" and int(k) > 2
            seen.add(_assert_whole(out, {new_id}))
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        if exchange:  # one atomic step: the folder is whole even before anyone cleans up
            seen.add(_assert_whole(out, {old_id, new_id}))
        # the next start finishes or undoes what the kill interrupted and removes every leftover
        nxt = RunFolder(out, kind="writer", outputs=tuple(FILES))
        nxt.open()
        nxt.abort()
        seen.add(_assert_whole(out, {old_id, new_id}))
        assert _leftovers(tmp_path, {"out"}) == []
        old_id = verify_run_folder(out)["run_id"]
    else:
        pytest.fail("the writer never finished its commit")
    assert len(seen) >= 3  # the kills fell before, inside and after the commit


def test_sigkill_of_a_group_commit_is_completed_by_the_next_start(tmp_path):
    first = _writer(tmp_path, "old", "--group", "w")
    assert first.returncode == 0, first.stderr
    (tmp_path / "other.json").write_text("another suite's file")
    old_id = _run_id(first)
    replayed = 0
    for k in range(1, 20):
        proc = _writer(tmp_path, "new", "--group", "w", "--die-at-op", str(k))
        new_id = _run_id(proc)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL
        # a reader (bench --tables) settles the folder first; the next start of the group would do the same
        pending = (tmp_path / ".w.pysens-commit.json").exists()
        replayed += pending
        assert settle_run_folders(tmp_path) == (["w"] if pending else [])
        _assert_whole_group(tmp_path, {old_id, new_id})
        nxt = RunFolder(tmp_path, kind="writer", group="w")
        nxt.open()
        nxt.abort()
        old_id = _assert_whole_group(tmp_path, {old_id, new_id})
        expected = {"report.json", "model.bin", "figures", "other.json", ".w.pysens-manifest.json"}
        assert _leftovers(tmp_path, expected) == []
    assert _assert_whole_group(tmp_path, {new_id}) == new_id
    assert replayed >= 3  # kills fell between the commit record and its last move
    assert (tmp_path / "other.json").read_text() == "another suite's file"


def _assert_whole_group(folder: Path, allowed: set) -> str:
    manifest = verify_run_folder(folder, group="w")
    assert manifest["run_id"] in allowed
    label = manifest["argv"][2]
    for name in FILES:
        assert (folder / name).read_text().startswith(label)
    return manifest["run_id"]


def test_a_killed_holder_frees_the_folder_and_a_live_one_keeps_it(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, str(WRITER), str(out), "held", "--hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().startswith("run ")
        refused = _writer(out, "second")
        assert refused.returncode == 2 and "in use by another live run: pysens writer" in refused.stderr
        assert not out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
        holder.stdin.close()
    assert _writer(out, "third").returncode == 0
    assert _leftovers(tmp_path, {"out"}) == []
    assert {(out / n).read_text()[:5] for n in FILES} == {"third"}
