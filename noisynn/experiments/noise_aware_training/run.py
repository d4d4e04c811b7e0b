"""Noise-aware fine-tuning: can training with weight noise buy robustness back?

    python noise_aware_training.py          # = noisynn noise_aware_training, embedded SmolLM2-135M

Fine-tunes the targeted projections with a fresh noise realization in every forward pass
(the gradient is taken at the noisy weights and applied to the clean ones, as in
hardware-aware training), on the *training* split of the embedded Wikipedia corpus. Then the
original model, the noise-trained model and (unless ``--no_control``) a control fine-tuned
on the same batches *without* noise are scored on the same held-out text, with the same noise
seeds, across a sigma sweep. The control separates "more robust" from "adapted to Wikipedia".

Reference recipe: Analog Foundation Models (Buechel et al., NeurIPS 2025;
github.com/IBM/analog-foundation-models): Gaussian weight noise with a per-output-channel
std of 0.03 x max|W| in every forward pass (aihwkit ``add_gauss_channel``), and weight
clipping at 2.5 std per channel after each step. Here noise scale and level are
``--scale relative_channel --noise_level 0.03`` by default; clipping is ``--clip_sigma``
(off by default: one-shot 2.5-std clipping of this 4-bit model raises its clean perplexity
from 10.4 to ~7,600, which AFM's long distillation run can repair and a few dozen steps cannot).

``--recipe afm`` (``afm_run.py``) trains the full AFM recipe instead (distillation from the clean
model, self-generated data, the analog training forward with learned input ranges) and judges the
models on PCM drift through AFM's converters; ``--recipe weight_noise`` (the default) is the above.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, replace

from ...runs import distributed
from ...runs.context import end_run, start
from ...corpus import load_text
from ...evaluation import compute_perplexity
from ...inject import NoiseInjector
from ...targets import select_targets
from ...options.parser import ArgumentParser
from ...options.flags import add_level_args, add_model_args, add_noise_args, add_run_args, level_grid
from ...spec import noise_params
from ...options.argtypes import nonneg_float, positive_float, positive_int
from ...options.script import script_main
from ...runs.files import write_json_atomic
from ...runs.runner import Point, TrialResult, grid, leading_columns, progress, run_sweep
from . import afm_run, report
# the recipe's pieces, under their historical names here (tests and users import them from run)
from .data import load_training_text, training_chunks
from .anneal import add_anneal_args, anneal_schedule, resolve_anneal
from .training import TrainConfig, check_batch_split, check_launch, finetune
from .weights import WEIGHTS, read_weights, save_weights, set_weights

log = logging.getLogger(__name__)

EXPERIMENT = "noise_aware_training"
METRICS = ("perplexity", "nll", "bits_per_byte", "eval_tokens", "finite")
VARIANTS = ("original", "finetuned", "control")
TRAINING_CSV = "training.csv"


# ---------------------------------------------------------------------------------------------- command line

def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p, scale="relative_channel")
    g = p.add_argument_group("training (noise uses --noise_type --scale --targets above)")
    g.add_argument("--noise_level", type=nonneg_float, default=0.03,
                   help="sigma of the training noise, in --scale units (default: %(default)s, AFM's 3%% of per-channel max|W|)")
    g.add_argument("--epochs", type=positive_int, default=None,
                   help="passes over the --max_samples windows (default: 1; with --recipe afm 2, AFM's)")
    g.add_argument("--max_samples", type=positive_int, default=None,
                   help="training windows of --seq_len tokens (default: 192; with --recipe afm 64)")
    g.add_argument("--steps", type=positive_int, default=None,
                   help="optimizer steps (default: epochs x ceil(max_samples / batch_size)); overrides --epochs")
    g.add_argument("--lr", type=positive_float, default=1e-4, help="AdamW peak learning rate (default: %(default)s)")
    g.add_argument("--seq_len", type=positive_int, default=128, help="tokens per training window (default: %(default)s)")
    g.add_argument("--batch_size", type=positive_int, default=4, help="windows per step (default: %(default)s)")
    g.add_argument("--warmup", type=nonneg_float, default=0.1, help="warm-up fraction of the steps (default: %(default)s)")
    g.add_argument("--weight_decay", type=nonneg_float, default=None,
                   help="AdamW weight decay (default: 0; with --recipe afm 0.01, AFM's)")
    g.add_argument("--clip_sigma", type=nonneg_float, default=None,
                   help="AFM weight clipping at this many per-channel stds after each step; 0 = off "
                        "(default: 0; with --recipe afm 2.5, AFM's)")
    g.add_argument("--no_control", action="store_true", help="skip the control fine-tuned without noise (saves ~40%% of the time)")
    # default None (not False): run folders recorded before this flag existed resume unchanged
    g.add_argument("--save_weights", action="store_true", default=None,
                   help="save the trained tensors (finetuned/control.safetensors, ~4 bytes per trained weight: "
                        "425 MB each for the default targets of SmolLM2-135M) so load_finetuned can rebuild the "
                        "models and a resumed run skips training; without it a resumed run trains again (same "
                        "seed, same weights)")
    g.add_argument("--train_file", default=None, help="train on this UTF-8 text file instead of the embedded training split")
    add_anneal_args(g)
    g = p.add_argument_group("evaluation sweep (same noise seeds for every model)")
    add_level_args(g, max_noise=0.05, n_levels=6, spacing="linear")
    afm_run.add_afm_args(p)
    add_run_args(p)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="noise_aware_training.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.warmup > 1:
        p.error(f"argument --warmup: '{args.warmup}' must be <= 1")
    if args.seq_len < 2:  # refused here, before any run folder (--data self would find it only after writing)
        p.error(f"argument --seq_len: '{args.seq_len}' must be >= 2 (a window of one token has no next token to "
                "predict)")
    afm_run.resolve_recipe(p, args)  # recipe-dependent defaults, and flags that belong to the other recipe
    resolve_anneal(p, args)
    return args


def train_config(args, n_samples: int) -> TrainConfig:
    steps = args.steps or args.epochs * math.ceil(n_samples / args.batch_size)
    return TrainConfig(noise_level=args.noise_level, noise_type=args.noise_type, scale=args.scale,
                       targets=args.targets, include_bias=args.include_bias, noise_params=noise_params(args),
                       steps=steps, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
                       clip_sigma=args.clip_sigma, batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed,
                       anneal=anneal_schedule(args))




def run(argv=None) -> int:
    args = parse(argv)
    if args.recipe == "afm":
        return afm_run.run_afm(args)
    t_start = time.perf_counter()
    sigmas = level_grid(args)
    variants = [v for v in VARIANTS if not (v == "control" and args.no_control)]
    # The training text is read and checked against the evaluation text before the run folder is touched.
    train_text, train_info = load_training_text(args.train_file, load_text(args.text_file, args.dataset))
    check_batch_split(args.batch_size, distributed.world_size())
    data = {}  # the training windows, cut (and checked) before the run folder is touched
    if distributed.world_size() > 1:
        check_launch(distributed.accelerator())
    ctx = start(args, EXPERIMENT, METRICS, key=("model_variant", "sigma", "trial"), extra_columns=("model_variant",),
                meta={"levels": sigmas, "variants": variants,
                      "noise_realizations": "evaluation: one unit-scale draw per trial, seeded from (seed, trial) and "
                                            "the layer name, the same for every model variant and scaled to every "
                                            "level; training: a fresh draw per step, seeded from (seed, step)",
                      "gradient": "taken at the noisy weights, applied to the clean weights (noise removed "
                                  "bit-exactly before each optimizer step)",
                      "head": "not noised or trained unless --targets names head/all (then untied first)",
                      "reference": "Analog Foundation Models (Buechel et al., NeurIPS 2025): per-channel noise "
                                   "std 0.03 x max|W|, clipping 2.5 std per channel"},
                check=lambda lm, text: data.update(chunks=training_chunks(lm.tokenizer, train_text, args.max_samples,
                                                                          args.seq_len)))
    lm, folder = ctx.lm, ctx.folder
    chunks = data["chunks"]
    cfg = train_config(args, chunks.shape[0])
    targets = select_targets(lm.model, args.targets, include_bias=args.include_bias)
    n_trained = sum(t.numel for t in targets)
    folder.update_meta(training_text={**train_info, "windows": int(chunks.shape[0]), "seq_len": args.seq_len,
                                      "tokens": int(chunks.numel())},
                       training_config=asdict(cfg), trained_tensors=len(targets), trained_params=n_trained,
                       train_tokens=cfg.steps * cfg.batch_size * cfg.seq_len)

    weights = {"original": {t.name: t.param.detach().clone() for t in targets}}
    training = {}
    for variant in variants[1:]:
        vcfg = cfg if variant == "finetuned" else replace(cfg, noise_level=0.0)
        path = folder.path / WEIGHTS.format(variant=variant)
        distributed.barrier()  # every process sees the same saved files (the main one saves)
        if path.is_file():  # resumed run: saved before (and checked against its recorded fingerprint by start)
            weights[variant], meta = read_weights(path)
            training[variant] = {k: meta[k] for k in ("seconds", "final_loss", "steps") if k in meta}
            log.info("loaded %s from %s", variant, path)
            continue
        bar = progress(f"train {variant}", "step", args.quiet or not folder.is_main)
        t0 = time.perf_counter()
        tensors, history = finetune(lm.model, chunks, vcfg, bar)
        seconds = round(time.perf_counter() - t0, 1)
        final = sum(h["loss"] for h in history[-8:]) / len(history[-8:])
        training[variant] = {"seconds": seconds, "final_loss": round(final, 4), "steps": vcfg.steps,
                             "processes": folder.world}
        if folder.is_main:  # the trained tensors are the same on every process
            report.write_training_csv(folder.path, variant, history)
        if folder.is_main and args.save_weights:
            save_weights(path, tensors, {"variant": variant, "base_model": args.model,
                                         "base_fingerprint": lm.info.get("fingerprint"), **training[variant],
                                         "noise_level": vcfg.noise_level, "scale": vcfg.scale,
                                         "targets": vcfg.targets,
                                         **({} if vcfg.anneal.constant or not vcfg.noise_level
                                            else {"anneal": json.dumps(asdict(vcfg.anneal))})})
            folder.record_written(path)  # a resume reads it back only while it is the file written here
        weights[variant] = tensors
    folder.update_meta(training=training)

    # Evaluation: every variant, same held-out tokens, same noise seeds (the seed ignores the variant).
    state = {"variant": None, "injector": None}
    noise_seed = lambda trial: Point(0, 0.0, trial).seed(args.seed)  # noqa: E731

    def trial(point: Point) -> TrialResult:
        if state["variant"] != point.target:
            set_weights(lm.model, weights[point.target])
            state["injector"] = NoiseInjector(lm.model, ctx.spec)
            state["variant"] = point.target
        injector = state["injector"]
        injector.realize(noise_seed(point.trial), point.sigma)
        r = compute_perplexity(lm.model, lm.tokenizer, ctx.eval_ids, max_length=args.max_length)
        return TrialResult(r.metrics())

    # the seed column is the variant-independent noise seed
    leading = leading_columns(EXPERIMENT, args.model, args.noise_type, args.scale, args.seed,
                              lambda p: {"seed": noise_seed(p.trial), "model_variant": p.target})
    bar = progress("evaluate", "point", args.quiet)
    t0 = time.perf_counter()
    try:
        run_sweep(folder, grid(sigmas, args.n_trials, variants), trial, leading, ctx.done_rows, bar)
    finally:
        if state["injector"] is not None:
            state["injector"].restore()
        set_weights(lm.model, weights["original"])
    eval_seconds = round(time.perf_counter() - t0, 1)
    if not folder.is_main:  # another process merged the shards and draws the figures
        return 0
    figures = report.plot(folder.path)
    numbers = report.noise_aware_report(folder.path)
    write_json_atomic(folder.path / "report.json", numbers)
    return end_run(ctx, figures, report.format_noise_aware_report(numbers),
                   ["results.csv", "summary.csv", "training.csv", "report.json",
                    *(WEIGHTS.format(variant=v) for v in variants[1:])],
                   report=numbers, eval_seconds=eval_seconds, wall_seconds=round(time.perf_counter() - t_start, 1))


def main(argv=None) -> int:
    return script_main(run, argv)
