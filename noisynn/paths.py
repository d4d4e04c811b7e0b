"""Checks of paths the user names, with messages that say what the path is."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import NoisyNNError


def readable_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path if it is a regular, readable file; else NoisyNNError saying what it is.

    ``what`` names the role in the message ("text file", "plugin file"): a folder, a device such
    as /dev/null, a missing path and an unreadable file each get their own words.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise NoisyNNError(f"{what} {path} is a folder, not a file")
    if not p.exists():
        problem = "is a broken link" if p.is_symlink() else "does not exist"
        raise NoisyNNError(f"{what} {path} {problem}")
    if not p.is_file():
        raise NoisyNNError(f"{what} {path} is not a regular file (a device, pipe or socket)")
    if not os.access(p, os.R_OK):
        raise NoisyNNError(f"{what} {path} is not readable (permission denied)")
    return p
