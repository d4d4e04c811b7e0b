"""Where in the network does noise hurt? Attention vs MLP vs all blocks, and a blocks x projection heatmap.

    python layer_sensitivity.py            # = noisynn layer_sensitivity, embedded SmolLM2-135M

Two parts (``--mode``), both in one run folder:

- ``groups``: each comma item of ``--targets`` (default attention, mlp, blocks) is noised on its
  own over the ``--max_noise --n_levels`` sweep, ``--n_trials`` realizations each. For every
  trial the sigma where perplexity reaches ``--ppl_threshold`` x clean is found (log-scale
  interpolation), then its median and CI across trials. Normalisation: the injected noise
  energy E = sigma^2 x N (N = noised parameters; in units of each tensor's weight variance
  with the default ``--scale relative``), so a group that needs less energy to cross is more
  sensitive per weight, not merely bigger.
- ``heatmap``: at one ``--noise_level``, a single projection (q, k, v, o, gate, up, down, as
  the weight classifier names them) of a single block is noised; the cell is the median over
  trials of the NLL increase ln(ppl / clean ppl), on ``--heatmap_tokens`` tokens.
"""

from __future__ import annotations

import argparse

from ...runs.context import end_run, start
from ...errors import NoisyNNError
from ...evaluation import compute_perplexity, tokenize
from ...spec import PROJECTIONS, parse_targets
from ...inject import NoiseInjector
from ...targets import select_targets
from ...options.parser import ArgumentParser
from ...options.flags import add_level_args, add_model_args, add_noise_args, add_run_args, block_list, level_grid
from ...options.argtypes import nonneg_float, positive_float, positive_int
from ...options.script import script_main
from ...runs.runner import Point, TrialResult, grid, leading_columns, progress, run_sweep
from ...spec import spec_from_args
from . import report

EXPERIMENT = "layer_sensitivity"
EXTRA = ("target", "mode", "block", "projection")
METRICS = ("perplexity", "nll", "delta_nll", "bits_per_byte", "eval_tokens", "n_params", "finite")
KEY = ("target", "sigma", "trial")
MIN_FRACTION = 1 / 10  # log levels from max_noise/10: the crossings all lie in the top decade
CLEAN = "clean"
ORDER = ("q", "k", "v", "qkv", "o", "gate", "up", "down")  # heatmap columns: data flow order within a block


def projection_list(text: str) -> list[str] | None:
    """``auto`` (every projection the model has) or a comma list of q, k, v, o, qkv, gate, up, down."""
    if text.strip() == "auto":
        return None
    items = [i.strip() for i in text.split(",") if i.strip()]
    bad = [i for i in items if i not in PROJECTIONS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"unknown projection '{','.join(bad) or text}'; known: {', '.join(PROJECTIONS)}")
    return items


def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p, scale="relative", targets="attention,mlp,blocks")
    g = p.add_argument_group("layer sensitivity")
    g.add_argument("--mode", choices=("both", "groups", "heatmap"), default="both",
                   help="groups: sweep each --targets item; heatmap: one projection of one block at --noise_level "
                        "(default: %(default)s)")
    add_level_args(g, max_noise=0.4, n_levels=9, spacing="log", min_fraction=MIN_FRACTION, sweep=" of the group sweep")
    g.add_argument("--ppl_threshold", type=positive_float, default=2.0,
                   help="crossing threshold as a multiple of the clean perplexity, > 1 (default: %(default)s)")
    g.add_argument("--noise_level", type=nonneg_float, default=1.0,
                   help="sigma of the heatmap: one tensor at a time (default: %(default)s)")
    g.add_argument("--blocks", type=block_list, default=None, metavar="all|0-5,10",
                   help="heatmap blocks (default: all)")
    g.add_argument("--projections", type=projection_list, default=None, metavar="auto|q,k,v",
                   help="heatmap projections (default: auto = every projection the model has)")
    g.add_argument("--heatmap_tokens", type=positive_int, default=256,
                   help="tokens scored per heatmap cell; the groups use --eval_tokens (default: %(default)s)")
    add_run_args(p, n_trials=3)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="layer_sensitivity.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    args = build_parser().parse_args(argv)
    if args.ppl_threshold <= 1:
        raise NoisyNNError(f"--ppl_threshold must be > 1 (a multiple of the clean perplexity), got {args.ppl_threshold}")
    if args.mode != "heatmap" and args.max_noise == 0:
        raise NoisyNNError("--max_noise must be > 0 for the group sweep")
    if args.mode != "groups" and args.noise_level == 0:
        raise NoisyNNError("--noise_level must be > 0 for the heatmap")
    return args


def groups_of(args) -> list[str]:
    """The --targets items, each noised on its own."""
    items = [i.strip() for i in args.targets.split(",") if i.strip()]
    for item in items:
        parse_targets(item)
    return list(dict.fromkeys(items))


def cell_label(block: int, proj: str) -> str:
    return f"b{block}.{proj}"


def heatmap_cells(model, blocks: list[int] | None, projections: list[str] | None) -> list[tuple[int, str]]:
    """(block, projection) pairs present in ``model``, blocks ascending, projections in ORDER.

    Raises NoisyNNError when asked for a block or projection the model does not have.
    """
    present = {(t.cls.block, t.cls.proj) for t in select_targets(model, "blocks")
               if t.cls.block is not None and t.cls.proj is not None}
    have_blocks = sorted({b for b, _ in present})
    have_projs = [p for p in ORDER if any(q == p for _, q in present)]
    if not present:
        raise NoisyNNError(f"{type(model).__name__} has no block projections the weight classifier recognises")
    missing = sorted(set(blocks or []) - set(have_blocks))
    if missing:
        raise NoisyNNError(f"--blocks {','.join(map(str, missing))}: the model has blocks "
                           f"{have_blocks[0]}-{have_blocks[-1]}")
    missing_p = [p for p in (projections or []) if p not in have_projs]
    if missing_p:
        raise NoisyNNError(f"--projections {','.join(missing_p)}: the model has {','.join(have_projs)}")
    projs = [p for p in ORDER if p in (projections or have_projs)]
    return [(b, p) for b in (blocks or have_blocks) for p in projs if (b, p) in present]


class SensitivityTrials:
    """The trial function. One NoiseInjector is live at a time, over its own target's weights only;
    switching targets restores the previous target's weights first, so every other weight is clean."""

    def __init__(self, model, tokenizer, args, specs: dict[str, tuple], ids: dict[str, object], noise_spec=None):
        self.model, self.tokenizer, self.args = model, tokenizer, args
        self.noise_spec = noise_spec or spec_from_args(args)  # each target's injector: this noise on its weights
        self.specs = specs  # label -> (mode, targets spec or None, blocks or None)
        self.ids = ids  # mode -> token ids
        self.injector: NoiseInjector | None = None
        self.label: str | None = None
        self._clean: dict[str, object] = {}
        self._n_params: dict[str, int] = {}

    def release(self) -> None:
        if self.injector is not None:
            self.injector.restore()
        self.injector, self.label = None, None

    def n_params(self, label: str) -> int:
        if label not in self._n_params:
            _, targets, blocks = self.specs[label]
            self._n_params[label] = 0 if targets is None else sum(
                t.numel for t in select_targets(self.model, targets, blocks, self.args.include_bias))
        return self._n_params[label]

    def clean(self, mode: str):
        """Clean perplexity on the mode's tokens (computed once, with every weight clean)."""
        if mode not in self._clean:
            self.release()
            self._clean[mode] = compute_perplexity(self.model, self.tokenizer, self.ids[mode],
                                                   max_length=self.args.max_length)
        return self._clean[mode]

    def _injector(self, label: str) -> NoiseInjector:
        if label != self.label:
            self.release()
            _, targets, blocks = self.specs[label]
            self.injector = NoiseInjector(self.model, self.noise_spec.with_targets(targets, blocks))
            self.label = label
        return self.injector

    def __call__(self, point: Point) -> TrialResult:
        mode, targets, _ = self.specs[point.target]
        clean = self.clean(mode)
        if point.sigma == 0 or targets is None:
            self.release()
            result = clean  # the weights are the clean ones: the same numbers, not recomputed
        else:
            injector = self._injector(point.target)
            seed = point.seed(self.args.seed)
            injector.realize(seed, point.sigma)
            result = compute_perplexity(self.model, self.tokenizer, self.ids[mode], max_length=self.args.max_length)
        return TrialResult({**result.metrics(), "delta_nll": result.nll - clean.nll,
                            "n_params": self.n_params(point.target)})


def run(argv=None) -> int:
    args = parse(argv)
    groups = groups_of(args) if args.mode != "heatmap" else []
    sigmas = level_grid(args, MIN_FRACTION) if groups else []
    found: dict = {}

    def check(lm, text):
        for group in groups:  # each group is noised on its own, so each must select weights
            select_targets(lm.model, group, include_bias=args.include_bias)
        if args.mode != "groups":
            found["cells"] = heatmap_cells(lm.model, args.blocks, args.projections)
            found["heatmap_ids"] = tokenize(lm.tokenizer, text.text, args.heatmap_tokens)
            if found["heatmap_ids"].numel() - 1 < args.heatmap_tokens:
                raise NoisyNNError(f"the text has only {found['heatmap_ids'].numel() - 1} scorable tokens, fewer than "
                                   f"--heatmap_tokens {args.heatmap_tokens}")

    ctx = start(args, EXPERIMENT, METRICS, key=KEY, extra_columns=EXTRA, check=check, meta={
        "levels": sigmas, "groups": groups,
        "threshold": f"perplexity = {args.ppl_threshold} x clean perplexity, found per trial by log-scale "
                     "interpolation between levels (stats.log_crossing); median and CI across trials",
        "normalisation": "noise energy E = sigma^2 x n_params: the expected sum of squared injected noise, in units "
                         "of each tensor's scale unit squared (--scale relative: its weight variance); per-cell "
                         "heatmap values are also given per million noised weights",
        "noise_realizations": "common random numbers within a target: one unit draw per (target, trial), "
                              "scaled to every level; each target is noised alone, all other weights clean",
        "head": "not noised unless a --targets item names head/all; a tied head is untied before it is noised"})
    lm = ctx.lm
    specs: dict[str, tuple] = {g: ("groups", g, None) for g in groups}
    specs[CLEAN] = ("heatmap", None, None)
    cells = found.get("cells", [])
    specs.update({cell_label(b, p): ("heatmap", p, [b]) for b, p in cells})
    points = grid(sigmas, args.n_trials, groups) if groups else []
    if cells:
        points += [Point(0, 0.0, 0, CLEAN)] + grid([args.noise_level], args.n_trials, [cell_label(b, p) for b, p in cells])
    ids = {"groups": ctx.eval_ids, "heatmap": found.get("heatmap_ids")}
    trials = SensitivityTrials(lm.model, lm.tokenizer, args, specs, ids, ctx.spec)
    where = {cell_label(b, p): (b, p) for b, p in cells}

    def cell_columns(p: Point) -> dict:
        block, proj = where.get(p.target, ("", ""))
        return {"target": p.target, "mode": specs[p.target][0], "block": block, "projection": proj}

    leading = leading_columns(EXPERIMENT, args.model, args.noise_type, args.scale, args.seed, cell_columns)

    ctx.folder.update_meta(n_params={label: trials.n_params(label) for label in groups},
                           heatmap_cells={"noise_level": args.noise_level, "tokens": args.heatmap_tokens,
                                          "cells": [cell_label(b, p) for b, p in cells]})
    bar = progress(EXPERIMENT, "point", args.quiet)
    try:
        run_sweep(ctx.folder, points, trials, leading, ctx.done_rows, bar)
    finally:
        trials.release()
    if not ctx.folder.is_main:  # another process merged the shards and draws the figures
        return 0
    figures = report.plot(ctx.folder.path)
    numbers = report.layer_sensitivity_report(ctx.folder.path)
    return end_run(ctx, figures, report.format_layer_sensitivity(numbers), ["results.csv", "summary.csv"], **numbers)


def main(argv=None) -> int:
    return script_main(run, argv)
