"""What a killed or concurrent writer leaves behind (issue 25): the lock message, temporary files."""

import fcntl
import os
import subprocess
import sys

import pytest

from noisynn.errors import NoisyNNError
from noisynn.runs.files import FolderLock, replace_atomic
from noisynn.runs.folder import RunFolder

COLS = ["experiment", "sigma", "trial", "value"]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_lock_held_before_its_pid_is_written_says_so_in_words(tmp_path):
    holder = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)  # locked, pid not yet written
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(NoisyNNError) as err:
            FolderLock(tmp_path).acquire()
        assert "pid ?" not in str(err.value) and "its pid not written yet" in str(err.value)
        os.pwrite(holder, b"4242\n", 0)
        with pytest.raises(NoisyNNError, match=r"another process \(pid 4242\)"):
            FolderLock(tmp_path).acquire()
    finally:
        os.close(holder)


def test_temporaries_of_a_killed_writer_are_removed_when_the_folder_is_opened_again(tmp_path):
    folder = RunFolder(tmp_path / "run", COLS)
    folder.open({"x": 1}, {})
    folder.release()
    dead = tmp_path / "run" / f".summary.csv.{_dead_pid()}.tmp"  # kill -9 during replace_atomic
    live = tmp_path / "run" / f".summary.csv.{os.getppid()}.tmp"  # a live process's: not ours to remove
    dead.write_text("half a tab")
    live.write_text("being written")
    again = RunFolder(tmp_path / "run", COLS)
    again.open({"x": 1}, {})
    again.release()
    assert not dead.exists() and live.exists()


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "summary.csv"
    path.write_text("old\n")

    def interrupted(fd):
        raise KeyboardInterrupt  # SIGTERM arrives as one (options.script)

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        replace_atomic(path, "new\n")
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]
