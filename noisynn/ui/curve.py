"""The explorer's growing curve: points per setting, its figures, export as sweep run folders.

Every point computed in the page, kept per setting, drawn as perplexity against sigma (one line per setting)
and, for a device read at several times, against time; exported as run folders of the sweep's schema
(``noisynn.runs.folder.RunFolder``, the runner's leading columns), which ``generate_graphs`` and the Saved
runs tab read like any other sweep.

A setting is everything but sigma (``Setting.curve_key``: model, noise, scale, targets, blocks, device
and converter flags, seed, evaluation tokens). A second point at the same sigma replaces the first.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from .controls import constructor_params
from ..analog.fields import default
from ..analog.setting import cli_values
from .setting import Setting, noise_seed
from ..runs.schema import LEADING_COLUMNS
from ..runs.folder import RunFolder
from ..runs.runner import Point, leading_columns

# The sweep's metric columns (noisynn/experiments/sweep/run.py METRICS; a test keeps them equal): an
# exported setting is a sweep run folder. Metrics the page does not measure are nan.
SWEEP_METRICS = ("perplexity", "nll", "bits_per_byte", "eval_tokens", "entropy_bits", "distinct_1", "distinct_2",
                 "repetition", "finite")
DEFAULT_T_SECONDS = default("t_seconds")  # PCMNoise's default read time (declared in noisynn.analog.fields)


@dataclass(frozen=True)
class CurvePoint:
    """One computed point: noisy and clean perplexity on the same tokens, at ``sigma``."""

    sigma: float
    perplexity: float
    nll: float
    bits_per_byte: float
    eval_tokens: int
    clean_perplexity: float
    clean_nll: float
    clean_bits_per_byte: float
    entropy_bits: float = float("nan")


def t_seconds_of(s: Setting) -> float | None:
    """The read time of a device model that has one (its ``t_seconds`` flag, else its default); else None."""
    if "t_seconds" not in constructor_params(s.noise_type):
        return None
    return float(dict(s.flags).get("t_seconds", DEFAULT_T_SECONDS))


class Curve:
    """Points per setting, in the order the settings were first explored."""

    def __init__(self):
        self.settings: dict[tuple, Setting] = {}
        self.points: dict[tuple, dict[float, CurvePoint]] = {}

    def add(self, s: Setting, noisy, clean, entropy_bits: float = float("nan")) -> CurvePoint:
        """Keep the point of setting ``s`` at ``s.sigma`` (``noisy``/``clean``: PerplexityResult)."""
        p = CurvePoint(float(s.sigma), noisy.perplexity, noisy.nll, noisy.bits_per_byte, noisy.n_tokens,
                       clean.perplexity, clean.nll, clean.bits_per_byte, float(entropy_bits))
        self.settings.setdefault(s.curve_key, s)
        self.points.setdefault(s.curve_key, {})[p.sigma] = p
        return p

    def copy(self) -> "Curve":
        """A new curve with these points: a handler adds to a copy and yields it, so the page's state only ever
        holds a curve the page has shown (a point finished after Stop, never yielded, stays out of Export)."""
        new = Curve()
        new.settings = dict(self.settings)
        new.points = {k: dict(v) for k, v in self.points.items()}
        return new

    def clear(self) -> None:
        self.settings.clear()
        self.points.clear()

    @property
    def n_points(self) -> int:
        return sum(len(v) for v in self.points.values())

    def lines(self) -> list[tuple[Setting, list[CurvePoint]]]:
        return [(self.settings[k], sorted(v.values(), key=lambda p: p.sigma)) for k, v in self.points.items()]

    def table(self) -> list[list]:
        """Rows for the page: setting, sigma, perplexity (4 significant digits), clean perplexity."""
        return [[s.label, f"{p.sigma:g}", f"{p.perplexity:.4g}", f"{p.clean_perplexity:.4g}"]
                for s, pts in self.lines() for p in pts]

    def time_lines(self) -> list[tuple[str, float, list[tuple[float, float]]]]:
        """(label, sigma, [(t, perplexity)]) for device settings read at two or more times at one sigma."""
        groups: dict[tuple, dict] = {}
        for s, pts in self.lines():
            t = t_seconds_of(s)
            if t is None:
                continue
            rest = tuple((k, v) for k, v in s.flags if k != "t_seconds")
            for p in pts:
                g = groups.setdefault((replace(s, flags=rest).curve_key, p.sigma),
                                      {"label": s.describe(without=("t_seconds",)), "sigma": p.sigma, "pts": {}})
                g["pts"][t] = p.perplexity
        return [(g["label"], g["sigma"], sorted(g["pts"].items())) for g in groups.values() if len(g["pts"]) >= 2]

    def figure(self):
        """Perplexity against sigma, one line per setting (log axes); beside it perplexity against read time."""
        from matplotlib.figure import Figure

        times = self.time_lines()
        fig = Figure(figsize=(11 if times else 7, 3.6), dpi=100, layout="constrained")
        ax = fig.add_subplot(1, 2 if times else 1, 1)
        for i, (s, pts) in enumerate(self.lines()):
            shown = [p for p in pts if p.sigma > 0]
            line, = ax.plot([p.sigma for p in shown], [_finite(p.perplexity) for p in shown], "o-", ms=4,
                            label=f"{i + 1}: {s.label}")
            if pts:
                ax.axhline(pts[0].clean_perplexity, color=line.get_color(), ls=":", lw=1)
        _log_axes(ax)
        ax.set_xlabel("sigma (see the line on what sigma means)")
        ax.set_ylabel("perplexity (dotted: clean)")
        ax.set_title(f"explored points ({self.n_points})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if self.points:
            ax.legend(fontsize=7, loc="upper left")
        if times:
            bx = fig.add_subplot(1, 2, 2)
            for label, sigma, pts in times:
                bx.plot([t for t, _ in pts], [_finite(v) for _, v in pts], "s-", ms=4, label=f"{label} sigma={sigma:g}")
            _log_axes(bx)
            bx.set_xlabel("time after programming (s)")
            bx.set_title("perplexity against read time", fontsize=10)
            bx.grid(alpha=0.3, which="both")
            bx.legend(fontsize=7)
        return fig

    def export(self, root: str | Path = "runs") -> Path:
        """Write one sweep run folder per setting under ``root/ui-curve-<UTC time>/``; returns that folder.

        Each holds run.json (experiment ``sweep``, the setting as config), results.csv (leading columns,
        the sweep's metrics; trial 0, the derived seed) with the clean point at sigma 0 first.
        """
        if not self.points:
            from ..errors import NoisyNNError

            raise NoisyNNError("the curve is empty: compute a point (release the slider, or Sweep) first")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"ui-curve-{stamp}"
        n = 1
        while base.exists():
            n += 1
            base = Path(root) / f"ui-curve-{stamp}-{n}"
        for i, (s, pts) in enumerate(self.lines()):
            _write_setting(base / f"{i + 1:02d}-{_slug(s.noise_type)}", s, pts)
        return base


def _log_axes(ax) -> None:
    """Log axes labelled with plain numbers (a narrow perplexity range otherwise reads 1.41 x 10^1)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _finite(v: float) -> float:
    return v if math.isfinite(v) else float("nan")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40]


def _write_setting(path: Path, s: Setting, pts: list[CurvePoint]) -> None:
    sigmas = ([0.0] if pts[0].sigma > 0 else []) + [p.sigma for p in pts]
    args = cli_values(dict(s.flags))  # the given flags as the CLI's parser stores them
    config = {"experiment": "sweep", "model": s.model, "noise_type": s.noise_type, "scale": s.scale,
              "targets": s.target_spec, "include_bias": s.include_bias, "seed": s.seed, "n_trials": 1,
              "eval_tokens": s.eval_tokens, "max_length": s.max_length, "max_noise": max(sigmas),
              "n_levels": len(sigmas), "source": "noisynn ui (the explorer's curve)",
              **({"blocks": s.block_list} if s.blocks != "all" else {}),
              **{k: args[k] for k, _ in s.flags if k in args}}
    folder = RunFolder(path, list(LEADING_COLUMNS) + list(SWEEP_METRICS))
    folder.open(config, {"experiment": "sweep", "levels": sigmas, "n_points": len(sigmas),
                         "seeds": f"seed = the realization's derived seed (trial 0 of base seed {s.seed}); "
                                  f"= derive_seed({s.seed}, 'noise', '', 0) = {noise_seed(s.seed)}"})
    leading = leading_columns("sweep", s.model, s.noise_type, s.scale, s.seed)
    first = pts[0]
    rows = [] if first.sigma == 0 else [(0.0, first.clean_perplexity, first.clean_nll, first.clean_bits_per_byte,
                                        first.eval_tokens, float("nan"))]
    rows += [(p.sigma, p.perplexity, p.nll, p.bits_per_byte, p.eval_tokens, p.entropy_bits) for p in pts]
    for level, (sigma, ppl, nll, bpb, tokens, entropy) in enumerate(rows):
        nan = float("nan")
        folder.append({**leading(Point(level, sigma, 0)), "perplexity": ppl, "nll": nll, "bits_per_byte": bpb,
                       "eval_tokens": tokens, "entropy_bits": entropy, "distinct_1": nan, "distinct_2": nan,
                       "repetition": nan, "finite": int(math.isfinite(ppl))})
    folder.finish()
