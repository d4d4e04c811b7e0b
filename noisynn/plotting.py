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


# ---------------------------------------------------------------- drift over time (noisynn.experiments.drift_over_time)

def _drift_series(rows: Sequence[dict]) -> dict:
    """{compensation: pcm rows} and the digital rows by condition."""
    pcm = [r for r in rows if r["condition"] == "pcm"]
    series = {comp: [r for r in pcm if r["compensation"] == comp] for comp in (False, True)}
    return {k: v for k, v in series.items() if v}


def write_drift_summary(run_dir: Path, rows: Sequence[dict], metrics: Sequence[str] = ("perplexity", "drift_ratio",
                                                                                     "entropy_bits", "distinct_2"),
                        name: str = "summary.csv") -> Path:
    """Per condition, compensation and time: median, CI and coverage of each metric."""
    table = []
    for cond in dict.fromkeys(r["condition"] for r in rows):
        for comp in (False, True):
            group = [r for r in rows if r["condition"] == cond and r["compensation"] == comp]
            for m in metrics if group else ():
                table += [{"condition": cond, "compensation": comp, **s} for s in summarize_levels(group, m, "t_seconds")]
    path = Path(run_dir) / name
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0].keys()), lineterminator="\n")
        writer.writeheader()
        for r in table:
            writer.writerow({k: format_value(v) for k, v in r.items()})
    return path


def plot_drift_over_time(run_dir: str | Path, name: str = "drift_over_time.png") -> list[Path]:
    """Perplexity (log) against time after programming, with and without drift compensation, beside the
    digital references; and the mean conductance ratio |W_t| / |W_prog|. Writes summary.csv too."""
    run_dir = Path(run_dir)
    meta, rows = load_run(run_dir)
    write_drift_summary(run_dir, rows)
    cfg = meta.get("config", {})
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.6, 1]})
    styles = {False: ("no compensation", "tab:red"), True: ("global drift compensation", "tab:blue")}
    times = []
    for comp, group in _drift_series(rows).items():
        label, color = styles[comp]
        summary = summarize_levels(group, "perplexity", "t_seconds")
        times = sorted({s["t_seconds"] for s in summary} | set(times))
        band(ax, [s["t_seconds"] for s in summary], summary, label, color=color, log_y=True)
        if not comp:
            ratio = summarize_levels(group, "drift_ratio", "t_seconds")
            band(ax2, [s["t_seconds"] for s in ratio], ratio, "sum|W_t| / sum|W_prog|", color="tab:red")
    digital_colors = iter(["black", "tab:green", "tab:purple", "tab:orange", "tab:brown"])
    for cond in dict.fromkeys(r["condition"] for r in rows if r["condition"] != "pcm"):
        s = summarize_levels([r for r in rows if r["condition"] == cond], "perplexity", "t_seconds")[0]
        label = "digital float" if cond == "float" else f"digital {cond} (per channel)"
        ax.axhline(s["median"], color=next(digital_colors), ls="--", lw=1, label=f"{label}: {s['median']:.3g}")
    reference = meta.get("drift_reference")
    if reference:
        ax2.plot(reference["t_seconds"], reference["factor"], "k--", lw=1,
                 label=f"((t + t0) / t0)^-nu at gT = 1, nu = {reference['nu']}")
    labels = dict(zip(meta.get("times_s", []), meta.get("time_labels", [])))
    for a in (ax, ax2):
        a.set_xscale("log")
        if times:
            a.set_xticks(times)
            a.set_xticklabels([labels.get(t, f"{t:g}") for t in times])
            a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        a.set_xlabel("time after programming")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    ax.set_ylabel("perplexity")
    ax2.set_ylabel("conductance ratio (before compensation)")
    tokens = sorted({r["eval_tokens"] for r in rows})
    n = max((r["trial"] for r in rows if r["condition"] == "pcm"), default=-1) + 1
    fig.suptitle(f"{cfg.get('model', '?')} on {cfg.get('noise_type')} ({cfg.get('scale')} mapping, sigma = "
                 f"{cfg.get('noise_scale')}), targets {cfg.get('targets')}: {n} programmings, perplexity on "
                 f"{tokens[0] if len(tokens) == 1 else tokens} tokens", fontsize=10)
    fig.tight_layout()
    path = run_dir / name
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def format_drift_table(rows: Sequence[dict]) -> str:
    """Console table: per time, median perplexity [CI] without and with compensation, and the drift ratio."""
    series = _drift_series(rows)
    by_comp = {c: {s["t_seconds"]: s for s in summarize_levels(g, "perplexity", "t_seconds")} for c, g in series.items()}
    ratio = {s["t_seconds"]: s for s in summarize_levels(series.get(False, series.get(True, [])), "drift_ratio",
                                                         "t_seconds")}
    labels = {r["t_seconds"]: r["t_label"] for r in rows if r["condition"] == "pcm"}
    cov = min((s["coverage"] for d in by_comp.values() for s in d.values()), default=0)
    lines = [f"{'time':>7} {'no compensation':>16} {f'{cov:.0%} CI':>19} {'compensated':>12} {f'{cov:.0%} CI':>19} "
             f"{'|W_t|/|W_prog|':>15}", "-" * 94]

    def cell(d, t, width):
        s = d.get(t)
        if not s:
            return f"{'-':>{width}} {'-':>19}"
        ci = f"[{s['ci_low']:.4g}, {s['ci_high']:.4g}]"
        return f"{s['median']:>{width}.4g} {ci:>19}"

    for t in sorted(labels):
        r = ratio[t]["median"] if t in ratio else float("nan")
        lines.append(f"{labels[t]:>7} {cell(by_comp.get(False, {}), t, 16)} {cell(by_comp.get(True, {}), t, 12)} "
                     f"{r:>15.3f}")
    for r in rows:
        if r["condition"] != "pcm":
            lines.append(f"digital {r['condition']}: perplexity {r['perplexity']:.4g}")
    n = max((r["trial"] for r in rows if r["condition"] == "pcm"), default=-1) + 1
    tokens = sorted({r["eval_tokens"] for r in rows})
    lines.append(f"({n} programmings per time; perplexity on {tokens[0] if len(tokens) == 1 else tokens} tokens)")
    return "\n".join(lines)
