"""Which weights must stay digital? A placement planner for hybrid analog/digital chips.

    python placement.py            # = noisynn placement: embedded SmolLM2-135M, PCM read 1 day after programming,
                                   #   drift compensation on, the afm preset's converters on the analog layers

Given an analog setting (any noise or device model with its parameters, and converters) and a tolerance
(``--max_ppl_ratio``: noisy perplexity at most that multiple of the clean one), find which tensors to keep
in digital (clean) memory so the rest can be analog, with as much of the network analog as possible:

1. ``unit`` rows: each unit (``--granularity``) analog alone, every other weight digital, ``--unit_trials``
   realizations: its damage = NLL - clean NLL (median over realizations). The default antithetic estimator
   averages each realization W with its mirror image 2 E[W] - W (E[W]: the mean of ``--mean_draws`` drawn
   realizations), which cancels the realization's first-order term (see docs/placement.md).
2. The additive prediction (plan.py) and the greedy choice by damage per weight (``--objective weights``) or
   per MAC: the largest analog set whose predicted dNLL <= ln(max_ppl_ratio).
3. ``verify`` rows: the chosen set analog all at once, ``--n_trials`` fresh realizations; if the median
   perplexity ratio (``--verify_stat``) misses the tolerance, a binary search over the prefixes of the
   chosen set in greedy order finds the longest that meets it (``--after_miss bisect``; or the units with
   the largest damage per size move to digital: ``scale``, as many as the miss calls for, ``one``, one), at
   most ``--max_verifications`` verifications.
   ``baseline`` rows: fixed placements on the same realizations (all analog; digital attention; digital
   MLP; first and last blocks digital). The placement kept is the most analog one that met the tolerance.

``--max_acc_drop POINTS`` puts the tolerance in accuracy points on ``--task`` (lm-eval; accuracy.py): the
clean model and every set realization are scored on it too, the units stay ranked by NLL, and the
bisection starts from every unit (there is no NLL budget to choose a first set by).

Every point runs on the runner (resumable, split across processes). The run folder holds placement.json
(every candidate tensor analog or digital; ``--digital placement.json`` on the sweep keeps those clean).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
from torch import nn

from ...runs.context import end_run, start
from ...analog.hooks import install_converters
from ...errors import NoisyNNError
from ...evaluation import compute_perplexity
from ...inject import NoiseInjector
from ...targets import select
from ...options.parser import ArgumentParser
from ...options.flags import add_converter_args, add_model_args, add_noise_args, add_run_args, block_list
from ...options.argtypes import positive_float, positive_int
from ...options.script import script_main
from ...placements import write_placement
from ...runs.runner import Point, TrialResult, leading_columns, progress, run_sweep
from ...seeding import derive_seed
from ...spec import spec_from_args
from ...analog.setting import CONVERTER_FLAGS, SHARED_CONVERTER_FLAGS
from . import accuracy, plan, report
from .report import acc_drop_statistic, set_summary, statistic, unit_damages

EXPERIMENT = "placement"
EXTRA = ("phase", "target", "n_tensors", "analog_weights", "analog_macs")
METRICS = ("perplexity", "nll", "delta_nll", "ppl_ratio", "bits_per_byte", "eval_tokens", "finite", "delta_nll_mirror",
           "damage")
KEY = ("phase", "target", "trial")
CLEAN = "clean"
DEFAULT_PPL_RATIO = 1.10
ACC_METRICS = ("accuracy", "acc_items")  # with --max_acc_drop only (a perplexity run keeps its columns)
DEFAULT_PRESET = "afm"  # Analog Foundation Models' evaluation converters (noisynn.analog.presets)


@dataclass(frozen=True)
class PlacementPoint(Point):
    """A point of the planner: ``phase`` clean | unit | baseline | verify, ``target`` the unit or set label.

    Noise seeds: every unit row of trial t draws from one seed and every set row (baseline, verify) of
    trial t from another; each layer's noise comes from (that seed, the layer name), so a tensor analog
    in two sets reads the same devices in trial t (common random numbers between verifications and
    baselines), while the set rows are fresh realizations, independent of the unit rows they test.
    """

    phase: str = "unit"

    def _stream(self) -> str:
        return "unit" if self.phase == "unit" else "set"

    def seed(self, base: int) -> int:
        return derive_seed(base, "placement", self._stream(), self.trial)

    def sample_seed(self, base: int) -> int:  # the converters' output noise: shared like the weight noise
        return derive_seed(base, "placement-converters", self._stream(), self.trial)


def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    p.set_defaults(eval_tokens=512)  # one window: each unit is one evaluation (see docs/placement.md)
    add_noise_args(p, noise_type="pcm", scale="relative_channel", targets="blocks")
    add_converter_args(p)
    g = p.add_argument_group("placement")
    g.add_argument("--blocks", type=block_list, default=argparse.SUPPRESS,
                   help="candidates only in these transformer blocks, e.g. 0-9 (default: all); the others stay digital")
    g.add_argument("--granularity", choices=plan.GRANULARITIES, default="tensor",
                   help="what moves between analog and digital: one layer's tensor, one transformer block, or one "
                        "projection kind across all blocks (default: %(default)s)")
    g.add_argument("--objective", choices=plan.OBJECTIVES, default="weights",
                   help="what 'as much analog as possible' counts: weights, or multiply-accumulates per token "
                        "(default: %(default)s)")
    g.add_argument("--max_ppl_ratio", type=positive_float, default=None,
                   help="tolerance: perplexity at most this multiple of the clean perplexity, > 1 "
                        f"(default: {DEFAULT_PPL_RATIO})")
    g.add_argument("--max_acc_drop", type=positive_float, default=None,
                   help="tolerance instead in accuracy points on --task: the sets verified (and the baselines) "
                        "lose at most this many points against the clean model; units are still ranked by NLL")
    g.add_argument("--task", default=None,
                   help=f"with --max_acc_drop: the lm-eval task scored (default: {accuracy.DEFAULT_TASK}, offline)")
    g.add_argument("--task_limit", type=positive_int, default=None,
                   help=f"with --max_acc_drop: items of --task scored per realization (default: {accuracy.DEFAULT_LIMIT})")
    g.add_argument("--verify_stat", choices=("median", "ci_high"), default="median",
                   help="a verification meets the tolerance when this statistic of its realizations does: "
                        "the median, or the pessimistic end of its confidence interval (default: %(default)s)")
    g.add_argument("--noise_level", type=positive_float, default=1.0,
                   help="sigma of the analog setting: for pcm the multiplier of the device noise and drift "
                        "(1 = as measured); for a distribution its scale (default: %(default)s)")
    g.add_argument("--no_drift_compensation", action="store_true",
                   help="pcm: read without global drift compensation (on by default here)")
    g.add_argument("--no_converters", action="store_true",
                   help="weight noise only: no converters (by default the analog layers run --analog_preset "
                        f"{DEFAULT_PRESET} unless other converter flags are given)")
    g.add_argument("--unit_estimator", choices=("antithetic", "plain"), default="antithetic",
                   help="each unit's damage alone: antithetic (each realization W and its mirror image 2 E[W] - W "
                        "around the mean of --mean_draws realizations, averaged: cancels the realization's first-order "
                        "term) or plain (the realization alone) (default: %(default)s)")
    g.add_argument("--mean_draws", type=positive_int, default=32,
                   help="antithetic: realizations averaged into each unit's mean weights E[W] (drawn, not evaluated; "
                        "default: %(default)s)")
    g.add_argument("--unit_trials", type=positive_int, default=1,
                   help="evaluated realizations of each unit alone (antithetic: pairs; default: %(default)s); "
                        "--n_trials: realizations of each verification and baseline")
    g.add_argument("--after_miss", choices=("bisect", "scale", "one"), default="bisect",
                   help="after a verification misses: bisect (a binary search over the prefixes of the chosen set in "
                        "greedy order for the longest that meets the tolerance; assumes nested sets, not additivity), "
                        "scale (move the chosen units with the largest damage per size to digital until the "
                        "prediction of the rest, scaled by the miss, meets the tolerance; at least one unit) or one "
                        "(exactly one unit) (default: %(default)s)")
    g.add_argument("--max_verifications", type=positive_int, default=10,
                   help="full evaluations of the chosen set at most (default: %(default)s)")
    add_run_args(p, n_trials=5)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="placement.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    args = build_parser().parse_args(argv)
    if args.max_acc_drop is not None:
        if args.max_ppl_ratio is not None:
            raise NoisyNNError("give one tolerance: --max_ppl_ratio or --max_acc_drop")
        if args.after_miss != "bisect":
            raise NoisyNNError(f"--max_acc_drop needs --after_miss bisect (--after_miss {args.after_miss} moves units "
                               "by the NLL prediction, which has no budget in accuracy points)")
        args.task = args.task or accuracy.DEFAULT_TASK
        args.task_limit = args.task_limit or accuracy.DEFAULT_LIMIT
    else:
        if args.task is not None or args.task_limit is not None:
            raise NoisyNNError(f"--{'task' if args.task is not None else 'task_limit'} needs --max_acc_drop")
        args.max_ppl_ratio = DEFAULT_PPL_RATIO if args.max_ppl_ratio is None else args.max_ppl_ratio
        if not args.max_ppl_ratio > 1:
            raise NoisyNNError(f"--max_ppl_ratio must be > 1 (a multiple of the clean perplexity), got "
                               f"{args.max_ppl_ratio}")
    if args.no_drift_compensation and getattr(args, "drift_compensation", False):
        raise NoisyNNError("give either --drift_compensation or --no_drift_compensation, not both")
    converter_flags = sorted(k for k in vars(args) if k in CONVERTER_FLAGS + SHARED_CONVERTER_FLAGS
                             + ("analog_io", "analog_preset") and k != "tile_size")
    if args.no_converters and converter_flags:
        raise NoisyNNError(f"--no_converters and --{converter_flags[0]} contradict each other; give one")
    if not args.no_converters and not hasattr(args, "analog_io") and not hasattr(args, "analog_preset"):
        args.analog_preset = DEFAULT_PRESET  # other converter flags given override its fields
    noise = spec_from_args(args).noise  # the noise name and parameters, checked before anything loads
    if hasattr(noise, "drift_compensation") and not hasattr(args, "drift_compensation"):
        args.drift_compensation = not args.no_drift_compensation
    return args


def tensor_table(model: nn.Module, targets) -> list[plan.Tensor]:
    """The candidate tensors with their layer, class and sizes (MACs per token: in x out for a weight
    matrix, 0 for a bias or an embedding lookup)."""
    out = []
    for t in targets:
        layer = t.name.rsplit(".", 1)[0]
        lookup = isinstance(model.get_submodule(layer), nn.Embedding)
        macs = 0 if lookup or not t.name.endswith(".weight") else t.numel
        out.append(plan.Tensor(t.name, layer, t.cls.kind, t.cls.block, t.cls.proj, t.numel, macs))
    return out


def enable_layers(hooks, layers: set[str]) -> None:
    """Converters on the analog layers only: every other layer is digital."""
    for tile in hooks.tiles:
        tile.enabled = tile.name in layers


class PlacementTrials:
    """The trial function: the point's analog set noised (and its layers' converters on), all else clean.

    One NoiseInjector is live at a time, over the current set's tensors only; a new set restores the
    previous one first, so every weight outside the set is the clean one, bit for bit.
    """

    def __init__(self, lm, ids, spec, targets, hooks, sets: dict, sigma: float, base_seed: int, max_length,
                 mean_draws: int = 0, scorer=None):
        self.lm, self.ids, self.spec, self.hooks = lm, ids, spec, hooks
        self.scorer = scorer  # --max_acc_drop: the clean row and every set row are also scored on the task
        self.by_name = {t.name: t for t in targets}
        self.sets, self.sigma, self.base_seed, self.max_length = sets, sigma, base_seed, max_length
        self.mean_draws = mean_draws  # > 0: unit rows are antithetic pairs around the mean of this many draws
        self.injector: NoiseInjector | None = None
        self.current: tuple | None = None
        self.mean: list | None = None
        self._clean = None
        self._clean_acc: dict | None = None

    def release(self) -> None:
        if self.injector is not None:
            self.injector.restore()
        self.injector, self.current, self.mean = None, None, None  # drops the set's device states too
        if self.hooks:
            self.hooks.set_enabled(False)

    def evaluate(self):
        return compute_perplexity(self.lm.model, self.lm.tokenizer, self.ids, max_length=self.max_length)

    def clean(self):
        if self._clean is None:
            self.release()
            self._clean = self.evaluate()
        return self._clean

    def _use(self, key: tuple, names: list[str]) -> None:
        if key == self.current:
            return
        self.release()
        self.injector = NoiseInjector(self.lm.model, self.spec, selected=[self.by_name[n] for n in names])
        self.current = key
        if self.hooks:
            enable_layers(self.hooks, {n.rsplit(".", 1)[0] for n in names})
            # issue 13's readout drift compensation measures through the converters (when it has them)
            attach = getattr(self.injector, "attach", None)
            if attach is not None:
                attach(self.hooks)

    @torch.no_grad()
    def mean_weights(self) -> list:
        """E[W_analog] of the current unit's tensors: the average of ``mean_draws`` realizations (no evaluation)."""
        if self.mean is None:
            params = [t.param.data for t in self.injector.targets]
            acc = [torch.zeros_like(p, dtype=torch.float64) for p in params]
            for k in range(self.mean_draws):
                self.injector.realize(derive_seed(self.base_seed, "placement-mean", k), self.sigma)
                for a, p in zip(acc, params):
                    a.add_(p)
            self.mean = [a.div_(self.mean_draws).to(p.dtype) for a, p in zip(acc, params)]
        return self.mean

    def __call__(self, point: PlacementPoint) -> TrialResult:
        key = (point.phase, point.target)
        names = self.sets[key]
        clean = self.clean()
        mirror = math.nan
        if not names:
            self.release()
            result = clean
        else:
            self._use(key, names)
            antithetic = point.phase == "unit" and self.mean_draws > 0
            mean = self.mean_weights() if antithetic else None
            self.injector.realize(point.seed(self.base_seed), self.sigma)
            if self.hooks:
                self.hooks.reseed(point.sample_seed(self.base_seed))
            result = self.evaluate()
            if antithetic:  # the mirror image W' = 2 E[W] - W of this realization, in the same analog layers
                with torch.no_grad():
                    for t, m in zip(self.injector.targets, mean):
                        t.param.data.mul_(-1).add_(m, alpha=2)
                if self.hooks:
                    self.hooks.reseed(point.sample_seed(self.base_seed))
                mirror = self.evaluate().nll - clean.nll
        ratio = result.perplexity / clean.perplexity if result.finite else math.inf
        delta = result.nll - clean.nll
        damage = delta if math.isnan(mirror) else (delta + mirror) / 2
        metrics = {**result.metrics(), "delta_nll": delta, "ppl_ratio": ratio, "delta_nll_mirror": mirror,
                   "damage": damage}
        if self.scorer is not None:
            metrics.update(self.task_accuracy(point))
        return TrialResult(metrics)

    def task_accuracy(self, point: PlacementPoint) -> dict:
        """The task accuracy of the weights as they are now (a set row) or of the clean model (cached); nan for a
        unit row (units are ranked by NLL)."""
        if point.phase == "unit":
            return {"accuracy": math.nan, "acc_items": 0}
        if point.phase == CLEAN:
            if self._clean_acc is None:
                self._clean_acc = {"accuracy": self.scorer(), "acc_items": self.scorer.n_items}
            return self._clean_acc
        if self.hooks:
            self.hooks.reseed(derive_seed(point.sample_seed(self.base_seed), "task"))
        return {"accuracy": self.scorer(), "acc_items": self.scorer.n_items}


def run(argv=None) -> int:
    args = parse(argv)
    by_accuracy = args.max_acc_drop is not None
    budget = args.max_acc_drop if by_accuracy else math.log(args.max_ppl_ratio)
    prepared = accuracy.prepare(args.task, args.task_limit) if by_accuracy else None  # before the run folder
    found: dict = {}

    def check(lm, text):  # candidates that bring nothing to the objective fail here, before the run folder
        tensors = tensor_table(lm.model, select(lm.model, spec_from_args(args)))
        units = plan.make_units(tensors, args.granularity)
        if not any(u.size(args.objective) for u in units):
            raise NoisyNNError(f"no candidate unit has any {args.objective} (--objective macs counts no embedding "
                               "lookup); choose other --targets or --objective weights")
        found.update(tensors=tensors, units=units)

    metrics = METRICS + ACC_METRICS if by_accuracy else METRICS
    ctx = start(args, EXPERIMENT, metrics, key=KEY, extra_columns=EXTRA, check=check, meta={
        "method": "1. each unit analog alone (all else digital), unit_trials realizations: damage = median dNLL; "
                  "2. predicted dNLL of a set = sum of its units' damages (negatives as 0); greedy by damage per "
                  "size: each unit that still fits ln(max_ppl_ratio) is taken; 3. the set verified with n_trials "
                  "fresh realizations all analog together; after a miss (--after_miss) a binary search over the "
                  "prefixes of the set in greedy order (bisect), or the taken units with the largest damage per "
                  "size move to digital (scale, one), and the next set is verified",
        **({"tolerance": f"accuracy drop <= {args.max_acc_drop} points on {args.task} (first {args.task_limit} "
                            "items), clean and set rows scored; units ranked by NLL",
            "budget_acc_drop_points": budget} if by_accuracy else {"budget_delta_nll": budget}),
        "noise_realizations": "unit rows of trial t share one seed, set rows (baseline, verify) of trial t another; "
                              "each layer's noise is seeded from (seed, layer name): the sets read the same devices "
                              "in trial t, independent of the unit rows",
        "digital": "a digital tensor keeps its clean weights and its layer runs without converters"})
    lm = ctx.lm
    tensors, units = found["tensors"], found["units"]
    sizes = {u.label: u.size(args.objective) for u in units}
    scorer = accuracy.TaskScorer(lm, prepared, args.task_limit) if by_accuracy else None
    if scorer is not None:
        ctx.folder.update_meta(task=scorer.describe())
    hooks = install_converters(ctx.converters, lm, ctx.targets, seed=args.seed)
    if hooks:
        hooks.set_enabled(False)
    sets: dict[tuple, list[str]] = {(CLEAN, CLEAN): []}
    sets.update({("unit", u.label): list(u.tensors) for u in units})
    base = plan.baselines(units, tensors)
    sets.update({("baseline", label): names for label, names in base.items()})
    ctx.folder.update_meta(
        injection={"noise": ctx.spec.noise.describe(), "scale": ctx.spec.scale, "sigma": args.noise_level,
                   "n_tensors": len(tensors), "n_params": sum(t.weights for t in tensors)},
        tensors=[vars(t) for t in tensors], units=[vars(u) for u in units], baselines=base,
        model_weights=sum(p.numel() for p in lm.model.parameters()),
        **({"converters": hooks.describe()} if hooks else {}))
    weights_of = {t.name: t.weights for t in tensors}
    macs_of = {t.name: t.macs for t in tensors}

    def columns(p: PlacementPoint) -> dict:
        names = sets[(p.phase, p.target)]
        return {"phase": p.phase, "target": p.target, "n_tensors": len(names),
                "analog_weights": sum(weights_of[n] for n in names), "analog_macs": sum(macs_of[n] for n in names)}

    leading = leading_columns(EXPERIMENT, args.model, args.noise_type, args.scale, args.seed,
                              lambda p: {"sigma": args.noise_level, **columns(p)})
    trials = PlacementTrials(lm, ctx.eval_ids, ctx.spec, ctx.targets, hooks, sets, args.noise_level, args.seed,
                             args.max_length, args.mean_draws if args.unit_estimator == "antithetic" else 0, scorer)
    points = [PlacementPoint(0, args.noise_level, 0, CLEAN, CLEAN)]
    points += [PlacementPoint(0, args.noise_level, t, u.label, "unit") for u in units for t in range(args.unit_trials)]
    bar = progress(EXPERIMENT, "point", args.quiet)
    verifications: list[dict] = []
    try:
        rows = run_sweep(ctx.folder, points, trials, leading, ctx.done_rows, bar)
        damages = {u: s.median for u, s in unit_damages(rows).items()}
        # by accuracy there is no NLL budget: the bisection starts from every unit, in greedy order
        analog = plan.greedy_choice(damages, sizes, math.inf if by_accuracy else budget)
        points += [PlacementPoint(0, args.noise_level, t, label, "baseline") for label in base
                   for t in range(args.n_trials)]

        def verify(record: dict) -> bool:
            nonlocal rows
            record["predicted_delta_nll"] = plan.predicted_damage(damages, record["analog_units"])
            sets[("verify", record["label"])] = plan.tensors_of(units, record["analog_units"])
            verifications.append(record)
            ctx.folder.update_meta(verifications=verifications)
            points.extend(PlacementPoint(0, args.noise_level, t, record["label"], "verify") for t in range(args.n_trials))
            rows = run_sweep(ctx.folder, points, trials, leading, ctx.done_rows + rows, bar)
            if by_accuracy:
                return acc_drop_statistic(rows, "verify", record["label"], args.verify_stat)
            return math.log(statistic(set_summary(rows, "verify", record["label"]), args.verify_stat))

        plan.verify_until_met(analog, verify, budget, args.max_verifications,
                              damages if args.after_miss == "scale" else None, bisect=args.after_miss == "bisect")
        if not verifications:  # nothing fits the budget: the baselines still run, for the comparison
            rows = run_sweep(ctx.folder, points, trials, leading, ctx.done_rows + rows, bar)
    finally:
        trials.release()
        if hooks:
            hooks.remove()
    ctx.folder.update_meta(verifications=verifications)
    if not ctx.folder.is_main:  # another process merged the shards and draws the figures
        return 0
    decision = report.decide(ctx.folder.path)
    candidates = [t.name for t in tensors]
    analog_names = decision["analog_tensors"]
    write_placement(ctx.folder.path / "placement.json", analog_names,
                    [n for n in candidates if n not in set(analog_names)],
                    model=args.model, model_fingerprint=ctx.folder.meta.get("model", {}).get("fingerprint"),
                    noise=ctx.spec.noise.describe(), scale=args.scale, targets=args.targets, sigma=args.noise_level,
                    converters=hooks.describe() if hooks else None, granularity=args.granularity,
                    objective=args.objective, max_ppl_ratio=args.max_ppl_ratio, verify_stat=args.verify_stat,
                    **({"max_acc_drop": args.max_acc_drop, "task": scorer.describe()} if scorer else {}),
                    chosen=decision["chosen"], analog_share=decision["share"], verified=decision["verified"],
                    eval_tokens=args.eval_tokens, seed=args.seed)
    figures = report.plot(ctx.folder.path)
    return end_run(ctx, figures, report.format_placement_table(ctx.folder.path),
                   ["placement.json", "results.csv", "units.csv", "verifications.csv"], placement=decision)


def main(argv=None) -> int:
    return script_main(run, argv)
