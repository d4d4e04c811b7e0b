"""Report of a placement run folder (no torch): the decision, units.csv, verifications.csv, table and figure.

Unit damages, verifications and baselines, the decision, units.csv and verifications.csv, the console table
and the figure (analog share against perplexity ratio).

Everything here is recomputed from run.json (the units, baselines and verified sets) and results.csv.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib.ticker

from ...plotting import plt, save_figure, write_table
from ...runs.read import read_run
from ...stats import Summary, median_ci
from . import plan


def unit_damages(rows: Sequence[dict]) -> dict[str, Summary]:
    """Per unit: median and CI of its damage alone (nats) over its realizations: dNLL of the unit analog,
    everything else digital (with the antithetic estimator, the mean of a realization and its mirror image)."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["phase"] == "unit":
            by.setdefault(r["target"], []).append(r.get("damage", r["delta_nll"]))
    return {u: median_ci(v) for u, v in by.items()}


def set_summary(rows: Sequence[dict], phase: str, label: str) -> Summary:
    """Median and CI of the perplexity ratio (noisy / clean) of one verified set or baseline."""
    return median_ci([r["ppl_ratio"] for r in rows if r["phase"] == phase and r["target"] == label])


def statistic(summary: Summary, stat: str = "median") -> float:
    """The perplexity ratio a verification is judged by: its median, or the upper end of its CI (inf when
    nothing was measured or the model broke)."""
    value = summary.median if stat == "median" else summary.high
    return value if summary.n > 0 and math.isfinite(value) else math.inf


def meets(summary: Summary, max_ratio: float, stat: str = "median") -> bool:
    """Whether a set's measured ratio meets the tolerance (by its median, or the upper end of its CI)."""
    return statistic(summary, stat) <= max_ratio


def clean_accuracy(rows: Sequence[dict]) -> float:
    """The clean model's task accuracy (the clean row; nan without --max_acc_drop)."""
    return next((float(r.get("accuracy", math.nan)) for r in rows if r["phase"] == "clean"), math.nan)


def accuracy_summary(rows: Sequence[dict], phase: str, label: str) -> Summary:
    """Median and CI of the task accuracy (fraction of items) of one verified set or baseline."""
    return median_ci([r["accuracy"] for r in rows if r["phase"] == phase and r["target"] == label],
                     nonfinite_as_inf=False)


def acc_drop_statistic(rows: Sequence[dict], phase: str, label: str, stat: str = "median") -> float:
    """The accuracy drop a verification is judged by, in points: 100 (clean - median), or with ``ci_high`` the
    pessimistic end, 100 (clean - CI low); inf when nothing was measured."""
    s = accuracy_summary(rows, phase, label)
    value = s.median if stat == "median" else s.low
    return 100.0 * (clean_accuracy(rows) - value) if s.n > 0 and math.isfinite(value) else math.inf


def _context(run) -> dict:
    meta, cfg = run.meta, run.config
    objective = cfg.get("objective", "weights")
    units = [plan.Unit(u["label"], tuple(u["tensors"]), u["weights"], u["macs"], u["kind"]) for u in meta.get("units", [])]
    tensors = {t["name"]: t for t in meta.get("tensors", [])}
    totals = {k: sum(t[k] for t in tensors.values()) or 1 for k in ("weights", "macs")}
    return {"cfg": cfg, "objective": objective, "units": units, "tensors": tensors, "totals": totals,
            "max_ratio": float(cfg.get("max_ppl_ratio") or 1.1), "stat": cfg.get("verify_stat", "median"),
            "max_acc_drop": cfg.get("max_acc_drop"), "clean_acc": clean_accuracy(run.rows),
            "damages": unit_damages(run.rows)}


def _shares(ctx: dict, names: Sequence[str]) -> dict:
    return {f"share_{k}": sum(ctx["tensors"][n][k] for n in names) / ctx["totals"][k] for k in ("weights", "macs")}


def verification_table(run) -> list[dict]:
    """One row per verification (in order) and per baseline: the analog set's size and shares, the
    predicted and the measured perplexity ratio (median, CI), whether it meets the tolerance."""
    ctx = _context(run)
    damages = {u: s.median for u, s in ctx["damages"].items()}
    unit_of = {n: u.label for u in ctx["units"] for n in u.tensors}
    by_label = {u.label: u for u in ctx["units"]}
    table = []

    def row(phase, label, title, names, moved="", back=""):
        s = set_summary(run.rows, phase, label)
        labels = list(dict.fromkeys(unit_of[n] for n in names))
        whole = all(set(by_label[u].tensors) <= set(names) for u in labels)  # else no unit sum predicts it
        predicted = plan.predicted_damage(damages, labels) if whole and all(u in damages for u in labels) else math.nan
        r = {"phase": phase, "label": label, "title": title, "analog_tensors": len(names),
             "analog_weights": sum(ctx["tensors"][n]["weights"] for n in names), **_shares(ctx, names),
             "predicted_ppl_ratio": math.exp(predicted) if math.isfinite(predicted) else math.nan,
             "median": s.median, "ci_low": s.low, "ci_high": s.high, "coverage": round(s.coverage, 4),
             "n_trials": s.n, "meets": meets(s, ctx["max_ratio"], ctx["stat"]) if s.n else ""}
        if ctx["max_acc_drop"] is not None:  # the tolerance is in accuracy points: drop = 100 (clean - accuracy)
            a = accuracy_summary(run.rows, phase, label)
            drop = acc_drop_statistic(run.rows, phase, label, ctx["stat"])
            r.update({"accuracy": a.median, "acc_ci_low": a.low, "acc_ci_high": a.high,
                      "acc_drop": 100 * (ctx["clean_acc"] - a.median), "acc_drop_ci_low": 100 * (ctx["clean_acc"] - a.high),
                      "acc_drop_ci_high": 100 * (ctx["clean_acc"] - a.low),
                      "meets": drop <= float(ctx["max_acc_drop"]) if a.n else ""})
        table.append({**r, "moved_to_digital": moved, "moved_to_analog": back})

    for k, v in enumerate(run.meta.get("verifications", []), 1):
        row("verify", v["label"], f"greedy, verification {k}", plan.tensors_of(ctx["units"], v["analog_units"]),
            " ".join(v.get("moved_to_digital", [])), " ".join(v.get("moved_to_analog", [])))
    for label, names in run.meta.get("baselines", {}).items():
        row("baseline", label, plan.BASELINE_TITLES.get(label, label), names)
    return table


def decide(run_dir: str | Path) -> dict:
    """The placement kept: the most analog (by the objective) of the verified sets and baselines that met the
    tolerance (a tie goes to the planner's); all digital when none did."""
    run = read_run(run_dir)
    ctx = _context(run)
    table = verification_table(run)
    key = f"share_{ctx['objective']}"
    passing = [r for r in table if r["meets"] is True]
    best = max(passing, key=lambda r: (r[key], r["phase"] == "verify"), default=None)
    if best is None:
        return {"chosen": "all_digital", "title": "all digital (nothing analog met the tolerance)", "phase": "",
                "analog_tensors": [], "share": 0.0, "share_weights": 0.0, "share_macs": 0.0, "verified": False,
                "median_ppl_ratio": 1.0, "ci": [1.0, 1.0]}
    if best["phase"] == "verify":
        v = next(v for v in run.meta["verifications"] if v["label"] == best["label"])
        names = plan.tensors_of(ctx["units"], v["analog_units"])
    else:
        names = list(run.meta["baselines"][best["label"]])
    out = {"chosen": best["label"], "title": best["title"], "phase": best["phase"], "analog_tensors": sorted(names),
           "share": best[key], "share_weights": best["share_weights"], "share_macs": best["share_macs"],
           "verified": True, "median_ppl_ratio": best["median"], "ci": [best["ci_low"], best["ci_high"]]}
    if "acc_drop" in best:
        out.update(acc_drop=best["acc_drop"], acc_drop_ci=[best["acc_drop_ci_low"], best["acc_drop_ci_high"]],
                   clean_accuracy=ctx["clean_acc"])
    return out


def unit_table(run, analog: set[str] | None = None) -> list[dict]:
    """One row per unit in greedy order: sizes, damage alone (median, CI), damage per million of the
    objective's size, its rank, and (given the kept analog tensors) whether it ends analog."""
    ctx = _context(run)
    damages = {u: s.median for u, s in ctx["damages"].items()}
    sizes = {u.label: u.size(ctx["objective"]) for u in ctx["units"] if u.label in damages}
    rank = {u: i for i, u in enumerate(plan.greedy_order(damages, sizes), 1)}
    table = []
    for u in sorted((u for u in ctx["units"] if u.label in damages), key=lambda u: rank[u.label]):
        s = ctx["damages"][u.label]
        size = sizes[u.label]
        table.append({"unit": u.label, "kind": u.kind, "n_tensors": len(u.tensors), "weights": u.weights,
                      "macs": u.macs, "delta_nll": s.median, "ci_low": s.low, "ci_high": s.high,
                      "coverage": round(s.coverage, 4), "n_trials": s.n,
                      f"delta_nll_per_million_{ctx['objective']}": max(s.median, 0.0) / size * 1e6 if size else math.inf,
                      "greedy_rank": rank[u.label],
                      "analog": "" if analog is None else all(n in analog for n in u.tensors)})
    return table


def plot(run_dir: str | Path, name: str = "placement.png") -> list[Path]:
    """Analog share against perplexity ratio: the greedy frontier (predicted), the verified sets and the
    baselines (median and CI), the tolerance; beside it each unit's damage per size. Writes units.csv
    and verifications.csv too."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    ctx = _context(run)
    decision = decide(run_dir)
    table = verification_table(run)
    units = unit_table(run, set(decision["analog_tensors"]))
    write_table(run_dir / "verifications.csv", table)
    write_table(run_dir / "units.csv", units)
    objective, key = ctx["objective"], f"share_{ctx['objective']}"
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.5, 1]})
    damages = {u: s.median for u, s in ctx["damages"].items()}
    sizes = {u.label: u.size(objective) for u in ctx["units"] if u.label in damages}
    by_acc = ctx["max_acc_drop"] is not None  # the left panel in accuracy points lost (no NLL frontier then)
    col, low, high = ("acc_drop", "acc_drop_ci_low", "acc_drop_ci_high") if by_acc else ("median", "ci_low", "ci_high")
    tolerance = float(ctx["max_acc_drop"]) if by_acc else ctx["max_ratio"]
    if damages and not by_acc:
        front = plan.frontier(damages, sizes)
        ax.step([100 * f["share"] for f in front], [math.exp(f["predicted_delta_nll"]) for f in front], where="post",
                color="tab:gray", lw=1.5, label="greedy frontier (predicted: sum of single-unit damages)")
    ax.axhline(tolerance, color="black", ls="--", lw=1,
               label=f"tolerance {tolerance:g} points" if by_acc else f"tolerance {tolerance:g} x clean")
    markers = iter("sDP^vX")
    shown: set[str] = set()
    for r in table:
        if not r["n_trials"]:
            continue
        x, y = 100 * r[key], r[col]
        err = [[max(y - r[low], 0)], [max(r[high] - y, 0) if math.isfinite(r[high]) else 0]]
        if r["phase"] == "verify":
            color = "tab:green" if r["meets"] else "tab:red"
            outcome = "meets the tolerance" if r["meets"] else "misses"
            label = None if outcome in shown else (f"greedy, verified: {outcome}"
                                                   + ("" if by_acc else " (open circle: its prediction)"))
            shown.add(outcome)
            ax.errorbar([x], [y], yerr=err, fmt="o", color=color, ms=6, capsize=3, label=label)
            if not by_acc:
                ax.plot([x], [r["predicted_ppl_ratio"]], "o", mfc="none", color=color, ms=9)
            ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=color)
        else:
            ax.errorbar([x], [y], yerr=err, fmt=next(markers, "o"), color="tab:blue", ms=7, capsize=3,
                        label=f"baseline: {r['title']}")
    if decision["verified"]:
        ax.plot([100 * decision["share"]], [decision["acc_drop" if by_acc else "median_ppl_ratio"]], "*",
                color="gold", mec="black", ms=16,
                label=f"kept: {decision['title']} ({100 * decision['share']:.1f}% analog)", zorder=5)
    tops = [r["ci_high"] for r in table if r["n_trials"]] + [ctx["max_ratio"]]
    if not by_acc and max((t for t in tops if math.isfinite(t)), default=1.0) > 4:  # log only for a wide range
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.set_xlabel(f"analog share of the candidate {objective} (%)")
    ax.set_ylabel(f"accuracy lost on {ctx['cfg'].get('task')} (points, clean {100 * ctx['clean_acc']:.1f}%)"
                  if by_acc else "perplexity / clean perplexity")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    # the raw medians (a unit that measured below 0 shows below the axis; the prediction counts it as 0)
    ys = [u["delta_nll"] / u[objective] * 1e6 if u[objective] else 0.0 for u in units]
    colors = ["tab:green" if u["analog"] else "tab:red" for u in units]
    ax2.bar(range(len(units)), ys, color=colors, width=1.0)
    ax2.set_yscale("symlog", linthresh=max(min((abs(y) for y in ys if y), default=1e-3), 1e-6))
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_xlabel(f"units in greedy order ({len(units)} {ctx['cfg'].get('granularity', '')} units; "
                   "green analog, red digital)")
    ax2.set_ylabel(f"damage alone (median dNLL) per million {objective}")
    ax2.grid(alpha=0.3, axis="y")
    cfg = ctx["cfg"]
    tokens = sorted({r["eval_tokens"] for r in run.rows})
    per_unit = (f"{cfg.get('unit_trials')} antithetic pair(s) around {cfg.get('mean_draws')} draws"
                if cfg.get("unit_estimator", "plain") == "antithetic" else f"{cfg.get('unit_trials')} realizations")
    fig.suptitle(f"{cfg.get('model', '?')}: {cfg.get('noise_type')} ({cfg.get('scale')}, sigma "
                 f"{cfg.get('noise_level')}{', ' + cfg['analog_preset'] + ' converters' if cfg.get('analog_preset') else ''}"
                 f"), targets {cfg.get('targets')}; per unit {per_unit}, {cfg.get('n_trials')} realizations per set, "
                 f"{tokens[0] if len(tokens) == 1 else tokens} tokens", fontsize=9)
    return [save_figure(fig, run_dir / name)]


def format_placement_table(run_dir: str | Path) -> str:
    """Console table: every verification and baseline, then the placement kept and its digital tensors."""
    run = read_run(run_dir)
    ctx = _context(run)
    decision = decide(run_dir)
    key = f"share_{ctx['objective']}"
    stat = "median" if ctx["stat"] == "median" else "CI high"
    lines = [f"{'placement':<34} {'tensors':>7} {'analog':>7} {'predicted':>9} {'measured (median)':>17} "
             f"{'CI':>17} {'meets':>5}", "-" * 102]
    for r in verification_table(run):
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["n_trials"] else "-"
        pred = f"{r['predicted_ppl_ratio']:.3f}" if math.isfinite(r["predicted_ppl_ratio"]) else "-"
        acc = (f"  acc drop {r['acc_drop']:.1f} [{r['acc_drop_ci_low']:.1f}, {r['acc_drop_ci_high']:.1f}] points"
               if "acc_drop" in r and r["n_trials"] else "")
        lines.append(f"{r['title'][:34]:<34} {r['analog_tensors']:>7} {100 * r[key]:>6.1f}% {pred:>9} "
                     f"{r['median']:>17.3f} {ci:>17} {('yes' if r['meets'] else 'no') if r['n_trials'] else '-':>5}{acc}")
    n_total = len(ctx["tensors"])
    digital = sorted(set(ctx["tensors"]) - set(decision["analog_tensors"]))
    if ctx["max_acc_drop"] is not None:
        lines.append(f"(perplexity / clean perplexity; tolerance: at most {ctx['max_acc_drop']:g} points of accuracy lost "
                     f"on {ctx['cfg'].get('task')} (clean {100 * ctx['clean_acc']:.1f}%), on the "
                     f"{'median' if ctx['stat'] == 'median' else 'CI low'}; analog = share of the candidate "
                     f"{ctx['objective']})")
    else:
        lines.append(f"(perplexity / clean perplexity; tolerance {ctx['max_ratio']:g} on the {stat}; analog = share "
                     f"of the candidate {ctx['objective']})")
    lines.append(f"kept: {decision['title']}: {100 * decision['share']:.1f}% of the candidate {ctx['objective']} "
                 f"analog, {len(digital)} of {n_total} tensors digital")
    by_kind: dict[str, int] = {}
    for n in digital:
        by_kind[ctx["tensors"][n]["kind"]] = by_kind.get(ctx["tensors"][n]["kind"], 0) + 1
    if digital:
        lines.append("digital by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())))
    return "\n".join(lines)
