"""The run folder: ``run.json`` (config and provenance), tidy ``results.csv``, ``samples.jsonl``.

Rows are appended one ``os.write`` at a time on an O_APPEND descriptor and fsync'd, so a run
killed at any moment leaves whole rows only (a torn last line, if the disk cut one, is dropped
on resume). Re-running the same command with the same folder resumes: finished points are
read back and skipped. A folder holding a different run is never overwritten.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterable, Sequence

from . import distributed
from .errors import NoisyNNError

LEADING_COLUMNS = ("experiment", "model", "noise_type", "scale", "sigma", "trial", "seed")
RESULTS_CSV = "results.csv"
RUN_JSON = "run.json"
SAMPLES_JSONL = "samples.jsonl"
# Config keys that do not change the numbers, so a resume may differ in them.
VOLATILE_KEYS = {"out", "output", "progress", "quiet"}


def format_value(value) -> str:
    """CSV text of a value: floats keep full precision (repr), inf/nan as 'inf'/'nan'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return "" if value is None else str(value)


def parse_value(text: str):
    """Inverse of ``format_value`` for numbers and booleans; other text stays a string."""
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a results CSV with values parsed; a torn last line is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as fh:  # newline="": a \r inside a quoted field stays a \r
        raw = fh.read()
    if raw and not raw.endswith("\n"):
        raw = raw[: raw.rfind("\n") + 1]
    return [{k: parse_value(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(raw))]


@dataclass
class Run:
    """A run folder as read back: ``meta`` is run.json ({} if absent), ``rows`` is results.csv."""

    path: Path
    meta: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    @property
    def config(self) -> dict:
        return self.meta.get("config", {})

    @property
    def experiment(self) -> str | None:
        """The experiment named in run.json (top level, else in its config)."""
        return self.meta.get("experiment") or self.config.get("experiment")

    def samples(self) -> list[dict]:
        return read_samples(self.path / SAMPLES_JSONL)


def read_run(path: str | Path) -> Run:
    """The one reader of a run folder (run.json and results.csv); NoisyNNError if run.json is damaged."""
    path = Path(path)
    meta: dict = {}
    if (path / RUN_JSON).is_file():
        try:
            meta = json.loads((path / RUN_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise NoisyNNError(f"{path / RUN_JSON} is unreadable ({err})") from None
        if not isinstance(meta, dict):
            raise NoisyNNError(f"{path / RUN_JSON} does not hold a JSON object")
    return Run(path, meta, read_rows(path / RESULTS_CSV))


def read_samples(path: str | Path) -> list[dict]:
    """The records of a samples.jsonl ([] if there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def git_hash() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("noisynn", "torch", "transformers", "numpy", "gguf", "accelerate", "datasets"):
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return found


class RunFolder:
    """One experiment's output folder; ``open`` creates it or checks that it holds the same run."""

    def __init__(self, path: str | Path, columns: Sequence[str], key: Sequence[str] = ("sigma", "trial")):
        self.path = Path(path)
        self.columns = list(columns)
        self.key = tuple(key)
        self.csv = self.path / RESULTS_CSV
        self.run_json = self.path / RUN_JSON
        self.samples = self.path / SAMPLES_JSONL
        self.meta: dict = {}
        # Under a multi-process launch each process appends to its own shard files; the main
        # process merges them into results.csv / samples.jsonl (see sweep.run_sweep).
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self._rows_file = self.csv if self.world == 1 else self.path / f"results.rank{self.rank}.csv"
        self._samples_file = self.samples if self.world == 1 else self.path / f"samples.rank{self.rank}.jsonl"

    def check(self, config: dict) -> list[dict]:
        """Without writing anything: the finished rows if ``path`` holds this run, [] if new; else raise.

        Only the main process checks (the others would race with it creating the folder); they
        get the finished rows from ``open`` after the barrier.
        """
        if not self.is_main:
            return []
        if self.path.exists() and not self.path.is_dir():
            raise NoisyNNError(f"--out {self.path} exists and is not a folder")
        if not self.run_json.is_file():
            if self.csv.is_file():
                raise NoisyNNError(f"{self.path} holds results.csv but no run.json; choose another --out")
            return []
        try:
            old = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError) as err:
            raise NoisyNNError(f"{self.run_json} is unreadable ({err}); choose another --out") from None
        old_cfg = {k: v for k, v in old.get("config", {}).items() if k not in VOLATILE_KEYS}
        new_cfg = {k: v for k, v in json.loads(json.dumps(config, default=str)).items() if k not in VOLATILE_KEYS}
        if old_cfg != new_cfg:
            diff = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
            raise NoisyNNError(f"{self.path} holds a different run (differs in: {', '.join(diff)}); "
                               "use another --out, or the same options to resume it")
        rows = read_rows(self.csv)
        if rows and list(rows[0].keys()) != self.columns:
            raise NoisyNNError(f"{self.csv} has other columns than this version writes; choose another --out")
        return rows

    def open(self, config: dict, meta: dict) -> list[dict]:
        """Create or resume the folder; writes run.json; returns the rows already finished.

        With several processes, only the main one writes; it first folds shard files left by
        an interrupted multi-process run into results.csv, then every process reads it.
        """
        if self.is_main:
            self.check(config)
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.csv.is_file():
                _append_line(self.csv, self._line(self.columns))
            self.merge_shards()
            previous = json.loads(self.run_json.read_text()) if self.run_json.is_file() else {}
            self.meta = {**meta, "config": config, "status": "running",
                         "started": previous.get("started", now()), "resumed": bool(previous),
                         "sessions": previous.get("sessions", 0) + 1, "git": git_hash(), "versions": versions(),
                         "argv": sys.argv, "processes": self.world}
            write_json_atomic(self.run_json, self.meta)
        distributed.barrier()
        return read_rows(self.csv)

    def merge_shards(self, order: Sequence[tuple] | None = None) -> list[dict]:
        """Fold results.csv and every shard file into results.csv (and samples likewise), atomically.

        Rows are deduplicated by key and written in ``order`` (a list of keys) when given,
        else in the order found; samples of rows that never finished are dropped. Main process only.
        """
        for f in [self.csv, self.samples, *self.path.glob("results.rank*.csv"), *self.path.glob("samples.rank*.jsonl")]:
            _repair_torn_tail(f)
        shards = sorted(self.path.glob("results.rank*.csv"))
        rows: dict = {}
        for f in [self.csv, *shards]:
            for r in read_rows(f):
                rows.setdefault(key_of(r, self.key), r)
        keys = list(rows)
        if order is not None:
            rank_of = {k: i for i, k in enumerate(order)}
            keys.sort(key=lambda k: rank_of.get(k, len(rank_of)))
        sample_files = [self.samples, *sorted(self.path.glob("samples.rank*.jsonl"))]
        samples: dict = {}
        for f in sample_files:
            if f.is_file():
                for line in f.read_text(encoding="utf-8").splitlines(keepends=True):
                    samples.setdefault(key_of(json.loads(line), self.key), []).append(line)
        merged_csv = self._line(self.columns) + "".join(self._line(rows[k][c] for c in self.columns) for k in keys)
        merged_samples = "".join(line for k in keys for line in samples.get(k, []))
        for path, text in ((self.csv, merged_csv), (self.samples, merged_samples)):
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                continue
            if path == self.samples and not text and not path.is_file():
                continue
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        for f in shards + sample_files[1:]:
            f.unlink()
        return [rows[k] for k in keys]

    def _line(self, values: Iterable) -> str:
        cells = [format_value(v) for v in values]
        if any("\r" in c for c in cells):  # csv quotes only around its own terminator ("\n"): quote all by hand
            return ",".join('"' + c.replace('"', '""') + '"' for c in cells) + "\n"
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        return buf.getvalue()

    def append(self, row: dict) -> None:
        missing = [c for c in self.columns if c not in row]
        if missing:
            raise KeyError(f"row lacks columns {missing}")
        if self._rows_file != self.csv and not self._rows_file.is_file():
            _append_line(self._rows_file, self._line(self.columns))
        _append_line(self._rows_file, self._line(row[c] for c in self.columns))

    def append_samples(self, records: Iterable[dict]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if text:
            _append_line(self._samples_file, text)

    def update_meta(self, **fields) -> None:
        """Record fields in run.json (main process only)."""
        self.meta.update(fields)
        if self.is_main:
            write_json_atomic(self.run_json, self.meta)

    def finish(self, **fields) -> None:
        self.update_meta(status="finished", finished=now(), **fields)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def key_of(row: dict, key: Sequence[str]) -> tuple:
    """Identity of a point; floats compared by their CSV text so a read-back row matches."""
    return tuple(format_value(row[k]) if isinstance(row[k], float) else str(row[k]) for k in key)


def elapsed(start: float) -> float:
    return round(time.perf_counter() - start, 3)
