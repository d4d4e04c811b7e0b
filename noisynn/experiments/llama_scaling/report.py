"""Report of a llama_scaling run folder (no torch): the doubling sigma per model, its table and figure.

Per model, the sigma where perplexity reaches ``--ppl_threshold`` x clean (median and CI over realizations),
the figure and the console table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib.ticker

from ...plotting import band, level_ticks, plt, save_figure, sigma_axis, write_summary, write_table
from ...runs.schema import format_value
from ...runs.read import read_run
from ...stats import group_by, summarize_levels, threshold_crossings


def scaling_crossings(rows: Sequence[dict], factor: float = 2.0) -> list[dict]:
    """Per model (smallest first): clean perplexity and bits/byte, and the sigma at which
    perplexity reaches ``factor`` x clean, per trial then median and CI (``threshold_crossings``)."""
    out = []
    for model, part in group_by(rows, "model").items():
        clean = [r for r in part if r["sigma"] == 0]
        cross = threshold_crossings(part, factor)
        out.append({"model": model, "n_params": part[0]["n_params"], "noised_params": part[0]["noised_params"],
                    "clean_perplexity": cross["baseline"],
                    "clean_bits_per_byte": summarize_levels(clean, "bits_per_byte")[0]["median"] if clean else math.nan,
                    "eval_tokens": part[0]["eval_tokens"], "eval_bytes": part[0]["eval_bytes"],
                    "factor": factor, "crossing_median": cross["median"], "crossing_ci_low": cross["ci_low"],
                    "crossing_ci_high": cross["ci_high"], "coverage": cross["coverage"], "n_trials": cross["n_trials"],
                    "n_not_reached": cross["n_not_reached"],
                    "crossing_per_trial": " ".join(format_value(v) for _, v in sorted(cross["per_trial"].items()))})
    return sorted(out, key=lambda c: c["n_params"])


def _short(model: str) -> str:
    """A model's name for a legend: a local path by its last part."""
    return Path(model).name if "/" in model and Path(model).exists() else model


def _count(n: float) -> str:
    """1.7B, 135M, 27k."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}" if n / div < 10 else f"{n / div:.0f}{unit}"
    return f"{n:.0f}"


def _fmt_sigma_ci(c: dict) -> str:
    def f(v):
        return "beyond" if not math.isfinite(v) else f"{v:.3g}"
    return f"{f(c['crossing_median'])} [{f(c['crossing_ci_low'])}, {f(c['crossing_ci_high'])}]"


def plot(run_dir: str | Path, name: str = "llama_scaling.png") -> list[Path]:
    """Perplexity / clean and bits per byte against relative sigma, one band per model, and the
    perplexity-doubling sigma against parameter count; writes summary.csv and crossings.csv."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
    cfg = meta.get("config", {})
    factor = float(cfg.get("ppl_threshold", 2.0))
    write_summary(run_dir, rows, ("perplexity", "bits_per_byte"), group="model")
    crossings = scaling_crossings(rows, factor)
    write_table(run_dir / "crossings.csv", crossings)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.15, 1.15, 0.9]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    by_model = group_by(rows, "model")
    for i, c in enumerate(crossings):
        part = by_model[c["model"]]
        noisy = [r for r in part if r["sigma"] > 0]
        color = colors[i % len(colors)]
        label = f"{_short(c['model'])} ({_count(c['n_params'])} params)"
        ppl = summarize_levels(noisy, "perplexity")
        ratio = [{**s, **{k: s[k] / c["clean_perplexity"] for k in ("median", "ci_low", "ci_high")}} for s in ppl]
        band(axes[0], [s["sigma"] for s in ratio], ratio, label, color=color, log_y=True)
        if math.isfinite(c["crossing_median"]):
            lo, hi = c["crossing_ci_low"], c["crossing_ci_high"]
            hi = hi if math.isfinite(hi) else max(s["sigma"] for s in ratio)
            axes[0].errorbar([c["crossing_median"]], [factor], xerr=[[c["crossing_median"] - lo], [hi - c["crossing_median"]]],
                             fmt="D", color=color, ms=6, capsize=4, zorder=5)
        bpb = summarize_levels(noisy, "bits_per_byte")
        band(axes[1], [s["sigma"] for s in bpb], bpb, label, color=color)
        axes[1].axhline(c["clean_bits_per_byte"], color=color, ls=":", lw=1)
        if math.isfinite(c["crossing_median"]):
            hi = c["crossing_ci_high"] if math.isfinite(c["crossing_ci_high"]) else c["crossing_median"]
            axes[2].errorbar([c["n_params"]], [c["crossing_median"]],
                             yerr=[[c["crossing_median"] - c["crossing_ci_low"]], [hi - c["crossing_median"]]],
                             fmt="o", color=color, ms=7, capsize=5)
            axes[2].annotate(f"{_short(c['model'])}\n({_count(c['noised_params'])} noised)",
                             (c["n_params"], c["crossing_median"]), textcoords="offset points", xytext=(7, -4),
                             fontsize=8)
        else:
            axes[2].annotate(f"{_short(c['model'])}: not reached", (0.05, 0.9 - 0.07 * i), xycoords="axes fraction",
                             fontsize=8, color=color)
    axes[0].axhline(factor, color="gray", ls="--", lw=1, label=f"{factor:g} x clean (diamond: median crossing, CI)")
    axes[0].set_ylabel("perplexity / clean perplexity")
    axes[1].set_ylabel("bits per byte (dotted: clean)")
    sigmas = sorted({r["sigma"] for r in rows if r["sigma"] > 0})
    for ax in axes[:2]:
        sigma_axis(ax, sigmas, meta)
        level_ticks(ax, sigmas)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[2].set_xscale("log")
    if crossings:
        sizes = [c["n_params"] for c in crossings]
        axes[2].set_xlim(min(sizes) / 1.6, max(sizes) * 2.5)
        tops = [c["crossing_ci_high"] for c in crossings if math.isfinite(c["crossing_ci_high"])]
        if tops:  # from 0, so that equal robustness looks equal
            axes[2].set_ylim(0, max(tops) * 1.25)
        axes[2].set_xticks(sorted(set(sizes)), [_count(v) for v in sorted(set(sizes))])
    axes[2].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[2].set_xlabel("parameters (all; noised in brackets)")
    axes[2].set_ylabel(f"sigma where perplexity reaches {factor:g} x clean")
    axes[2].grid(alpha=0.3, which="both")
    axes[2].set_title("median over realizations, CI bars", fontsize=9)
    tokens = ", ".join(f"{_short(c['model'])}: {c['eval_tokens']}" for c in crossings)
    fig.suptitle(f"{cfg.get('noise_type')} noise ({cfg.get('scale')}) on {cfg.get('targets')}, {cfg.get('n_trials')} "
                 f"realizations per level; every model scores the same {cfg.get('eval_chars', '?')} characters of text "
                 f"(tokens scored: {tokens})", fontsize=10)
    return [save_figure(fig, run_dir / name)]


def format_scaling_table(rows: Sequence[dict], factor: float = 2.0) -> str:
    """Console table: per model, size, clean perplexity and bits/byte, and the crossing sigma."""
    crossings = scaling_crossings(rows, factor)
    cov = min((c["coverage"] for c in crossings), default=0)
    lines = [f"{'model':<28} {'params':>8} {'noised':>8} {'tokens':>6} {'clean ppl':>9} {'bits/byte':>9}  "
             f"sigma at {factor:g}x ppl, median [{cov:.0%} CI]  per trial", "-" * 118]
    for c in crossings:
        per = ", ".join("beyond" if v == "nan" else f"{float(v):.3g}" for v in c["crossing_per_trial"].split())
        lines.append(f"{c['model']:<28} {c['n_params'] / 1e6:>7.1f}M {c['noised_params'] / 1e6:>7.1f}M "
                     f"{c['eval_tokens']:>6} {c['clean_perplexity']:>9.3f} {c['clean_bits_per_byte']:>9.3f}  "
                     f"{_fmt_sigma_ci(c):<34} {per}")
    lines.append(f"(relative sigma = noise std / weight std per tensor; perplexity and bits/byte on the same "
                 f"{crossings[0]['eval_bytes'] if crossings else '?'} bytes of text; 'beyond' = not reached "
                 "within the sweep)")
    return "\n".join(lines)
