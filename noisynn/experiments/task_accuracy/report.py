"""Report of a task_accuracy run folder (no torch): median and CI per level, the sigma of an accuracy drop.

Accuracy against sigma per task with the band across realizations and the chance level, summary.csv (median
and CI per task, metric and level), acc_drop.csv (the sigma where accuracy falls by ``--acc_drop`` points) and
the console table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from ...plotting import band, level_ticks, plt, save_figure, sigma_axis, write_table
from ...runs.read import read_run
from ...stats import group_by, median_ci, summarize_levels
from ...task_sets import is_accuracy



def summary_table(rows: Sequence[dict]) -> list[dict]:
    """Per (task, metric, sigma): median of the value across realizations, its CI, items per trial."""
    table = []
    for (task, metric), part in _by_task_metric(rows):
        for s in summarize_levels(part, "value"):
            items = sorted({int(r["n_items"]) for r in part if r["sigma"] == s["sigma"]})
            table.append({"task": task, "metric": metric, "sigma": s["sigma"], "median": s["median"],
                          "ci_low": s["ci_low"], "ci_high": s["ci_high"], "coverage": s["coverage"],
                          "n_trials": s["n_trials"], "n_nonfinite": s["n_nonfinite"],
                          "n_items": items[0] if len(items) == 1 else items})
    return table


def _by_task_metric(rows: Sequence[dict]) -> list[tuple[tuple[str, str], list[dict]]]:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["task"], r["metric"]), []).append(r)
    return list(groups.items())


def linear_drop(xs: Sequence[float], ys: Sequence[float], threshold: float) -> float:
    """First x at which y falls to ``threshold`` or below, interpolating linearly between levels;
    inf when it never does within the sweep."""
    prev = None
    for x, y in zip(xs, ys):
        if math.isfinite(y) and y <= threshold:
            if prev is None or prev[1] == y:
                return float(x)
            (x0, y0) = prev
            return float(x0 + (x - x0) * (y0 - threshold) / (y0 - y))
        prev = (x, y) if math.isfinite(y) else prev
    return math.inf


def drop_table(rows: Sequence[dict], points: float) -> list[dict]:
    """Per accuracy (task, metric): the clean value (median at sigma 0), and per realization the sigma
    where the value falls ``points`` percentage points below it; their median and CI. Realizations
    that never fall that far count as +inf (beyond the sweep) and in ``n_not_reached``."""
    out = []
    for (task, metric), part in _by_task_metric(rows):
        if not is_accuracy(metric):
            continue
        clean = median_ci([r["value"] for r in part if r["sigma"] == 0]).median
        threshold = clean - points / 100
        per = {}
        for trial, group in group_by(part, "trial").items():
            pts = sorted((r["sigma"], r["value"]) for r in group)
            per[trial] = linear_drop([p[0] for p in pts], [p[1] for p in pts], threshold)
        s = median_ci(per.values())
        out.append({"task": task, "metric": metric, "clean": clean, "drop_points": points, "threshold": threshold,
                    "sigma_median": s.median, "ci_low": s.low, "ci_high": s.high, "coverage": round(s.coverage, 4),
                    "n_trials": s.n, "n_not_reached": s.n_nonfinite})
    return out


def plot(run_dir: str | Path, name: str = "task_accuracy.png") -> list[Path]:
    """Accuracy (percent of items) against sigma, one panel per task; writes summary.csv and acc_drop.csv."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows, cfg = run.meta, run.rows, run.config
    points = float(cfg.get("acc_drop", 5.0))
    write_table(run_dir / "summary.csv", summary_table(rows))
    drops = drop_table(rows, points)
    write_table(run_dir / "acc_drop.csv", drops)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(6.5 * max(1, len(tasks)), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sigmas = []
        for (t, metric), part in _by_task_metric(rows):
            if t != task or not is_accuracy(metric):
                continue
            summary = [{**s, "median": 100 * s["median"], "ci_low": 100 * s["ci_low"], "ci_high": 100 * s["ci_high"]}
                       for s in summarize_levels(part, "value")]
            sigmas = [s["sigma"] for s in summary]
            band(ax, sigmas, summary, metric)
        chance = meta.get("tasks", {}).get(task, {}).get("chance")
        if chance is not None:
            ax.axhline(100 * chance, color="gray", ls=":", lw=1.2, label=f"chance ({100 * chance:.3g}%)")
        for d in drops:
            if d["task"] == task and math.isfinite(d["sigma_median"]):
                ax.axvline(d["sigma_median"], color="black", ls="--", lw=0.8, alpha=0.6)
        if sigmas:
            sigma_axis(ax, sigmas, meta)
            level_ticks(ax, sigmas)
        items = sorted({int(r["n_items"]) for r in rows if r["task"] == task})
        ax.set_title(f"{task} ({items[0] if len(items) == 1 else items} items)", fontsize=10)
        ax.set_ylabel("accuracy (% of items)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{cfg.get('model', '?')}: {cfg.get('noise_type')} noise ({cfg.get('scale')}) on {cfg.get('targets')}, "
                 f"{cfg.get('n_trials')} realizations per level; dashed: sigma where accuracy falls {points:g} points "
                 f"(median); lm-eval {meta.get('lm_eval_version', '?')}", fontsize=10)
    return [save_figure(fig, run_dir / name)]


def format_table(rows: Sequence[dict], points: float = 5.0) -> str:
    """Console table: per task and accuracy metric, median [CI] per sigma, then the drop sigma."""
    lines = [f"{'task':<24} {'metric':<10} {'sigma':>8} {'median':>8} {'CI':>17} {'items':>6}", "-" * 78]
    for s in summary_table(rows):
        if not is_accuracy(s["metric"]):
            continue
        ci = f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
        lines.append(f"{s['task']:<24} {s['metric']:<10} {s['sigma']:>8.4g} {s['median']:>8.3f} {ci:>17} "
                     f"{str(s['n_items']):>6}")
    for d in drop_table(rows, points):
        where = "not reached" if not math.isfinite(d["sigma_median"]) else (
            f"{d['sigma_median']:.4g} [{d['ci_low']:.4g}, {d['ci_high']:.4g}]")
        lines.append(f"{d['task']} {d['metric']}: clean {d['clean']:.3f}; falls {points:g} points at sigma {where} "
                     f"({d['n_not_reached']}/{d['n_trials']} realizations never within the sweep)")
    return "\n".join(lines)
