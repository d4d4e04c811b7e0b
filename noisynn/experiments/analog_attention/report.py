"""Report of an analog_attention run folder (no torch): perplexity per condition and level, where it doubles, and
far-back recall against distance.

Medians over trials with the order-statistic interval of the median (noisynn.stats.median_ci: with 3 trials
[min, max], 75% coverage); a condition without noise draws runs one trial and shows no interval.
"""

from __future__ import annotations

import math
from pathlib import Path

from ...plotting import band, plt, save_figure, write_table
from ...runs.read import read_run
from ...stats import group_by, log_crossing, median_ci, summarize_levels

NOISE = ("weight", "write", "read", "output")  # x = a noise std
TOKENS = ("leak", "window")  # x = tokens: fewer is worse
UNITS = {"weight": "x max|W| per tensor", "write": "x stored range r", "read": "x stored range r",
         "output": "normalized input x r", "leak": "tau, tokens", "window": "tokens", "bits": "bits"}
FIGURE = "analog_attention.png"


def _rows(rows, condition: str, probe: str = "perplexity") -> list[dict]:
    return [r for r in rows if r["condition"] == condition and r["probe"] == probe]


def reference(rows) -> float:
    """The float model's perplexity (nan without a float row)."""
    ref = _rows(rows, "float")
    return float(ref[0]["perplexity"]) if ref else math.nan


def doubling(rows, condition: str, factor: float = 2.0) -> dict:
    """Per trial, the level at which perplexity reaches ``factor`` x the float model's (log-interpolated; for
    leak, window and bits on the damage axis 1 / level); their median and CI; inf = not reached."""
    base = reference(rows)
    group = _rows(rows, condition)
    if not group or not math.isfinite(base):
        return {}
    inverse = condition in TOKENS or condition == "bits"
    per = []
    for _, trial in group_by(group, "trial").items():
        pts = sorted(((1 / r["sigma"] if inverse else r["sigma"]), r["perplexity"]) for r in trial)
        x = log_crossing([0.0] + [p[0] for p in pts], [base] + [p[1] for p in pts], factor * base)
        per.append(math.inf if math.isnan(x) else (1 / x if inverse and x > 0 else x))
    s = median_ci(per)
    return {"condition": condition, "factor": factor, "threshold": factor * base, "median": s.median,
            "ci_low": s.low, "ci_high": s.high, "coverage": round(s.coverage, 4), "n_trials": s.n,
            "n_not_reached": sum(1 for v in per if math.isinf(v)), "unit": UNITS.get(condition, "")}


def summary(rows) -> list[dict]:
    """Per condition, probe, distance (recall) or task and metric (tasks), and level: the median of the probe's
    metric (perplexity, recall accuracy, the task metric's value) and its CI."""
    out = []
    for cond, group in group_by(rows, "condition").items():
        for probe, metric in (("perplexity", "perplexity"), ("recall", "recall_acc"), ("task", "value")):
            sub = [r for r in group if r["probe"] == probe]
            for (dist, task, name), part in group_by([{**r, "_k": (r["distance"], r.get("task", ""),
                                                                   r.get("metric", ""))} for r in sub], "_k").items():
                for s in summarize_levels(part, metric):
                    out.append({"condition": cond, "probe": probe, "distance": dist, "task": task,
                                "task_metric": name, **s})
    return out


def plot(run_dir: str | Path) -> list[Path]:
    run = read_run(run_dir)
    rows = run.rows
    if not rows:
        return []
    table = summary(rows)
    write_table(Path(run_dir) / "summary.csv", table)
    base = reference(rows)
    recall = [r for r in rows if r["probe"] == "recall"]
    fig, axes = plt.subplots(1, 3 if recall else 2, figsize=(17 if recall else 11, 4.6))
    _perplexity_panel(axes[0], rows, NOISE, base, "noise std", "cache noise vs weight noise")
    axes[0].set_ylabel("perplexity")
    _perplexity_panel(axes[1], rows, TOKENS, base, "tokens (retention tau, or window)", "leakage and window")
    if recall:
        _recall_panel(axes[2], recall)
    n_tok = sorted({r["eval_tokens"] for r in rows if r["probe"] == "perplexity"})
    fig.suptitle(f"analog attention on {run.meta.get('config', {}).get('model', '?')}: perplexity on "
                 f"{n_tok[-1] if n_tok else '?'} tokens per point", fontsize=10)
    fig.tight_layout()
    return [save_figure(fig, Path(run_dir) / FIGURE)]


def _perplexity_panel(ax, rows, conditions, base: float, xlabel: str, title: str) -> None:
    """Median perplexity and its CI band against the level, one line per condition, and the float references."""
    for cond in conditions:
        sub = _rows(rows, cond)
        if sub:
            s = summarize_levels(sub, "perplexity")
            band(ax, [v["sigma"] for v in s], s, f"{cond} ({UNITS[cond]})", log_y=True)
    _reference_lines(ax, base)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=7)


def _reference_lines(ax, base: float) -> None:
    if math.isfinite(base):
        ax.axhline(base, color="k", lw=0.8, ls="--", label=f"float {base:.2f}")
        ax.axhline(2 * base, color="grey", lw=0.8, ls=":", label="2 x float")


def _recall_panel(ax, recall) -> None:
    """Recall accuracy against distance: float, base, each leak tau and window (medians over trials)."""
    maps = {"leak": plt.cm.Blues, "window": plt.cm.Oranges}
    for cond, group in group_by(recall, "condition").items():
        levels = sorted(group_by(group, "sigma").items())
        for i, (level, sub) in enumerate(levels):
            by_d = sorted(group_by(sub, "distance").items())
            med = [median_ci([r["recall_acc"] for r in rs], nonfinite_as_inf=False).median for _, rs in by_d]
            label = cond if cond in ("float", "base") else f"{cond} {level:g}"
            color = maps[cond](0.35 + 0.6 * i / max(1, len(levels) - 1)) if cond in maps else (
                "k" if cond == "float" else "grey")
            style = "--" if cond == "float" else ("o-" if cond == "leak" else ("s:" if cond == "window" else "x:"))
            ax.plot([d for d, _ in by_d], med, style, color=color, ms=3.5, label=label)
    n = sorted({r["n_scored"] for r in recall})
    ax.set_xlabel("distance D (tokens between the passage and its cue)")
    ax.set_ylabel(f"recall accuracy ({n[-1] if n else '?'} tokens per point)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("far-back recall")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def format_table(rows) -> str:
    """Console table: median perplexity [CI] per condition and level, then where it doubles."""
    lines = [f"{'condition':<10}{'level':>10}  {'probe':<28}{'median':>10}{'CI':>22}{'trials':>8}"]
    for s in summary(rows):
        if s["probe"] == "recall":
            continue
        probe = "perplexity" if s["probe"] == "perplexity" else f"{s['task']} {s['task_metric']}"
        ci = f"[{s['ci_low']:.4g}, {s['ci_high']:.4g}]" if s["n_trials"] > 1 else "-"
        lines.append(f"{s['condition']:<10}{s['sigma']:>10g}  {probe:<28}{s['median']:>10.4g}{ci:>22}"
                     f"{s['n_trials']:>8}")
    lines.append("")
    for cond in NOISE + TOKENS + ("bits",):
        d = doubling(rows, cond)
        if d:
            where = "not reached" if math.isinf(d["median"]) else (
                f"{d['median']:.4g} [{d['ci_low']:.4g}, {d['ci_high']:.4g}]")
            lines.append(f"perplexity doubles ({cond}, {d['unit']}): {where} ({d['n_trials']} trials, "
                         f"{d['coverage']:.0%} CI)")
    return "\n".join(lines)

