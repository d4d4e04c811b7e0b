"""Annealed against constant training noise (no torch): two or more weight_noise run folders, paired on the noise draws.

    python -m noisynn.experiments.noise_aware_training.anneal_report results/noise_aware_training \\
        results/noise_aware_training_anneal --output images/noise_aware_training_anneal.png

The first folder is the reference (constant noise); every other one differs from it only in its ``--anneal*``
flags (and ``--no_control``, ``--out``, ``--output``): same model, evaluation text, levels, trials and noise
seeds, which ``compare_runs`` checks before it compares anything. The ``original`` rows of every folder must then
be the same numbers (the same untouched model on the same draws): they are the check that the folders are
comparable, and they are reported. Per sigma the comparison gives every run's noise-trained perplexity (median
and [CI] over the draws) and the paired ratio reference / annealed on each draw (> 1: annealing is better);
``comparison.json`` in the annealed folder(s) is not written here, the caller chooses where it goes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import NoisyNNError
from ...plotting import band, plt, save_figure, sigma_axis
from ...runs.read import read_rows, read_run
from ...stats import median_ci, summarize_levels
from .report import NAT_COLORS

# flags that may differ between the folders of one comparison
FREE = {"anneal", "anneal_start", "anneal_end", "anneal_ramp", "anneal_stairs", "no_control", "out", "output",
        "save_weights", "quiet"}
KEYS = ("median", "ci_low", "ci_high", "coverage", "n_trials", "n_nonfinite")  # of a level's summary, as band() reads
COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def schedule_label(config: dict) -> str:
    """``constant`` or e.g. ``linear x0 -> x2`` (of the level) from a run's recorded flags."""
    kind = config.get("anneal")
    if kind in (None, "constant"):
        return "constant"
    text = f"{kind} x{config.get('anneal_start'):g} -> x{config.get('anneal_end'):g}"
    if config.get("anneal_ramp") not in (None, 1.0):
        text += f" over {config['anneal_ramp']:g} of the steps"
    if kind == "step":
        text += f", {config.get('anneal_stairs')} stairs"
    return text


def _check_comparable(ref, other, ref_dir: Path, other_dir: Path) -> None:
    a, b = ref.meta.get("config", {}), other.meta.get("config", {})
    diff = sorted(k for k in set(a) | set(b) if k not in FREE and a.get(k) != b.get(k))
    if diff:
        raise NoisyNNError(f"{other_dir} is not the run of {ref_dir} with another noise schedule (differs in: "
                           f"{', '.join(diff)})")
    for key, field in (("model", "fingerprint"), ("text", "sha256"), ("training_text", "sha256")):
        if (ref.meta.get(key) or {}).get(field) != (other.meta.get(key) or {}).get(field):
            raise NoisyNNError(f"{other_dir} and {ref_dir} differ in the {key} ({field})")
    seeds = lambda rows: {r["trial"]: r["seed"] for r in rows}  # noqa: E731
    if seeds(ref.rows) != seeds(other.rows):
        raise NoisyNNError(f"{other_dir} and {ref_dir} use other evaluation noise seeds")


def _variant(rows, v: str) -> dict:
    return {(r["sigma"], r["trial"]): r for r in rows if r["model_variant"] == v}


def _ci(values) -> dict:
    s = median_ci(values, nonfinite_as_inf=False)
    return {"median": s.median, "ci_low": s.low, "ci_high": s.high, "coverage": s.coverage, "n_trials": s.n,
            "n_nonfinite": s.n_nonfinite}


def compare_runs(reference: str | Path, annealed: Sequence[str | Path]) -> dict:
    """The numbers of the comparison (module doc): per run its schedule, training time and final loss; per sigma
    the medians [CI] of every run's noise-trained model (and the reference's original and control) and the paired
    ratios reference / annealed. Raises ``NoisyNNError`` when a folder is not comparable."""
    ref_dir = Path(reference)
    ref = read_run(ref_dir)
    if not ref.rows:
        raise NoisyNNError(f"{ref_dir} holds no results")
    runs = [(ref_dir, ref)]
    for d in annealed:
        other = read_run(Path(d))
        if not other.rows:
            raise NoisyNNError(f"{d} holds no results")
        _check_comparable(ref, other, ref_dir, Path(d))
        runs.append((Path(d), other))
    originals = [_variant(r.rows, "original") for _, r in runs]
    shared = set.intersection(*(set(o) for o in originals))
    identical = all(o[k]["perplexity"] == originals[0][k]["perplexity"] for o in originals for k in shared)
    spread = max((abs(o[k]["perplexity"] / originals[0][k]["perplexity"] - 1) for o in originals for k in shared),
                 default=float("nan"))
    ref_ft = _variant(ref.rows, "finetuned")
    out_runs, levels = [], {}
    for i, (d, run) in enumerate(runs):
        ft = _variant(run.rows, "finetuned")
        out_runs.append({"folder": d.as_posix(), "schedule": schedule_label(run.meta.get("config", {})),
                         "anneal": (run.meta.get("training_config") or {}).get("anneal"),
                         "training": (run.meta.get("training") or {}).get("finetuned", {}),
                         "mean_noise_level": _mean_noise(d, run)})
        for s in summarize_levels([r for r in run.rows if r["model_variant"] == "finetuned"], "perplexity"):
            entry = levels.setdefault(s["sigma"], {"sigma": s["sigma"], "runs": [None] * len(runs)})
            entry["runs"][i] = {k: s[k] for k in KEYS}
            if i:
                pairs = [math.exp(ref_ft[k]["nll"] - ft[k]["nll"]) for k in sorted(ft) if k[0] == s["sigma"]
                         and k in ref_ft]
                entry["runs"][i]["reference_over_this"] = _ci(pairs) if pairs else None
    labels = [r["schedule"] for r in out_runs]
    for r in out_runs:  # two runs of one schedule (a rerun): told apart by their folders
        if labels.count(r["schedule"]) > 1:
            r["schedule"] += f" ({Path(r['folder']).name})"
    for v in ("original", "control"):
        for s in summarize_levels([r for r in ref.rows if r["model_variant"] == v], "perplexity"):
            if s["sigma"] in levels:
                levels[s["sigma"]][v] = {k: s[k] for k in KEYS}
    n_trials = len({r["trial"] for r in ref.rows})
    tokens = sorted({r["eval_tokens"] for r in ref.rows})
    return {"reference": ref_dir.as_posix(), "runs": out_runs, "levels": [levels[s] for s in sorted(levels)],
            "original_rows_identical": identical, "original_rows_max_rel_diff": spread, "shared_original_rows": len(shared), "n_trials": n_trials,
            "coverage": round(median_ci([0.0] * n_trials).coverage, 4), "eval_tokens": tokens[0],
            "noise_level": ref.meta.get("config", {}).get("noise_level"), "scale": ref.meta.get("config", {}).get("scale")}


def _mean_noise(folder: Path, run) -> float | None:
    """Mean training noise level over the steps (training.csv ``noise_level``; a run before that column: its
    constant --noise_level)."""
    hist = [r for r in read_rows(folder / "training.csv") if r["variant"] == "finetuned"]
    levels = [h.get("noise_level") for h in hist]
    if levels and all(isinstance(v, (int, float)) for v in levels):
        return float(np.mean(levels))
    if run.meta.get("config", {}).get("anneal") in (None, "constant"):
        return run.meta.get("config", {}).get("noise_level")
    return None


def format_comparison(c: dict) -> str:
    """Console table of ``compare_runs``."""
    names = [r["schedule"] for r in c["runs"]]
    head = f"{'sigma':>6} " + " ".join(f"{n[:24]:>24}" for n in names) + "".join(
        f" {'constant / ' + n[:14]:>30}" for n in names[1:])
    lines = [head, "-" * len(head)]
    for lv in c["levels"]:
        cells = [f"{lv['sigma']:>6.3g}"]
        for r in lv["runs"]:
            cells.append(f"{r['median']:>10.4g} [{r['ci_low']:.4g}, {r['ci_high']:.4g}]".rjust(24) if r else f"{'-':>24}")
        for r in lv["runs"][1:]:
            q = r and r.get("reference_over_this")
            cells.append(f"{q['median']:.3f} [{q['ci_low']:.3f}, {q['ci_high']:.3f}]".rjust(30) if q else f"{'-':>30}")
        lines.append(" ".join(cells))
    lines.append(f"(noise-aware model's perplexity, median [{c['coverage']:.0%} CI] over {c['n_trials']} noise draws "
                 f"shared by all runs, on {c['eval_tokens']} held-out tokens; ratios > 1: the annealed run is better "
                 f"on the same draw; the original rows of the folders: "
                 f"{'identical' if c['original_rows_identical'] else 'differ'} (largest relative difference "
                 f"{c['original_rows_max_rel_diff']:.2g}))")
    return "\n".join(lines)


def plot_comparison(c: dict, output: str | Path) -> Path:
    """Perplexity vs sigma (reference original and control, every run's noise-trained model), the paired ratios,
    and the training noise level over the steps."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    sigmas = [lv["sigma"] for lv in c["levels"]]
    ax = axes[0]
    for v, label in (("original", "original"), ("control", "control (no noise)")):
        pts = [(lv["sigma"], lv[v]) for lv in c["levels"] if v in lv]
        if pts:
            band(ax, [p[0] for p in pts], [p[1] for p in pts], label, color=NAT_COLORS[v], log_y=True)
    colors = [NAT_COLORS["finetuned"], *COLORS]
    for i, r in enumerate(c["runs"]):
        pts = [(lv["sigma"], lv["runs"][i]) for lv in c["levels"] if lv["runs"][i]]
        band(ax, [p[0] for p in pts], [p[1] for p in pts], f"noise-aware, {r['schedule']}", color=colors[i % 7],
             log_y=True)
    sigma_axis(ax, sigmas, {"config": {"scale": c.get("scale")}})
    ax.set_ylabel("perplexity (held-out text)")
    ax.set_title("perplexity under weight noise")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax = axes[1]
    for i, r in enumerate(c["runs"][1:], 1):
        pts = [(lv["sigma"], lv["runs"][i]["reference_over_this"]) for lv in c["levels"]
               if lv["runs"][i] and lv["runs"][i].get("reference_over_this")]
        band(ax, [p[0] for p in pts], [p[1] for p in pts], f"constant / {r['schedule']}", color=colors[i % 7])
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    sigma_axis(ax, sigmas, {"config": {"scale": c.get("scale")}})
    ax.set_ylabel("perplexity ratio, same noise draw")
    ax.set_title("paired ratio (> 1: annealed better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[2]
    for i, r in enumerate(c["runs"]):
        hist = [h for h in read_rows(Path(r["folder"]) / "training.csv") if h["variant"] == "finetuned"]
        steps = [h["step"] for h in hist]
        noise = [h.get("noise_level", c["noise_level"]) if isinstance(h.get("noise_level"), (int, float))
                 else c["noise_level"] for h in hist]
        ax.step(steps, noise, where="post", color=colors[i % 7], lw=1.5, label=r["schedule"])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training noise level (sigma)")
    ax.set_title("training noise over the steps")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"annealed vs constant training noise (level {c['noise_level']}): {c['n_trials']} shared noise draws "
                 f"per sigma, perplexity on {c['eval_tokens']} tokens, one training seed", fontsize=10)
    return save_figure(fig, Path(output))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m noisynn.experiments.noise_aware_training.anneal_report",
                                description=__doc__.strip().splitlines()[0])
    p.add_argument("reference", help="run folder trained with constant noise")
    p.add_argument("annealed", nargs="+", help="run folders of the same run with another --anneal")
    p.add_argument("--output", help="figure file (PNG)")
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args(argv)
    try:
        c = compare_runs(args.reference, args.annealed)
    except NoisyNNError as err:
        p.exit(2, f"error: {err}\n")
    print(format_comparison(c))
    if args.json:
        Path(args.json).write_text(json.dumps(c, indent=2) + "\n", encoding="utf-8")
    if args.output:
        print(f"figure: {plot_comparison(c, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
