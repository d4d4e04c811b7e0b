"""Is there a Goldilocks zone: noise that makes sampled text more diverse without breaking the model?

    python optimal_jitter.py               # = noisynn optimal_jitter, embedded SmolLM2-135M

For each sigma of ``--search_range LOW HIGH --n_points N`` (and the clean model, sigma 0),
``--n_trials`` noise realizations each: perplexity on the evaluation text, and distinct-1/2/3
over ``--n_samples`` sampled continuations of each of several prompts (one left-padded batch).
Zone rule: the sigmas where the median distinct-2 exceeds the clean model's median by more
than the clean model's across-seed spread (max - min over its trials), while the median
perplexity stays <= ``--max_ppl_ratio`` x the clean perplexity.
"""

from __future__ import annotations


import numpy as np
import torch

from ...runs.context import end_run, start
from ...errors import NoisyNNError
from ...evaluation import DEFAULT_PROMPT, compute_distinct_n, compute_perplexity, compute_repetition_ratio, decode
from ...inject import NoiseInjector
from ...options.parser import ArgumentParser
from ...options.flags import add_model_args, add_noise_args, add_run_args
from ...options.argtypes import nonneg_float, positive_float, positive_int
from ...options.script import script_main
from ...runs.read import read_run
from ...runs.runner import Point, TrialResult, grid, leading_columns, progress, run_sweep
from ...spec import spec_from_args
from . import report

EXPERIMENT = "optimal_jitter"
METRICS = ("perplexity", "nll", "bits_per_byte", "eval_tokens", "distinct_1", "distinct_2", "distinct_3",
           "repetition", "gen_tokens", "gen_words", "finite")
DEFAULT_PROMPTS = (
    DEFAULT_PROMPT,
    "Once upon a time, in a small village,",
    "The most important thing about cooking is",
    "In the year 2100, cities will",
    "My favourite animal is",
    "The ocean at night",
)


def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p)
    g = p.add_argument_group("optimal jitter")
    g.add_argument("--search_range", type=nonneg_float, nargs=2, default=[0.002, 0.03], metavar=("LOW", "HIGH"),
                   help="sigma range searched (default: %(default)s); the clean model (sigma 0) is always added")
    g.add_argument("--n_points", type=positive_int, default=8, help="sigmas in the range (default: %(default)s)")
    g.add_argument("--spacing", choices=("linear", "log"), default="linear",
                   help="linear: linspace(LOW, HIGH); log: geomspace (needs LOW > 0) (default: %(default)s)")
    g.add_argument("--max_ppl_ratio", type=positive_float, default=1.5,
                   help="zone bound: median perplexity <= this x clean, > 1 (default: %(default)s)")
    g.add_argument("--prompts", nargs="+", default=list(DEFAULT_PROMPTS), metavar="PROMPT",
                   help=f"prompts of the sampled continuations (default: {len(DEFAULT_PROMPTS)} built-in prompts)")
    g.add_argument("--n_samples", type=positive_int, default=2,
                   help="sampled continuations per prompt and point (default: %(default)s)")
    g.add_argument("--max_new_tokens", type=positive_int, default=40, help="tokens per continuation (default: %(default)s)")
    g.add_argument("--temperature", type=positive_float, default=0.8, help="sampling temperature (default: %(default)s)")
    g.add_argument("--top_k", type=positive_int, default=50, help="top-k sampling (default: %(default)s)")
    add_run_args(p, n_trials=5)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="optimal_jitter.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    args = build_parser().parse_args(argv)
    low, high = args.search_range
    if low > high:
        raise NoisyNNError(f"--search_range LOW HIGH needs LOW <= HIGH, got {low} {high}")
    if args.spacing == "log" and low == 0:
        raise NoisyNNError("--spacing log needs LOW > 0 in --search_range")
    if args.max_ppl_ratio <= 1:
        raise NoisyNNError(f"--max_ppl_ratio must be > 1 (a multiple of the clean perplexity), got {args.max_ppl_ratio}")
    if not [q for q in args.prompts if q.strip()]:
        raise NoisyNNError("--prompts needs at least one non-empty prompt")
    return args


def search_levels(low: float, high: float, n_points: int, spacing: str = "linear") -> list[float]:
    """0 (the clean model) followed by ``n_points`` sigmas from ``low`` to ``high``."""
    pts = np.geomspace(low, high, n_points) if spacing == "log" else np.linspace(low, high, n_points)
    return [0.0] + sorted({float(x) for x in pts if x > 0})


def diversity(texts: list[str]) -> dict:
    """distinct-1/2/3 (unique / all word n-grams, pooled over ``texts``), repetition, and word count."""
    return {"distinct_1": compute_distinct_n(texts, 1), "distinct_2": compute_distinct_n(texts, 2),
            "distinct_3": compute_distinct_n(texts, 3), "repetition": compute_repetition_ratio(texts),
            "gen_words": sum(len(t.split()) for t in texts)}


class JitterTrials:
    """The trial function: noise the targets at the point's sigma, score the text, sample from every prompt."""

    def __init__(self, model, tokenizer, args, eval_ids, spec=None):
        self.model, self.tokenizer, self.args, self.eval_ids = model, tokenizer, args, eval_ids
        self.injector = NoiseInjector(model, spec or spec_from_args(args))
        self.prompts = [q for q in args.prompts if q.strip()]
        self._clean = None

    def perplexity(self, sigma: float):
        if sigma == 0:  # the clean weights: deterministic, computed once
            if self._clean is None:
                self._clean = compute_perplexity(self.model, self.tokenizer, self.eval_ids, max_length=self.args.max_length)
            return self._clean
        return compute_perplexity(self.model, self.tokenizer, self.eval_ids, max_length=self.args.max_length)

    def __call__(self, point: Point) -> TrialResult:
        a = self.args
        seed = point.seed(a.seed)
        self.injector.realize(seed, point.sigma)
        ppl = self.perplexity(point.sigma)
        rows = [q for q in self.prompts for _ in range(a.n_samples)]
        gen_rng = torch.Generator(device="cpu").manual_seed(point.sample_seed(a.seed))
        gen = decode(self.model, self.tokenizer, rows, a.max_new_tokens, greedy=False, temperature=a.temperature,
                     top_k=a.top_k, generator=gen_rng)
        metrics = {**ppl.metrics(), **diversity(gen.texts),
                   "gen_tokens": int((~gen.finished).sum()),  # generated tokens up to and including EOS
                   "finite": bool(ppl.finite and gen.finite)}
        return TrialResult(metrics, [{"prompt": q, "text": t} for q, t in zip(rows, gen.texts)])


def run(argv=None) -> int:
    args = parse(argv)
    sigmas = search_levels(*args.search_range, args.n_points, args.spacing)
    ctx = start(args, EXPERIMENT, METRICS, meta={
        "levels": sigmas,
        "zone_rule": f"sigma with median distinct-2 > clean median distinct-2 + clean across-seed spread "
                     f"(max - min over {args.n_trials} sampling seeds) and median perplexity <= "
                     f"{args.max_ppl_ratio} x clean perplexity",
        "diversity": "distinct-n = unique / all word n-grams pooled over every sampled continuation of a point "
                     f"({len(args.prompts)} prompts x {args.n_samples} samples, {args.max_new_tokens} new tokens, "
                     f"temperature {args.temperature}, top-k {args.top_k}); the clean model's trials differ only "
                     "in their sampling seed",
        "noise_realizations": "common random numbers: one unit-scale draw per trial, scaled to every level",
        "head": "not noised unless --targets names head/all; a tied head is untied before it is noised"})
    lm = ctx.lm
    trials = JitterTrials(lm.model, lm.tokenizer, args, ctx.eval_ids, ctx.spec)
    ctx.folder.update_meta(injection=trials.injector.describe())
    leading = leading_columns(EXPERIMENT, args.model, args.noise_type, args.scale, args.seed)
    bar = progress(EXPERIMENT, "point", args.quiet)
    try:
        run_sweep(ctx.folder, grid(sigmas, args.n_trials), trials, leading, ctx.done_rows, bar)
    finally:
        trials.injector.restore()
    if not ctx.folder.is_main:  # another process merged the shards and draws the figures
        return 0
    figures = report.plot(ctx.folder.path)
    zone = report.jitter_zone(read_run(ctx.folder.path).rows, args.max_ppl_ratio)
    return end_run(ctx, figures, report.format_jitter(zone), ["results.csv", "summary.csv", "samples.jsonl"],
                   zone=zone)


def main(argv=None) -> int:
    return script_main(run, argv)

