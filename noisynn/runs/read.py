"""Reading a run folder defensively: results.csv, run.json, samples.jsonl, damage named in one line (no torch)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NoisyNNError
from .schema import (JSON_TYPE_NAMES, META_TYPES, NESTED_META_TYPES, NUMBER_COLUMNS, RESULTS_CSV, RUN_JSON,
                     SAMPLES_JSONL, broken_as_inf, parse_value)


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
        """Holding every point it will have (when run.json says how many), else marked finished. A folder marked
        finished whose results.csv lost rows since (a torn or cut file) is not complete."""
        n = self.n_points
        if n is not None and len(self.rows) < n:
            return False
        return self.meta.get("status") == "finished" or n is not None

    def progress_note(self) -> str:
        """'' for a complete run, else 'incomplete: k of n points' (or 'incomplete: k points'); for a folder marked
        finished, that its results.csv has lost rows."""
        if self.complete:
            return ""
        n = self.n_points
        note = f"incomplete: {len(self.rows)} of {n} points" if n else f"incomplete: {len(self.rows)} points"
        if self.meta.get("status") == "finished":
            note += " (the run finished: results.csv has lost rows since; rerun the command to redo them)"
        return note


def read_run(path: str | Path) -> Run:
    """The one reader of a run folder (reports, the UI, generate_graphs and resume use it).

    Missing files read as empty ({} / []); a damaged folder (see the module docstring for the
    schema) raises one NoisyNNError naming the file and line. Nothing is written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NoisyNNError(f"{path} is not a folder")
    return Run(path, read_meta(path / RUN_JSON), read_rows(path / RESULTS_CSV))
