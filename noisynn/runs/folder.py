"""RunFolder, the writer of a run folder: run.json, results.csv and samples.jsonl, resumable, one writer at a time.

Rows are appended one ``os.write`` at a time on an O_APPEND descriptor and fsync'd, so a run
killed at any moment leaves whole rows only (a torn last line, if the disk cut one, is dropped
on resume). Re-running the same command with the same folder resumes: finished points are
read back and skipped. A folder holding a different run (other flags, other model weights, text
or input files: noisynn.runs.inputs) is never overwritten, and a folder has one writer at a time (a lock file held while the
run is open); damaged files are reported in one line naming the file and line.
The files' schema: noisynn.runs.schema."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Iterable, Sequence

from . import distributed, inputs
from .provenance import git_hash, versions
from ..errors import NoisyNNError
from .files import (FolderLock, _append_line, _repair_torn_tail, check_writable, remove_stale_temporaries,
                    replace_atomic, write_json_atomic)
from .schema import RESULTS_CSV, RUN_JSON, SAMPLES_JSONL, VOLATILE_KEYS, broken_as_inf, format_value, key_of, now
from .read import read_meta, read_rows, read_run, read_samples


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


class RunFolder:
    """One experiment's output folder; ``open`` creates it or checks that it holds the same run."""

    def __init__(self, path: str | Path, columns: Sequence[str], key: Sequence[str] = ("sigma", "trial")):
        self.path = Path(path)
        self.columns = list(columns)
        self.key = tuple(key)
        self.constants: dict = {}  # cells every row of this run shares (the layer schedule's label), filled in by append
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

        ``meta`` (what ``open`` will record) has its model, text and input files' fingerprints compared with
        the recorded ones, and the files the run wrote with their record (noisynn.runs.inputs). Only the
        main process checks (the others would race with it creating the folder); they get the finished rows
        from ``open`` after the barrier.
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
        inputs.check_fingerprint(self.path, run.meta.get("model"), (meta or {}).get("model"), "fingerprint",
                                 "the model weights (--model)")
        inputs.check_fingerprint(self.path, run.meta.get("text"), (meta or {}).get("text"), "sha256",
                                 "the text (--text_file)")
        inputs.check(self.path, run.meta.get(inputs.KEY), (meta or {}).get(inputs.KEY))  # other files read, files written
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
                remove_stale_temporaries(self.path)  # left by a writer killed mid-write (summary.csv, figures)
                recorded = {**inputs.kept(self.path, previous.get(inputs.KEY)), **meta.get(inputs.KEY, {})}
                self.meta = {**meta, **({inputs.KEY: recorded} if recorded else {}), "config": config,
                             "status": "running", "started": previous.get("started", now()), "resumed": bool(previous),
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
        row = {**self.constants, **row}
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

    def record_written(self, path: Path) -> None:
        """Record the fingerprint of a file this run wrote into its folder and reads back when resumed."""
        if self.is_main:
            self.update_meta(**{inputs.KEY: {**self.meta.get(inputs.KEY, {}), path.name: inputs.written(path)}})

    def finish(self, **fields) -> None:
        self.update_meta(status="finished", finished=now(), **fields)
        self.release()
