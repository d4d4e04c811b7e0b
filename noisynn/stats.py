"""Statistics over noise realizations: medians with distribution-free confidence intervals.

With n i.i.d. trials, the interval between order statistics x_(j) and x_(n+1-j) covers the
true median with probability 1 - 2 P(Binom(n, 1/2) <= j - 1). We take the narrowest such
interval with coverage >= 90%; when n is too small for that (n < 5), the full range
[min, max] and its actual coverage (75% for n = 3) are reported. No normality assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

TARGET_COVERAGE = 0.90


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    coverage: float  # probability that [low, high] covers the true median
    n: int  # values used
    n_nonfinite: int  # inf / nan values among them (counted as +inf, i.e. broken)


def _binom_cdf_half(k: int, n: int) -> float:
    return sum(math.comb(n, i) for i in range(0, k + 1)) / 2 ** n


def median_ci(values: Iterable[float], nonfinite_as_inf: bool = True) -> Summary:
    """Median and order-statistic confidence interval; nan/inf count as +inf when asked, else dropped."""
    arr = np.asarray([float(v) for v in values], dtype=float)
    bad = ~np.isfinite(arr)
    if nonfinite_as_inf:
        arr = np.where(bad, np.inf, arr)
    else:
        arr = arr[~bad]
    n = arr.size
    if n == 0:
        return Summary(float("nan"), float("nan"), float("nan"), 0.0, 0, int(bad.sum()))
    xs = np.sort(arr)
    med = float(np.median(xs)) if np.isfinite(xs).all() else float(xs[(n - 1) // 2] if n % 2 else
                                                                    (xs[n // 2 - 1] + xs[n // 2]) / 2)
    j, coverage = 1, 1 - 2 * _binom_cdf_half(0, n)
    for cand in range(1, n // 2 + 1):
        cov = 1 - 2 * _binom_cdf_half(cand - 1, n)
        if cov >= TARGET_COVERAGE:
            j, coverage = cand, cov
    return Summary(med, float(xs[j - 1]), float(xs[n - j]), coverage, n, int(bad.sum()))


def log_crossing(xs: Sequence[float], ys: Sequence[float], threshold: float) -> float:
    """First x at which y reaches ``threshold``, interpolating log y linearly between points.

    Returns the first x when y starts at or above the threshold, the first non-finite point's
    x when y jumps to inf/nan, and nan when y never reaches it.
    """
    prev_x = prev_y = None
    for x, y in zip(xs, ys):
        y = float(y) if np.isfinite(y) else float("inf")
        if y >= threshold:
            if prev_x is None:
                return float(x)
            if not np.isfinite(y):
                return float(x)
            ly0, ly1, lt = math.log(prev_y), math.log(y), math.log(threshold)
            return float(prev_x + (x - prev_x) * (lt - ly0) / (ly1 - ly0)) if ly1 > ly0 else float(x)
        prev_x, prev_y = x, y
    return float("nan")


def group_by(rows: Sequence[dict], field: str) -> dict:
    """Rows grouped by the value of ``field``, keys in first-seen order."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(r[field], []).append(r)
    return groups


def not_measured(row: dict, metric: str) -> bool:
    """True when ``metric`` is nan in a row whose model output was finite (``finite`` truthy): nothing was
    measured there (e.g. the explorer's exported curve samples no text), which is not a failure. A row
    without a ``finite`` column, or with a broken model, keeps its nan/inf as a failure."""
    value = row.get(metric)
    return bool(row.get("finite", False)) and isinstance(value, float) and math.isnan(value)


def measured_rows(rows: Sequence[dict], metric: str) -> list[dict]:
    """The rows where ``metric`` was measured (``not_measured`` left out)."""
    return [r for r in rows if metric in r and not not_measured(r, metric)]


def summarize_levels(rows: Sequence[dict], metric: str, by: str = "sigma") -> list[dict]:
    """Per level: the median of ``metric`` across trials, its CI and coverage, and the token count.

    Perplexity-like metrics count non-finite values as +inf (a broken model); others drop them.
    """
    broken_is_inf = metric in ("perplexity", "nll", "bits_per_byte")
    out = []
    for level, group in sorted(group_by(rows, by).items(), key=lambda kv: kv[0]):
        s = median_ci([r[metric] for r in group], nonfinite_as_inf=broken_is_inf)
        tokens = sorted({r["eval_tokens"] for r in group if "eval_tokens" in r})
        out.append({by: level, "metric": metric, "median": s.median, "ci_low": s.low, "ci_high": s.high,
                    "coverage": round(s.coverage, 4), "n_trials": s.n, "n_nonfinite": s.n_nonfinite,
                    "eval_tokens": tokens[0] if len(tokens) == 1 else tokens})
    return out


def threshold_crossings(rows: Sequence[dict], factor: float = 2.0, metric: str = "perplexity", x: str = "sigma",
                        by: str = "trial") -> dict:
    """Per realization (``by``): the ``x`` at which ``metric`` first reaches ``factor`` times its
    clean value (the median at x = 0), by ``log_crossing``; then their median and CI.

    A realization that never reaches the threshold within the sweep counts as +inf (beyond the
    largest level) in the median and is counted in ``n_not_reached``.
    """
    baseline = median_ci([r[metric] for r in rows if r[x] == 0]).median
    threshold = factor * baseline
    per: dict = {}
    for key, group in group_by(rows, by).items():
        points = sorted((r[x], r[metric]) for r in group)
        per[key] = log_crossing([p[0] for p in points], [p[1] for p in points], threshold)
    s = median_ci(per.values())
    return {"baseline": baseline, "factor": factor, "threshold": threshold, "per_trial": per, "median": s.median,
            "ci_low": s.low, "ci_high": s.high, "coverage": round(s.coverage, 4), "n_trials": s.n,
            "n_not_reached": s.n_nonfinite}


def rolling_median(values: Sequence[float], window: int) -> np.ndarray:
    """Centred rolling median over ``window`` points (shrinking at the ends); nan values are ignored."""
    arr = np.asarray(values, dtype=float)
    half = max(int(window), 1) // 2
    out = np.full(arr.shape, np.nan)
    for i in range(arr.size):
        part = arr[max(0, i - half): i + half + 1]
        part = part[np.isfinite(part)]
        if part.size:
            out[i] = float(np.median(part))
    return out


def jump_share(curve: Sequence[float], window: int, direction: int = 0) -> tuple[float, float, int]:
    """How abrupt a change is: (largest change within ``window`` steps, total range, where it starts).

    ``J = max_t |c[t + window] - c[t]|`` and ``R = max(c) - min(c)`` over the finite points;
    ``J / R`` is near ``window / len(c)`` for a steady ramp and near 1 for a step. With
    ``direction`` +1 (or -1) only rises (or falls) count: ``J = max_t direction (c[t + w] - c[t])``.
    Returns (J, R, t of the largest jump); (nan, nan, -1) for fewer than two finite points.
    """
    arr = np.asarray(curve, dtype=float)
    finite = np.isfinite(arr)
    if finite.sum() < 2:
        return float("nan"), float("nan"), -1
    total = float(np.nanmax(arr) - np.nanmin(arr))
    w = max(1, min(int(window), arr.size - 1))
    diffs = arr[w:] - arr[:-w]
    diffs = np.abs(diffs) if direction == 0 else np.sign(direction) * diffs
    if not np.isfinite(diffs).any():
        return float("nan"), total, -1
    at = int(np.nanargmax(diffs))
    return float(diffs[at]), total, at
