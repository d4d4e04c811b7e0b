"""The run folder: ``run.json`` (config and provenance), tidy ``results.csv``, ``samples.jsonl``.

Schema (what ``read_run`` checks and every writer here produces):

- ``run.json``: one JSON object. Keys: ``experiment``; ``config`` (an object: the parsed
  flags, compared on resume); ``status`` (``running`` | ``finished`` | ``interrupted`` |
  ``failed``); ``started``/``finished`` (UTC ISO times); ``sessions``, ``resumed``; ``git``,
  ``versions``, ``argv``, ``processes``; ``model`` (``fingerprint``: sha256 of the weights,
  or the hub commit) and ``text`` (``sha256`` of the evaluated text), both compared on
  resume; ``n_points`` (points the run will have when complete); experiment-specific extras
  (``levels``, ``injection`` ...).
- ``results.csv``: UTF-8, a header then one row per finished point, leading columns
  ``experiment, model, noise_type, scale, sigma, trial, seed`` (``sigma`` a number, ``trial``
  and ``seed`` integers), then the experiment's metric columns. Floats are written with full
  precision (``repr``). **Broken trials**: a perplexity-like metric (``perplexity``, ``nll``,
  ``bits_per_byte``) of a model whose logits became non-finite is ``inf`` (a broken model
  predicts nothing: infinite perplexity), in results.csv, summary.csv and on the console
  alike; a nan read from an older folder is read as inf. Other metrics of a broken trial
  (entropy, distinct-n) are ``nan`` and are left out of medians (``pandas`` skips nan too,
  so ``groupby(...).median()`` on results.csv agrees with summary.csv).
- ``samples.jsonl``: one JSON object per line: the row's key (``sigma``, ``trial``...) and
  ``text`` (plus ``kind``, ``prompt``).

Rows are appended one ``os.write`` at a time on an O_APPEND descriptor and fsync'd, so a run
killed at any moment leaves whole rows only (a torn last line, if the disk cut one, is dropped
on resume). Re-running the same command with the same folder resumes: finished points are
read back and skipped. A folder holding a different run (other flags, other model weights or
text) is never overwritten, and a folder has one writer at a time (a lock file held while the
run is open); damaged files are reported in one line naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

from . import distributed
from .provenance import git_hash, versions
from .errors import NoisyNNError
from .files import (LOCK_FILE, FolderLock, _append_line, _repair_torn_tail, check_writable,  # noqa: F401
                    replace_atomic, write_json_atomic)

LEADING_COLUMNS = ("experiment", "model", "noise_type", "scale", "sigma", "trial", "seed")
RESULTS_CSV = "results.csv"
RUN_JSON = "run.json"
SAMPLES_JSONL = "samples.jsonl"
# Config keys that do not change the numbers, so a resume may differ in them.
VOLATILE_KEYS = {"out", "output", "progress", "quiet"}
# Metrics whose value for a broken (non-finite) model is +inf: the one convention in every file.
BROKEN_IS_INF = ("perplexity", "nll", "bits_per_byte")
# run.json keys the writer owns, with the JSON type each must have (checked by read_meta): a hand-edited
# or damaged value would otherwise surface as a traceback (sessions + 1) or pass a comparison unseen.
META_TYPES = {"experiment": str, "status": str, "started": str, "sessions": int, "resumed": bool,
              "n_points": int, "levels": list, "argv": list}
NESTED_META_TYPES = {("model", "fingerprint"): str, ("text", "sha256"): str}
JSON_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}
# Columns that must hold numbers when present (checked line by line by read_rows).
NUMBER_COLUMNS = {"sigma": float, "trial": int, "seed": int}


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


def broken_as_inf(row: dict) -> dict:
    """``row`` with nan in the perplexity-like columns replaced by +inf (the broken-trial convention)."""
    for k in BROKEN_IS_INF:
        v = row.get(k)
        if isinstance(v, float) and math.isnan(v):
            row[k] = math.inf
    return row


def _read_text(path: Path, what: str) -> str:
    """A file's UTF-8 text, or one NoisyNNError naming the file (and line) of the problem."""
    if path.is_dir():
        raise NoisyNNError(f"{path} is a folder, not a {what} file; the run folder is damaged (choose another --out)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise NoisyNNError(f"{path} cannot be read ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise NoisyNNError(f"{path} line {line}: bytes that are not UTF-8; the file is damaged") from None
    return text


def _nul_damage(cell: str) -> bool:
    """A NUL byte where a number or nothing was (a zero-filled block after a crash), not inside text."""
    if "\x00" not in cell:
        return False
    rest = cell.replace("\x00", "").strip()
    return not rest or not isinstance(parse_value(rest), str)


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a results CSV with values parsed ([] if there is no file); a torn last line is ignored.

    A damaged file (not UTF-8, NUL bytes where numbers were, a row with another number of fields than the header,
    a non-number in a ``NUMBER_COLUMNS`` column) raises one NoisyNNError naming file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = _read_text(path, "CSV")
    if raw and not raw.endswith("\n"):
        raw = raw[: raw.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(raw, newline=""))  # newline="": a \r inside a quoted field stays a \r
    try:
        header = next(reader, None)
        if header is None:
            return []
        rows = []
        for cells in reader:
            if not cells:
                continue  # a blank line
            if len(cells) != len(header) and any(_nul_damage(c) for c in cells):
                raise NoisyNNError(f"{path} line {reader.line_num}: NUL bytes; the file is damaged")
            if len(cells) != len(header):
                raise NoisyNNError(f"{path} line {reader.line_num}: {len(cells)} fields where the header has "
                                   f"{len(header)}; the file is damaged")
            if any(_nul_damage(c) for c in cells):
                raise NoisyNNError(f"{path} line {reader.line_num}: NUL bytes; the file is damaged")
            row = {k: parse_value(v) for k, v in zip(header, cells)}
            for col, kind in NUMBER_COLUMNS.items():
                v = row.get(col, 0)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
                    raise NoisyNNError(f"{path} line {reader.line_num}: {col} is {cells[header.index(col)]!r}, "
                                       f"not {'an integer' if kind is int else 'a number'}; the file is damaged")
            rows.append(broken_as_inf(row))
    except csv.Error as err:
        raise NoisyNNError(f"{path} line {reader.line_num}: {err}; the file is damaged") from None
    return rows


def read_meta(path: str | Path) -> dict:
    """run.json as a dict ({} if there is none); damaged -> one NoisyNNError naming the file."""
    path = Path(path)
    if not path.exists():
        return {}
    text = _read_text(path, "JSON")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise NoisyNNError(f"{path} line {err.lineno}: not JSON ({err.msg}); the file is damaged") from None
    if not isinstance(meta, dict):
        raise NoisyNNError(f"{path} holds {type(meta).__name__ if meta is not None else 'null'}, not a JSON object; "
                           "the file is damaged")
    for key in ("config", "model", "text"):
        if key in meta and not isinstance(meta[key], dict):
            raise NoisyNNError(f"{path}: '{key}' is {type(meta[key]).__name__}, not a JSON object; the file is damaged")
    for keys, kind in [*(((k,), t) for k, t in META_TYPES.items()), *NESTED_META_TYPES.items()]:
        value = meta.get(keys[0]) if len(keys) == 1 else meta.get(keys[0], {}).get(keys[1])
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise NoisyNNError(f"{path}: '{'.'.join(keys)}' is {type(value).__name__} {value!r:.40}, not "
                               f"{JSON_TYPE_NAMES[kind]}; the file is damaged")
    return meta


def read_samples(path: str | Path) -> list[dict]:
    """The records of a samples.jsonl ([] if there is none); a torn last line is ignored;
    a line that is not a JSON object raises one NoisyNNError naming file and line."""
    path = Path(path)
    if not path.exists():
        return []
    text = _read_text(path, "JSONL")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    records = []
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise NoisyNNError(f"{path} line {i}: not JSON ({err.msg}); the file is damaged") from None
        if not isinstance(record, dict):
            raise NoisyNNError(f"{path} line {i}: not a JSON object; the file is damaged")
        records.append(record)
    return records


@dataclass
class Run:
    """A run folder as read by ``read_run``: run.json (``meta``) and the parsed results.csv rows."""

    path: Path
    meta: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)

    @property
    def config(self) -> dict:
        return self.meta.get("config", {})

    @property
    def experiment(self) -> str | None:
        return self.meta.get("experiment") or self.config.get("experiment")

    def samples(self) -> list[dict]:
        return read_samples(self.path / SAMPLES_JSONL)

    @property
    def n_points(self) -> int | None:
        """Points of the complete run: recorded in run.json, else levels x n_trials where known."""
        n = self.meta.get("n_points")
        if isinstance(n, int) and not isinstance(n, bool):
            return n
        levels, trials = self.meta.get("levels"), self.config.get("n_trials")
        if self.experiment == "sweep" and isinstance(levels, list) and isinstance(trials, int):
            return len(levels) * trials
        return None

    @property
    def complete(self) -> bool:
        """Finished, or holding every point it will have."""
        if self.meta.get("status") == "finished":
            return True
        n = self.n_points
        return n is not None and len(self.rows) >= n

    def progress_note(self) -> str:
        """'' for a complete run, else 'incomplete: k of n points' (or 'incomplete: k points')."""
        if self.complete:
            return ""
        n = self.n_points
        return f"incomplete: {len(self.rows)} of {n} points" if n else f"incomplete: {len(self.rows)} points"


def read_run(path: str | Path) -> Run:
    """The one reader of a run folder (reports, the UI, generate_graphs and resume use it).

    Missing files read as empty ({} / []); a damaged folder (see the module docstring for the
    schema) raises one NoisyNNError naming the file and line. Nothing is written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NoisyNNError(f"{path} is not a folder")
    return Run(path, read_meta(path / RUN_JSON), read_rows(path / RESULTS_CSV))


# Folders opened for writing by this process and not yet finished: the script boundary marks
# them interrupted (a signal) or failed (an error) so run.json never stays "running".
_OPEN_FOLDERS: list["RunFolder"] = []


def mark_open_folders(status: str, message: str) -> list[Path]:
    """Record ``status`` and ``message`` in the run.json of every unfinished folder; release its lock.

    Best effort (the disk may be full): a folder whose run.json cannot be written keeps its
    last state. Returns the folders that were open.
    """
    marked = []
    while _OPEN_FOLDERS:
        folder = _OPEN_FOLDERS.pop()
        marked.append(folder.path)
        try:
            folder.update_meta(status=status, stopped=now(), stop_reason=message)
        except OSError:
            pass
        folder.release()
    return marked


def check_fingerprint(folder: Path, recorded: dict | None, now: dict | None, key: str, what: str) -> None:
    """Refuse to resume ``folder`` when the content it ran on (weights, text) has changed since.

    Fingerprints of another kind (an older version's, of another length) cannot be compared and pass.
    """
    old, new = (recorded or {}).get(key), (now or {}).get(key)
    if old and new and old != new and len(str(old)) == len(str(new)):
        raise NoisyNNError(f"{folder} was run on other content: {what} changed since (fingerprint "
                           f"{str(old)[:12]}... recorded, {str(new)[:12]}... now); restore it, or use another --out")


class RunFolder:
    """One experiment's output folder; ``open`` creates it or checks that it holds the same run."""

    def __init__(self, path: str | Path, columns: Sequence[str], key: Sequence[str] = ("sigma", "trial")):
        self.path = Path(path)
        self.columns = list(columns)
        self.key = tuple(key)
        self.csv = self.path / RESULTS_CSV
        self.run_json = self.path / RUN_JSON
        self.samples = self.path / SAMPLES_JSONL
        self.meta, self.previous_meta = {}, {}  # this session's run.json; the one the last session left
        # Under a multi-process launch each process appends to its own shard files; the main
        # process merges them into results.csv / samples.jsonl (see sweep.run_sweep). The main
        # process alone holds the folder's lock: the ranks of one launch share it.
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.lock = FolderLock(self.path)
        self._rows_file = self.csv if self.world == 1 else self.path / f"results.rank{self.rank}.csv"
        self._samples_file = self.samples if self.world == 1 else self.path / f"samples.rank{self.rank}.jsonl"

    def check(self, config: dict, meta: dict | None = None) -> list[dict]:
        """Without writing anything: the finished rows if ``path`` holds this run, [] if new; else raise.

        ``meta`` (what ``open`` will record) has its model and text fingerprints compared with the
        recorded ones. Only the main process checks (the others would race with it creating the
        folder); they get the finished rows from ``open`` after the barrier.
        """
        if not self.is_main:
            return []
        if self.path.exists() and not self.path.is_dir():
            raise NoisyNNError(f"--out {self.path} exists and is not a folder")
        check_writable(self.path)
        run = read_run(self.path)
        if not self.run_json.exists():
            if self.csv.exists():
                raise NoisyNNError(f"{self.path} holds results.csv but no run.json; choose another --out")
            return []
        old_cfg = {k: v for k, v in run.config.items() if k not in VOLATILE_KEYS}
        new_cfg = {k: v for k, v in json.loads(json.dumps(config, default=str)).items() if k not in VOLATILE_KEYS}
        # A flag added after the folder was written, left at its None default, changes nothing.
        diff = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
        if diff:
            raise NoisyNNError(f"{self.path} holds a different run (differs in: {', '.join(diff)}); "
                               "use another --out, or the same options to resume it")
        check_fingerprint(self.path, run.meta.get("model"), (meta or {}).get("model"), "fingerprint",
                          "the model weights (--model)")
        check_fingerprint(self.path, run.meta.get("text"), (meta or {}).get("text"), "sha256", "the text (--text_file)")
        rows = run.rows
        if rows and list(rows[0].keys()) != self.columns:
            raise NoisyNNError(f"{self.csv} has other columns than this version writes; choose another --out")
        for f in [self.samples, *self.path.glob("results.rank*.csv"), *self.path.glob("samples.rank*.jsonl")]:
            (read_rows if f.suffix == ".csv" else read_samples)(f)  # damaged shards fail here, before any write
        return rows

    def open(self, config: dict, meta: dict) -> list[dict]:
        """Create or resume the folder, locked for this run; writes run.json; returns the rows already finished.

        With several processes, only the main one writes; it first folds shard files left by
        an interrupted multi-process run into results.csv, then every process reads it.
        """
        if self.is_main:
            self.check(config, meta)
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
            try:
                self.check(config, meta)  # again under the lock: a writer may have finished in between
                previous = read_meta(self.run_json)
                self.previous_meta = previous  # an experiment may keep parts of it
                self.meta = {**meta, "config": config, "status": "running",
                             "started": previous.get("started", now()), "resumed": bool(previous),
                             "sessions": previous.get("sessions", 0) + 1, "git": git_hash(), "versions": versions(),
                             "argv": sys.argv, "processes": self.world}
                # run.json before results.csv: a folder never shows results.csv without run.json
                write_json_atomic(self.run_json, self.meta)
                if not self.csv.is_file():
                    _append_line(self.csv, self._line(self.columns))
                self.merge_shards()
            except BaseException:
                self.release()
                raise
            _OPEN_FOLDERS.append(self)
        distributed.barrier()
        return read_rows(self.csv)

    def release(self) -> None:
        """Give up the folder's lock (main process)."""
        self.lock.release()
        if self in _OPEN_FOLDERS:
            _OPEN_FOLDERS.remove(self)

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
                    if line.strip():
                        samples.setdefault(key_of(json.loads(line), self.key), []).append(line)
        merged_csv = self._line(self.columns) + "".join(self._line(rows[k][c] for c in self.columns) for k in keys)
        merged_samples = "".join(line for k in keys for line in samples.get(k, []))
        for path, text in ((self.csv, merged_csv), (self.samples, merged_samples)):
            if path.is_file() and path.read_bytes() == text.encode("utf-8"):
                continue
            if path == self.samples and not text and not path.is_file():
                continue
            replace_atomic(path, text)
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
        row = broken_as_inf(dict(row))
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
        self.release()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def key_of(row: dict, key: Sequence[str]) -> tuple:
    """Identity of a point; floats compared by their CSV text so a read-back row matches."""
    return tuple(format_value(row[k]) if isinstance(row[k], float) else str(row[k]) for k in key)


def elapsed(start: float) -> float:
    return round(time.perf_counter() - start, 3)
