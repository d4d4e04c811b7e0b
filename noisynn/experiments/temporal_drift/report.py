"""Report of a temporal_drift run folder (no torch): gradual / cliff / flat verdicts and the per-token figure.

Verdicts per schedule (rule: DRIFT_VERDICT_RULE), their console text, and the per-token figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...plotting import band, plt, save_figure
from ...runs.read import read_run
from ...stats import jump_share, rolling_median, summarize_levels


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


def _direction(curve) -> int:
    """+1 if the curve ends above where it starts, -1 if below (finite points only), 0 if level."""
    arr = np.asarray(curve, dtype=float)
    arr = arr[np.isfinite(arr)]
    return int(np.sign(arr[-1] - arr[0])) if arr.size >= 2 else 0


def drift_verdicts(run_dir: str | Path) -> dict:
    """Gradual / cliff / flat per schedule, from a temporal-drift run folder alone (rule: DRIFT_VERDICT_RULE)."""
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
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


def plot(run_dir: str | Path, name: str = "temporal_drift.png") -> list[Path]:
    """Per schedule (columns): entropy, log-prob and repetition against token (median + band over seeds,
    rolling median used by the verdict), with the sigma schedule on a twin axis."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
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
