"""Report of a sweep run folder (no torch): summary, console table with quality labels, figures.

Perplexity, entropy and distinct-2 against sigma, the console table with quality labels, and several sweeps
(e.g. the noise types) on one figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ...errors import NoisyNNError
from ...plotting import band, level_ticks, plt, quality_label, realizations_note, save_figure, sigma_axis, write_summary
from ...runs.schema import RESULTS_CSV
from ...runs.read import Run, read_run
from ...stats import group_by, measured_rows, summarize_levels, threshold_crossings


def plot(run_dir: str | Path, name: str = "sweep.png") -> list[Path]:
    """Perplexity (log axis), entropy and distinct-2 against sigma; writes summary.csv too."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
    if not rows:
        raise NoisyNNError(f"{run_dir / RESULTS_CSV} holds no finished rows yet")
    write_summary(run_dir, rows, ("perplexity", "bits_per_byte", "entropy_bits", "distinct_2", "repetition"))
    clean = [r for r in rows if r["sigma"] == 0]
    noisy = [r for r in rows if r["sigma"] > 0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    panels = (("perplexity", "perplexity", True), ("entropy_bits", "next-token entropy (bits)", False),
              ("distinct_2", "distinct-2 of sampled text", False))
    for ax, (metric, ylabel, log_y) in zip(axes, panels):
        ax.set_ylabel(ylabel)
        if not measured_rows(noisy, metric):  # nan with a finite model: not measured, not a failure
            ax.text(0.5, 0.5, f"{metric}: not measured in this run", transform=ax.transAxes, ha="center",
                    va="center", color="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        summary = summarize_levels(measured_rows(noisy, metric), metric)
        band(ax, [s["sigma"] for s in summary], summary, meta.get("config", {}).get("noise_type", "noise"), log_y=log_y)
        if measured_rows(clean, metric):
            c = summarize_levels(measured_rows(clean, metric), metric)[0]
            ax.axhline(c["median"], color="gray", ls="--", lw=1, label=f"clean ({c['median']:.3g})")
        sigma_axis(ax, [s["sigma"] for s in summary], meta)
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


def schedule_label(meta: dict) -> str:
    """A run's per-layer noise schedule as run.json records it (meta ``layer_schedule``): its label, or "constant"."""
    return (meta.get("layer_schedule") or {}).get("label") or "constant"


def _varying_key(metas: Sequence[dict]) -> str | None:
    """The config key whose value differs between runs (noise_type preferred; then the layer schedule)."""
    cfgs = [m.get("config", {}) for m in metas]
    keys = [k for k in ("noise_type", "scale", "targets", "model") if len({str(c.get(k)) for c in cfgs}) > 1]
    if len({schedule_label(m) for m in metas}) > 1:
        keys.append("layer_schedule")
    keys += sorted(k for k in set().union(*cfgs) if k not in keys and k not in ("out", "output", "quiet", "argv")
                   and len({json.dumps(c.get(k), default=str) for c in cfgs}) > 1)
    return keys[0] if keys else None


def _runs_note(runs) -> str:
    """Realizations per level over several runs, and which of them are incomplete."""
    rows = [{**r, "_level": (i, r["sigma"])} for i, (_, part) in enumerate(runs) for r in part]
    counts = sorted({len(g) for g in group_by(rows, "_level").values()}) or [0]
    note = f"{counts[0] if len(counts) == 1 else f'{counts[0]}-{counts[-1]}'} realizations per level"
    partial = [f"{m.get('config', {}).get('noise_type')} {Run(Path('.'), m, list(r)).progress_note()}"
               for m, r in runs if not Run(Path("."), m, list(r)).complete]
    return note + (f" ({'; '.join(partial)})" if partial else "")


def plot_compare(run_dirs: Sequence[str | Path], path: str | Path, metric: str = "perplexity") -> Path:
    """Median ``metric`` (band: CI over realizations) against sigma for several sweep folders on
    one axis, labelled by the config key that differs between them (the noise type). Trials
    that gave inf/nan are marked with red 'x', never dropped."""
    runs = _read_sorted(run_dirs)
    key = _varying_key([m for m, _ in runs]) or "noise_type"
    if not any(r["sigma"] > 0 for _, rows in runs for r in rows):  # an empty figure would look like a result
        raise NoisyNNError(f"nothing to compare: none of {', '.join(map(str, run_dirs))} has a finished noisy point yet")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    sigmas, clean_done = [], False
    for meta, rows in runs:
        cfg = meta.get("config", {})
        noisy = [r for r in rows if r["sigma"] > 0]
        if not noisy:
            continue
        summary = summarize_levels(noisy, metric)
        label = schedule_label(meta) if key == "layer_schedule" else str(cfg.get(key))
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
    sigma_axis(ax, sorted(set(sigmas)), meta0)
    level_ticks(ax, sigmas)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    cfg = meta0.get("config", {})
    tokens = sorted({r.get("eval_tokens") for _, rows in runs for r in rows})
    ax.set_title(f"{cfg.get('model', '?')}: {len(runs)} runs by {key}, {cfg.get('scale')} scale on {cfg.get('targets')}, "
                 f"{_runs_note(runs)}, {metric} on {tokens[0] if len(tokens) == 1 else tokens} tokens\n"
                 + ("sigma is the nominal level; block b gets sigma x m_b (equal total noise energy when normalized)"
                    if key == "layer_schedule" else "sigma is each distribution's scale parameter (gaussian: std; "
                    "uniform: half-width; laplacian: b; cauchy: HWHM; student_t: scale)"), fontsize=9)
    return save_figure(fig, path)


def _read_sorted(run_dirs):
    """(meta, rows) of each run folder, by noise type, then constant schedule first."""
    runs = [(r.meta, r.rows) for r in map(read_run, run_dirs)]
    return sorted(runs, key=lambda mr: (str(mr[0].get("config", {}).get("noise_type")),
                                        schedule_label(mr[0]) != "constant", schedule_label(mr[0])))


def compare_table(run_dirs: Sequence[str | Path], metric: str = "perplexity") -> str:
    """Markdown table of several sweeps (``plot_compare``'s runs): per run and level the median ``metric`` [CI], and
    the paired ratio to the first run (by trial: the same seeds, so the same unit draws under every schedule or
    mapping), as median [min, max] over trials; then each run's sigma at which the metric doubles (median [CI])."""
    runs = _read_sorted(run_dirs)
    key = _varying_key([m for m, _ in runs]) or "noise_type"
    label = (lambda m: schedule_label(m)) if key == "layer_schedule" else (lambda m: str(m.get("config", {}).get(key)))
    base = {(r["sigma"], r["trial"]): r[metric] for r in runs[0][1]} if runs else {}
    cov = None
    lines = [f"| run | sigma | n | median {metric} | CI | ratio to {label(runs[0][0]) if runs else '?'} (by trial) |",
             "|---|---|---|---|---|---|"]
    for meta, rows in runs:
        for s in summarize_levels(rows, metric):
            cov = s["coverage"] if cov is None else min(cov, s["coverage"])
            ratios = sorted(r[metric] / base[(r["sigma"], r["trial"])] for r in rows
                            if r["sigma"] == s["sigma"] and (r["sigma"], r["trial"]) in base)
            ratio = f"{ratios[len(ratios) // 2]:.3g} [{ratios[0]:.3g}, {ratios[-1]:.3g}]" if ratios else "-"
            lines.append(f"| {label(meta)} | {s['sigma']:.4g} | {s['n_trials']} | {s['median']:.4g} | "
                         f"[{s['ci_low']:.4g}, {s['ci_high']:.4g}] | {ratio} |")
    lines += ["", f"| run | sigma at 2x clean {metric} (median) | CI | realizations not reaching it |", "|---|---|---|---|"]
    for meta, rows in runs:
        t = threshold_crossings(rows, 2.0, metric)
        cov = t["coverage"] if cov is None else min(cov, t["coverage"])
        lines.append(f"| {label(meta)} | {t['median']:.4g} | [{t['ci_low']:.4g}, {t['ci_high']:.4g}] | "
                     f"{t['n_not_reached']} of {t['n_trials']} |")
    tokens = sorted({r.get("eval_tokens") for _, rows in runs for r in rows})
    lines.append(f"\nCIs: order statistics of the realizations, coverage at least {cov or 0:.0%} (with 3 realizations: "
                 f"[min, max], 75%); {metric} on {tokens[0] if len(tokens) == 1 else tokens} tokens.")
    return "\n".join(lines)
