"""The explorer's Saved runs tab: list, read and redraw run folders (no torch).

Find run folders, read one (config, table, figures), redraw a missing figure with its experiment's report
(``registry.report_module``). No torch."""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import NoisyNNError
from ..runs.schema import RESULTS_CSV, RUN_JSON, format_value
from ..runs.read import read_rows, read_run
from ..stats import not_measured

log = logging.getLogger(__name__)

RUN_ROOTS = ("runs", "results")


@dataclass
class SavedRun:
    path: Path
    meta: dict
    table_name: str
    columns: list[str]
    rows: list[list]
    figures: list[Path]
    note: str = ""


def list_runs(roots: Sequence[str | Path] = RUN_ROOTS, depth: int = 2) -> list[str]:
    """Run folders (holding results.csv) under ``roots``, up to ``depth`` levels down, sorted by path."""
    found = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        candidates = [root] + [p for p in root.glob("*") if p.is_dir()]
        if depth > 1:
            candidates += [p for p in root.glob("*/*") if p.is_dir()]
        found.update(str(p) for p in candidates if (p / RESULTS_CSV).is_file())
    return sorted(found)


def shown_value(value):
    """A table cell as the page shows it: floats to 4 significant digits (the files keep full precision)."""
    if isinstance(value, float):
        return format_value(value) if not math.isfinite(value) else f"{value:.4g}"
    return value


def _read_table(path: Path) -> tuple[list[str], list[list]]:
    rows = read_rows(path)
    if not rows:
        return [], []
    columns = list(rows[0].keys())
    return columns, [["not measured" if not_measured(r, c) else shown_value(r[c]) for c in columns] for r in rows]


def unmeasured_metrics(rows) -> list[str]:
    """Columns nan in every row of a finite model: the run never measured them (``stats.not_measured``)."""
    return [c for c in (rows[0] if rows else {}) if all(not_measured(r, c) for r in rows)]


def load_saved_run(folder: str | Path, max_rows: int = 500) -> SavedRun:
    """A run folder's config, table (summary.csv, else results.csv) and figures (its PNGs).

    A folder without PNGs gets its figure redrawn by its experiment's ``report.plot`` from a
    temporary copy of run.json and results.csv (the folder itself is never written).
    """
    text = str(folder or "").strip()
    if not text:
        raise NoisyNNError("no run folder given: pick one from the list or type a path")
    path = Path(text).expanduser()
    if not path.exists():
        raise NoisyNNError(f"run folder {text} does not exist")
    if not path.is_dir():
        raise NoisyNNError(f"{text} is not a folder")
    if not (path / RESULTS_CSV).is_file():
        raise NoisyNNError(f"{text} holds no {RESULTS_CSV}: not a run folder")
    run = read_run(path)
    meta = run.meta
    figures = sorted(path.glob("*.png"))
    note = ""
    table_path = path / "summary.csv"
    if not figures:
        figures, note, redrawn_summary = _redraw(path, meta)
        if not table_path.is_file() and redrawn_summary is not None:
            table_path = redrawn_summary
    if not table_path.is_file():
        table_path = path / RESULTS_CSV
    columns, rows = _read_table(table_path)
    if not rows:
        raise NoisyNNError(f"{path / RESULTS_CSV} holds no rows yet")
    if run.rows and "seed" in run.rows[0]:
        base = meta.get("config", {}).get("seed")
        note += (" The seed column of results.csv is each realization's derived seed, derive_seed(base seed, 'noise', target, "
                 f"trial) (a 64-bit number), not the base seed{f' {base}' if base is not None else ''} of run.json.")
    if unmeasured := unmeasured_metrics(run.rows):
        note += (f" Not measured in this run (nan in {RESULTS_CSV}, not a failure): {', '.join(unmeasured)}; "
                 "their panels and table rows say so.")
    if len(rows) > max_rows:
        note += f" Showing the first {max_rows} of {len(rows)} rows."
    return SavedRun(path, meta, table_path.name, columns, rows[:max_rows], figures, note.strip())


def _redraw(path: Path, meta: dict) -> tuple[list[Path], str, Path | None]:
    from .. import registry

    experiment = meta.get("experiment") or meta.get("config", {}).get("experiment")
    if experiment not in registry.EXPERIMENTS:
        return [], f"No PNG in the folder and no report of experiment '{experiment or '?'}' to redraw one.", None
    plot = registry.report_module(experiment).plot
    tmp = Path(tempfile.mkdtemp(prefix="noisynn-ui-run-"))
    for name in (RUN_JSON, RESULTS_CSV, "samples.jsonl"):
        if (path / name).is_file():
            shutil.copyfile(path / name, tmp / name)
    try:
        figures = [Path(f) for f in plot(tmp)]
    except Exception as err:  # a partial or foreign folder: show the table anyway
        log.warning("redrawing %s failed: %s", path, err)
        return [], f"No PNG in the folder; redrawing with the {experiment} report failed ({err}).", None
    summary = tmp / "summary.csv"
    note = f"Figure redrawn from results.csv by the {experiment} report."
    return figures, note, summary if summary.is_file() else None
