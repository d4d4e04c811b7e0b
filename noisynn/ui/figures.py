"""The explorer's figures and tables: next-token bars, entropy, noise during generation (no torch).

Also the metrics table, the CSV of the current results (matplotlib Figure objects, no pyplot state; no torch)."""

from __future__ import annotations

import csv
import io
import math
import tempfile
import unicodedata
from pathlib import Path
from typing import Sequence

from ..runs.schema import format_value

CSV_COLUMNS = ("experiment", "model", "noise_type", "scale", "sigma", "trial", "seed", "base_seed", "targets",
               "blocks", "prompt", "max_new_tokens", "perplexity", "nll", "bits_per_byte", "eval_tokens",
               "entropy_bits", "continuation")
METRICS_HEADERS = ["", "sigma", "perplexity", "bits/byte", "mean entropy (bits)", "eval tokens"]
MAX_LABEL = 14  # characters of a token label on the chart; longer ones end in "…"
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", " ": "␣", "$": "\\$"}


def token_label(text: str) -> str:
    """A token as one short visible line: newline -> ``\\n``, tab -> ``\\t``, space -> ``␣``, other control or
    invisible characters -> ``\\xNN``/``\\uNNNN``; ``$`` escaped (matplotlib would start math); at most
    MAX_LABEL characters; the empty token reads ``''``."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch)[0] in "CZ":  # control, format, unassigned, other separators
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    label = "".join(out) or "''"
    return label if len(label) <= MAX_LABEL else label[:MAX_LABEL - 1] + "…"


def _figure(width: float = 6.4, height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def probability_figure(top: Sequence[tuple[str, float, float]], sigma: float):
    """Horizontal bars: next-token probability after the prompt, clean vs noisy (labels already escaped)."""
    fig, ax = _figure(5.6, max(3.4, 0.24 * len(top) + 1.3))
    labels = [t for t, _, _ in top]
    y = list(range(len(top)))
    ax.barh([v - 0.2 for v in y], [c for _, c, _ in top], height=0.4, label="clean", color="tab:blue")
    ax.barh([v + 0.2 for v in y], [n for _, _, n in top], height=0.4, label=f"noisy (sigma={sigma:g})",
            color="tab:red")
    ax.set_yticks(y, labels, fontsize=8, family="monospace")
    ax.invert_yaxis()
    ax.set_xlabel("probability")
    ax.set_xlim(0, min(1.0, 1.15 * max([p for _, c, n in top for p in (c, n)] + [0.05])))
    ax.set_title("next token after the prompt (top-k of each)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def entropy_figure(clean: Sequence[float], noisy: Sequence[float], sigma: float):
    """Next-token entropy (bits) at each generated token, clean vs noisy."""
    fig, ax = _figure(5.6, 3.4)
    ax.plot(range(1, len(clean) + 1), clean, "o-", ms=3, label="clean", color="tab:blue")
    ax.plot(range(1, len(noisy) + 1), noisy, "o-", ms=3, label=f"noisy (sigma={sigma:g})", color="tab:red")
    ax.set_xlabel("generated token")
    ax.set_ylabel("entropy (bits)")
    top = max([h for h in list(clean) + list(noisy) if math.isfinite(h)] + [1.0])
    ax.set_ylim(0, top * 1.3)
    ax.set_title("next-token entropy along the generation", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    ax.grid(alpha=0.3)
    return fig


def drift_figure(steps):
    """Entropy and surprisal of each token generated under growing noise, against the sigma it was produced at."""
    fig, ax = _figure(6.4, 2.8)
    xs = [st.sigma for st in steps]
    ax.plot(xs, [st.entropy for st in steps], "o-", ms=3, color="tab:red", label="entropy (bits)")
    ax.plot(xs, [-st.logprob / math.log(2) for st in steps], "s-", ms=3, color="tab:gray",
            label="surprisal of the chosen token (bits)")
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("sigma at that token")
    ax.set_title("each token under growing noise", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def csv_text(rows: Sequence[dict], columns: Sequence[str] = CSV_COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([format_value(r.get(c)) for c in columns])
    return buf.getvalue()


def write_csv(rows: Sequence[dict], folder: str | Path | None = None) -> Path:
    """The rows as a CSV file in a fresh temporary folder (for the download button)."""
    folder = Path(folder or tempfile.mkdtemp(prefix="noisynn-ui-"))
    path = folder / "noisynn-ui-results.csv"
    path.write_text(csv_text(rows), encoding="utf-8")
    return path


def metrics_table(rows: Sequence[dict]) -> list[list]:
    """Rows for the on-page table: condition, sigma, perplexity, bits/byte, mean entropy, tokens."""
    def num(v, fmt):
        return "" if v is None else (format(v, fmt) if isinstance(v, float) and math.isfinite(v) else str(v))

    return [[label, num(r["sigma"], "g"), num(r["perplexity"], ".4g"), num(r["bits_per_byte"], ".3f"),
             num(r["entropy_bits"], ".2f"), "" if r["eval_tokens"] is None else r["eval_tokens"]]
            for label, r in zip(("clean", "noisy"), rows)]
