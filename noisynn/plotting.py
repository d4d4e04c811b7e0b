"""Figures and tables from saved run folders only (reads results.csv and run.json; no torch).

Every curve is the median across noise realizations with a shaded band: the order-statistic
confidence interval of the median (see ``stats``), whose coverage is printed in the legend.
Points where some trials produced inf/nan are marked with a red 'x' and a count, never dropped.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .results import RESULTS_CSV, RUN_JSON, format_value, read_rows  # noqa: E402
from .stats import summarize_levels  # noqa: E402

# Quality labels of the original toolkit, assigned from median perplexity / clean perplexity.
QUALITY_LABELS = ((1.5, "coherent"), (3.0, "creative jitter"), (10.0, "degraded"), (math.inf, "gibberish"))


def quality_label(ratio: float) -> str:
    """coherent (< 1.5x clean perplexity), creative jitter (< 3x), degraded (< 10x), gibberish."""
    if not math.isfinite(ratio):
        return "gibberish"
    return next(label for bound, label in QUALITY_LABELS if ratio < bound)


def load_run(run_dir: str | Path) -> tuple[dict, list[dict]]:
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / RUN_JSON).read_text()) if (run_dir / RUN_JSON).is_file() else {}
    return meta, read_rows(run_dir / RESULTS_CSV)


def write_summary(run_dir: Path, rows: Sequence[dict], metrics: Sequence[str], by: str = "sigma",
                  name: str = "summary.csv") -> Path:
    """Per-level medians and CIs of ``metrics`` as a tidy CSV next to results.csv."""
    path = Path(run_dir) / name
    table = [s for m in metrics for s in summarize_levels(rows, m, by)]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0].keys()), lineterminator="\n")
        writer.writeheader()
        for r in table:
            writer.writerow({k: format_value(v) for k, v in r.items()})
    return path


def band(ax, xs: Sequence[float], summary: Sequence[dict], label: str, color=None, log_y: bool = False):
    """Median line, CI band, and red 'x' marks where some trials were non-finite."""
    med = np.array([s["median"] for s in summary], dtype=float)
    lo = np.array([s["ci_low"] for s in summary], dtype=float)
    hi = np.array([s["ci_high"] for s in summary], dtype=float)
    finite = np.isfinite(med)
    cov = min((s["coverage"] for s in summary), default=0)
    line, = ax.plot(np.asarray(xs)[finite], med[finite], "o-", ms=3.5, color=color,
                    label=f"{label} (median, {cov:.0%} CI band)")
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


def _sigma_axis(ax, sigmas, meta):
    positive = [s for s in sigmas if s > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    scale = meta.get("config", {}).get("scale", "absolute")
    ax.set_xlabel("sigma" + (" (weight units)" if scale == "absolute" else f" (x {scale} unit)"))


def plot_sweep(run_dir: str | Path, name: str = "sweep.png") -> list[Path]:
    """Perplexity (log axis), entropy and distinct-2 against sigma; writes summary.csv too."""
    run_dir = Path(run_dir)
    meta, rows = load_run(run_dir)
    write_summary(run_dir, rows, ("perplexity", "bits_per_byte", "entropy_bits", "distinct_2", "repetition"))
    clean = [r for r in rows if r["sigma"] == 0]
    noisy = [r for r in rows if r["sigma"] > 0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    panels = (("perplexity", "perplexity", True), ("entropy_bits", "next-token entropy (bits)", False),
              ("distinct_2", "distinct-2 of sampled text", False))
    for ax, (metric, ylabel, log_y) in zip(axes, panels):
        summary = summarize_levels(noisy, metric)
        band(ax, [s["sigma"] for s in summary], summary, meta.get("config", {}).get("noise_type", "noise"), log_y=log_y)
        if clean:
            c = summarize_levels(clean, metric)[0]
            ax.axhline(c["median"], color="gray", ls="--", lw=1, label=f"clean ({c['median']:.3g})")
        _sigma_axis(ax, [s["sigma"] for s in summary], meta)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    cfg = meta.get("config", {})
    tokens = sorted({r["eval_tokens"] for r in rows})
    fig.suptitle(f"{cfg.get('model', '?')}: {cfg.get('noise_type')} noise ({cfg.get('scale')}) on {cfg.get('targets')}, "
                 f"{cfg.get('n_trials')} realizations per level, perplexity on {tokens[0] if tokens else '?'} tokens",
                 fontsize=11)
    fig.tight_layout()
    path = run_dir / name
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def format_sweep_table(rows: Sequence[dict], ppl_summary: Sequence[dict] | None = None) -> str:
    """Console table: per sigma, median perplexity [CI], bits/byte, entropy, distinct-2, label."""
    ppl = ppl_summary or summarize_levels(rows, "perplexity")
    ent = {s["sigma"]: s for s in summarize_levels(rows, "entropy_bits")}
    d2 = {s["sigma"]: s for s in summarize_levels(rows, "distinct_2")}
    bpb = {s["sigma"]: s for s in summarize_levels(rows, "bits_per_byte")}
    clean = next((s["median"] for s in ppl if s["sigma"] == 0), ppl[0]["median"])
    cov = min(s["coverage"] for s in ppl)
    lines = [f"{'sigma':>9} {'perplexity (median)':>20} {f'{cov:.0%} CI':>21} {'bits/byte':>9} "
             f"{'entropy':>8} {'distinct-2':>10}  quality",
             "-" * 96]
    for s in ppl:
        sig = s["sigma"]
        ci = f"[{s['ci_low']:.4g}, {s['ci_high']:.4g}]"
        lines.append(f"{sig:>9.4g} {s['median']:>20.4g} {ci:>21} {bpb[sig]['median']:>9.3f} "
                     f"{ent[sig]['median']:>8.2f} {d2[sig]['median']:>10.3f}  {quality_label(s['median'] / clean)}")
    n = ppl[0]["n_trials"]
    lines.append(f"({n} noise realizations per level; perplexity on {ppl[0]['eval_tokens']} tokens; "
                 "quality from median perplexity / clean: <1.5x coherent, <3x creative jitter, <10x degraded)")
    return "\n".join(lines)
