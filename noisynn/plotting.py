"""Shared figure and table helpers of the experiments' reports (no torch; no experiment's analysis).

Each experiment's own summaries, verdicts and figures live in its ``experiments/<name>/report.py``;
this module holds what several of them use: ``save_figure``, the median ``band``, the sigma-axis
helpers, ``write_table`` / ``write_summary`` and the original toolkit's ``quality_label``. It
selects matplotlib's Agg backend before pyplot is imported; reports take ``plt`` from here.

Every curve is the median across noise realizations with a shaded band: the order-statistic
confidence interval of the median (see ``stats``), whose coverage is printed in the legend.
Points where some trials produced inf/nan are marked with a red 'x' and a count, never dropped.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .runs.read import Run, read_rows
from .runs.schema import format_value
from .runs.files import replace_atomic
from .stats import group_by, measured_rows, summarize_levels

# Quality labels of the original toolkit, assigned from median perplexity / clean perplexity.
QUALITY_LABELS = ((1.5, "coherent"), (3.0, "creative jitter"), (10.0, "degraded"), (math.inf, "gibberish"))


def quality_label(ratio: float) -> str:
    """coherent (< 1.5x clean perplexity), creative jitter (< 3x), degraded (< 10x), gibberish."""
    if not math.isfinite(ratio):
        return "gibberish"
    return next(label for bound, label in QUALITY_LABELS if ratio < bound)


def _rows_behind(path: Path) -> int:
    """How many results rows an existing table rests on: the sum of its ``n_trials`` column
    (0 if it has none or cannot be read)."""
    try:
        return sum(int(r["n_trials"]) for r in read_rows(path) if isinstance(r.get("n_trials"), int))
    except Exception:  # an unreadable old table is no reason to keep it
        return 0


def write_table(path: str | Path, table: Sequence[dict]) -> Path:
    """A list of dicts as a tidy CSV (floats in the results' number format), replaced atomically.

    Never replaces a good table with a worse one: an empty table is not written, and a table
    whose ``n_trials`` add up to fewer rows than the existing file's keeps the existing file.
    """
    path = Path(path)
    if not table:
        return path
    if path.is_file() and "n_trials" in table[0]:
        new = sum(int(r["n_trials"]) for r in table if isinstance(r.get("n_trials"), int))
        if _rows_behind(path) > new:
            return path
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0].keys()), lineterminator="\n")
    writer.writeheader()
    for r in table:
        writer.writerow({k: format_value(v) for k, v in r.items()})
    text = buf.getvalue()
    if not (path.is_file() and path.read_bytes() == text.encode("utf-8")):  # an old table may be garbage
        replace_atomic(path, text)
    return path


def realizations_note(meta: dict, rows: Sequence[dict], by: str = "sigma") -> str:
    """'N realizations per level' counted from the rows (not the config), plus
    'incomplete: k of n points' for a half-written run."""
    counts = sorted({len(g) for g in group_by(rows, by).values()}) if rows else [0]
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    progress = Run(Path("."), meta, list(rows)).progress_note()
    return f"{n} realizations per level" + (f" ({progress})" if progress else "")


def write_summary(run_dir: Path, rows: Sequence[dict], metrics: Sequence[str], by: str = "sigma",
                  name: str = "summary.csv", group: str | None = None) -> Path:
    """Per-level medians and CIs of ``metrics`` as a tidy CSV next to results.csv.

    ``group`` (e.g. ``"model"``): summarize each value of that column separately, as a first column.
    """
    groups = group_by(rows, group) if group else {None: rows}
    table = [({group: g} if group else {}) | s for g, part in groups.items() for m in metrics
             for s in summarize_levels(measured_rows(part, m), m, by)]  # a metric not measured has no rows
    return write_table(Path(run_dir) / name, table)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Lay out, write (creating the folder) and close a figure; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            fig.tight_layout()
            fig.savefig(path, dpi=dpi)
        except (OverflowError, ValueError):  # values near the float limit (sigma 1e308): ticks overflow
            _clamp_limits(fig)
            fig.tight_layout()
            fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


HUGE = 1e300  # beyond this a log axis' next decade overflows the float range


def _clamp_limits(fig) -> None:
    """Make axes near the float limit drawable: a log axis reaching beyond HUGE becomes linear,
    and non-finite limits are pulled inside +-float max. The data are unchanged."""
    for ax in fig.axes:
        for get, set_, scale, set_scale in ((ax.get_xlim, ax.set_xlim, ax.get_xscale, ax.set_xscale),
                                            (ax.get_ylim, ax.set_ylim, ax.get_yscale, ax.set_yscale)):
            lo, hi = get()
            if scale() == "log" and not (math.isfinite(hi) and hi < HUGE):
                set_scale("linear")
            big = sys.float_info.max
            lo = lo if math.isfinite(lo) else -big
            hi = hi if math.isfinite(hi) else big
            set_(max(lo, -big), min(hi, big) if min(hi, big) > max(lo, -big) else max(lo, -big) + 1)


def band(ax, xs: Sequence[float], summary: Sequence[dict], label: str, color=None, log_y: bool = False):
    """Median line, CI band, and red 'x' marks where some trials were non-finite."""
    med = np.array([s["median"] for s in summary], dtype=float)
    lo = np.array([s["ci_low"] for s in summary], dtype=float)
    hi = np.array([s["ci_high"] for s in summary], dtype=float)
    finite = np.isfinite(med)
    cov = min((s["coverage"] for s in summary), default=0)
    line, = ax.plot(np.asarray(xs)[finite], med[finite], "o-", ms=3.5, color=color,
                    label=f"{label} (median, {cov:.0%} CI band)" if cov > 0 else f"{label} (one realization: no CI)")
    ok = np.isfinite(lo) & np.isfinite(hi)
    ax.fill_between(np.asarray(xs)[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.2, lw=0)
    top = np.isfinite(hi)
    for x, s, upper in zip(xs, summary, hi):
        if s["n_nonfinite"]:
            y_top = np.nanmax(np.where(top, hi, np.nan)) if top.any() else 1.0
            ax.plot([x], [y_top], "x", color="red", ms=8, mew=2)
            ax.annotate(f"{s['n_nonfinite']}/{s['n_trials']} inf/nan", (x, y_top), fontsize=7, color="red",
                        textcoords="offset points", xytext=(0, 6), ha="center")
    if log_y:
        ax.set_yscale("log")
    return line


def sigma_axis(ax, sigmas, meta):
    """A log x axis when the positive sigmas span more than 20x; labelled with the run's --scale unit."""
    positive = [s for s in sigmas if s > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    scale = meta.get("config", {}).get("scale", "absolute")
    ax.set_xlabel("sigma" + (" (weight units)" if scale == "absolute" else f" (x {scale} unit)"))


def level_ticks(ax, sigmas: Sequence[float]) -> None:
    """Label the x axis at the sweep's own levels (a log axis otherwise labels only powers of 10)."""
    ticks = sorted({s for s in sigmas if s > 0})
    if 1 < len(ticks) <= 12:
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks], fontsize=8)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
