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
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .results import RESULTS_CSV, RUN_JSON, format_value, read_rows  # noqa: E402
from .stats import group_by, summarize_levels, threshold_crossings  # noqa: E402

# Quality labels of the original toolkit, assigned from median perplexity / clean perplexity.
QUALITY_LABELS = ((1.5, "coherent"), (3.0, "creative jitter"), (10.0, "degraded"), (math.inf, "gibberish"))


# Experiment name (as recorded in run.json) -> function that redraws its figures from a run
# folder: ``plot(run_dir) -> list[Path]`` of PNGs written into run_dir. ``generate_graphs`` calls
# it. Register with ``@register_plot("name")``; a function named ``plot_<name>`` is found
# without registering.
PLOTTERS: dict[str, Callable[[Path], list[Path]]] = {}


def register_plot(experiment: str):
    """Decorator: ``@register_plot("layer_sensitivity")`` above the experiment's plot function."""
    def deco(fn):
        if PLOTTERS.get(experiment, fn) is not fn:
            raise ValueError(f"a plot function for '{experiment}' is already registered")
        PLOTTERS[experiment] = fn
        return fn
    return deco


def plotter_for(experiment: str) -> Callable[[Path], list[Path]] | None:
    """The registered plot function of ``experiment``, else ``plot_<experiment>``, else None."""
    fn = PLOTTERS.get(experiment) or globals().get(f"plot_{experiment}")
    return fn if callable(fn) else None


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
                  name: str = "summary.csv", group: str | None = None) -> Path:
    """Per-level medians and CIs of ``metrics`` as a tidy CSV next to results.csv.

    ``group`` (e.g. ``"model"``): summarize each value of that column separately, as a first column.
    """
    path = Path(run_dir) / name
    groups = group_by(rows, group) if group else {None: rows}
    table = [({group: g} if group else {}) | s for g, part in groups.items() for m in metrics
             for s in summarize_levels(part, m, by)]
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


@register_plot("sweep")
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


# --- llama_scaling: several models under the same relative noise ---------------------------------

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


def _level_ticks(ax, sigmas: Sequence[float]) -> None:
    """Label the x axis at the sweep's own levels (a log axis otherwise labels only powers of 10)."""
    ticks = sorted({s for s in sigmas if s > 0})
    if 1 < len(ticks) <= 12:
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks], fontsize=8)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _write_table(path: Path, table: Sequence[dict]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0].keys()), lineterminator="\n")
        writer.writeheader()
        for r in table:
            writer.writerow({k: format_value(v) for k, v in r.items()})
    return path


def _fmt_sigma_ci(c: dict) -> str:
    def f(v):
        return "beyond" if not math.isfinite(v) else f"{v:.3g}"
    return f"{f(c['crossing_median'])} [{f(c['crossing_ci_low'])}, {f(c['crossing_ci_high'])}]"


@register_plot("llama_scaling")
def plot_llama_scaling(run_dir: str | Path, name: str = "llama_scaling.png") -> list[Path]:
    """Perplexity / clean and bits per byte against relative sigma, one band per model, and the
    perplexity-doubling sigma against parameter count; writes summary.csv and crossings.csv."""
    run_dir = Path(run_dir)
    meta, rows = load_run(run_dir)
    cfg = meta.get("config", {})
    factor = float(cfg.get("ppl_threshold", 2.0))
    write_summary(run_dir, rows, ("perplexity", "bits_per_byte"), group="model")
    crossings = scaling_crossings(rows, factor)
    _write_table(run_dir / "crossings.csv", crossings)
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
        _sigma_axis(ax, sigmas, meta)
        _level_ticks(ax, sigmas)
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
    fig.tight_layout()
    path = run_dir / name
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


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


# --- several sweeps on one figure (e.g. the five noise types) --------------------------------------

def _varying_key(metas: Sequence[dict]) -> str | None:
    """The config key whose value differs between runs (noise_type preferred)."""
    cfgs = [m.get("config", {}) for m in metas]
    keys = [k for k in ("noise_type", "scale", "targets", "model") if len({str(c.get(k)) for c in cfgs}) > 1]
    keys += sorted(k for k in set().union(*cfgs) if k not in keys and k not in ("out", "output", "quiet", "argv")
                   and len({json.dumps(c.get(k), default=str) for c in cfgs}) > 1)
    return keys[0] if keys else None


def plot_noise_types(run_dirs: Sequence[str | Path], path: str | Path, metric: str = "perplexity") -> Path:
    """Median ``metric`` (band: CI over realizations) against sigma for several sweep folders on
    one axis, labelled by the config key that differs between them (the noise type). Trials
    that gave inf/nan are marked with red 'x', never dropped."""
    runs = sorted((load_run(d) for d in run_dirs), key=lambda mr: str(mr[0].get("config", {}).get("noise_type")))
    key = _varying_key([m for m, _ in runs]) or "noise_type"
    fig, ax = plt.subplots(figsize=(9, 5.5))
    sigmas, clean_done = [], False
    for meta, rows in runs:
        cfg = meta.get("config", {})
        noisy = [r for r in rows if r["sigma"] > 0]
        if not noisy:
            continue
        summary = summarize_levels(noisy, metric)
        label = str(cfg.get(key))
        if key == "noise_type" and cfg.get("noise_type") == "student_t":
            label += f" (df={cfg.get('df') or 3:g})"
        band(ax, [s["sigma"] for s in summary], summary, label, log_y=metric in ("perplexity", "nll"))
        sigmas += [s["sigma"] for s in summary]
        clean = [r for r in rows if r["sigma"] == 0]
        if clean and not clean_done:
            c = summarize_levels(clean, metric)[0]
            ax.axhline(c["median"], color="gray", ls="--", lw=1, label=f"clean ({c['median']:.3g})")
            clean_done = True
    meta0 = runs[0][0] if runs else {}
    _sigma_axis(ax, sorted(set(sigmas)), meta0)
    _level_ticks(ax, sigmas)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    cfg = meta0.get("config", {})
    tokens = sorted({r.get("eval_tokens") for _, rows in runs for r in rows})
    ax.set_title(f"{cfg.get('model', '?')}: {len(runs)} runs by {key}, {cfg.get('scale')} scale on {cfg.get('targets')}, "
                 f"{cfg.get('n_trials')} realizations per level, {metric} on {tokens[0] if len(tokens) == 1 else tokens} "
                 "tokens\nsigma is each distribution's scale parameter (gaussian: std; uniform: half-width; "
                 "laplacian: b; cauchy: HWHM; student_t: scale)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
