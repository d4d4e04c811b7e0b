"""The planner's arithmetic (no torch): units, the additive prediction, the greedy choice, the step after a miss.

A *unit* is what moves between analog and digital as one piece: one layer (``tensor``), one transformer
block (``block``) or one projection kind across all blocks (``projection``). Its damage d_u is the
increase of the NLL (nats per token) with that unit analog and every other weight digital, the median
over realizations. The planner assumes damage adds:

    predicted dNLL(S) = sum_{u in S} max(d_u, 0)     (a unit that measured as helping counts as harmless)

and maximises the analog size of S (weights, or MACs per token) subject to predicted dNLL(S) <= ln(r),
r = --max_ppl_ratio (perplexity = exp(NLL), so a ratio r of perplexities is a difference ln r of NLLs).
That is a 0/1 knapsack; the greedy takes units in ascending damage per size and adds each one that
still fits (skipping those that do not), which is optimal when the budget falls on a prefix of that order
and close to it when every unit is small against the budget (true for tensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

GRANULARITIES = ("tensor", "block", "projection")
OBJECTIVES = ("weights", "macs")


@dataclass(frozen=True)
class Tensor:
    """One candidate tensor: parameter name, module (layer) name, class (kind, block, proj), sizes."""

    name: str
    layer: str
    kind: str
    block: int | None
    proj: str | None
    weights: int
    macs: int  # multiply-accumulates per token: in x out for a linear layer, 0 for an embedding lookup


@dataclass(frozen=True)
class Unit:
    """What moves between analog and digital as one piece."""

    label: str
    tensors: tuple[str, ...]
    weights: int
    macs: int
    kind: str  # attention | mlp | block | projection | head | embedding | other

    def size(self, objective: str) -> int:
        return self.weights if objective == "weights" else self.macs


def make_units(tensors: Sequence[Tensor], granularity: str) -> list[Unit]:
    """Group candidate tensors into units, in module order of their first tensor.

    ``tensor``: one unit per layer (its weight, and its bias when biases are noised); ``block``: one per
    transformer block (label ``b3``); ``projection``: one per projection kind over all blocks (``q``, ...,
    ``down``). A tensor outside the blocks (a head) or without a projection name is a unit of its own layer.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity '{granularity}'")
    groups: dict[str, list[Tensor]] = {}
    kinds: dict[str, str] = {}
    for t in tensors:
        if granularity == "block" and t.block is not None and t.kind in ("attention", "mlp"):
            label, kind = f"b{t.block}", "block"
        elif granularity == "projection" and t.proj is not None and t.kind in ("attention", "mlp"):
            label, kind = t.proj, "projection"
        else:
            label, kind = t.layer, t.kind
        groups.setdefault(label, []).append(t)
        kinds.setdefault(label, kind)
    return [Unit(label, tuple(t.name for t in ts), sum(t.weights for t in ts), sum(t.macs for t in ts), kinds[label])
            for label, ts in groups.items()]


def predicted_damage(damages: Mapping[str, float], analog: Iterable[str]) -> float:
    """The additive prediction: sum of the analog units' single-unit damages, negatives counted as 0."""
    return float(sum(max(float(damages[u]), 0.0) for u in analog))


def greedy_order(damages: Mapping[str, float], sizes: Mapping[str, float]) -> list[str]:
    """Units by ascending damage per unit size (ties: larger first, then by label); units of size 0 last
    (analog brings them nothing) and a non-finite damage after those (never chosen)."""
    def key(u):
        d, s = max(float(damages[u]), 0.0), float(sizes[u])
        if not math.isfinite(d):
            return (2, 0.0, 0.0, u)
        if s <= 0:
            return (1, d, 0.0, u)
        return (0, d / s, -s, u)
    return sorted(damages, key=key)


def greedy_choice(damages: Mapping[str, float], sizes: Mapping[str, float], budget: float) -> list[str]:
    """The analog units, in greedy order: each unit that still fits the budget of predicted dNLL is taken.

    ``damages``: unit -> dNLL alone (nats); ``sizes``: unit -> weights or MACs; ``budget``: ln(max ratio).
    Units of size 0 and units with non-finite damage are never taken.
    """
    chosen, total = [], 0.0
    for u in greedy_order(damages, sizes):
        d = max(float(damages[u]), 0.0)
        if not math.isfinite(d) or float(sizes[u]) <= 0:
            continue
        if total + d <= budget:
            chosen.append(u)
            total += d
    return chosen


def frontier(damages: Mapping[str, float], sizes: Mapping[str, float]) -> list[dict]:
    """The greedy frontier: after each unit of the greedy order made analog, the analog share of the total
    size and the predicted dNLL (a staircase from all digital to all analog of the finite units)."""
    total = sum(float(s) for s in sizes.values()) or 1.0
    out = [{"n_units": 0, "unit": "", "share": 0.0, "predicted_delta_nll": 0.0}]
    size = dnll = 0.0
    for i, u in enumerate(greedy_order(damages, sizes), 1):
        d = max(float(damages[u]), 0.0)
        if not math.isfinite(d):
            break
        size, dnll = size + float(sizes[u]), dnll + d
        out.append({"n_units": i, "unit": u, "share": size / total, "predicted_delta_nll": dnll})
    return out


def after_miss(analog: Sequence[str], damages: Mapping[str, float] | None = None,
               target: float = 0.0) -> tuple[list[str], list[str]]:
    """A verification missed the tolerance: move the analog set's last units (in greedy order: the largest
    damage per size first) to digital. Without ``damages``, exactly one unit (the issue's rule); with them,
    as many as it takes for the predicted damage of the rest to fall to ``target``, and at least one.
    Returns (new analog set, the units moved)."""
    if not analog:
        raise ValueError("nothing analog left to move")
    keep, moved = list(analog), []
    while keep and (not moved or (damages is not None and predicted_damage(damages, keep) > target)):
        moved.append(keep.pop())
    return keep, moved


def verify_until_met(analog: Sequence[str], verify: Callable[[dict], float], budget: float, max_rounds: int,
                     damages: Mapping[str, float] | None = None, bisect: bool = False) -> list[dict]:
    """Verify the greedy's analog set; after a miss move units to digital and verify again, until a
    verification meets the budget (or, with ``bisect``, the search has closed), nothing analog is left, or
    ``max_rounds`` were run.

    ``verify(record)`` evaluates ``record["analog_units"]`` (label ``record["label"]``: v1, v2, ...) and returns
    the measured dNLL statistic m = ln(perplexity ratio); it meets the tolerance when m <= ``budget``. After a
    miss:

    - ``bisect``: a binary search over the prefixes of the greedy's set (in greedy order), between the
      longest prefix known to meet (at first the empty one: all digital) and the shortest known to miss.
      It assumes only that a prefix that meets has shorter prefixes that meet (nested sets: more analog,
      more damage), not that damage adds; about log2(n) verifications find the longest prefix that meets;
    - else, with ``damages``: the additive model is rescaled by the miss: units move until the predicted
      damage p of the rest is at most p_set x budget / m (the prediction that would have met the budget had
      measured damage been proportional to predicted);
    - else exactly one unit moves (``after_miss``).

    Returns every record, in order; each lists the units it moved to digital (``moved_to_digital``) or back to
    analog (``moved_to_analog``) for the next one.
    """
    if bisect:
        return _bisect(list(analog), verify, budget, max_rounds)
    records: list[dict] = []
    analog = list(analog)
    for k in range(1, max_rounds + 1):
        if not analog:
            break
        record = {"label": f"v{k}", "analog_units": list(analog)}
        records.append(record)
        measured = float(verify(record))
        if measured <= budget:
            break
        target = 0.0
        if damages is not None and math.isfinite(measured):
            target = predicted_damage(damages, analog) * budget / measured
        analog, record["moved_to_digital"] = after_miss(analog, damages, target)
    return records


def _bisect(order: list[str], verify: Callable[[dict], float], budget: float, max_rounds: int) -> list[dict]:
    """``verify_until_met`` with ``bisect``: lo = longest prefix known to meet, hi = shortest known to miss."""
    records: list[dict] = []
    lo, hi, n = 0, len(order) + 1, len(order)  # hi = n + 1: nothing is known to miss yet
    while n > lo and len(records) < max_rounds:
        record = {"label": f"v{len(records) + 1}", "analog_units": order[:n]}
        if records:
            prev = records[-1]["analog_units"]
            key = "moved_to_digital" if n < len(prev) else "moved_to_analog"
            records[-1][key] = order[min(n, len(prev)):max(n, len(prev))]
        records.append(record)
        measured = float(verify(record))
        if measured <= budget:
            lo = n
        else:
            hi = n
        if hi - lo <= 1:
            break
        n = (lo + hi) // 2
    return records


def baselines(units: Sequence[Unit], tensors: Sequence[Tensor]) -> dict[str, list[str]]:
    """Analog sets (tensor names) of the fixed placements the planner is compared with, by label.

    ``all_analog``; ``digital_attention`` (the original toolkit's advice: digital attention, analog MLP);
    ``digital_mlp`` (analog attention, digital MLP); ``digital_first_last`` (the first and last transformer
    blocks digital). Candidates outside the blocks (a head) stay analog in each. A set that is empty, or
    equal to one listed before it, is left out.
    """
    blocks = sorted({t.block for t in tensors if t.block is not None and t.kind in ("attention", "mlp")})
    ends = {blocks[0], blocks[-1]} if blocks else set()
    sets = {
        "all_analog": [t.name for t in tensors],
        "digital_attention": [t.name for t in tensors if t.kind != "attention"],
        "digital_mlp": [t.name for t in tensors if t.kind != "mlp"],
        "digital_first_last": [t.name for t in tensors if not (t.kind in ("attention", "mlp") and t.block in ends)],
    }
    out: dict[str, list[str]] = {}
    for label, names in sets.items():
        if names and all(set(names) != set(v) for v in out.values()):
            out[label] = names
    return out


BASELINE_TITLES = {"all_analog": "all analog", "digital_attention": "digital attention, analog MLP",
                   "digital_mlp": "analog attention, digital MLP", "digital_first_last": "first and last blocks digital"}


def tensors_of(units: Sequence[Unit], labels: Iterable[str]) -> list[str]:
    """The tensor names of the units ``labels``."""
    by = {u.label: u for u in units}
    return [name for label in labels for name in by[label].tensors]
