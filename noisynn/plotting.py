"""Figures and tables from saved run folders only (reads results.csv and run.json; no torch).

Every curve is the median across noise realizations with a shaded band: the order-statistic
confidence interval of the median (see ``stats``), whose coverage is printed in the legend.
Points where some trials produced inf/nan are marked with a red 'x' and a count, never dropped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .errors import NoisyNNError  # noqa: E402
from .results import RESULTS_CSV, format_value, read_rows, read_run, read_samples, replace_atomic  # noqa: E402
from .stats import group_by, log_crossing, median_ci, summarize_levels, threshold_crossings  # noqa: E402

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
    """(run.json, results.csv rows) of a run folder, by the one defensive reader ``results.read_run``."""
    run = read_run(run_dir)
    return run.meta, run.rows


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
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        replace_atomic(path, text)
    return path


def realizations_note(meta: dict, rows: Sequence[dict], by: str = "sigma") -> str:
    """'N realizations per level' counted from the rows (not the config), plus
    'incomplete: k of n points' for a half-written run."""
    counts = sorted({len(g) for g in group_by(rows, by).values()}) if rows else [0]
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    from .results import Run

    progress = Run(Path("."), meta, list(rows)).progress_note()
    return f"{n} realizations per level" + (f" ({progress})" if progress else "")


def write_summary(run_dir: Path, rows: Sequence[dict], metrics: Sequence[str], by: str = "sigma",
                  name: str = "summary.csv", group: str | None = None) -> Path:
    """Per-level medians and CIs of ``metrics`` as a tidy CSV next to results.csv.

    ``group`` (e.g. ``"model"``): summarize each value of that column separately, as a first column.
    """
    groups = group_by(rows, group) if group else {None: rows}
    table = [({group: g} if group else {}) | s for g, part in groups.items() for m in metrics
             for s in summarize_levels(part, m, by)]
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
    if not rows:
        raise NoisyNNError(f"{run_dir / RESULTS_CSV} holds no finished rows yet")
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
                 f"{realizations_note(meta, rows)}, perplexity on {tokens[0] if tokens else '?'} tokens",
                 fontsize=11)
    return [save_figure(fig, run_dir / name)]


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


# --- several sweeps on one figure (e.g. the five noise types) --------------------------------------

def _varying_key(metas: Sequence[dict]) -> str | None:
    """The config key whose value differs between runs (noise_type preferred)."""
    cfgs = [m.get("config", {}) for m in metas]
    keys = [k for k in ("noise_type", "scale", "targets", "model") if len({str(c.get(k)) for c in cfgs}) > 1]
    keys += sorted(k for k in set().union(*cfgs) if k not in keys and k not in ("out", "output", "quiet", "argv")
                   and len({json.dumps(c.get(k), default=str) for c in cfgs}) > 1)
    return keys[0] if keys else None


def _runs_note(runs) -> str:
    """Realizations per level over several runs, and which of them are incomplete."""
    rows = [{**r, "_level": (i, r["sigma"])} for i, (_, part) in enumerate(runs) for r in part]
    counts = sorted({len(g) for g in group_by(rows, "_level").values()}) or [0]
    note = f"{counts[0] if len(counts) == 1 else f'{counts[0]}-{counts[-1]}'} realizations per level"
    from .results import Run

    partial = [f"{m.get('config', {}).get('noise_type')} {Run(Path('.'), m, list(r)).progress_note()}"
               for m, r in runs if not Run(Path("."), m, list(r)).complete]
    return note + (f" ({'; '.join(partial)})" if partial else "")


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
                 f"{_runs_note(runs)}, {metric} on {tokens[0] if len(tokens) == 1 else tokens} "
                 "tokens\nsigma is each distribution's scale parameter (gaussian: std; uniform: half-width; "
                 "laplacian: b; cauchy: HWHM; student_t: scale)", fontsize=9)
    return save_figure(fig, path)


# --- layer_sensitivity ----------------------------------------------------------------------

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
    meta, rows = load_run(run_dir)
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


def plot_layer_sensitivity(run_dir: str | Path) -> list[Path]:
    """layer_sensitivity_groups.png and layer_sensitivity_heatmap.png (whichever parts the run has).

    Writes summary.csv (per target and sigma), crossings.csv and heatmap.csv next to results.csv.
    """
    run_dir = Path(run_dir)
    meta, rows = load_run(run_dir)
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
    _sigma_axis(axes[0], sorted({r["sigma"] for r in rows if r["mode"] == "groups"}), meta)
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


# --- optimal_jitter -------------------------------------------------------------------------

def jitter_zone(rows: Sequence[dict], max_ppl_ratio: float) -> dict:
    """The Goldilocks zone of an optimal_jitter run, by the rule stated in its README section.

    A sigma > 0 qualifies when its median distinct-2 exceeds the clean model's median by more
    than the clean model's across-seed spread (max - min of its trials) and its median
    perplexity is <= ``max_ppl_ratio`` x the clean perplexity. ``zone`` is [lowest, highest]
    qualifying sigma, or None when no sigma qualifies.
    """
    clean = [r for r in rows if r["sigma"] == 0]
    if not clean:
        raise ValueError("the run has no clean (sigma 0) rows")
    d2_clean = [r["distinct_2"] for r in clean]
    clean_d2 = median_ci(d2_clean, nonfinite_as_inf=False).median
    spread = float(max(d2_clean) - min(d2_clean))
    clean_ppl = median_ci([r["perplexity"] for r in clean]).median
    d2 = {s["sigma"]: s for s in summarize_levels(rows, "distinct_2")}
    ppl = {s["sigma"]: s for s in summarize_levels(rows, "perplexity")}
    levels = []
    for sigma in sorted(s for s in d2 if s > 0):
        ratio = ppl[sigma]["median"] / clean_ppl
        more = d2[sigma]["median"] > clean_d2 + spread
        within = ratio <= max_ppl_ratio
        levels.append({"sigma": sigma, "distinct_2": d2[sigma]["median"], "ppl_ratio": ratio,
                       "diverse": bool(more), "within_bound": bool(within), "in_zone": bool(more and within)})
    inside = [lv["sigma"] for lv in levels if lv["in_zone"]]
    within = [lv for lv in levels if lv["within_bound"]]
    best = max(within, key=lambda lv: lv["distinct_2"]) if within else None
    if inside:
        idx = [i for i, lv in enumerate(levels) if lv["in_zone"]]
        verdict = (f"Goldilocks zone: sigma {min(inside):.4g} to {max(inside):.4g} ({len(inside)} of {len(levels)} "
                   f"searched sigmas{'' if idx == list(range(idx[0], idx[-1] + 1)) else ', not contiguous'}): "
                   f"median distinct-2 above {clean_d2 + spread:.3f} with perplexity <= {max_ppl_ratio} x clean")
    elif not within:
        verdict = (f"no Goldilocks zone for this model: every searched sigma raises median perplexity above "
                   f"{max_ppl_ratio} x clean")
    else:
        verdict = (f"no Goldilocks zone for this model: within the perplexity bound ({max_ppl_ratio} x clean, "
                   f"sigma <= {max(lv['sigma'] for lv in within):.4g}) median distinct-2 reaches at most "
                   f"{best['distinct_2']:.3f} (sigma {best['sigma']:.4g}), not above the clean {clean_d2:.3f} + "
                   f"spread {spread:.3f} = {clean_d2 + spread:.3f}")
    return {"zone": [min(inside), max(inside)] if inside else None, "sigmas_in_zone": inside, "found": bool(inside),
            "verdict": verdict, "clean_distinct_2": clean_d2, "clean_spread": spread,
            "clean_perplexity": clean_ppl, "max_ppl_ratio": max_ppl_ratio, "levels": levels,
            "n_trials": len(clean), "eval_tokens": clean[0]["eval_tokens"]}


def format_jitter(zone: dict) -> str:
    """Console table of an optimal_jitter zone analysis and its verdict."""
    lines = [f"{'sigma':>9} {'distinct-2 (median)':>20} {'ppl / clean':>12}  diverse  within bound",
             "-" * 66,
             f"{0:>9} {zone['clean_distinct_2']:>20.3f} {1:>12.3f}  (clean; across-seed spread {zone['clean_spread']:.3f})"]
    for lv in zone["levels"]:
        lines.append(f"{lv['sigma']:>9.4g} {lv['distinct_2']:>20.3f} {lv['ppl_ratio']:>12.3f}  "
                     f"{'yes' if lv['diverse'] else 'no':>7}  {'yes' if lv['within_bound'] else 'no':>12}")
    lines.append(f"({zone['n_trials']} realizations per sigma; perplexity on {zone['eval_tokens']} tokens, clean "
                 f"{zone['clean_perplexity']:.4g})")
    lines.append(zone["verdict"])
    return "\n".join(lines)


def plot_optimal_jitter(run_dir: str | Path, name: str = "optimal_jitter.png") -> list[Path]:
    """distinct-1/2/3 against sigma (bands), perplexity on a second panel, the zone shaded if found.

    Writes summary.csv too.
    """
    run_dir = Path(run_dir)
    meta, rows = load_run(run_dir)
    cfg = meta.get("config", {})
    write_summary(run_dir, rows, ("perplexity", "distinct_1", "distinct_2", "distinct_3", "repetition", "gen_tokens"))
    zone = jitter_zone(rows, float(cfg.get("max_ppl_ratio", 1.5)))
    clean = [r for r in rows if r["sigma"] == 0]
    noisy = [r for r in rows if r["sigma"] > 0]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, metric in enumerate(("distinct_1", "distinct_2", "distinct_3")):
        summary = summarize_levels(noisy, metric)
        band(axes[0], [s["sigma"] for s in summary], summary, metric.replace("_", "-"), color=colors[i])
        axes[0].axhline(summarize_levels(clean, metric)[0]["median"], color=colors[i], ls="--", lw=0.8)
    axes[0].axhline(zone["clean_distinct_2"] + zone["clean_spread"], color=colors[1], ls=":", lw=1.2,
                    label=f"clean distinct-2 + spread ({zone['clean_distinct_2'] + zone['clean_spread']:.3f})")
    axes[0].set_ylabel("distinct-n of sampled text (dashed: clean)")
    summary = summarize_levels(noisy, "perplexity")
    band(axes[1], [s["sigma"] for s in summary], summary, "perplexity", color=colors[3], log_y=True)
    axes[1].axhline(zone["clean_perplexity"], color="gray", ls="--", lw=1, label=f"clean ({zone['clean_perplexity']:.3g})")
    axes[1].axhline(zone["max_ppl_ratio"] * zone["clean_perplexity"], color="red", ls="--", lw=1,
                    label=f"bound {zone['max_ppl_ratio']:g} x clean")
    axes[1].set_ylabel("perplexity")
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes[1].yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    sigmas = sorted({r["sigma"] for r in noisy})
    for ax in axes:
        if zone["found"]:
            step = (sigmas[1] - sigmas[0]) / 2 if len(sigmas) > 1 else 0
            for s in zone["sigmas_in_zone"]:
                ax.axvspan(s - step, s + step, color="gold", alpha=0.25, lw=0)
            ax.axvspan(0, 0, color="gold", alpha=0.25, label="Goldilocks zone")
        _sigma_axis(ax, sigmas, meta)
        if cfg.get("spacing") == "log":
            ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5)
    n_prompts = len(cfg.get("prompts", [])) or "?"
    title = "\n".join(textwrap.wrap(zone["verdict"], 150))
    fig.suptitle(f"{cfg.get('model', '?')}: {cfg.get('noise_type')} noise ({cfg.get('scale')}) on {cfg.get('targets')}, "
                 f"{zone['n_trials']} realizations per sigma; distinct-n over {n_prompts} prompts x "
                 f"{cfg.get('n_samples')} samples x {cfg.get('max_new_tokens')} tokens; perplexity on "
                 f"{zone['eval_tokens']} tokens\n{title}", fontsize=9.5)
    return [save_figure(fig, run_dir / name)]


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
    return write_table(Path(run_dir) / name, table)


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


# ------------------------------------------------------------------------------- noise-aware training

NAT_COLORS = {"original": "tab:blue", "finetuned": "tab:green", "control": "tab:orange"}
NAT_LABELS = {"original": "original", "finetuned": "noise-aware fine-tuned", "control": "control (fine-tuned, no noise)"}


def _ci_dict(values, nonfinite_as_inf: bool = True) -> dict:
    from .stats import median_ci

    s = median_ci(values, nonfinite_as_inf=nonfinite_as_inf)
    return {"median": s.median, "ci_low": s.low, "ci_high": s.high, "coverage": round(s.coverage, 4),
            "n_trials": s.n, "n_nonfinite": s.n_nonfinite}


def _paired_ratios(rows: Sequence[dict], num: str, den: str) -> list[dict]:
    """Per sigma: perplexity(num) / perplexity(den) trial by trial (same noise seed), median and CI."""
    by = {(r["model_variant"], r["sigma"], r["trial"]): r for r in rows}
    out = []
    for sigma in sorted({r["sigma"] for r in rows}):
        vals = []
        for trial in sorted({r["trial"] for r in rows}):
            a, b = by.get((num, sigma, trial)), by.get((den, sigma, trial))
            if a and b:
                vals.append(math.exp(a["nll"] - b["nll"]) if np.isfinite([a["nll"], b["nll"]]).all() else float("nan"))
        if vals:
            out.append({"sigma": sigma, **_ci_dict(vals, nonfinite_as_inf=False)})
    return out


def noise_aware_report(run_dir: str | Path) -> dict:
    """The numbers of a noise-aware-training run, from its folder alone (also writes summary.csv).

    Per variant: clean perplexity, and the sigma at which perplexity doubles (its own clean
    value x 2, and the original's clean value x 2), each per trial (log-interpolated) with the
    median and CI over trials. Per sigma: paired perplexity ratios original / fine-tuned and
    control / fine-tuned (> 1: the noise-trained model is better), computed trial by trial
    on the same noise realization.
    """
    from .stats import log_crossing, median_ci

    run_dir = Path(run_dir)
    meta, rows = load_run(run_dir)
    variants = [v for v in ("original", "finetuned", "control") if any(r["model_variant"] == v for r in rows)]
    table = []
    for v in variants:
        for metric in ("perplexity", "bits_per_byte"):
            table += [{"model_variant": v, **s} for s in summarize_levels([r for r in rows if r["model_variant"] == v], metric)]
    write_table(run_dir / "summary.csv", table)
    sigmas = sorted({r["sigma"] for r in rows})
    clean = {v: float(np.median([r["perplexity"] for r in rows if r["model_variant"] == v and r["sigma"] == 0]))
             for v in variants} if 0.0 in sigmas else {}
    out_variants = {}
    for v in variants:
        entry = {"clean_perplexity": clean.get(v, float("nan"))}
        for name, threshold in (("sigma_2x_own_clean", 2 * clean.get(v, float("nan"))),
                                ("sigma_2x_original_clean", 2 * clean.get("original", float("nan")))):
            crossings = []
            for trial in sorted({r["trial"] for r in rows}):
                pts = sorted((r["sigma"], r["perplexity"]) for r in rows if r["model_variant"] == v and r["trial"] == trial)
                if pts and math.isfinite(threshold):
                    crossings.append(log_crossing([p[0] for p in pts], [p[1] for p in pts], threshold))
            entry[name] = {**_ci_dict(crossings), "beyond_max_noise": sum(1 for c in crossings if not math.isfinite(c))}
        out_variants[v] = entry
    per_sigma = {s["sigma"]: {"sigma": s["sigma"]} for s in summarize_levels(rows, "perplexity")}
    for v in variants:
        for s in summarize_levels([r for r in rows if r["model_variant"] == v], "perplexity"):
            per_sigma[s["sigma"]][v] = {k: s[k] for k in ("median", "ci_low", "ci_high", "n_nonfinite")}
    for num in ("original", "control"):
        if num in variants and "finetuned" in variants:
            for s in _paired_ratios(rows, num, "finetuned"):
                per_sigma[s["sigma"]][f"{num}_over_finetuned"] = {k: s[k] for k in ("median", "ci_low", "ci_high")}
    cfg = meta.get("config", {})
    tokens = sorted({r["eval_tokens"] for r in rows})
    report = {"eval_tokens": tokens[0] if len(tokens) == 1 else tokens,
              "n_trials": len({r["trial"] for r in rows}),
              "coverage": round(median_ci([0.0] * len({r["trial"] for r in rows})).coverage, 4),  # of n trials
              "noise": {k: cfg.get(k) for k in ("noise_type", "scale", "targets", "noise_level")},
              "train_tokens": meta.get("train_tokens"), "training": meta.get("training", {}),
              "clean_cost": {v: clean[v] / clean["original"] for v in variants if v != "original" and clean},
              "variants": out_variants, "levels": [per_sigma[s] for s in sorted(per_sigma)]}
    return report


def format_noise_aware_report(report: dict) -> str:
    """Console table of ``noise_aware_report``: medians per sigma and model, paired ratios, doubling points."""
    variants = list(report["variants"])
    cov = report["coverage"]
    head = f"{'sigma':>7} " + " ".join(f"{v + ' ppl':>16}" for v in variants)
    ratios = [k for k in ("original_over_finetuned", "control_over_finetuned") if any(k in lv for lv in report["levels"])]
    head += "".join(f" {k.replace('_over_', '/'):>26}" for k in ratios)
    lines = [head, "-" * len(head)]
    for lv in report["levels"]:
        cells = [f"{lv['sigma']:>7.4g}"] + [f"{lv[v]['median']:>16.4g}" if v in lv else f"{'-':>16}" for v in variants]
        for k in ratios:
            r = lv.get(k)
            cells.append(f"{r['median']:>9.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]".rjust(26) if r else f"{'-':>26}")
        lines.append(" ".join(cells))
    lines.append("")
    for v, e in report["variants"].items():
        def fmt(d):
            if not math.isfinite(d["median"]):
                return f"> max sigma ({d['beyond_max_noise']}/{d['n_trials']} trials never reach it)"
            return f"{d['median']:.4g} [{d['ci_low']:.4g}, {d['ci_high']:.4g}]"
        lines.append(f"{NAT_LABELS.get(v, v):>32}: clean perplexity {e['clean_perplexity']:.3f}; perplexity doubles "
                     f"(own clean x2) at sigma {fmt(e['sigma_2x_own_clean'])}; reaches 2x the original's clean at "
                     f"{fmt(e['sigma_2x_original_clean'])}")
    for v, c in report["clean_cost"].items():
        lines.append(f"clean-perplexity cost of {NAT_LABELS.get(v, v)}: x{c:.3f} ({(c - 1) * 100:+.1f}%)")
    lines.append(f"(paired ratios > 1 mean the noise-aware model is better at that sigma; medians over "
                 f"{report['n_trials']} noise realizations shared by all models, {cov:.0%} CI; perplexity on "
                 f"{report['eval_tokens']} held-out tokens; {report.get('train_tokens')} training tokens)")
    return "\n".join(lines)


@register_plot("noise_aware_training")
def plot_noise_aware_training(run_dir: str | Path, name: str = "noise_aware_training.png") -> list[Path]:
    """Perplexity vs sigma for each model (bands), paired ratios vs sigma, and the training loss."""
    run_dir = Path(run_dir)
    meta, rows = load_run(run_dir)
    report = noise_aware_report(run_dir)
    variants = list(report["variants"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    for v in variants:
        summary = summarize_levels([r for r in rows if r["model_variant"] == v], "perplexity")
        band(ax, [s["sigma"] for s in summary], summary, NAT_LABELS[v], color=NAT_COLORS[v], log_y=True)
    if "original" in report["variants"]:
        c = report["variants"]["original"]["clean_perplexity"]
        ax.axhline(2 * c, color="gray", ls="--", lw=1, label=f"2x original clean ({2 * c:.3g})")
    _sigma_axis(ax, sorted({r["sigma"] for r in rows}), meta)
    ax.set_ylabel("perplexity (held-out text)")
    ax.set_title("perplexity under weight noise")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[1]
    for num, color in (("original", NAT_COLORS["original"]), ("control", NAT_COLORS["control"])):
        ratios = _paired_ratios(rows, num, "finetuned") if num in variants and "finetuned" in variants else []
        if ratios:
            band(ax, [s["sigma"] for s in ratios], ratios, f"{num} / noise-aware", color=color)
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    _sigma_axis(ax, sorted({r["sigma"] for r in rows}), meta)
    ax.set_ylabel("perplexity ratio, same noise draw")
    ax.set_title("paired ratio (> 1: noise-aware model better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[2]
    training = read_rows(run_dir / "training.csv")
    for v in ("finetuned", "control"):
        hist = [r for r in training if r["variant"] == v]
        if hist:
            steps = np.array([h["step"] for h in hist])
            loss = np.array([h["loss"] for h in hist], dtype=float)
            ax.plot(steps, loss, color=NAT_COLORS[v], alpha=0.3, lw=0.8)
            k = max(1, len(loss) // 10)
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, color=NAT_COLORS[v], lw=2,
                    label=f"{NAT_LABELS[v]} ({'noisy' if v == 'finetuned' else 'clean'} loss, mean of {k})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title("fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    cfg = meta.get("config", {})
    tc = meta.get("training_config", {})
    fig.suptitle(f"{cfg.get('model', '?')}: noise-aware fine-tuning ({cfg.get('noise_type')} {cfg.get('scale')} "
                 f"sigma={cfg.get('noise_level')} on {cfg.get('targets')}, {tc.get('steps')} steps x "
                 f"{tc.get('batch_size')} x {tc.get('seq_len')} tokens, lr {tc.get('lr')}); "
                 f"{report['n_trials']} shared noise draws per level, perplexity on {report['eval_tokens']} tokens",
                 fontsize=10)
    return [save_figure(fig, run_dir / name)]


# ------------------------------------------------------------------------------- temporal drift

DRIFT_FLOORS = {"entropy_bits": 0.5, "logprob": 0.5}  # smaller total changes (bits, nats) count as flat
DRIFT_CLIFF_SHARE = 0.5
DRIFT_VERDICT_RULE = (
    "Per seed, smooth each trace (entropy in bits, log-prob of the chosen token in nats) with a centred rolling "
    "median of --window tokens; take the median of the smoothed traces across seeds at each step. Let R be its "
    "total range (max - min) and J its largest change between two points --window tokens apart, counted only in "
    "the direction of its net change from the first to the last token (a cliff is a sudden move towards where "
    "the trace ends up, not a bump the other way). If R is below "
    "the floor (0.5 bits / 0.5 nats) the metric is 'flat'; else it is a 'cliff' when J/R >= 0.5 (half or more "
    "of the whole change happens within one window) and 'gradual' otherwise. The schedule's verdict is 'cliff' "
    "if either metric is a cliff, 'gradual' if either is gradual, else 'flat'. For reference the same J/R is "
    "reported for the sigma schedule itself (about window/total_tokens for linear; 0.5 for step, whose two jumps "
    "are each half the range, so a metric that merely follows a step schedule reads 'cliff') and per seed.")


def load_samples(run_dir: str | Path) -> list[dict]:
    """The records of a run folder's samples.jsonl ([] if there is none)."""
    return read_samples(Path(run_dir) / "samples.jsonl")


def _direction(curve) -> int:
    """+1 if the curve ends above where it starts, -1 if below (finite points only), 0 if level."""
    arr = np.asarray(curve, dtype=float)
    arr = arr[np.isfinite(arr)]
    return int(np.sign(arr[-1] - arr[0])) if arr.size >= 2 else 0


def drift_verdicts(run_dir: str | Path) -> dict:
    """Gradual / cliff / flat per schedule, from a temporal-drift run folder alone (rule: DRIFT_VERDICT_RULE)."""
    from .stats import jump_share, rolling_median

    meta, rows = load_run(run_dir)
    window = int(meta.get("config", {}).get("window", 15))
    out = {}
    for name in dict.fromkeys(r["schedule"] for r in rows):
        part = [r for r in rows if r["schedule"] == name]
        steps = sorted({r["step"] for r in part})
        trials = sorted({r["trial"] for r in part})
        index = {s: i for i, s in enumerate(steps)}
        sigma = np.full(len(steps), np.nan)
        for r in part:
            sigma[index[r["step"]]] = r["sigma"]
        j_s, r_s, _ = jump_share(sigma, window)
        entry = {"n_seeds": len(trials), "n_steps": len(steps), "window": window,
                 "schedule_jump_share": j_s / r_s if r_s else float("nan"), "metrics": {}}
        for metric, floor in DRIFT_FLOORS.items():
            traces = np.full((len(trials), len(steps)), np.nan)
            for r in part:
                traces[trials.index(r["trial"]), index[r["step"]]] = float(r[metric])
            smooth = np.array([rolling_median(tr, window) for tr in traces])
            med = np.nanmedian(smooth, axis=0) if np.isfinite(smooth).any() else np.full(len(steps), np.nan)
            jump, total, at = jump_share(med, window, _direction(med))

            def classify(j, t):
                if not np.isfinite(t) or t < floor:
                    return "flat"
                return "cliff" if j / t >= DRIFT_CLIFF_SHARE else "gradual"

            per_seed = [classify(*jump_share(s, window, _direction(s))[:2]) for s in smooth]
            end = min(at + window, len(steps) - 1) if at >= 0 else -1
            entry["metrics"][metric] = {
                "verdict": classify(jump, total), "jump": jump, "range": total,
                "jump_share": jump / total if total else float("nan"),
                "jump_steps": [steps[at], steps[end]] if at >= 0 else None,
                "jump_sigmas": [float(sigma[at]), float(sigma[end])] if at >= 0 else None,
                "start": float(med[0]), "end": float(med[-1]),
                "seeds_cliff": per_seed.count("cliff"), "seeds_gradual": per_seed.count("gradual"),
                "seeds_flat": per_seed.count("flat")}
        verdicts = [m["verdict"] for m in entry["metrics"].values()]
        entry["verdict"] = "cliff" if "cliff" in verdicts else ("gradual" if "gradual" in verdicts else "flat")
        out[name] = entry
    return out


def format_drift_verdicts(verdicts: dict) -> str:
    lines = []
    for name, e in verdicts.items():
        lines.append(f"{name}: {e['verdict'].upper()}  ({e['n_seeds']} seeds x {e['n_steps']} tokens; rolling median "
                     f"of {e['window']} tokens; the schedule's own jump share is {e['schedule_jump_share']:.2f})")
        for metric, m in e["metrics"].items():
            unit = "bits" if metric == "entropy_bits" else "nats"
            where = (f"; largest jump over tokens {m['jump_steps'][0]}-{m['jump_steps'][1]} (sigma "
                     f"{m['jump_sigmas'][0]:.4g} -> {m['jump_sigmas'][1]:.4g})") if m["jump_steps"] else ""
            lines.append(f"  {metric:>12}: {m['verdict']:<7} {m['start']:.2f} -> {m['end']:.2f} {unit}, range "
                         f"{m['range']:.2f}, jump {m['jump']:.2f} = {m['jump_share']:.0%} of the range{where}; "
                         f"per seed: {m['seeds_cliff']} cliff, {m['seeds_gradual']} gradual, {m['seeds_flat']} flat")
    lines.append("rule: " + DRIFT_VERDICT_RULE)
    return "\n".join(lines)


@register_plot("temporal_drift")
def plot_temporal_drift(run_dir: str | Path, name: str = "temporal_drift.png") -> list[Path]:
    """Per schedule (columns): entropy, log-prob and repetition against token (median + band over seeds,
    rolling median used by the verdict), with the sigma schedule on a twin axis."""
    from .stats import rolling_median

    run_dir = Path(run_dir)
    meta, rows = load_run(run_dir)
    verdicts = drift_verdicts(run_dir)
    names = list(verdicts)
    panels = (("entropy_bits", "next-token entropy (bits)"), ("logprob", "log-prob of chosen token (nats)"),
              ("repetition", "rolling repetition (share)"))
    fig, axes = plt.subplots(len(panels), len(names), figsize=(max(4.6 * len(names) + 1.5, 9.0), 9.5),
                             squeeze=False, sharex="col")
    window = int(meta.get("config", {}).get("window", 15))
    accumulate = meta.get("semantics") == "accumulate"
    for col, sched in enumerate(names):
        part = [r for r in rows if r["schedule"] == sched]
        steps = sorted({r["step"] for r in part})
        for row, (metric, ylabel) in enumerate(panels):
            ax = axes[row][col]
            summary = summarize_levels(part, metric, by="step")
            band(ax, [s["step"] for s in summary], summary, "per token", color="tab:blue")
            for line in ax.lines:
                line.set_markersize(0)
            if metric in DRIFT_FLOORS:
                smooth = np.nanmedian(np.array([rolling_median([r[metric] for r in sorted(
                    (r for r in part if r["trial"] == t), key=lambda r: r["step"])], window)
                    for t in sorted({r["trial"] for r in part})]), axis=0)
                ax.plot(steps, smooth, color="black", lw=2, label=f"rolling median ({window} tokens)")
                m = verdicts[sched]["metrics"][metric]
                if m["jump_steps"]:
                    ax.axvspan(*m["jump_steps"], color="red", alpha=0.08, lw=0)
            twin = ax.twinx()
            sig = {r["step"]: r["sigma"] for r in part}
            twin.plot(steps, [sig[s] for s in steps], color="gray", ls="--", lw=1.2, label="sigma schedule")
            if accumulate:
                eff = {r["step"]: r["effective_sigma"] for r in part}
                twin.plot(steps, [eff[s] for s in steps], color="gray", ls=":", lw=1.2, label="walk std")
            twin.set_ylim(bottom=0)
            if col == len(names) - 1:
                twin.set_ylabel("sigma" + (" (weight units)" if meta.get("config", {}).get("scale") == "absolute"
                                           else ""), color="gray")
            twin.tick_params(axis="y", colors="gray", labelsize=8)
            if col == 0:
                ax.set_ylabel(ylabel)
            if row == len(panels) - 1:
                ax.set_xlabel("generated token")
            if row == 0:
                ax.set_title(f"{sched}: {verdicts[sched]['verdict']}")
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                handles = ax.get_legend_handles_labels()
                th = twin.get_legend_handles_labels()
                ax.legend(handles[0] + th[0], handles[1] + th[1], fontsize=7, loc="best")
    cfg = meta.get("config", {})
    seeds = verdicts[names[0]]["n_seeds"] if names else 0
    fig.suptitle(f"{cfg.get('model', '?')}: {meta.get('semantics', '?')} drift of {cfg.get('noise_type')} noise "
                 f"({cfg.get('scale')}) on {cfg.get('targets')},\nsigma {cfg.get('start_sigma')} -> "
                 f"{cfg.get('end_sigma')} over {cfg.get('total_tokens')} tokens, {seeds} seeds (median, band = "
                 f"order-statistic CI); red: the largest jump", fontsize=10)
    return [save_figure(fig, run_dir / name, dpi=110)]
