"""The main sweep: perplexity, entropy and text diversity against noise level, several trials each.

    python thermal_noise_simulation.py            # = noisynn sweep, embedded SmolLM2-135M
"""

from __future__ import annotations

import argparse
import logging

from ...runs.context import end_run, start
from ...analog.attention import install_attention
from ...analog.hooks import install_converters
from ...inject import NoiseInjector, rounding_report
from ...evaluation import DEFAULT_PROMPT, quality_metrics
from ...options.parser import ArgumentParser
from ...options.flags import (add_attention_args, add_converter_args, add_digital_arg, add_level_args,
                              add_model_args, add_noise_args, add_run_args, block_list, level_grid, prompt_text)
from ...options.argtypes import positive_int, nonneg_float
from ...options.script import script_main
from ...runs.runner import Point, TrialResult, grid, leading_columns, progress, run_sweep
from . import report

log = logging.getLogger(__name__)
EXPERIMENT = "sweep"
METRICS = ("perplexity", "nll", "bits_per_byte", "eval_tokens", "entropy_bits", "distinct_1", "distinct_2",
           "repetition", "finite")


def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p)
    add_converter_args(p)
    add_attention_args(p)
    g = p.add_argument_group("sweep")
    # SUPPRESS: without --blocks the config (and so resuming older run folders) is unchanged.
    g.add_argument("--blocks", type=block_list, default=argparse.SUPPRESS,
                   help="restrict attention/mlp targets to these transformer blocks, e.g. 0-9,20 (default: all)")
    add_digital_arg(g)
    add_level_args(g, max_noise=0.08, n_levels=10, spacing="log")
    g.add_argument("--prompt", type=prompt_text, default=DEFAULT_PROMPT,
                   help="prompt for generated samples (default: %(default)r)")
    g.add_argument("--n_samples", type=positive_int, default=3, help="sampled generations per point (default: %(default)s)")
    g.add_argument("--max_new_tokens", type=positive_int, default=40, help="tokens per generation (default: %(default)s)")
    g.add_argument("--entropy_tokens", type=positive_int, default=10,
                   help="greedy steps averaged for the entropy (default: %(default)s)")
    g.add_argument("--temperature", type=nonneg_float, default=0.8, help="sampling temperature (default: %(default)s)")
    add_run_args(p)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="thermal_noise_simulation.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    return build_parser().parse_args(argv)


def run(argv=None) -> int:
    args = parse(argv)
    sigmas = level_grid(args)
    ctx = start(args, EXPERIMENT, METRICS, meta={
        "levels": sigmas,
        "noise_realizations": "common random numbers: one unit-scale draw per trial (seeded per layer from the "
                              "trial seed and the layer name), scaled to every level",
        "head": "not noised unless --targets names head/all; a tied head is untied before it is noised",
        "sampling": {"temperature": args.temperature, "top_k": 50, "n_samples": args.n_samples,
                     "max_new_tokens": args.max_new_tokens}})
    lm = ctx.lm
    injector = NoiseInjector(lm.model, ctx.spec, selected=ctx.targets)
    hooks = install_converters(ctx.converters, lm, injector.targets, seed=args.seed)
    injector.attach(hooks)  # drift compensation measures through the converters (noisynn.analog.compensation)
    attention = install_attention(ctx.attention, lm.model, seed=args.seed)
    rounding = rounding_report(lm.rounding_std, injector, sigmas)
    ctx.folder.update_meta(injection=injector.describe(), low_precision_rounding=rounding,
                           **({"converters": hooks.describe()} if hooks else {}),
                           **({"attention": attention.describe()} if attention else {}),
                           **({"digital": sorted(ctx.spec.digital)} if ctx.spec.digital else {}))
    if rounding and rounding["levels_where_rounding_exceeds_threshold"]:
        log.warning("%s rounding of the targeted weights (std %.3g in weight units) exceeds 10%% of the noise at "
                    "sigma = %s; those levels measure rounding as much as noise", lm.info["dtype"],
                    rounding["rounding_std"], ", ".join(f"{s:.3g}" for s in rounding["levels_where_rounding_exceeds_threshold"]))
    leading = leading_columns(EXPERIMENT, args.model, args.noise_type, args.scale, args.seed)

    def trial(point: Point) -> TrialResult:
        injector.realize(point.seed(args.seed), point.sigma)
        if hooks:
            hooks.reseed(point.sample_seed(args.seed))
        if attention:  # the KV store's tables per trial, its read noise per point
            attention.reseed(point.seed(args.seed), point.sample_seed(args.seed))
        metrics, samples, greedy = quality_metrics(
            lm.model, lm.tokenizer, ctx.eval_ids, args.prompt, n_samples=args.n_samples,
            max_new_tokens=args.max_new_tokens, entropy_tokens=args.entropy_tokens, temperature=args.temperature,
            sample_seed=point.sample_seed(args.seed), max_length=args.max_length)
        records = [{"kind": "greedy", "text": greedy}] + [{"kind": "sampled", "text": t} for t in samples]
        return TrialResult(metrics, [{"prompt": args.prompt, **r} for r in records])

    bar = progress("sweep", "point", args.quiet)
    try:
        rows = run_sweep(ctx.folder, grid(sigmas, args.n_trials), trial, leading, ctx.done_rows, bar)
    finally:
        injector.restore()
        if hooks:
            hooks.remove()
        if attention:
            attention.remove()
    if not ctx.folder.is_main:  # another process merged the shards and draws the figures
        return 0
    figures = report.plot(ctx.folder.path)
    return end_run(ctx, figures, report.format_sweep_table(rows), ["results.csv", "summary.csv", "samples.jsonl"])


def main(argv=None) -> int:
    return script_main(run, argv)
