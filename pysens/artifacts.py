"""Files a run writes (JSON reports, figures, checkpoints): each file atomic, and each run's folder one whole.

Files: each goes to a temporary file in the destination folder and is moved into place with ``os.replace``; an
interrupted write leaves the previous file or the new one, never half of one.

Run folders (:class:`RunFolder`): a run writes all its files into a fresh staging folder and the set is moved in at
the end, so a folder holds one run's files, never a mix of two runs. The folder carries a manifest
(``.pysens-manifest.json``: run id, verb, command line, size and SHA-256 of every file), written last into the stage;
:func:`verify_run_folder` checks a folder against it. A lock (``fcntl.flock``, released by the kernel when its
process dies, SIGKILL included) keeps a second live run off a folder; the next run on a folder removes what dead
runs left behind (staging folders, a half-done swap) before it starts.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import hashlib
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, fsync it, then move it onto ``path``."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def to_plain(obj: Any) -> Any:
    """Tensors, numpy values and dataclass-like stats as JSON-ready Python data (non-finite floats as None)."""
    # torch and numpy only matter when loaded: a tensor cannot exist otherwise (keeps this module light to import)
    torch, np = sys.modules.get("torch"), sys.modules.get("numpy")
    if torch is not None and isinstance(obj, torch.Tensor):
        return to_plain(obj.detach().cpu().tolist())
    if np is not None and isinstance(obj, np.ndarray):
        return to_plain(obj.tolist())
    if np is not None and isinstance(obj, np.generic):
        return to_plain(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if hasattr(obj, "as_dict"):
        return to_plain(obj.as_dict())
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(to_plain(obj), indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda handle: fig.savefig(handle, format=fmt, dpi=dpi, bbox_inches="tight"))


# ----------------------------------------------------------------------------------------------------- run folders

MANIFEST = ".pysens-manifest.json"  # in a folder a run owns; a group in a shared folder has ``.{group}`` + this name


class RunFolderError(ValueError):
    """A run folder that cannot be used (busy, not a folder, not writable, holding files no pysens run wrote, or
    not matching its manifest); the message names the option or argument that gave the folder."""


class _Lock:
    """An exclusive ``flock`` on a lock file; the kernel drops it when the holding process dies (SIGKILL too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, holder: str) -> str | None:
        """Take the lock and record ``holder`` in the file: None, or the live holder's record when it is taken."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as handle:
                    return handle.read().strip() or "another pysens run"
            # the previous holder unlinks the file when it ends: lock the file that is at the path now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked, so no one else holds this file
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


class RunFolder:
    """The folder one run writes, changed as one whole: ``with RunFolder(out, kind="demo") as stage:`` write into
    ``stage``; on a normal exit the stage becomes ``out``, on an exception it is discarded and ``out`` is untouched.

    ``group=None``: the run owns ``path`` whole. The stage is a sibling folder; at the end it is swapped with
    ``path`` in one atomic ``renameat2(RENAME_EXCHANGE)`` (Linux), elsewhere by two renames that the next run
    completes or undoes if a kill falls between them. A run may only replace a folder whose entries a pysens run
    wrote (listed in its manifest) or that match ``outputs`` (glob patterns of what the verb writes, for folders
    written before manifests existed); anything else refuses with :class:`RunFolderError`.

    ``group="stiff"``: the run owns the files it writes into a folder shared with other runs (a benchmark root).
    They are staged in ``path/.stiff.pysens-stage-*``, then moved in after a commit record
    (``.stiff.pysens-commit.json``) that the next run of the group replays if a kill interrupts the moves; files of
    the group's previous run that this run did not write are removed.

    One live run per folder (or group): a second one is refused with a message naming the holder. ``open`` also
    cleans what dead runs left (stages, a half-done swap or commit), so nothing is orphaned after the next start.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        kind: str,
        outputs: Sequence[str] = (),
        group: str | None = None,
        option: str = "--out",
        argv: Sequence[str] | None = None,
        exchange: bool = True,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        self.kind, self.outputs, self.group, self.option = kind, tuple(outputs), group, option
        self.argv = list(sys.argv if argv is None else argv)
        self.exchange = exchange
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{secrets.token_hex(3)}"
        self.started = time.time()
        self.home = self.path if group else self.path.parent
        tag = group or self.path.name
        self._prefix = f".{tag}.pysens-"
        self._lock = _Lock(self.home / f"{self._prefix}lock")
        self.manifest_path = self.home / f".{group}{MANIFEST}" if group else self.path / MANIFEST
        self._journal = self.home / f"{self._prefix}commit.json"
        self.stage: Path | None = None

    # -- public ---------------------------------------------------------------------------------------------------

    def open(self) -> Path:
        """Check and lock the folder, clean up after dead runs, and make the stage; the stage's path."""
        if self.stage is not None:
            raise RuntimeError("this RunFolder is already open")
        self._check_path()
        try:
            holder = self._lock.acquire(f"pysens {self.kind} (pid {os.getpid()}, run {self.run_id})")
        except OSError as err:  # e.g. a read-only file system, or no write permission that os.access could see
            raise RunFolderError(f"{self.option} {self.path}: cannot write in {self.home} ({err.strerror})") from None
        if holder is not None:
            raise RunFolderError(
                f"{self.option} {self.path} is in use by another live run: {holder}; wait for it to end or choose "
                f"another {self.option}"
            )
        try:
            self._recover()
            self._check_contents()
            self.stage = self.home / f"{self._prefix}stage-{self.run_id}"
            self.stage.mkdir()
        except BaseException:
            self._lock.release()
            raise
        return self.stage

    def commit(self) -> Path:
        """Write the manifest into the stage and move the stage in as one whole; ``path``."""
        if self.stage is None:
            raise RuntimeError("commit() needs an open RunFolder")
        manifest = {
            "pysens_run_folder": 1,
            "kind": self.kind,
            "run_id": self.run_id,
            "argv": self.argv,
            "started": _iso(self.started),
            "finished": _iso(time.time()),
            "files": _inventory(self.stage),
        }
        if self.group:
            self._commit_group(manifest)
        else:
            write_json(self.stage / MANIFEST, manifest)
            _fsync_dir(self.stage)
            if self.path.exists():
                self._swap()
            else:
                os.rename(self.stage, self.path)
            _fsync_dir(self.home)
            if self.stage.exists():  # after an exchange the stage holds the previous run's files
                shutil.rmtree(self.stage)
        self.stage = None
        self._lock.release()
        return self.path

    def abort(self) -> None:
        """Discard the stage and release the folder; what ``path`` held stays as it was."""
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None
        self._lock.release()

    def __enter__(self) -> Path:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- internals ------------------------------------------------------------------------------------------------

    def _check_path(self) -> None:
        where = f"{self.option} {self.path}"
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{where} is a file, not a folder")
        if not self.group and self.path in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
            raise RunFolderError(
                f"{where} is the current folder or holds it, and a run replaces its whole folder; give a folder of "
                "its own (e.g. runs/NAME)"
            )
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"{where}: cannot create {self.home} ({err.strerror})") from None
        if not os.access(self.home, os.W_OK | os.X_OK):
            raise RunFolderError(f"{where}: {self.home} is not writable")

    def _recover(self) -> None:
        """Finish or undo what a dead run left half done, then remove its stage (we hold the lock: no live run
        owns any of it)."""
        if self.group:
            if self._journal.exists():
                try:
                    journal = json.loads(self._journal.read_text())
                except ValueError:  # cannot happen for an atomically written record; drop it rather than guess
                    self._journal.unlink()
                else:
                    self._apply(journal)
        elif not self.path.exists():
            for name in sorted(os.listdir(self.home)):
                if name.startswith(f"{self._prefix}old-"):  # killed between the two renames of a swap
                    stage = self.home / f"{self._prefix}stage-{name.removeprefix(f'{self._prefix}old-')}"
                    os.rename(stage if (stage / MANIFEST).exists() else self.home / name, self.path)
                    break
        for name in os.listdir(self.home):
            if name.startswith((f"{self._prefix}stage-", f"{self._prefix}old-")):
                shutil.rmtree(self.home / name, ignore_errors=True)
            elif name.startswith(f".{self._prefix}commit.json.") and _is_temp(name):  # a commit record half written
                os.unlink(self.home / name)

    def _check_contents(self) -> None:
        if self.group or not self.path.exists():
            return
        listed: set[str] = set()
        manifest = _read_json(self.path / MANIFEST)
        if manifest is not None:
            listed = {name.split("/")[0] for name in manifest.get("files", {})}
        foreign = [
            name
            for name in sorted(os.listdir(self.path))
            if name != MANIFEST
            and name not in listed
            and not _is_temp(name)
            and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.outputs)
        ]
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunFolderError(
                f"{self.option} {self.path} holds files that no pysens {self.kind} run wrote ({shown}); a run replaces "
                "its whole folder, so give a new or empty folder, or move those files away"
            )

    def _swap(self) -> None:
        assert self.stage is not None
        if self.exchange and _exchange(self.stage, self.path):
            return
        old = self.home / f"{self._prefix}old-{self.run_id}"
        os.rename(self.path, old)
        os.rename(self.stage, self.path)  # a kill before this line: the next open() moves the stage in
        shutil.rmtree(old)

    def _commit_group(self, manifest: dict) -> None:
        assert self.stage is not None
        name = self.manifest_path.name
        write_json(self.stage / name, manifest)
        previous = _read_json(self.manifest_path) or {}
        moves = sorted(n for n in os.listdir(self.stage) if n != name) + [name]
        stale = sorted({f.split("/")[0] for f in previous.get("files", {})} - set(moves))
        journal = {"run_id": self.run_id, "stage": self.stage.name, "move": moves, "delete": stale}
        _fsync_dir(self.stage)
        write_json(self._journal, journal)
        self._apply(journal)

    def _apply(self, journal: dict) -> None:
        """Replay a commit record: move each staged entry still in the stage, delete the stale ones (idempotent)."""
        stage = self.home / journal["stage"]
        for name in journal["move"]:
            src, dst = stage / name, self.home / name
            if not os.path.lexists(src):
                continue  # moved before an interruption
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            os.replace(src, dst)
        for name in journal["delete"]:
            _remove(self.home / name)
        _fsync_dir(self.home)
        self._journal.unlink()
        shutil.rmtree(stage, ignore_errors=True)


def settle_run_folders(path: str | os.PathLike) -> list[str]:
    """Finish the commits that killed runs left half done in the shared folder ``path`` (a benchmark results root),
    so that a reader sees each group of files whole; the groups settled. A group whose run is still live is a
    :class:`RunFolderError` (its commit takes milliseconds: try again)."""
    path = Path(path)
    suffix = ".pysens-commit.json"
    groups = sorted(n[1 : -len(suffix)] for n in os.listdir(path) if n.startswith(".") and n.endswith(suffix))
    for group in groups:
        folder = RunFolder(path, kind="settle", group=group, option="folder")
        folder.open()  # replays the commit record under the group's lock
        folder.abort()
    return groups


def verify_run_folder(path: str | os.PathLike, *, group: str | None = None) -> dict:
    """Check that ``path`` (or ``group``'s files in it) is one run's whole: every file its manifest lists is there
    with that size and SHA-256 and, for a folder a run owns, nothing else; the manifest, or :class:`RunFolderError`
    saying what differs."""
    path = Path(path)
    manifest_path = path / (f".{group}{MANIFEST}" if group else MANIFEST)
    manifest = _read_json(manifest_path)
    if manifest is None:
        raise RunFolderError(f"{path} has no readable run manifest ({manifest_path.name})")
    files = manifest.get("files", {})
    problems = []
    for name, want in files.items():
        try:
            have = _describe(path / name)
        except OSError:
            problems.append(f"{name} missing")
            continue
        if have != want:
            problems.append(f"{name} differs from the manifest")
    if not group:
        found = _inventory(path, skip=(MANIFEST,), hash_files=False)
        problems += [f"{name} is not in the manifest" for name in sorted(set(found) - set(files))]
    if problems:
        raise RunFolderError(f"{path} does not hold one whole run ({manifest.get('run_id')}): {'; '.join(problems)}")
    return manifest


def _describe(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _inventory(root: Path, skip: Sequence[str] = (), hash_files: bool = True) -> dict[str, dict]:
    """Every file below ``root`` as ``{"dir/name": {"bytes", "sha256"}}`` (relative, ``/``-separated)."""
    found = {}
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            full = Path(folder) / name
            rel = full.relative_to(root).as_posix()
            if rel not in skip:
                found[rel] = _describe(full) if hash_files else {}
    return found


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_temp(name: str) -> bool:
    """A temporary file of :func:`atomic_write` (``.{name}.{random}.tmp``), left by a killed writer."""
    return name.startswith(".") and name.endswith(".tmp")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))
