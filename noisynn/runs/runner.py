"""The one runner of every experiment: points (levels x trials, optionally x targets), resumable.

An experiment lists its points and defines ``trial(point) -> TrialResult``; ``run_sweep``
skips points already in the run folder, runs the rest in order, and appends each row (and
its generated samples) the moment it finishes. Points are ordered target, trial, level so a
trial's noise realization is drawn once and reused across levels (common random numbers).
Under ``accelerate launch`` each process runs a contiguous slice of the pending points into
its own shard, and the main process merges the shards in point order.

A point usually writes one row. One that writes several (temporal_drift: one per generated
token) names their distinguishing key columns with ``parts(point)`` (e.g. ``[{"step": 0}, ...]``)
and returns one dict of per-row columns each in ``TrialResult.rows``; it counts as done only when
all its rows are in the folder, and only the missing ones are appended.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import distributed
from ..errors import NoisyNNError
from .folder import RunFolder
from .schema import key_of
from .read import read_rows
from ..seeding import derive_seed

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
    """What one point measured: its metric columns, generated samples, and (a point that writes
    several rows) each row's own columns, which extend and override the shared ones."""

    metrics: dict
    samples: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)


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


def leading_columns(experiment: str, model: str, noise_type: str, scale: str, base_seed: int,
                    extra: Callable[[Point], dict] | None = None) -> Callable[[Point], dict]:
    """``leading(point)`` for ``run_sweep``: the standard leading columns of a row
    (experiment, model, noise_type, scale, sigma, trial, seed = ``point.seed(base_seed)``),
    updated with ``extra(point)`` (an experiment's own key columns, or overrides)."""
    def leading(p: Point) -> dict:
        row = {"experiment": experiment, "model": model, "noise_type": noise_type, "scale": scale,
               "sigma": p.sigma, "trial": p.trial, "seed": p.seed(base_seed)}
        return {**row, **extra(p)} if extra else row
    return leading


def progress(desc: str, unit: str = "point", quiet: bool = False) -> Callable | None:
    """A wrapper that shows a tqdm bar over an iterable (scripts show bars; the library does not), or None if quiet."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    return lambda items: tqdm(items, desc=desc, unit=unit)


def grid(sigmas: Sequence[float], n_trials: int, targets: Sequence[str] = ("",)) -> list[Point]:
    return [Point(i, float(s), t, target) for target in targets for t in range(n_trials) for i, s in enumerate(sigmas)]


def run_sweep(folder: RunFolder, points: Sequence[Point], trial: Callable[[Point], TrialResult],
              leading: Callable[[Point], dict], done_rows: Sequence[dict] = (), progress: Callable | None = None,
              parts: Callable[[Point], Sequence[dict]] | None = None) -> list[dict]:
    """Run every point not in ``done_rows``; returns all rows (old and new) in point order.

    ``leading(point)`` gives the standard leading columns (experiment, model, ... seed).
    ``progress``, if given, wraps the list of pending points (e.g. ``tqdm``).
    ``parts(point)``: the key columns of each row a multi-row point writes (module doc).
    """
    done = {key_of(r, folder.key): r for r in done_rows}

    def keys_of(p: Point) -> list[tuple]:
        base = {**leading(p), "level": p.level, "target": p.target}
        return [key_of({**base, **part}, folder.key) for part in (parts(p) if parts else ({},))]

    keyed = [(keys_of(p), p) for p in points]
    order = [k for keys, _ in keyed for k in keys]
    if folder.is_main and folder.meta.get("n_points") != len(order):
        folder.update_meta(n_points=len(order))  # rows of the complete run, so a reader can tell a half-written run
    pending = [(keys, p) for keys, p in keyed if any(k not in done for k in keys)]
    if done:
        log.info("resuming: %d of %d points already in %s", len(points) - len(pending), len(points), folder.csv)
    if folder.world > 1:  # a contiguous slice per process: few noise draws each, balanced work
        bounds = np.linspace(0, len(pending), folder.world + 1).round().astype(int)
        pending = pending[bounds[folder.rank]:bounds[folder.rank + 1]]
    iterator = progress(pending) if progress else pending
    start = time.perf_counter()
    for keys, point in iterator:
        result = trial(point)
        shared = {**leading(point), **result.metrics}
        rows = [{**shared, **own} for own in result.rows] if result.rows else [shared]
        if len(rows) != len(keys):
            raise ValueError(f"the trial of {point} returned {len(rows)} rows; its parts name {len(keys)}")
        if result.samples:  # filed under the point's last row
            folder.append_samples({**{k: rows[-1][k] for k in folder.key}, **s} for s in result.samples)
        for key, row in zip(keys, rows):
            if key not in done:
                folder.append(row)
                done[key] = row
    seconds = round(time.perf_counter() - start, 3)
    if folder.world > 1:
        distributed.barrier()
        seconds = round(time.perf_counter() - start, 3)  # until the slowest process is done
        if folder.is_main:
            folder.merge_shards(order=order)
            folder.update_meta(last_session={"points_run": len(order) - len(done_rows), "seconds": seconds,
                                             "processes": folder.world})
        distributed.barrier()
        done = {key_of(r, folder.key): r for r in read_rows(folder.csv)}
    else:
        folder.update_meta(last_session={"points_run": len(pending), "seconds": seconds})
    return [done[k] for k in order if k in done]


def finite_flag(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
