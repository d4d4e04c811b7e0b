"""The files a run reads, fingerprinted into run.json (meta ``inputs``) and compared when it resumes.

    fingerprint(file)   = sha256 of its bytes (hex)
    fingerprint(folder) = sha256 over the lines "relative/path:sha256(file)\\n", sorted by relative path

so a folder's fingerprint changes when any byte of any file does, or a file is added, removed or renamed,
and not with the order the file system lists them in. Entries are ``{"path", "sha256"}``, of two kinds:

- a flag's file (``--digital``, ``--tokenizer``, ``--train_file``, ``--data``, ``--schedule_file``), keyed by the flag's name:
  recorded at every start, compared with the file as it is now;
- a file the run wrote into its own folder and reads back when resumed (saved weights, self-generated
  data), keyed by its name with ``"written": true``: recorded when written, compared with the file on
  disk at the next start (a removed one is simply made again).

An entry no earlier session recorded (a folder from before this existed) passes, as does a fingerprint
of another length. The model's and the text's fingerprints are compared here too (``check_fingerprint``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import NoisyNNError

# flag -> words it takes that are not paths (``--data self``)
FLAGS = {"digital": (), "tokenizer": (), "train_file": (), "data": ("self", "corpus"), "schedule_file": ()}
KEY = "inputs"  # run.json meta key


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's sorted "relative/path:sha256" lines (module docstring)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    for rel, p in files:
        digest.update(f"{rel}:{file_sha256(p)}\n".encode("utf-8"))
    return digest.hexdigest()


def of_args(args) -> dict:
    """The entries of the flags in ``FLAGS`` that name an existing file or folder (a hub id names none)."""
    found = {}
    for flag, words in FLAGS.items():
        value = getattr(args, flag, None)
        if isinstance(value, str) and value and value not in words and os.path.exists(os.path.expanduser(value)):
            found[flag] = {"path": value, "sha256": fingerprint(value)}
    return found


def written(path: Path) -> dict:
    """The entry of a file the run wrote into its folder (``path``'s name, relative to the folder)."""
    return {"path": path.name, "sha256": fingerprint(path), "written": True}


def _in(folder: Path, entry: dict) -> Path:
    """A written entry's file: a name in ``folder`` (never elsewhere, whatever run.json says)."""
    return folder / Path(str(entry.get("path"))).name


def kept(folder: Path, recorded: dict | None) -> dict:
    """The written entries of ``recorded`` whose file is still in ``folder`` (checked by ``check``): a new
    session keeps them; an entry whose file was removed is dropped (the run makes that file again)."""
    if not isinstance(recorded, dict):
        return {}
    return {k: e for k, e in recorded.items()
            if isinstance(e, dict) and e.get("written") and _in(folder, e).is_file()}


def check_fingerprint(folder: Path, recorded: dict | None, now: dict | None, key: str, what: str,
                      remedy: str = "restore it") -> None:
    """Refuse to resume ``folder`` when the content it ran on (``what``) has changed since.

    Fingerprints of another kind (an older version's, of another length) cannot be compared and pass.
    """
    old, new = (recorded or {}).get(key), (now or {}).get(key)
    if old and new and old != new and len(str(old)) == len(str(new)):
        raise NoisyNNError(f"{folder} was run on other content: {what} changed since (fingerprint "
                           f"{str(old)[:12]}... recorded, {str(new)[:12]}... now); {remedy}, or use another --out")


def check(folder: Path, recorded: dict | None, now: dict | None) -> None:
    """Every recorded input against ``now`` (the flags' entries) or, for a written one, the file in ``folder``."""
    if not isinstance(recorded, dict):
        return
    for key, entry in sorted(recorded.items()):
        if not isinstance(entry, dict):
            continue
        if entry.get("written"):
            path = _in(folder, entry)
            if path.is_file():
                check_fingerprint(folder, entry, {"sha256": fingerprint(path)}, "sha256",
                                  f"{entry.get('path')}, which the run wrote and reads back,",
                                  "restore it, remove it (a rerun of the same command makes it again)")
        else:
            check_fingerprint(folder, entry, (now or {}).get(key), "sha256", f"--{key} {entry.get('path')}")
