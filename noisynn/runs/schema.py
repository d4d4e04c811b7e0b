"""The run folder's schema: file names, columns, run.json's field types, cell formatting and parsing (no torch)."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Sequence


LEADING_COLUMNS = ("experiment", "model", "noise_type", "scale", "sigma", "trial", "seed")
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
