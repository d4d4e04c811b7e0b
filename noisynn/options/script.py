"""The script boundary: exit codes, signals, OS errors in words, open run folders marked failed or interrupted."""

from __future__ import annotations

import logging
import errno
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from ..errors import NoisyNNError
from .parser import EXIT_USAGE


class Interrupted(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGINT received: unwinds like Ctrl-C (``finally`` blocks restore the model)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


# errno -> what the user can do about it.
OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space",
    errno.EROFS: "the filesystem is read-only; use another --out",
    errno.EACCES: "no permission; use another --out",
    errno.EPERM: "no permission; use another --out",
    errno.ENOTDIR: "a path component is a file; use another --out",
    errno.EISDIR: "a folder stands where a file is expected",
}


def describe_os_error(err: OSError) -> str:
    """One line: what failed, on which file, and what to do."""
    where = f" ({err.filename})" if err.filename else ""
    hint = OS_ERROR_HINTS.get(err.errno, "check the disk and the paths")
    what = (err.strerror or str(err) or type(err).__name__).strip().splitlines()[0]
    return f"{what}{where}: {hint}"


def script_main(run: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run an experiment's body at the script boundary: every known failure becomes one line.

    User errors: one line, exit 2. Filesystem errors (disk full, read-only, no permission):
    one line, exit 2, finished rows kept. Ctrl-C, SIGTERM and SIGHUP: one line saying how to
    resume, run.json marked ``interrupted``, exit 128 + signal number (130 for Ctrl-C).
    """
    from ..runs.folder import mark_open_folders

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "huggingface_hub", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    prog = Path(sys.argv[0]).name
    previous = {}
    try:
        # SIGINT too: a native library loaded earlier in the process (seen in the full test suite) can replace
        # Python's C-level SIGINT handler, and Ctrl-C would then never reach the run; installing ours restores it.
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            previous[signum] = signal.signal(signum, _raise_interrupted)
    except ValueError:  # not the main thread: leave the handlers alone
        pass
    try:
        return int(run(argv) or 0)
    except NoisyNNError as err:
        mark_open_folders("failed", str(err))
        sys.stderr.write(f"{prog}: error: {err}\n")
        return EXIT_USAGE
    except OSError as err:
        message = describe_os_error(err)
        kept = mark_open_folders("failed", message)
        sys.stderr.write(f"{prog}: error: {message}" + ("; finished rows are saved, rerun the same command to resume"
                                                        if kept else "") + "\n")
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        mark_open_folders("interrupted", name)
        sys.stderr.write(f"{prog}: interrupted ({name}); finished rows are saved, rerun the same command to resume\n")
        return 128 + int(signum)
    except Exception as err:  # a bug: its traceback is wanted, but run.json must not stay "running"
        mark_open_folders("failed", f"{type(err).__name__}: {err}")
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
