"""Time parsing and labels for device read times: '1h', '1d', '1y' <-> seconds (no torch)."""

from __future__ import annotations

import math

from ..analog.fields import FIELDS
from ..errors import NoisyNNError

TIME_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "mo": 30 * 86400.0, "y": 365 * 86400.0}


MAX_SECONDS = FIELDS["t_seconds"].most  # the latest read time: --t_seconds' declared bound (noisynn.analog.fields)


def parse_time(text: str) -> float:
    """Seconds from '3600', '1s', '1min', '1h', '1d', '1mo' (30 d) or '1y' (365 d)."""
    text = str(text).strip()
    for unit in sorted(TIME_UNITS, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].strip():
            number = text[: -len(unit)]
            break
    else:
        number, unit = text, "s"
    try:
        value = float(number) * TIME_UNITS[unit]
    except ValueError:
        raise NoisyNNError(f"'{text}' is not a time (a number of seconds, or with a unit: "
                           f"{', '.join(TIME_UNITS)})") from None
    if not (math.isfinite(value) and value >= 0):
        raise NoisyNNError(f"time '{text}' must be finite and >= 0")
    if value > MAX_SECONDS:  # as --t_seconds (options.FLAG_BOUNDS): beyond, figure axes overflow too
        raise NoisyNNError(f"time '{text}' is above {MAX_SECONDS:g} s, the most it takes "
                           f"({FIELDS['t_seconds'].why})")
    return value


def parse_times(text: str) -> list[float]:
    """``--times``: a comma list of distinct read times (``parse_time``), each > 0, sorted. 0 s is refused: the
    figures' time axis is logarithmic, and a read at 0 s is the programmed state itself."""
    times = [parse_time(t) for t in str(text).split(",") if t.strip()]
    if not times or len(set(times)) != len(times):
        raise NoisyNNError(f"--times needs distinct times, got '{text}'")
    if min(times) <= 0:
        raise NoisyNNError(f"--times must be > 0 s (the time axis is logarithmic; 1s reads right after "
                           f"programming), got '{text}'")
    return sorted(times)


def time_label(seconds: float) -> str:
    """Short label: 1 s, 1 min, 1 h, 1 d, 1 mo, 1 y (largest unit that divides evenly), else seconds."""
    for unit in ("y", "mo", "d", "h", "min", "s"):
        n = seconds / TIME_UNITS[unit]
        if n >= 1 and abs(n - round(n)) < 1e-9:
            return f"{round(n)} {unit}"
    return f"{seconds:g} s"
