"""Report of a layer_sensitivity run folder (no torch): threshold crossings, noise energy, the heatmap.

Threshold crossings and noise energy per group, the blocks x projection heatmap, their tables and figures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib.ticker
import numpy as np

from ...plotting import band, plt, save_figure, sigma_axis, write_table
from ...runs.read import read_run
from ...stats import group_by, log_crossing, median_ci, summarize_levels


def layer_sensitivity_crossings(rows: Sequence[dict], threshold_ratio: float) -> list[dict]:
    """Per group: sigma where perplexity reaches ``threshold_ratio`` x clean, per trial, then median and CI.

    A trial that never reaches the threshold within the sweep counts as beyond the largest
    sigma (+inf in the median). Normalisation: the noise energy ``E = sigma^2 x n_params``
    at the crossing (monotone in sigma, so its median and CI are those of sigma, squared and
    scaled); a group that crosses at a lower E is more sensitive per unit of injected noise.
    """
    out = []
    for target, group in group_by([r for r in rows if r["mode"] == "groups"], "target").items():
        clean = [r["perplexity"] for r in group if r["sigma"] == 0]
        clean_ppl = float(np.median(clean)) if clean else math.nan
        threshold = threshold_ratio * clean_ppl
        per_trial = []
        for _, trial_rows in sorted(group_by(group, "trial").items()):
            trial_rows = sorted(trial_rows, key=lambda r: r["sigma"])
            per_trial.append(log_crossing([r["sigma"] for r in trial_rows], [r["perplexity"] for r in trial_rows],
                                          threshold))
        s = median_ci(per_trial)
        n = max(int(r["n_params"]) for r in group)
        energy = (lambda x: x * x * n if math.isfinite(x) else math.inf)  # noqa: E731
        out.append({"target": target, "n_params": n, "clean_perplexity": clean_ppl, "threshold": threshold,
                    "sigma_cross": s.median, "ci_low": s.low, "ci_high": s.high, "coverage": round(s.coverage, 4),
                    "n_trials": s.n, "n_not_crossed": s.n_nonfinite, "max_sigma": max(r["sigma"] for r in group),
                    "energy_cross": energy(s.median), "energy_low": energy(s.low), "energy_high": energy(s.high),
                    "per_trial": [round(x, 6) for x in per_trial], "eval_tokens": group[0]["eval_tokens"]})
    return out


def layer_sensitivity_cells(rows: Sequence[dict]) -> list[dict]:
    """Per heatmap cell (block, projection): median and CI across trials of ln(ppl / clean ppl)."""
    cells = [r for r in rows if r["mode"] == "heatmap" and r["target"] != "clean"]
    out = []
    for target, group in group_by(cells, "target").items():
        s = median_ci([r["delta_nll"] for r in group])
        n = int(group[0]["n_params"])
        out.append({"target": target, "block": int(group[0]["block"]), "projection": group[0]["projection"],
                    "sigma": group[0]["sigma"], "n_params": n, "delta_nll": s.median, "ci_low": s.low,
                    "ci_high": s.high, "coverage": round(s.coverage, 4), "n_trials": s.n,
                    "n_nonfinite": s.n_nonfinite, "delta_nll_per_mparam": s.median / (n / 1e6),
                    "eval_tokens": group[0]["eval_tokens"]})
    return out


def layer_sensitivity_report(run_dir: str | Path) -> dict:
    """The numbers of a layer_sensitivity run, from its folder: crossings per group, heatmap margins."""
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
    cfg = meta.get("config", {})
    report: dict = {}
    crossings = layer_sensitivity_crossings(rows, float(cfg.get("ppl_threshold", 2.0)))
    if crossings:
        report["crossings"] = crossings
    cells = layer_sensitivity_cells(rows)
    if cells:
        clean = [r for r in rows if r["target"] == "clean"]
        by_proj = {p: median_ci([c["delta_nll"] for c in cs]).median for p, cs in group_by(cells, "projection").items()}
        by_block = {b: median_ci([c["delta_nll"] for c in cs]).median for b, cs in group_by(cells, "block").items()}
        top = sorted(cells, key=lambda c: -c["delta_nll"] if math.isfinite(c["delta_nll"]) else -math.inf)[:5]
        report["heatmap"] = {
            "noise_level": cells[0]["sigma"], "eval_tokens": cells[0]["eval_tokens"], "n_cells": len(cells),
            "clean_perplexity": clean[0]["perplexity"] if clean else None,
            "median_delta_nll_by_projection": by_proj, "median_delta_nll_by_block": by_block,
            "median_delta_nll_per_mparam_by_projection": {
                p: median_ci([c["delta_nll_per_mparam"] for c in cs]).median
                for p, cs in group_by(cells, "projection").items()},
            "top_cells": [{k: c[k] for k in ("target", "delta_nll", "ci_low", "ci_high")} for c in top]}
    return report


def format_layer_sensitivity(report: dict) -> str:
    """Console text: crossing sigma and energy per group; per-projection heatmap medians and the top cells."""
    lines = []
    cr = report.get("crossings", [])
    if cr:
        cov = min(c["coverage"] for c in cr)
        lines += [f"{'group':>12} {'noised params':>14} {'sigma at threshold':>19} {f'{cov:.0%} CI':>19} "
                  f"{'energy sigma^2*N':>17} {f'{cov:.0%} CI':>23}", "-" * 110]
        for c in cr:
            lines.append(f"{c['target']:>12} {c['n_params']:>14,} {_fmt_cross(c['sigma_cross'], c):>19} "
                         f"{'[' + _fmt_cross(c['ci_low'], c) + ', ' + _fmt_cross(c['ci_high'], c) + ']':>19} "
                         f"{c['energy_cross']:>17.4g} {'[' + format(c['energy_low'], '.4g') + ', ' + format(c['energy_high'], '.4g') + ']':>23}")
        c0 = cr[0]
        lines.append(f"(threshold {c0['threshold'] / c0['clean_perplexity']:.3g} x clean perplexity "
                     f"{c0['clean_perplexity']:.4g} on {c0['eval_tokens']} tokens; {c0['n_trials']} realizations per "
                     "level; lower energy at the crossing = more sensitive per unit of injected noise)")
    hm = report.get("heatmap")
    if hm:
        lines += ["", f"heatmap: one projection of one block at sigma {hm['noise_level']:g}, {hm['n_cells']} cells, "
                  f"{hm['eval_tokens']} tokens (clean perplexity {hm['clean_perplexity']:.4g})",
                  f"{'projection':>10} {'median dNLL over blocks':>24} {'per 1e6 weights':>16}"]
        for p, v in hm["median_delta_nll_by_projection"].items():
            lines.append(f"{p:>10} {v:>24.4f} {hm['median_delta_nll_per_mparam_by_projection'][p]:>16.4f}")
        lines.append("most damaging cells: " + ", ".join(f"{c['target']} {c['delta_nll']:.3f}" for c in hm["top_cells"]))
    return "\n".join(lines)


def _fmt_cross(x: float, c: dict) -> str:
    return f"> {c['max_sigma']:.3g}" if not math.isfinite(x) else f"{x:.4g}"


def plot(run_dir: str | Path) -> list[Path]:
    """layer_sensitivity_groups.png and layer_sensitivity_heatmap.png (whichever parts the run has).

    Writes summary.csv (per target and sigma), crossings.csv and heatmap.csv next to results.csv.
    """
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
    cfg = meta.get("config", {})
    figures = []
    table = []
    for target, group in group_by(rows, "target").items():
        for s in summarize_levels(group, "perplexity") + summarize_levels(group, "delta_nll"):
            table.append({"mode": group[0]["mode"], "target": target, **s})
    if table:
        write_table(run_dir / "summary.csv", table)
    report = layer_sensitivity_report(run_dir)
    crossings = report.get("crossings", [])
    if crossings:
        write_table(run_dir / "crossings.csv", [{k: v for k, v in c.items() if k != "per_trial"} for c in crossings])
        figures.append(_plot_groups(run_dir, rows, crossings, cfg, meta))
    cells = layer_sensitivity_cells(rows)
    if cells:
        write_table(run_dir / "heatmap.csv", cells)
        figures.append(_plot_heatmap(run_dir, cells, report["heatmap"], cfg))
    return figures


def _plot_groups(run_dir: Path, rows, crossings, cfg, meta) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    scale = cfg.get("scale", "relative")
    for i, c in enumerate(crossings):
        group = [r for r in rows if r["target"] == c["target"] and r["sigma"] > 0]
        summary = summarize_levels(group, "perplexity")
        xs = [s["sigma"] for s in summary]
        color = colors[i % len(colors)]
        band(axes[0], xs, summary, f"{c['target']} ({c['n_params'] / 1e6:.1f}M)", color=color, log_y=True)
        band(axes[1], [x * x * c["n_params"] for x in xs], summary, c["target"], color=color, log_y=True)
        if math.isfinite(c["sigma_cross"]):
            axes[0].axvline(c["sigma_cross"], color=color, ls=":", lw=1)
        lo = c["energy_cross"] - c["energy_low"] if math.isfinite(c["energy_low"]) else 0
        hi = c["energy_high"] - c["energy_cross"] if math.isfinite(c["energy_high"]) else 0
        if math.isfinite(c["energy_cross"]):
            axes[2].bar(i, c["energy_cross"], color=color, alpha=0.8)
            axes[2].errorbar(i, c["energy_cross"], yerr=[[lo], [hi]], color="black", capsize=5)
        label = (f"sigma* {_fmt_cross(c['sigma_cross'], c)}\n[{_fmt_cross(c['ci_low'], c)}, {_fmt_cross(c['ci_high'], c)}]"
                 f"\nN = {c['n_params'] / 1e6:.1f}M")
        axes[2].annotate(label, (i, 0), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=7.5,
                         color="white" if math.isfinite(c["energy_cross"]) else "black")
    c0 = crossings[0]
    for ax in axes[:2]:
        ax.axhline(c0["threshold"], color="red", ls="--", lw=1, label=f"threshold ({c0['threshold']:.3g})")
        ax.axhline(c0["clean_perplexity"], color="gray", ls="--", lw=1, label=f"clean ({c0['clean_perplexity']:.3g})")
        ax.set_ylabel("perplexity")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5)
    sigma_axis(axes[0], sorted({r["sigma"] for r in rows if r["mode"] == "groups"}), meta)
    if cfg.get("spacing", "log") == "log":
        axes[0].set_xscale("log")
        axes[0].xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        axes[0].xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    unit = "weight variance" if scale == "relative" else ("weight units^2" if scale == "absolute" else f"{scale} unit^2")
    axes[1].set_xscale("log")
    axes[1].set_xlabel(f"noise energy sigma^2 x N ({unit})")
    axes[2].set_xticks(range(len(crossings)), [c["target"] for c in crossings])
    axes[2].set_ylabel(f"noise energy at the threshold ({unit})")
    axes[2].set_title("lower = more sensitive per unit of noise", fontsize=9)
    axes[2].grid(alpha=0.3, axis="y")
    fig.suptitle(f"{cfg.get('model', '?')}: {cfg.get('noise_type')} noise ({scale}) on one group at a time, "
                 f"{c0['n_trials']} realizations per level, perplexity on {c0['eval_tokens']} tokens; "
                 f"threshold {cfg.get('ppl_threshold')} x clean", fontsize=10.5)
    return save_figure(fig, run_dir / "layer_sensitivity_groups.png")


def _plot_heatmap(run_dir: Path, cells, hm: dict, cfg) -> Path:
    import matplotlib.colors as mcolors

    blocks = sorted({c["block"] for c in cells})
    projs = list(dict.fromkeys(c["projection"] for c in cells))
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.6 + 0.27 * len(blocks)))
    panels = (("delta_nll", "ln(ppl / clean ppl), nats per token (log colour)"),
              ("delta_nll_per_mparam", "the same per 10^6 noised weights (log colour)"))
    for ax, (field, title) in zip(axes, panels):
        grid = np.full((len(blocks), len(projs)), np.nan)
        for c in cells:
            grid[blocks.index(c["block"]), projs.index(c["projection"])] = c[field]
        finite = grid[np.isfinite(grid)]
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        vmin = vmax / 1000  # log colour scale over three decades; values <= vmin (also < 0) get its colour
        shown = np.where(np.isinf(grid), vmax, np.clip(np.nan_to_num(grid, nan=vmin), vmin, None))
        im = ax.imshow(np.ma.masked_where(np.isnan(grid), shown), cmap="YlOrRd",
                       norm=mcolors.LogNorm(vmin=vmin, vmax=vmax), aspect="auto")
        for (y, x), v in np.ndenumerate(grid):
            if np.isnan(v):
                continue  # cell not run
            text = "inf" if np.isinf(v) else (f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3f}")
            ax.text(x, y, text, ha="center", va="center", fontsize=6,
                    color="white" if not np.isfinite(v) or v > vmax / 10 else "black")
        ax.set_xticks(range(len(projs)), projs)
        ax.set_yticks(range(len(blocks)), blocks)
        ax.set_xlabel("projection")
        ax.set_ylabel("block")
        ax.set_title(title, fontsize=9.5)
        fig.colorbar(im, ax=ax, shrink=0.8)
    n = cells[0]["n_trials"]
    fig.suptitle(f"{cfg.get('model', '?')}: {cfg.get('noise_type')} noise ({cfg.get('scale')}) sigma "
                 f"{hm['noise_level']:g} on one tensor at a time; median of {n} realizations; "
                 f"{hm['eval_tokens']} tokens, clean perplexity {hm['clean_perplexity']:.4g}", fontsize=10)
    return save_figure(fig, run_dir / "layer_sensitivity_heatmap.png")
