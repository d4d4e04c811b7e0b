"""``--recipe afm``: its flags, training, and the PCM-drift evaluation with converters.

Train with the AFM recipe and a no-analog control, then judge all three models on PCM read t seconds after
programming (drift compensation on), through AFM's evaluation converters.

Variants: ``original`` (the model as loaded), ``finetuned`` (the AFM recipe: distillation through the
analog forward) and ``control`` (the same data, steps, loss and optimizer with the analog forward off).
Evaluation: each trial programs the targeted weights once (PCM, seeded by the trial only, the same
for every variant) and reads them at every time; converters: 8-bit DAC with static per-layer ranges
(the learned ones where the model has them, else the recipe's data initialisation of the same
ranges), 8-bit ADC, bound 14, 512-input tiles: ``noisynn.analog.presets`` ``afm``; drift compensation per tile after
the ADC, measured through the converters (``noisynn.analog.compensation``, aihwkit's order). Then (unless
``--no_pcm_afm``) each variant again in AFM's own setting: ``afm_converters`` and ``pcm_afm`` rows (afm_eval).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace

import torch

from ...runs import distributed
from ...runs.context import end_run, start
from ...analog.mvm import AnalogIO
from ...analog.hooks import ConverterHooks
from ...analog.presets import get_preset
from ...corpus import load_text
from ...errors import NoisyNNError
from ...evaluation import compute_perplexity
from ...inject import NoiseInjector
from ...targets import select
from ...noise import time_label
from ...noise.units import parse_times
from ...runs.files import write_json_atomic
from ...runs.runner import Point, TrialResult, leading_columns, progress, run_sweep
from ...seeding import derive_seed
from ...spec import make_noise_spec
from . import afm_eval, report
from .afm_eval import set_ranges
from .afm import AFMConfig, afm_finetune
from .analog_train import AnalogTrainConfig, AnalogTraining, linear_layers
from .lean import OPTIMIZERS as LEAN_OPTIMIZERS, TEACHERS as LEAN_TEACHERS, check_choice, check_optimizer
from .data import load_training_text, self_generated_chunks, self_prompt, training_chunks
from .anneal import anneal_schedule
from .training import check_batch_split, check_launch
from .weights import WEIGHTS, read_weights, save_weights, set_weights

log = logging.getLogger(__name__)

EXPERIMENT = "noise_aware_training"
METRICS = ("perplexity", "nll", "bits_per_byte", "eval_tokens", "finite")
EXTRA = ("model_variant", "condition", "t_seconds", "t_label")
KEY = ("model_variant", "condition", "t_seconds", "trial")
VARIANTS = ("original", "finetuned", "control")
RANGES = "input_ranges.json"
SELF_DATA = "self_data.jsonl"
DEFAULT_TIMES = "1s,1h,1d,1y"
# run.json keys training and evaluation write
FINISHED_META = ("training", "converters", "injection", "eval_seconds", "afm_evaluation")


@dataclass(frozen=True)
class AFMPoint(Point):
    """A read of one variant (``target``) at ``t_seconds`` after programming, or its clean row."""

    condition: str = "pcm"
    t_seconds: float = 0.0

    def seed(self, base: int) -> int:
        """The programming seed depends on the trial only: every variant and time reads the same draw."""
        return derive_seed(base, "noise", "pcm", self.trial)


# flag -> its value under --recipe afm when not given (None defaults: folders written before them resume)
AFM_DEFAULTS = {"data": "self", "distill_temperature": 1.0, "distill_beta": 1.0, "no_distill": False,
                "no_analog": False, "no_dac": False, "no_adc": False, "no_weight_noise": False,
                "no_learned_ranges": False, "range_init_batches": 5, "range_lr": 1e-2, "grad_checkpointing": False,
                "save_every": 10, "self_batch": 16, "times": DEFAULT_TIMES, "clip_sigma": 0.0, "weight_decay": 0.01,
                "epochs": 2, "max_samples": 64}
SHARED = ("clip_sigma", "weight_decay", "data", "epochs", "max_samples")
# lean options of the AFM recipe: left None when not given (a run folder written before them resumes)
LEAN = {"teacher": "copy", "optimizer": "adamw"}


def add_afm_args(p) -> None:
    """The flags of ``--recipe`` and of the AFM recipe (all default None: resolved by ``resolve_recipe``)."""
    from ...options.argtypes import positive_float, positive_int, unit_float

    g = p.add_argument_group("recipe (--recipe afm: Analog Foundation Models; the flags below need it unless noted)")
    g.add_argument("--recipe", choices=("weight_noise", "afm"), default=None,
                   help="weight_noise: today's fine-tuning under weight noise, judged on a sigma sweep (default); "
                        "afm: distillation through the analog forward, judged on PCM drift")
    g.add_argument("--data", default=None,
                   help="training data: self (text the clean model generates, cached in the run folder; afm only) | "
                        "corpus (the embedded training split) | PATH (a UTF-8 file) (default: self with afm, else corpus)")
    g.add_argument("--distill_temperature", type=positive_float, default=None, help="distillation temperature T (default: 1)")
    g.add_argument("--distill_beta", type=unit_float, default=None,
                   help="loss = beta KL + (1 - beta) next-token CE (default: 1, AFM's)")
    g.add_argument("--no_distill", action="store_true", default=None, help="ablation: next-token loss only, no teacher")
    g.add_argument("--no_analog", action="store_true", default=None,
                   help="ablation: train the AFM variant without the analog forward (as the control)")
    g.add_argument("--no_dac", action="store_true", default=None, help="ablation: no input ranges and no 8-bit DAC")
    g.add_argument("--no_adc", action="store_true", default=None, help="ablation: no 8-bit ADC and no output bound")
    g.add_argument("--no_weight_noise", action="store_true", default=None,
                   help="ablation: no weight noise in training (else --noise_level x per-channel max|W|, fresh per forward)")
    g.add_argument("--no_learned_ranges", action="store_true", default=None,
                   help="ablation: input ranges stay at their data initialisation")
    g.add_argument("--range_init_batches", type=positive_int, default=None,
                   help="batches the input ranges are initialised from, 18 x std(x) averaged (default: 5; AFM: 500)")
    g.add_argument("--range_lr", type=positive_float, default=None, help="AdamW learning rate of the input ranges (default: 0.01)")
    g.add_argument("--grad_checkpointing", "--gradient_checkpointing", dest="grad_checkpointing", action="store_true",
                   default=None, help="activation checkpointing (HF, non-reentrant; bigger models): the forward is run "
                                      "again in the backward pass, with the same weight-noise draw (seeded by step and "
                                      "layer); same loss and gradients up to float rounding")
    g.add_argument("--teacher", choices=LEAN_TEACHERS, default=None,
                   help="copy: distil from the clean model (a copy of the trained tensors; AFM's) | shared: from the "
                        "student's own current weights with the analog forward and weight noise off, no copy held "
                        "(distils from the current student, not the frozen clean model; at lr 5e-7 the two differ "
                        "negligibly over a few hundred steps) (default: copy)")
    g.add_argument("--optimizer", choices=LEAN_OPTIMIZERS, default=None,
                   help="adamw: torch, float32 moments | adamw8bit: bitsandbytes AdamW8bit, 8-bit blockwise moments "
                        "(CPU or GPU) | paged_adamw8bit: bitsandbytes PagedAdamW8bit (CUDA only); the 8-bit ones need "
                        "bitsandbytes (requirements-optional.txt) (default: adamw)")
    g.add_argument("--save_every", type=positive_int, default=None,
                   help="save a training checkpoint every N steps; a rerun continues from it (default: 10)")
    g.add_argument("--self_batch", type=positive_int, default=None, help="sequences per decoding batch for --data self (default: 16)")
    g.add_argument("--times", default=None, help=f"PCM read times after programming (default: {DEFAULT_TIMES})")
    afm_eval.add_eval_args(g)


def resolve_recipe(p, args) -> None:
    """Fill the recipe's defaults into ``args``; a flag of the other recipe is a usage error (exit 2)."""
    if args.recipe == "afm":
        if args.train_file:
            p.error("--train_file belongs to --recipe weight_noise; use --data PATH with --recipe afm")
        if args.noise_type != p.get_default("noise_type"):
            p.error(f"--noise_type {args.noise_type} means nothing with --recipe afm: it trains with gaussian weight "
                    "noise (--noise_level x per-channel max|W|) and reads the models on pcm and pcm_afm")
        for k, v in AFM_DEFAULTS.items():
            if getattr(args, k) is None:
                setattr(args, k, v)
        return
    given = [k for k in (*AFM_DEFAULTS, *LEAN, *afm_eval.EVAL_FLAGS) if k not in SHARED and getattr(args, k) is not None]
    if given:
        p.error(f"--{given[0]} needs --recipe afm")
    if args.data == "self":
        p.error("--data self needs --recipe afm (today's recipe trains on the corpus or a file)")
    if args.data is not None and args.data != "corpus":
        if args.train_file:
            p.error("give either --data PATH or --train_file, not both")
        args.train_file = args.data
    # the recorded config of today's recipe stays what it was before these flags existed
    args.recipe = args.data = None
    args.clip_sigma = 0.0 if args.clip_sigma is None else args.clip_sigma
    args.weight_decay = 0.0 if args.weight_decay is None else args.weight_decay
    args.epochs = 1 if args.epochs is None else args.epochs
    args.max_samples = 192 if args.max_samples is None else args.max_samples


def eval_io() -> AnalogIO:
    """AFM's evaluation converters: ``noisynn.analog.presets`` ``afm`` (8-bit DAC with static ranges, 8-bit ADC, bound 14,
    no output noise, 512-input tiles); the static ranges are set per layer by ``set_ranges``."""
    return get_preset("afm")


def analog_config(args) -> AnalogTrainConfig | None:
    if args.no_analog:
        return None
    return AnalogTrainConfig(dac_bits=None if args.no_dac else 8, adc_bits=None if args.no_adc else 8,
                             out_bound=None if args.no_adc else 14.0,
                             weight_noise=0.0 if args.no_weight_noise else args.noise_level,
                             input_ranges=not args.no_dac, learn_ranges=not args.no_learned_ranges,
                             init_batches=args.range_init_batches)


def afm_config(args, n_samples: int) -> AFMConfig:
    steps = args.steps or args.epochs * -(-n_samples // args.batch_size)
    return AFMConfig(steps=steps, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
                     clip_sigma=args.clip_sigma, batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed,
                     targets=args.targets, include_bias=args.include_bias, distill=not args.no_distill,
                     temperature=args.distill_temperature, beta=args.distill_beta, analog=analog_config(args),
                     range_lr=args.range_lr, grad_checkpointing=bool(args.grad_checkpointing),
                     save_every=args.save_every, anneal=anneal_schedule(args),
                     **lean_options(args))


def lean_options(args) -> dict:
    """--teacher and --optimizer (their defaults where not given), checked: a bad combination is a NoisyNNError."""
    lean = {k: getattr(args, k) or v for k, v in LEAN.items()}
    check_choice(lean["teacher"], lean["optimizer"], not args.no_distill, args.clip_sigma)
    cpu = getattr(args, "device", "auto") == "cpu" or not torch.cuda.is_available()
    check_optimizer(lean["optimizer"], "cpu" if cpu else None)
    return lean


def points(variants, times, n_trials, pcm_afm: bool = False) -> list[AFMPoint]:
    """Per variant: clean, converters, pcm (trials x times); with ``pcm_afm`` then afm_converters and pcm_afm
    (trials) in AFM's own setting (afm_eval)."""
    out = []
    for v in variants:
        out.append(AFMPoint(0, 0.0, 0, v, condition="clean"))
        out.append(AFMPoint(0, 0.0, 0, v, condition="converters"))
        out += [AFMPoint(i, 1.0, trial, v, condition="pcm", t_seconds=t)
                for trial in range(n_trials) for i, t in enumerate(times)]
        if pcm_afm:
            out.append(AFMPoint(0, 0.0, 0, v, condition="afm_converters"))
            out += [AFMPoint(0, 1.0, trial, v, condition="pcm_afm") for trial in range(n_trials)]
    return out


def training_data(args, lm, folder, eval_text) -> tuple[torch.Tensor, dict]:
    """The training windows of ``--data``: self (generated, cached), corpus (training split) or a file."""
    if args.data == "self":
        bar = progress("generate self data", "batch", args.quiet or not folder.is_main)
        path = folder.path / SELF_DATA
        if folder.is_main:
            self_generated_chunks(lm.model, lm.tokenizer, args.max_samples, args.seq_len, path, args.seed,
                                  args.self_batch, progress=bar)
            folder.record_written(path)  # complete now; a resume reads it back only while it is this file
        distributed.barrier()
        chunks = self_generated_chunks(lm.model, lm.tokenizer, args.max_samples, args.seq_len, path, args.seed,
                                       args.self_batch)
        return chunks, {"source": "self", "file": SELF_DATA, "prompt": self_prompt(lm.tokenizer), "temperature": 1.0,
                        "top_k": 50, "batch": args.self_batch}
    text, info = load_training_text(None if args.data == "corpus" else args.data, eval_text)
    return training_chunks(lm.tokenizer, text, args.max_samples, args.seq_len), info


def run_afm(args) -> int:
    t_start = time.perf_counter()
    times = parse_times(args.times)
    variants = [v for v in VARIANTS if not (v == "control" and args.no_control)]
    eval_text = load_text(args.text_file, args.dataset)
    if args.data not in ("self", "corpus"):
        load_training_text(args.data, eval_text)  # exists, readable, disjoint: before the run folder is touched
    check_batch_split(args.batch_size, distributed.world_size())
    if distributed.world_size() > 1:
        check_launch(distributed.accelerator())
    afm_config(args, args.max_samples)  # flag combinations are checked before the folder is touched
    ev = afm_eval.settings(args)
    pcm = make_noise_spec("pcm", {"t_seconds": times[0], "drift_compensation": True}, "relative_channel",
                          args.targets, None, args.include_bias)

    def check_model(lm, text):  # what the model must offer, before the run folder is touched
        afm_eval.check(ev, lm.model)
        linear_layers(lm.model, select(lm.model, pcm))

    ctx = start(args, EXPERIMENT, METRICS, key=KEY, extra_columns=EXTRA, check=check_model, meta={
        "recipe": "afm", "variants": variants, "times_s": times, "time_labels": [time_label(t) for t in times],
        "reference": "Analog Foundation Models (Buechel et al., NeurIPS 2025; IBM/analog-foundation-models "
                     "config.yaml for Llama-3.2-1B)",
        "sigma": "pcm rows: 1 (the PCM model as measured); clean rows: 0 (digital, no converters); converters "
                 "rows: 0 (clean weights through the evaluation converters)",
        "programming": "once per trial, seeded by the trial only: every variant and time reads the same draw",
        "compensation": "global drift compensation on at every read",
        "head": "not trained or programmed unless --targets names head/all (the pcm_afm rows: --eval_head)"})
    lm, folder = ctx.lm, ctx.folder
    chunks, data_info = training_data(args, lm, folder, eval_text)
    cfg = afm_config(args, chunks.shape[0])
    targets = select(lm.model, pcm)  # the injector (a snapshot of the weights) is made per variant, later
    folder.update_meta(training_text={**data_info, "windows": int(chunks.shape[0]), "seq_len": args.seq_len,
                                      "tokens": int(chunks.numel())},
                       training_config=asdict(cfg), trained_tensors=len(targets),
                       trained_params=sum(t.numel for t in targets),
                       train_tokens=cfg.steps * cfg.batch_size * cfg.seq_len)
    plan = points(variants, times, args.n_trials, ev.on)
    if len(ctx.done_rows) < len(plan):
        head = select(lm.model, afm_eval.noise_spec(args, ev).with_targets("head")) if (
            ev.on and ev.head == "analog") else []
        weights, ranges = train_variants(args, lm, folder, chunks, cfg, targets, variants, head)
        if ev.on:
            folder.update_meta(afm_evaluation=ev.describe(args.targets))
        evaluate(args, ctx, plan, weights, ranges, targets, pcm, ev)
    elif folder.is_main:  # a finished run is only reported again: keep what its sessions recorded
        folder.update_meta(**{k: folder.previous_meta[k] for k in FINISHED_META if k in folder.previous_meta})
    if not folder.is_main:
        return 0
    figures = report.plot(folder.path)
    numbers = report.afm_report(folder.path)
    write_json_atomic(folder.path / "report.json", numbers)
    code = end_run(ctx, figures, report.format_afm_report(numbers),
                   ["results.csv", "summary.csv", "training.csv", RANGES, "report.json"],
                   report=numbers, wall_seconds=round(time.perf_counter() - t_start, 1))
    for ckpt in folder.path.glob("*.ckpt"):  # the run is finished: training checkpoints are no longer needed
        ckpt.unlink()
    return code


def train_variants(args, lm, folder, chunks, cfg, targets, variants, head=()) -> tuple[dict, dict]:
    """The trained tensors and the static input ranges of every variant (trained here, or read back); with
    ``head`` (its targets, for the pcm_afm rows' analog head) the head's range too (afm_eval.head_ranges)."""
    weights = {"original": {t.name: t.param.detach().clone() for t in targets}}
    ranges_path = folder.path / RANGES
    ranges = report.read_json(ranges_path)
    training = dict(folder.meta.get("training", {}))
    for variant in variants[1:]:
        vcfg = cfg if variant == "finetuned" else replace(cfg, analog=None)
        path, ckpt = folder.path / WEIGHTS.format(variant=variant), folder.path / f"{variant}.ckpt"
        distributed.barrier()
        if path.is_file() and variant in ranges:
            weights[variant], _ = read_weights(path)
            continue
        bar = progress(f"train {variant}", "step", args.quiet or not folder.is_main)
        tensors, learned, history = afm_finetune(lm.model, chunks, vcfg, ckpt, bar)
        weights[variant] = tensors
        final = history[-8:]
        training[variant] = {"seconds": round(history[-1]["seconds"], 1), "steps": vcfg.steps,
                             "final_loss": round(sum(h["loss"] for h in final) / len(final), 5),
                             "processes": folder.world, "analog": vcfg.analog is not None}
        if folder.is_main:
            report.write_training_csv(folder.path, variant, history)
            if args.save_weights:
                save_weights(path, tensors, {"variant": variant, "recipe": "afm", "base_model": args.model,
                                             **training[variant],
                                             **({} if vcfg.anneal.constant or vcfg.analog is None
                                                else {"anneal": json.dumps(asdict(vcfg.anneal))})})
                folder.record_written(path)  # a resume reads it back only while it is the file written here
        if learned:
            ranges[variant] = learned
    # models without learned ranges get the recipe's data initialisation of them (same rule, same data)
    init_cfg = replace(cfg.analog or AnalogTrainConfig(), weight_noise=0.0, input_ranges=True)
    n_init = min(init_cfg.init_batches, chunks.shape[0] // cfg.batch_size or 1)
    batches = [chunks[i * cfg.batch_size:(i + 1) * cfg.batch_size] for i in range(n_init)]
    for variant in variants:
        if variant not in ranges:
            set_weights(lm.model, weights[variant])
            with AnalogTraining(lm.model, targets, init_cfg, cfg.seed) as probe:
                ranges[variant] = probe.calibrate(lm.model, batches)
    if head:
        afm_eval.head_ranges(lm, weights, ranges, targets, head, cfg, batches)
    set_weights(lm.model, weights["original"])
    if folder.is_main:
        write_json_atomic(ranges_path, ranges)
        folder.record_written(ranges_path)
    folder.update_meta(training=training, converters={**eval_io().describe(), "preset": "afm",
                                                      "input_range": f"static per layer ({RANGES})"})
    return weights, ranges


def evaluate(args, ctx, plan, weights, ranges, targets, pcm, ev=None) -> None:
    """Every point of ``plan``: clean, converters only, and PCM reads at each time, variant by variant; then
    (``ev``) the afm_converters and pcm_afm rows in AFM's own setting (afm_eval.AFMSetting)."""
    lm, folder = ctx.lm, ctx.folder
    state = {"variant": None, "hooks": None, "injector": None, "afm": None}
    afm_spec = afm_eval.noise_spec(args, ev) if ev is not None and ev.on else None

    def afm_trial(point: AFMPoint) -> TrialResult:
        if state["afm"] is None:
            state["afm"] = afm_eval.AFMSetting(lm, ev, afm_spec, ranges[point.target], args.seed)
        setting = state["afm"]
        if point.condition == "afm_converters":
            setting.injector.restore()
        else:
            setting.hooks.reseed(point.sample_seed(args.seed))
            setting.injector.realize(point.seed(args.seed), 1.0)
        return TrialResult(compute_perplexity(lm.model, lm.tokenizer, ctx.eval_ids, max_length=args.max_length).metrics())

    def trial(point: AFMPoint) -> TrialResult:
        afm_row = point.condition in ("afm_converters", "pcm_afm")
        if state["afm"] is not None and (not afm_row or state["variant"] != point.target):
            state["afm"].close()
            state["afm"] = None
            state["hooks"].set_enabled(True)
        if state["variant"] != point.target:  # the injector snapshots (and restores) this variant's weights
            if state["injector"] is not None:
                state["injector"].restore()
            if state["hooks"] is not None:
                state["hooks"].remove()
            set_weights(lm.model, weights[point.target])
            state["injector"] = NoiseInjector(lm.model, pcm, selected=targets)
            if state["variant"] is None and folder.is_main:
                folder.update_meta(injection=state["injector"].describe())
            state["hooks"] = ConverterHooks(lm.model, targets, eval_io(), seed=args.seed)
            set_ranges(state["hooks"], ranges[point.target])
            state["injector"].attach(state["hooks"])  # drift compensation per tile, after the ADC (aihwkit's order)
            state["variant"] = point.target
        if afm_row:  # today's injector and converters stand aside while AFM's setting is on
            state["injector"].restore()
            state["hooks"].set_enabled(False)
            return afm_trial(point)
        hooks, injector = state["hooks"], state["injector"]
        if point.condition != "pcm":  # clean: digital; converters: clean weights through the converters
            injector.restore()
            hooks.set_enabled(point.condition == "converters")
            try:
                r = compute_perplexity(lm.model, lm.tokenizer, ctx.eval_ids, max_length=args.max_length)
            finally:
                hooks.set_enabled(True)
            return TrialResult(r.metrics())
        hooks.reseed(point.sample_seed(args.seed))
        injector.noise.t_seconds = point.t_seconds
        injector.noise.drift_compensation = True
        injector.realize(point.seed(args.seed), 1.0)
        return TrialResult(compute_perplexity(lm.model, lm.tokenizer, ctx.eval_ids, max_length=args.max_length).metrics())

    leading = leading_columns(EXPERIMENT, args.model, "pcm", "relative_channel", args.seed, lambda p: {
        "noise_type": p.condition if p.condition in ("pcm", "pcm_afm") else "none", "sigma": p.sigma,
        "seed": p.seed(args.seed),
        "model_variant": p.target, "condition": p.condition, "t_seconds": p.t_seconds,
        "t_label": time_label(p.t_seconds) if p.condition == "pcm" else p.condition})
    t0 = time.perf_counter()
    try:
        run_sweep(folder, plan, trial, leading, ctx.done_rows,
                  progress("evaluate", "point", args.quiet))
    finally:
        if state["afm"] is not None:
            state["afm"].close()
        if state["injector"] is not None:
            state["injector"].restore()
        if state["hooks"] is not None:
            state["hooks"].remove()
        set_weights(lm.model, weights["original"])
    folder.update_meta(eval_seconds=round(time.perf_counter() - t0, 1))
