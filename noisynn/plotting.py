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
    with open(run_dir / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0].keys()), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: format_value(x) for k, x in r.items()} for r in table)
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
    fig.tight_layout()
    path = run_dir / name
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


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
    path = Path(run_dir) / "samples.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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
    fig.tight_layout()
    path = run_dir / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
