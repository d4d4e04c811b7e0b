"""Per-layer noise schedules: sigma as a function of transformer block depth (no torch).

A schedule gives block ``b`` of ``n`` blocks a multiplier ``m_b``; the weights of that block then get noise at
``sigma * m_b`` (whatever sigma means for the noise type: a std, a quantization step, a fault fraction, a
device-noise multiplier; see ``NoiseInjector.apply``). With depth ``x = b / (n - 1)`` (0 at the first block,
1 at the last; ``x = 0`` for a one-block model) the raw multiplier ``r_b`` is

    constant   r_b = 1
    linear     r_b = start + (end - start) x
    exp        r_b = start (end / start)^x                          (start, end > 0: geometric in depth)
    cosine     r_b = end + (start - end) (1 + cos(pi x)) / 2        (start at x = 0, end at x = 1, flat at both)
    table      r_b = values[b]                                      (one number per block, read from a file)

Normalization (``normalize``) makes schedules comparable at equal total noise energy. The noise energy of an
additive noise is sum over targeted tensors t of n_t (sigma m_{b(t)} u_t)^2 (n_t: its element count), so with
``"energy"`` (the default) the multipliers are ``m_b = c r_b`` with c chosen so that

    sum_t n_t m_{b(t)}^2 = sum_t n_t       i.e.   c^2 = sum_b N_b / sum_b N_b r_b^2

(N_b: targeted elements of block b, counted from the actual targets). For the absolute scale (u = 1) this is the
constant schedule's energy exactly; for relative scales it is equal energy in units of u. Tensors outside the
blocks (the head, the embeddings, ``other``) keep multiplier 1 on both sides, so they drop out of c.
``"none"`` uses ``m_b = r_b`` as given. ``constant`` is no schedule at all: the injector's code path and numbers
are those of a run without one (bit-identical weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import NoisyNNError

KINDS = ("constant", "linear", "exp", "cosine", "table")
NORMALIZE = ("energy", "none")


@dataclass(frozen=True)
class LayerSchedule:
    """A checked schedule: ``kind`` in KINDS; ``start``, ``end`` (linear, exp, cosine); ``values`` (table, one per
    block; ``source`` names its file); ``normalize`` in NORMALIZE. Build it with ``make_schedule``."""

    kind: str = "constant"
    start: float | None = None
    end: float | None = None
    values: tuple[float, ...] | None = None
    normalize: str = "energy"
    source: str | None = None

    @property
    def is_constant(self) -> bool:
        return self.kind == "constant"

    def multiplier(self, block: int, n_blocks: int) -> float:
        """The raw multiplier r_b of block ``block`` of ``n_blocks`` (module doc), before normalization."""
        if not 0 <= block < n_blocks:
            raise NoisyNNError(f"block {block} is outside the model's {n_blocks} blocks")
        if self.kind == "table":
            return float(self.values[block])
        x = block / (n_blocks - 1) if n_blocks > 1 else 0.0
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear":
            return self.start + (self.end - self.start) * x
        if self.kind == "exp":
            return self.start * (self.end / self.start) ** x
        return self.end + (self.start - self.end) * (1 + math.cos(math.pi * x)) / 2  # cosine

    def multipliers(self, n_blocks: int, params_per_block: Mapping[int, int] | None = None) -> tuple[float, ...]:
        """m_b for every block 0..n_blocks-1: the raw r_b, rescaled to equal energy over the targeted elements
        ``params_per_block`` (block -> element count; blocks not in it hold no targets) when ``normalize`` is
        "energy". A table of another length than ``n_blocks`` is refused in one line."""
        if self.kind == "table" and len(self.values) != n_blocks:
            raise NoisyNNError(f"the layer schedule table {self.source or ''} has {len(self.values)} values but the "
                               f"model has {n_blocks} blocks; give one value per block")
        raw = [self.multiplier(b, n_blocks) for b in range(n_blocks)]
        if self.is_constant or self.normalize == "none":
            return tuple(raw)
        counts = {b: n for b, n in (params_per_block or {b: 1 for b in range(n_blocks)}).items()
                  if 0 <= b < n_blocks and n > 0}
        if not counts:  # nothing in the blocks is targeted: nothing to normalize
            return tuple(raw)
        energy = sum(n * raw[b] ** 2 for b, n in counts.items())
        if energy == 0:
            raise NoisyNNError(f"the {self.label()} layer schedule is 0 on every targeted block; "
                               "equal-energy normalization needs some noise (or --schedule_normalize none)")
        c = math.sqrt(sum(counts.values()) / energy)
        return tuple(c * r for r in raw)

    def label(self) -> str:
        """Short text for tables and figures, e.g. ``linear:0.25->1.75,energy``, ``table:file.txt,none``."""
        if self.is_constant:
            return "constant"
        what = f"table:{Path(self.source).name if self.source else len(self.values)}" if self.kind == "table" \
            else f"{self.kind}:{self.start:g}->{self.end:g}"
        return f"{what},{self.normalize}"

    def record(self) -> dict:
        """What run.json records of the schedule itself (the multipliers used are recorded beside it)."""
        out = {"kind": self.kind, "label": self.label()}
        if self.kind in ("linear", "exp", "cosine"):
            out.update(start=self.start, end=self.end)
        if self.kind == "table":
            out.update(values=list(self.values), file=self.source)
        if not self.is_constant:
            out["normalize"] = self.normalize
        return out


def make_schedule(kind: str = "constant", start: float | None = None, end: float | None = None,
                  values: Sequence[float] | None = None, normalize: str | None = None,
                  source: str | None = None) -> LayerSchedule:
    """The one check of a schedule setting; raises NoisyNNError in one line (flag names as the CLI spells them)."""
    if kind not in KINDS:
        raise NoisyNNError(f"unknown --layer_schedule '{kind}'; known: {', '.join(KINDS)}")
    normalize = normalize or "energy"
    if normalize not in NORMALIZE:
        raise NoisyNNError(f"unknown --schedule_normalize '{normalize}'; known: {', '.join(NORMALIZE)}")
    if kind in ("linear", "exp", "cosine"):
        if start is None or end is None:
            raise NoisyNNError(f"--layer_schedule {kind} needs --schedule_start and --schedule_end "
                               "(the multipliers at the first and the last block)")
        if values is not None:
            raise NoisyNNError(f"--schedule_file gives a table; use it with --layer_schedule table, not {kind}")
        for name, v in (("start", start), ("end", end)):
            if not math.isfinite(v) or v < 0 or (kind == "exp" and v == 0):
                bound = "> 0" if kind == "exp" else ">= 0"
                raise NoisyNNError(f"--schedule_{name} must be a finite number {bound} for --layer_schedule {kind}, "
                                   f"got {v}")
        return LayerSchedule(kind, float(start), float(end), None, normalize)
    if start is not None or end is not None:
        raise NoisyNNError(f"--schedule_start and --schedule_end apply to linear, exp and cosine schedules, "
                           f"not --layer_schedule {kind}")
    if kind == "table":
        if values is None:
            raise NoisyNNError("--layer_schedule table needs --schedule_file FILE (one multiplier per block)")
        values = tuple(float(v) for v in values)
        bad = [v for v in values if not math.isfinite(v) or v < 0]
        if bad or not values:
            raise NoisyNNError(f"the layer schedule table {source or ''} needs finite numbers >= 0, one per block; "
                               f"got {bad[0] if bad else 'none'}")
        return LayerSchedule("table", None, None, values, normalize, source)
    if values is not None:
        raise NoisyNNError("--schedule_file gives a table; use it with --layer_schedule table")
    return LayerSchedule("constant", normalize=normalize)


def parse_table(text: str, source: str = "the table") -> tuple[float, ...]:
    """Multipliers from a table's text: numbers separated by newlines and/or commas; ``#`` starts a comment."""
    values = []
    for n, line in enumerate(text.splitlines(), 1):
        for item in line.split("#", 1)[0].split(","):
            item = item.strip()
            if not item:
                continue
            try:
                values.append(float(item))
            except ValueError:
                raise NoisyNNError(f"{source}, line {n}: '{item}' is not a number") from None
    if not values:
        raise NoisyNNError(f"{source} holds no numbers (one multiplier per block)")
    return tuple(values)


def read_table(path: str) -> tuple[float, ...]:
    """The multipliers in file ``path`` (``parse_table``); an unreadable file is one line."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise NoisyNNError(f"cannot read the layer schedule file '{path}': {err}") from None
    return parse_table(text, f"layer schedule file '{path}'")
