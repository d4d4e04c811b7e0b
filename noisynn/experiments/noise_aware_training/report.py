"""Report of a noise_aware_training run folder (no torch): doubling points, paired ratios; the AFM drift table.

Doubling points per model variant, paired perplexity ratios on shared noise draws, the training loss;
report, table and figure.
A run of ``--recipe afm`` (run.json meta ``recipe``) has its own report: perplexity against the time
after programming onto PCM, and the drift time at which each variant doubles its clean perplexity."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Sequence

import matplotlib.ticker
import numpy as np

from ...plotting import band, plt, save_figure, sigma_axis, write_table
from ...runs.files import replace_atomic
from ...runs.read import read_rows, read_run
from ...stats import log_crossing, median_ci, summarize_levels


NAT_COLORS = {"original": "tab:blue", "finetuned": "tab:green", "control": "tab:orange"}
NAT_LABELS = {"original": "original", "finetuned": "noise-aware fine-tuned", "control": "control (fine-tuned, no noise)"}



def loss_histories(run_dir: str | Path):
    """(variant, steps, loss) of each trained variant in training.csv, finetuned first."""
    training = read_rows(Path(run_dir) / "training.csv")
    for v in ("finetuned", "control"):
        hist = [r for r in training if r["variant"] == v]
        if hist:
            yield v, np.array([h["step"] for h in hist]), np.array([h["loss"] for h in hist], dtype=float)


def noise_levels(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, training noise level) of the noise-trained variant when its noise followed a schedule (``--anneal``
    other than constant, recorded in run.json ``training_config``); None for constant noise or an older training.csv
    without the ``noise_level`` column."""
    anneal = (read_run(run_dir).meta.get("training_config") or {}).get("anneal") or {}
    if anneal.get("kind", "constant") == "constant":
        return None
    hist = [r for r in read_rows(Path(run_dir) / "training.csv") if r["variant"] == "finetuned"]
    if not hist or any(not isinstance(h.get("noise_level"), (int, float)) for h in hist):
        return None
    return np.array([h["step"] for h in hist]), np.array([h["noise_level"] for h in hist], dtype=float)


def draw_noise_levels(ax, run_dir: str | Path) -> None:
    """The training noise level over the steps, on a right-hand axis of the training panel, when it was annealed."""
    curve = noise_levels(run_dir)
    if curve is None:
        return
    anneal = read_run(run_dir).meta["training_config"]["anneal"]
    right = ax.twinx()
    right.step(curve[0], curve[1], where="post", color="tab:purple", lw=1.2, ls="--",
               label=f"training noise ({anneal['kind']} x{anneal['start']:g} -> x{anneal['end']:g})")
    right.set_ylim(bottom=0)
    right.set_ylabel("training noise level (sigma)", color="tab:purple")
    right.legend(fontsize=7, loc="center left")


def _ci_dict(values, nonfinite_as_inf: bool = True) -> dict:
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
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
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


def plot(run_dir: str | Path, name: str = "noise_aware_training.png") -> list[Path]:
    """Perplexity vs sigma for each model (bands), paired ratios vs sigma, and the training loss
    (an AFM-recipe run: ``plot_afm``)."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
    if meta.get("recipe") == "afm":
        return plot_afm(run_dir, name)
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
    sigma_axis(ax, sorted({r["sigma"] for r in rows}), meta)
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
    sigma_axis(ax, sorted({r["sigma"] for r in rows}), meta)
    ax.set_ylabel("perplexity ratio, same noise draw")
    ax.set_title("paired ratio (> 1: noise-aware model better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[2]
    for v, steps, loss in loss_histories(run_dir):
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
    draw_noise_levels(ax, run_dir)
    cfg = meta.get("config", {})
    tc = meta.get("training_config", {})
    anneal = tc.get("anneal") or {}
    schedule = ("" if anneal.get("kind", "constant") == "constant"
                else f" x {anneal['kind']} {anneal['start']:g} -> {anneal['end']:g}")
    fig.suptitle(f"{cfg.get('model', '?')}: noise-aware fine-tuning ({cfg.get('noise_type')} {cfg.get('scale')} "
                 f"sigma={cfg.get('noise_level')}{schedule} on {cfg.get('targets')}, {tc.get('steps')} steps x "
                 f"{tc.get('batch_size')} x {tc.get('seq_len')} tokens, lr {tc.get('lr')}); "
                 f"{report['n_trials']} shared noise draws per level, perplexity on {report['eval_tokens']} tokens",
                 fontsize=10)
    return [save_figure(fig, run_dir / name)]


# ---------------------------------------------------------------------------------------------- run-folder files

def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_training_csv(folder: Path, variant: str, history: list[dict], name: str = "training.csv") -> None:
    """training.csv: one row per (variant, step); rewritten whole, other variants' rows kept."""
    path = Path(folder) / name
    rows = [r for r in read_rows(path) if r.get("variant") != variant] + [{"variant": variant, **h} for h in history]
    fields = ["variant", "step", "loss", "lr", "grad_norm", "tokens", "seconds"]
    fields += sorted({k for r in rows for k in r} - set(fields))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    replace_atomic(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------- the AFM recipe

AFM_LABELS = {"original": "original", "finetuned": "AFM recipe", "control": "control (same training, analog off)"}


def afm_report(run_dir: str | Path) -> dict:
    """The numbers of an AFM-recipe run (also writes summary.csv).

    Per variant: clean perplexity (digital, no converters); per read time the median perplexity over
    the PCM trials with its CI; the read time at which perplexity reaches 2x the variant's own clean
    value, per trial (log perplexity interpolated linearly in log time) with median and CI; and the
    paired ratio control / AFM and original / AFM per time (same programming draw).
    """
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
    variants = [v for v in ("original", "finetuned", "control") if any(r["model_variant"] == v for r in rows)]
    pcm = [r for r in rows if r["condition"] == "pcm"]
    table = []
    for v in variants:
        table += [{"model_variant": v, **s} for s in summarize_levels([r for r in pcm if r["model_variant"] == v],
                                                                         "perplexity", by="t_seconds")]
    write_table(run_dir / "summary.csv", table)
    times = sorted({r["t_seconds"] for r in pcm})
    out = {}
    for v in variants:
        clean = [r["perplexity"] for r in rows if r["model_variant"] == v and r["condition"] == "clean"]
        c = float(np.median(clean)) if clean else float("nan")
        conv = [r["perplexity"] for r in rows if r["model_variant"] == v and r["condition"] == "converters"]
        mine = [r for r in pcm if r["model_variant"] == v]
        per_time = {}
        for s in summarize_levels(mine, "perplexity", by="t_seconds"):
            per_time[s["t_seconds"]] = {k: s[k] for k in ("median", "ci_low", "ci_high", "n_nonfinite")}
        crossings = []
        for trial in sorted({r["trial"] for r in mine}):
            pts = sorted((r["t_seconds"], r["perplexity"]) for r in mine if r["trial"] == trial)
            x = log_crossing([math.log10(max(t, 1e-9)) for t, _ in pts], [p for _, p in pts], 2 * c)
            crossings.append(10 ** x if math.isfinite(x) else float("inf"))
        entry = {"clean_perplexity": c, "converters_perplexity": float(np.median(conv)) if conv else float("nan"),
                 "times": [{"t_seconds": t, **per_time[t]} for t in times if t in per_time],
                 "t_2x_own_clean": {**_ci_dict(crossings), "beyond_last_time": sum(1 for x in crossings if not
                                                                                  math.isfinite(x)),
                                    "at_first_time": sum(1 for x in crossings if times and x == times[0])}}
        if v != "finetuned" and "finetuned" in variants:
            entry["over_afm"] = _paired_time_ratios(pcm, v, "finetuned")
        entry.update(_pcm_afm_entry(rows, v, "finetuned" in variants))
        out[v] = entry
    tokens = sorted({r["eval_tokens"] for r in rows})
    trials = sorted({r["trial"] for r in pcm})
    return {"recipe": "afm", "eval_tokens": tokens[0] if len(tokens) == 1 else tokens, "n_trials": len(trials),
            "coverage": round(median_ci([0.0] * len(trials)).coverage, 4) if trials else float("nan"),
            "times_s": times, "train_tokens": meta.get("train_tokens"), "training": meta.get("training", {}),
            "clean_cost": {v: out[v]["clean_perplexity"] / out["original"]["clean_perplexity"]
                           for v in variants if v != "original" and "original" in out},
            "variants": out}


def _pcm_afm_entry(rows, v: str, has_afm: bool) -> dict:
    """The rows in AFM's own setting (afm_eval): clean weights through its converters, and pcm_afm over the
    trials (median, CI; paired ratio to the AFM model on the same draw). Empty without such rows."""
    conv = [r["perplexity"] for r in rows if r["model_variant"] == v and r["condition"] == "afm_converters"]
    mine = {r["trial"]: r for r in rows if r["model_variant"] == v and r["condition"] == "pcm_afm"}
    if not mine and not conv:
        return {}
    out = {"afm_converters_perplexity": float(np.median(conv)) if conv else float("nan"),
           "pcm_afm": _ci_dict([r["perplexity"] for r in mine.values()])}
    if v != "finetuned" and has_afm:
        afm = {r["trial"]: r for r in rows if r["model_variant"] == "finetuned" and r["condition"] == "pcm_afm"}
        vals = [math.exp(mine[k]["nll"] - afm[k]["nll"]) for k in sorted(mine) if k in afm]
        if vals:
            out["pcm_afm_over_afm"] = _ci_dict(vals, nonfinite_as_inf=False)
    return out


def _paired_time_ratios(rows, num: str, den: str) -> list[dict]:
    by = {(r["model_variant"], r["t_seconds"], r["trial"]): r for r in rows}
    out = []
    for t in sorted({r["t_seconds"] for r in rows}):
        vals = [math.exp(by[(num, t, k)]["nll"] - by[(den, t, k)]["nll"]) for k in sorted({r["trial"] for r in rows})
                if (num, t, k) in by and (den, t, k) in by]
        if vals:
            out.append({"t_seconds": t, **_ci_dict(vals, nonfinite_as_inf=False)})
    return out


def _time_text(seconds: float) -> str:
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def format_afm_report(report: dict) -> str:
    """Console table of ``afm_report``: clean and per-time perplexity with CIs, the 2x drift time."""
    times = report["times_s"]
    afm = any("pcm_afm" in e for e in report["variants"].values())
    head = f"{'variant':>36} {'clean':>8} {'convert':>8} " + " ".join(f"{_time_text(t):>22}" for t in times) + f" {'2x clean at':>16}"
    head += f" {'afm conv':>8} {'pcm_afm':>22}" if afm else ""
    lines = [head, "-" * len(head)]
    for v, e in report["variants"].items():
        cells = [f"{AFM_LABELS.get(v, v):>36}", f"{e['clean_perplexity']:>8.3f}",
                 f"{e.get('converters_perplexity', float('nan')):>8.4g}"]
        per = {x["t_seconds"]: x for x in e["times"]}
        for t in times:
            x = per.get(t)
            cells.append(f"{x['median']:.4g} [{x['ci_low']:.4g}, {x['ci_high']:.4g}]".rjust(22) if x else f"{'-':>22}")
        d = e["t_2x_own_clean"]
        if d["n_trials"] and d["at_first_time"] == d["n_trials"]:
            cross = f"<= {_time_text(times[0])}"
        elif not math.isfinite(d["median"]):
            cross = f"> {_time_text(times[-1])}"
        else:
            cross = _time_text(d["median"])
        cells.append(f"{cross:>16}")
        if afm:
            x = e.get("pcm_afm")
            cells.append(f"{e.get('afm_converters_perplexity', float('nan')):>8.4g}")
            cells.append(f"{x['median']:.4g} [{x['ci_low']:.4g}, {x['ci_high']:.4g}]".rjust(22) if x else f"{'-':>22}")
        lines.append(" ".join(cells))
    for v, c in report["clean_cost"].items():
        lines.append(f"clean-perplexity cost of {AFM_LABELS.get(v, v)}: x{c:.3f} ({(c - 1) * 100:+.1f}%)")
    for v, e in report["variants"].items():
        if e.get("over_afm"):
            ratios = ", ".join(f"{_time_text(r['t_seconds'])}: {r['median']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                               for r in e["over_afm"])
            lines.append(f"{AFM_LABELS.get(v, v)} / AFM (same PCM draw; > 1: AFM better): {ratios}")
        r = e.get("pcm_afm_over_afm")
        if r:
            lines.append(f"{AFM_LABELS.get(v, v)} / AFM under pcm_afm (same draw): {r['median']:.3f} "
                         f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
    lines.append("(clean: digital; convert: clean weights through the AFM converters, no PCM; times: PCM with drift "
                 "compensation and the converters; 2x clean: read time at which perplexity reaches twice the clean value)")
    if afm:
        lines.append("(afm conv / pcm_afm: AFM's own setting, run.json afm_evaluation: its converters with one tile "
                     "per layer by default, the head analog, float16; pcm_afm = the PCM noise AFM measured on chip)")
    lines.append(f"(PCM with drift compensation, AFM converters; medians over {report['n_trials']} programming draws "
                 f"shared by all models, {report['coverage']:.0%} CI; perplexity on {report['eval_tokens']} held-out "
                 f"tokens; {report.get('train_tokens')} training tokens)")
    return "\n".join(lines)


def plot_afm(run_dir: Path, name: str = "noise_aware_training.png") -> list[Path]:
    """Perplexity against time after programming (one line per variant, CI bands, clean levels dashed),
    and the training loss of both trained variants."""
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
    report = afm_report(run_dir)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    for v, e in report["variants"].items():
        summary = summarize_levels([r for r in rows if r["model_variant"] == v and r["condition"] == "pcm"],
                                   "perplexity", by="t_seconds")
        band(ax, [s["t_seconds"] for s in summary], summary, AFM_LABELS[v], color=NAT_COLORS[v], log_y=True)
        ax.axhline(e["clean_perplexity"], color=NAT_COLORS[v], ls=":", lw=1)
        if math.isfinite(e.get("converters_perplexity", float("nan"))):
            ax.axhline(e["converters_perplexity"], color=NAT_COLORS[v], ls="--", lw=0.8)
    ax.set_xscale("log")
    times = report["times_s"]
    ax.set_xticks(times)
    ax.set_xticklabels([_time_text(t) for t in times])
    ax.set_xlabel("time after programming (PCM, drift compensation on)")
    ax.set_ylabel("perplexity (held-out text)")
    ax.set_title("PCM drift (dotted: clean digital; dashed: converters, no PCM)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[1]
    for v, steps, loss in loss_histories(run_dir):
        ax.plot(steps, loss, color=NAT_COLORS[v], lw=1.5, label=AFM_LABELS[v])
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (KL to the clean teacher, nats/token)")
    ax.set_title("training")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    draw_noise_levels(ax, run_dir)
    cfg, tc = meta.get("config", {}), meta.get("training_config", {})
    fig.suptitle(f"{cfg.get('model', '?')}: AFM recipe vs control ({tc.get('steps')} steps x {tc.get('batch_size')} x "
                 f"{tc.get('seq_len')} tokens of {meta.get('training_text', {}).get('source', '?')} data, lr "
                 f"{tc.get('lr')}); {report['n_trials']} PCM draws per time, perplexity on {report['eval_tokens']} "
                 "tokens", fontsize=10)
    return [save_figure(fig, Path(run_dir) / name)]
