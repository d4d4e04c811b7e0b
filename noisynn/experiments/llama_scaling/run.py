"""Do bigger or newer models tolerate more noise? The same relative noise on several models.

    python llama_scaling.py                       # = noisynn llama_scaling: smollm2-135m (+ gemma3-270m if installed)
    python llama_scaling.py --models gpt2,gpt2-medium smollm2-135m     # hub ids need the network

Fair across vocabularies and sizes: noise is relative to each tensor's spread (``--scale
relative``: sigma x std(W)), every model scores the same characters of text (``--eval_chars``),
and the figure compares bits per byte (tokenizer-independent) as well as perplexity. Each
model's robustness is the sigma at which its perplexity reaches ``--ppl_threshold`` x its clean
perplexity, found per noise realization and summarized by the median and its CI.
Models are loaded one at a time and freed before the next.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import torch

from ...runs.context import end_run, start
from ...evaluation import compute_perplexity, tokenize
from ...inject import NoiseInjector
from ...targets import select_targets
from ...models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_available
from ...models.checks import check_causal_config, context_limit, context_window, fit_context
from ...models.loading import check_model_name, load_model, model_skeleton
from ...options.parser import ArgumentParser
from ...options.flags import add_level_args, add_model_args, add_noise_args, add_run_args, level_grid
from ...options.argtypes import positive_float
from ...options.script import script_main
from ...errors import NoisyNNError
from ...runs.schema import RUN_JSON
from ...runs.inputs import check_fingerprint
from ...runs.read import read_meta, read_run
from ...runs.runner import Point, TrialResult, grid, leading_columns, progress, run_sweep
from . import report

log = logging.getLogger(__name__)

EXPERIMENT = "llama_scaling"
EXTRA = ("n_params", "noised_params")
METRICS = ("perplexity", "nll", "bits_per_byte", "eval_tokens", "eval_bytes", "finite")
OPTIONAL_MODEL = "gemma3-270m"
# --include_modern: larger current models from the hub (a GPU and the network; Llama is gated:
# accept its license on the hub and log in first).
MODERN_MODELS = ("HuggingFaceTB/SmolLM2-360M", "Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.2-1B",
                 "HuggingFaceTB/SmolLM2-1.7B")


def add_args(p: ArgumentParser) -> None:
    add_model_args(p, many=True)
    add_noise_args(p, scale="relative")
    g = p.add_argument_group("scaling")
    g.add_argument("--include_modern", action="store_true",
                   help=f"also compare {', '.join(MODERN_MODELS)} (hub, meant for a GPU)")
    add_level_args(g, max_noise=0.3, n_levels=8, spacing="log")
    g.add_argument("--ppl_threshold", type=positive_float, default=2.0,
                   help="robustness = sigma where perplexity reaches this factor x clean (default: %(default)s)")
    add_run_args(p)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="llama_scaling.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    args = build_parser().parse_args(argv)
    args.models = resolve_models(args.models, args.include_modern)
    return args


def default_models() -> list[str]:
    """The embedded SmolLM2-135M, plus Gemma-3-270M when its optional packages are installed."""
    return [DEFAULT_MODEL, OPTIONAL_MODEL] if embedded_available(OPTIONAL_MODEL) else [DEFAULT_MODEL]


def resolve_models(given, include_modern: bool) -> list[str]:
    """Flatten ``--models`` (space- and comma-separated), default list, ``--include_modern``; no repeats."""
    names = [n for group in given for n in group] if given else default_models()
    if include_modern:
        names += list(MODERN_MODELS)
    out = list(dict.fromkeys(names))
    for name in out:  # fail now, in one line, before the run folder is touched
        check_model_name(name, "--models")
    if not given and OPTIONAL_MODEL not in out:  # said only once the models are known good: an error stays one line
        log.warning("%s left out: its optional packages are not installed (%s)", OPTIONAL_MODEL,
                    EMBEDDED_MODELS[OPTIONAL_MODEL].install)
    return out


def previous_models(out: str | None) -> dict:
    """Model records of an earlier session of the same run folder (kept when its models are skipped)."""
    if not out or not (Path(out) / RUN_JSON).is_file():
        return {}
    try:
        return dict(read_meta(Path(out) / RUN_JSON).get("models") or {})
    except (NoisyNNError, TypeError, ValueError):  # a damaged run.json is reported by the folder check
        return {}


def eval_ids_for(tokenizer, text: str) -> torch.Tensor:
    """Token ids of the whole text, with the BOS token first if this tokenizer adds one by default.

    Each model reads the text as it was trained to (Gemma expects <bos>: without it its
    perplexity here is ~25 instead of ~16; SmolLM2 and GPT-2 add none). With BOS every text
    token is scored; without, all but the first.
    """
    ids = tokenize(tokenizer, text)
    bos = getattr(tokenizer, "bos_token_id", None)
    probe = tokenizer("a")["input_ids"]
    if bos is not None and probe and probe[0] == bos:
        ids = torch.cat([torch.tensor([bos], dtype=ids.dtype), ids])
    return ids


def run_model(ctx, name: str, points, done: list[dict], models_meta: dict) -> None:
    """Load one model, run its pending points, restore and drop it (its memory goes with the frame)."""
    args = ctx.args
    lm = load_model(name, args.device, args.dtype, args.device_map, args.max_memory)
    fit_context(lm, args.max_length)  # a model whose config could not be read before it loaded
    injector = NoiseInjector(lm.model, ctx.spec)
    if done:  # resuming this model: it must be the same weights the finished points ran on
        check_fingerprint(ctx.folder.path, models_meta.get(name), lm.info, "fingerprint", f"the weights of {name}")
    ids = eval_ids_for(lm.tokenizer, ctx.text.text)
    models_meta[name] = {**lm.info, "injection": injector.describe(), "eval_ids": int(ids.numel())}
    ctx.folder.update_meta(models=models_meta)
    n_params, noised = lm.info["n_params"], injector.n_params

    leading = leading_columns(EXPERIMENT, name, args.noise_type, args.scale, args.seed,
                              lambda p: {"n_params": n_params, "noised_params": noised})

    def trial(point: Point) -> TrialResult:
        injector.realize(point.seed(args.seed), point.sigma)
        r = compute_perplexity(lm.model, lm.tokenizer, ids, max_length=args.max_length)
        return TrialResult({**r.metrics(), "eval_bytes": r.n_bytes})

    bar = progress(name, "point", args.quiet)
    try:
        run_sweep(ctx.folder, points, trial, leading, done, bar)
    finally:
        injector.restore()


def run(argv=None) -> int:
    args = parse(argv)
    sigmas = level_grid(args)
    windows = []
    for name in args.models:  # targets that select nothing in a model fail now, before the run folder exists
        skeleton = model_skeleton(name)
        if skeleton is not None:
            select_targets(skeleton, args.targets, getattr(args, "blocks", None), args.include_bias)
            check_causal_config(skeleton.config, name)
        # one perplexity window for every model: min(512, the shortest context) unless given
        windows.append(context_window(args.max_length, context_limit(skeleton.config) if skeleton else None, name))
    args.max_length = args.max_length or min(windows)
    models_meta = previous_models(args.out)
    ctx = start(args, EXPERIMENT, METRICS, key=("model", "sigma", "trial"), extra_columns=EXTRA, load=False, meta={
        "levels": sigmas, "models": models_meta,
        "noise_realizations": "common random numbers: one unit-scale draw per model and trial (seeded per layer "
                              "from the trial seed and the layer name), scaled to every level",
        "head": "not noised unless --targets names head/all; a tied head is untied before it is noised",
        "text_span": f"the first {args.eval_chars} characters of the text, scored by every model; BOS first "
                     "where the tokenizer adds one by default",
        "robustness": f"sigma where perplexity reaches {args.ppl_threshold} x clean, per trial by log_crossing "
                      "(log-linear interpolation), then median and order-statistic CI over trials"})
    done_by_model: dict[str, list[dict]] = {}
    for r in ctx.done_rows:
        done_by_model.setdefault(r["model"], []).append(r)
    points = grid(sigmas, args.n_trials)
    for name in args.models:
        done = done_by_model.get(name, [])
        if len(done) >= len(points):
            log.info("%s: all %d points already in the run folder", name, len(points))
            continue
        run_model(ctx, name, points, done, models_meta)
        gc.collect()  # one model in memory at a time: run_model's references are gone
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if not ctx.folder.is_main:  # another process merged the shards and draws the figures
        return 0
    figures = report.plot(ctx.folder.path)
    return end_run(ctx, figures, report.format_scaling_table(read_run(ctx.folder.path).rows, args.ppl_threshold),
                   ["results.csv", "summary.csv", "crossings.csv"])


def main(argv=None) -> int:
    return script_main(run, argv)
