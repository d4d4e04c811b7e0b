"""Report of a drift_over_time run folder (no torch): perplexity against time after programming,
with and without drift compensation, beside the digital references; summary.csv and the table."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.ticker

from ...plotting import band, plt, save_figure, write_table
from ...results import read_run
from ...stats import summarize_levels


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
    return write_table(Path(run_dir) / name, table)


def plot(run_dir: str | Path, name: str = "drift_over_time.png") -> list[Path]:
    """Perplexity (log) against time after programming, with and without drift compensation, beside the
    digital references; and the mean conductance ratio |W_t| / |W_prog|. Writes summary.csv too."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
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
    return [save_figure(fig, run_dir / name)]


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
