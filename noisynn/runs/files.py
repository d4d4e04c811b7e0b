"""Durable file primitives of the run folder: whole-line appends, atomic replacement, writability, the lock.

Appends that leave whole lines, atomic replacement, a real writability probe, and the one-writer lock.

Kept apart from ``noisynn.runs.folder`` (the run folder's writer), which builds on them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

from ..errors import NoisyNNError

T = TypeVar("T")

LOCK_FILE = ".lock"


def _append_line(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _repair_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a write interrupted by the disk)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def remove_stale_temporaries(folder: Path) -> list[str]:
    """Remove the temporary files (``.NAME.PID.tmp``, ``replace_atomic``) that a writer killed mid-write left in
    ``folder`` (kill -9 runs no cleanup): those whose process is gone. Called by the folder's writer under its
    lock; returns the names removed."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        pid = tmp.name[:-len(".tmp")].rpartition(".")[2]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp.name)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def write_via_temp(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(fh)`` into a temporary file next to ``path`` (binary), fsync it, then rename it over ``path``.

    Readers see the old file or the new one, never half of one; if anything fails (a full disk, a serializer's
    error, Ctrl-C) the old file stays and the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def replace_atomic(path: Path, text: str) -> None:
    """``text`` (UTF-8) written through ``write_via_temp``: all or nothing."""
    data = text.encode("utf-8")
    write_via_temp(path, lambda fh: fh.write(data))


def read_saved(path: Path, read: Callable[[Path], T], remedy: str) -> T:
    """``read(path)`` of a saved file (tensors, a checkpoint); a reader's failure on a damaged or truncated file
    is one NoisyNNError line naming the file and ``remedy`` (what to do), not the library's traceback (torch
    raises RuntimeError or even OSError EINVAL on a truncated zip, safetensors its own type). A file that cannot be
    opened at all is the OSError of opening it, for the script boundary."""
    with open(path, "rb"):
        pass
    try:
        return read(path)
    except Exception as err:
        what = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise NoisyNNError(f"{path} cannot be read, it is damaged or truncated ({what}); {remedy}") from None


def write_json_atomic(path: Path, data: dict) -> None:
    replace_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def check_writable(folder: Path) -> None:
    """Raise NoisyNNError unless a file can be created in ``folder`` (or, if it does not exist yet,
    in its nearest existing parent, which must be a folder); leaves nothing behind.

    A real probe, not ``os.access``: root passes every permission check, a read-only mount doesn't.
    """
    folder = Path(folder)
    probe_dir = folder
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        raise NoisyNNError(f"{folder}: {probe_dir} is a file, not a folder")
    probe = probe_dir / f".noisynn-write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise NoisyNNError(f"cannot write in {probe_dir} ({err.strerror or err})") from None


class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.lock``, holding the writer's pid; removed on release.

    The kernel drops the lock when the process dies (kill -9 included), so a stale file never
    blocks a resume. After locking, the file is checked to still be the one at the path (a
    releasing writer may have removed it in between).
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                os.close(fd)
                # the holder writes its pid just after locking: between the two it is not known yet
                who = f"pid {holder}" if holder.isdigit() else "its pid not written yet"
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise NoisyNNError(f"{self.path.parent} is being written by another process ({who}); "
                                       "wait for it to finish, or use another --out") from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # removed by a writer that just finished: lock the new file
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None
