"""Report of a drift_over_time run folder (no torch): perplexity against time after programming, table, figure.

One line per analog preset, without and with drift compensation, beside the digital references; summary.csv
and the table."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.ticker

from ...plotting import band, plt, save_figure, write_table
from ...runs.read import read_run
from ...stats import summarize_levels

# Fixed colours per preset, so every figure of this experiment reads alike; other labels take the rest in order.
PRESET_COLORS = {"none": "tab:blue", "aihwkit_default": "tab:orange", "aihwkit_hwa": "tab:green", "afm": "tab:purple"}
SPARE_COLORS = ("tab:cyan", "tab:olive", "tab:pink", "tab:gray")


def preset_of(row: dict) -> str:
    """The row's preset ('none' for run folders written before the preset column)."""
    return row.get("preset") or "none"


def presets_of(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(preset_of(r) for r in rows if r["condition"] == "pcm"))


def _drift_series(rows: Sequence[dict]) -> dict:
    """{(preset, compensation): pcm rows}, in the run's order, empty groups left out."""
    pcm = [r for r in rows if r["condition"] == "pcm"]
    series = {(p, comp): [r for r in pcm if preset_of(r) == p and r["compensation"] == comp]
              for p in presets_of(rows) for comp in (False, True)}
    return {k: v for k, v in series.items() if v}


def write_drift_summary(run_dir: Path, rows: Sequence[dict], metrics: Sequence[str] = ("perplexity", "drift_ratio",
                                                                                     "entropy_bits", "distinct_2"),
                        name: str = "summary.csv") -> Path:
    """Per condition, preset, compensation and time: median, CI and coverage of each metric."""
    table = []
    for cond in dict.fromkeys(r["condition"] for r in rows):
        for preset in dict.fromkeys(preset_of(r) for r in rows if r["condition"] == cond):
            for comp in (False, True):
                group = [r for r in rows if r["condition"] == cond and preset_of(r) == preset
                         and r["compensation"] == comp]
                for m in metrics if group else ():
                    table += [{"condition": cond, "preset": preset, "compensation": comp, **s}
                              for s in summarize_levels(group, m, "t_seconds")]
    return write_table(Path(run_dir) / name, table)


def preset_label(preset: str, meta: dict) -> str:
    """Legend text: the preset's name, and what 'none' means in this run."""
    if preset == "none":
        # run folders written before the preset column record their one converter setting as meta "converters"
        flags = meta["presets"].get("none") is not None if "presets" in meta else "converters" in meta
        return "none + converter flags" if flags else "none (weights only)"
    return preset


def preset_colors(presets: Sequence[str]) -> dict:
    spare = iter(SPARE_COLORS)
    return {p: PRESET_COLORS.get(p) or next(spare, None) for p in presets}


def plot(run_dir: str | Path, name: str = "drift_over_time.png") -> list[Path]:
    """Perplexity (log) against time after programming, one line per preset (bands: the CI of the median), without
    (left) and with (middle) drift compensation, beside the digital references; and the mean conductance ratio
    sum|W_t| / sum|W_prog| (right; the same programmed conductances for every preset). Writes summary.csv too."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
    write_drift_summary(run_dir, rows)
    cfg = meta.get("config", {})
    fig, (ax_off, ax_on, ax2) = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1.3, 1.3, 1]})
    ax_on.sharey(ax_off)
    presets = presets_of(rows)
    colors = preset_colors(presets)
    times, ratio_drawn = [], False
    for (preset, comp), group in _drift_series(rows).items():
        summary = summarize_levels(group, "perplexity", "t_seconds")
        times = sorted({s["t_seconds"] for s in summary} | set(times))
        band(ax_on if comp else ax_off, [s["t_seconds"] for s in summary], summary, preset_label(preset, meta),
             color=colors[preset], log_y=True)
        if not comp and not ratio_drawn:  # a weight-level quantity: equal for every preset of a programming
            ratio = summarize_levels(group, "drift_ratio", "t_seconds")
            band(ax2, [s["t_seconds"] for s in ratio], ratio, "sum|W_t| / sum|W_prog|", color="tab:red")
            ratio_drawn = True
    digital_styles = iter([("black", "--"), ("dimgray", ":"), ("tab:brown", "-."), ("tab:olive", "--")])
    for cond in dict.fromkeys(r["condition"] for r in rows if r["condition"] != "pcm"):
        s = summarize_levels([r for r in rows if r["condition"] == cond], "perplexity", "t_seconds")[0]
        label = "digital float" if cond == "float" else f"digital {cond} (per channel)"
        color, ls = next(digital_styles, ("black", "--"))
        for a in (ax_off, ax_on):
            a.axhline(s["median"], color=color, ls=ls, lw=1, label=f"{label}: {s['median']:.3g}")
    reference = meta.get("drift_reference")
    if reference:
        ax2.plot(reference["t_seconds"], reference["factor"], "k--", lw=1,
                 label=f"((t + t0) / t0)^-nu at gT = 1, nu = {reference['nu']}")
    labels = dict(zip(meta.get("times_s", []), meta.get("time_labels", [])))
    for a in (ax_off, ax_on, ax2):
        a.set_xscale("log")
        if times:
            a.set_xticks(times)
            a.set_xticklabels([labels.get(t, f"{t:g}") for t in times])
            a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        a.set_xlabel("time after programming")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    method = meta.get("compensation", {}).get("method", "readout") if isinstance(meta.get("compensation"), dict) \
        else "readout"
    ax_off.set_title("no drift compensation", fontsize=10)
    ax_on.set_title(f"global drift compensation ({method})", fontsize=10)
    ax_off.set_ylabel("perplexity")
    ax2.set_ylabel("conductance ratio (before compensation)")
    tokens = sorted({r["eval_tokens"] for r in rows})
    n = max((r["trial"] for r in rows if r["condition"] == "pcm"), default=-1) + 1
    fig.suptitle(f"{cfg.get('model', '?')} on {cfg.get('noise_type')} ({cfg.get('scale')} mapping, sigma = "
                 f"{cfg.get('noise_scale')}), targets {cfg.get('targets')}: {n} programmings, each read through every "
                 f"preset; perplexity on {tokens[0] if len(tokens) == 1 else tokens} tokens", fontsize=10)
    return [save_figure(fig, run_dir / name)]


def format_drift_table(rows: Sequence[dict]) -> str:
    """Console table: per preset and time, median perplexity [CI] without and with compensation, the drift ratio."""
    series = _drift_series(rows)
    by = {k: {s["t_seconds"]: s for s in summarize_levels(g, "perplexity", "t_seconds")} for k, g in series.items()}
    labels = {r["t_seconds"]: r["t_label"] for r in rows if r["condition"] == "pcm"}
    cov = min((s["coverage"] for d in by.values() for s in d.values()), default=0)
    lines = [f"{'preset':>16} {'time':>7} {'no compensation':>16} {f'{cov:.0%} CI':>19} {'compensated':>12} "
             f"{f'{cov:.0%} CI':>19} {'|W_t|/|W_prog|':>15}", "-" * 111]

    def cell(d, t, width):
        s = d.get(t)
        if not s:
            return f"{'-':>{width}} {'-':>19}"
        ci = f"[{s['ci_low']:.4g}, {s['ci_high']:.4g}]"
        return f"{s['median']:>{width}.4g} {ci:>19}"

    for preset in presets_of(rows):
        group = series.get((preset, False), series.get((preset, True), []))
        ratio = {s["t_seconds"]: s for s in summarize_levels(group, "drift_ratio", "t_seconds")}
        for t in sorted(labels):
            r = ratio[t]["median"] if t in ratio else float("nan")
            lines.append(f"{preset:>16} {labels[t]:>7} {cell(by.get((preset, False), {}), t, 16)} "
                         f"{cell(by.get((preset, True), {}), t, 12)} {r:>15.3f}")
    for r in rows:
        if r["condition"] != "pcm":
            lines.append(f"digital {r['condition']}: perplexity {r['perplexity']:.4g}")
    n = max((r["trial"] for r in rows if r["condition"] == "pcm"), default=-1) + 1
    tokens = sorted({r["eval_tokens"] for r in rows})
    lines.append(f"({n} programmings per time, each read through every preset; perplexity on "
                 f"{tokens[0] if len(tokens) == 1 else tokens} tokens)")
    return "\n".join(lines)
