"""The run folder's schema: file names, columns, the types of run.json's fields, cell formatting (no torch).

What ``noisynn.runs.read`` checks and ``noisynn.runs.folder.RunFolder`` writes:

- ``run.json``: one JSON object. Keys: ``experiment``; ``config`` (an object: the parsed
  flags, compared on resume); ``status`` (``running`` | ``finished`` | ``interrupted`` |
  ``failed``); ``started``/``finished`` (UTC ISO times); ``sessions``, ``resumed``; ``git``,
  ``versions``, ``argv``, ``processes``; ``model`` (``fingerprint``: sha256 of the weights,
  or the hub commit) and ``text`` (``sha256`` of the evaluated text), both compared on
  resume; ``n_points`` (points the run will have when complete); experiment-specific extras
  (``levels``, ``injection`` ...).
- ``results.csv``: UTF-8, a header then one row per finished point, leading columns
  ``experiment, model, noise_type, scale, sigma, trial, seed`` (``sigma`` a number, ``trial``
  and ``seed`` integers), then the experiment's metric columns. Floats are written with full
  precision (``repr``). A run with a per-layer noise schedule has a ``layer_schedule`` column (text) after the
  leading ones; other runs have none. **Broken trials**: a perplexity-like metric (``perplexity``, ``nll``,
  ``bits_per_byte``) of a model whose logits became non-finite is ``inf`` (a broken model
  predicts nothing: infinite perplexity), in results.csv, summary.csv and on the console
  alike; a nan read from an older folder is read as inf. Other metrics of a broken trial
  (entropy, distinct-n) are ``nan`` and are left out of medians (``pandas`` skips nan too,
  so ``groupby(...).median()`` on results.csv agrees with summary.csv).
- ``samples.jsonl``: one JSON object per line: the row's key (``sigma``, ``trial``...) and
  ``text`` (plus ``kind``, ``prompt``).
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Sequence


LEADING_COLUMNS = ("experiment", "model", "noise_type", "scale", "sigma", "trial", "seed")
# After the leading columns, only in runs with a per-layer noise schedule: its label (e.g. linear:0.25->1.75,energy).
SCHEDULE_COLUMN = "layer_schedule"
RESULTS_CSV = "results.csv"
RUN_JSON = "run.json"
SAMPLES_JSONL = "samples.jsonl"
# Config keys that do not change the numbers, so a resume may differ in them.
VOLATILE_KEYS = {"out", "output", "progress", "quiet"}
# Metrics whose value for a broken (non-finite) model is +inf: the one convention in every file.
BROKEN_IS_INF = ("perplexity", "nll", "bits_per_byte")
# run.json keys the writer owns, with the JSON type each must have (checked by read_meta): a hand-edited
# or damaged value would otherwise surface as a traceback (sessions + 1) or pass a comparison unseen.
META_TYPES = {"experiment": str, "status": str, "started": str, "sessions": int, "resumed": bool,
              "n_points": int, "levels": list, "argv": list}
NESTED_META_TYPES = {("model", "fingerprint"): str, ("text", "sha256"): str}
JSON_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}
# Columns that must hold numbers when present (checked line by line by read_rows).
NUMBER_COLUMNS = {"sigma": float, "trial": int, "seed": int}


def format_value(value) -> str:
    """CSV text of a value: floats keep full precision (repr), inf/nan as 'inf'/'nan'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return "" if value is None else str(value)


def parse_value(text: str):
    """Inverse of ``format_value`` for numbers and booleans; other text stays a string."""
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def broken_as_inf(row: dict) -> dict:
    """``row`` with nan in the perplexity-like columns replaced by +inf (the broken-trial convention)."""
    for k in BROKEN_IS_INF:
        v = row.get(k)
        if isinstance(v, float) and math.isnan(v):
            row[k] = math.inf
    return row


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def key_of(row: dict, key: Sequence[str]) -> tuple:
    """Identity of a point; floats compared by their CSV text so a read-back row matches."""
    return tuple(format_value(row[k]) if isinstance(row[k], float) else str(row[k]) for k in key)


def elapsed(start: float) -> float:
    return round(time.perf_counter() - start, 3)
