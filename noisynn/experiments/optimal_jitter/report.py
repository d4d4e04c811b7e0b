"""Report of an optimal_jitter run folder (no torch): the Goldilocks-zone rule and verdict, table and figure."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib.ticker

from ...plotting import band, plt, save_figure, sigma_axis, write_summary
from ...runs.read import read_run
from ...stats import median_ci, summarize_levels


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


def plot(run_dir: str | Path, name: str = "optimal_jitter.png") -> list[Path]:
    """distinct-1/2/3 against sigma (bands), perplexity on a second panel, the zone shaded if found.

    Writes summary.csv too.
    """
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    meta, rows = run.meta, run.rows
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
        sigma_axis(ax, sigmas, meta)
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
