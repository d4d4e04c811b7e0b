"""The one sweep runner: points (levels x trials, optionally x targets), resumable.

An experiment lists its points and defines ``trial(point) -> TrialResult``; ``run_sweep``
skips points already in the run folder, runs the rest in order, and appends each row (and
its generated samples) the moment it finishes. Points are ordered target, trial, level so a
trial's noise realization is drawn once and reused across levels (common random numbers).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import distributed
from .errors import NoisyNNError
from .results import RunFolder, key_of, read_rows
from .seeding import derive_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Point:
    """One cell of a sweep: noise level ``sigma`` (index ``level``) and realization ``trial``."""

    level: int
    sigma: float
    trial: int
    target: str = ""

    def seed(self, base: int) -> int:
        """Seed of this point's noise realization: depends on trial and target, not on the level."""
        return derive_seed(base, "noise", self.target, self.trial)

    def sample_seed(self, base: int) -> int:
        """Seed of this point's sampled generations: differs per level and trial."""
        return derive_seed(base, "sampling", self.target, self.trial, self.level)


@dataclass
class TrialResult:
    metrics: dict
    samples: list[dict] = field(default_factory=list)


def levels(max_noise: float, n_levels: int, spacing: str = "log", min_fraction: float = 1 / 30) -> list[float]:
    """Noise levels: 0 plus ``n_levels - 1`` levels up to ``max_noise``.

    ``linear``: evenly spaced from 0 (the original toolkit's ``linspace(0, max, n)``);
    ``log``: 0, then geometric from ``max_noise * min_fraction`` to ``max_noise``, which
    resolves the onset of damage and the collapse with the same number of levels (with
    ``n_levels = 2``: 0 and ``max_noise``). The last level is ``max_noise`` for every spacing.
    """
    if n_levels == 1:
        return [float(max_noise)]
    if not max_noise > 0:  # every level would be 0 (and a geometric sequence cannot start at 0)
        raise NoisyNNError(f"--max_noise must be > 0 for a sweep of {n_levels} levels, got {max_noise}")
    if spacing == "linear":
        return [float(x) for x in np.linspace(0.0, max_noise, n_levels)]
    if spacing == "log":
        if n_levels == 2:  # a one-point geometric sequence would be its start, max_noise * min_fraction
            return [0.0, float(max_noise)]
        return [0.0] + [float(x) for x in np.geomspace(max_noise * min_fraction, max_noise, n_levels - 1)]
    raise ValueError(f"unknown spacing '{spacing}'")


def grid(sigmas: Sequence[float], n_trials: int, targets: Sequence[str] = ("",)) -> list[Point]:
    return [Point(i, float(s), t, target) for target in targets for t in range(n_trials) for i, s in enumerate(sigmas)]


def run_sweep(folder: RunFolder, points: Sequence[Point], trial: Callable[[Point], TrialResult],
              leading: Callable[[Point], dict], done_rows: Sequence[dict] = (), progress: Callable | None = None) -> list[dict]:
    """Run every point not in ``done_rows``; returns all rows (old and new) in point order.

    ``leading(point)`` gives the standard leading columns (experiment, model, ... seed).
    ``progress``, if given, wraps the list of pending points (e.g. ``tqdm``).
    """
    done = {key_of(r, folder.key): r for r in done_rows}
    if folder.is_main and folder.meta.get("n_points") != len(points):
        folder.update_meta(n_points=len(points))  # so a reader can tell a half-written run
    keyed = [(key_of({**leading(p), "level": p.level, "target": p.target}, folder.key), p) for p in points]
    pending = [(k, p) for k, p in keyed if k not in done]
    if done:
        log.info("resuming: %d of %d points already in %s", len(points) - len(pending), len(points), folder.csv)
    if folder.world > 1:  # a contiguous slice per process: few noise draws each, balanced work
        bounds = np.linspace(0, len(pending), folder.world + 1).round().astype(int)
        pending = pending[bounds[folder.rank]:bounds[folder.rank + 1]]
    iterator = progress(pending) if progress else pending
    start = time.perf_counter()
    for key, point in iterator:
        result = trial(point)
        row = {**leading(point), **result.metrics}
        if result.samples:
            folder.append_samples({**{k: row[k] for k in folder.key}, **s} for s in result.samples)
        folder.append(row)
        done[key] = row
    seconds = round(time.perf_counter() - start, 3)
    if folder.world > 1:
        distributed.barrier()
        seconds = round(time.perf_counter() - start, 3)  # until the slowest process is done
        if folder.is_main:
            folder.merge_shards(order=[k for k, _ in keyed])
            folder.update_meta(last_session={"points_run": len(keyed) - len(done_rows), "seconds": seconds,
                                             "processes": folder.world})
        distributed.barrier()
        done = {key_of(r, folder.key): r for r in read_rows(folder.csv)}
    else:
        folder.update_meta(last_session={"points_run": len(pending), "seconds": seconds})
    return [done[k] for k, _ in keyed if k in done]


def finite_flag(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
