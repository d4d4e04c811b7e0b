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
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ... import distributed
from ...context import finish, start
from ...corpus import SEPARATOR, embedded_split, load_text
from ...errors import NoisyNNError
from ...evaluation import compute_perplexity, tokenize
from ...inject import NoiseInjector, noisy_weights, select_targets, untie_head
from ...options import (ArgumentParser, add_model_args, add_noise_args, add_run_args, noise_params, nonneg_float,
                       positive_float, positive_int, script_main)
from ...results import read_run, write_json_atomic
from ...seeding import derive_seed, make_generator
from ...runner import Point, TrialResult, grid, leading_columns, levels, progress, run_sweep
from . import report

log = logging.getLogger(__name__)

EXPERIMENT = "noise_aware_training"
METRICS = ("perplexity", "nll", "bits_per_byte", "eval_tokens", "finite")
VARIANTS = ("original", "finetuned", "control")
TRAINING_CSV = "training.csv"
WEIGHTS = "{variant}.safetensors"  # only the trained tensors (the targeted projections), float32


@dataclass
class TrainConfig:
    """What one fine-tuning run does (recorded in run.json and in the weights' metadata)."""

    noise_level: float = 0.03  # sigma of the training noise, in ``scale`` units; 0 = the no-noise control
    noise_type: str = "gaussian"
    scale: str = "relative_channel"
    targets: str = "blocks"
    include_bias: bool = False
    noise_params: dict = field(default_factory=dict)
    steps: int = 48
    lr: float = 1e-4
    warmup: float = 0.1  # fraction of steps with a linear warm-up; then linear decay to 0
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.98)  # as AFM
    grad_clip: float = 1.0
    clip_sigma: float = 0.0  # AFM weight clipping: |W| <= clip_sigma x std of its output channel; 0 = off
    batch_size: int = 4
    seq_len: int = 128
    seed: int = 0


# ---------------------------------------------------------------------------------------------- data

def check_disjoint(train_text: str, eval_text: str, min_chars: int = 40) -> None:
    """Refuse training text that contains any paragraph (>= ``min_chars``) of the evaluation text."""
    for para in eval_text.split(SEPARATOR):
        para = para.strip()
        if len(para) >= min_chars and para[:200] in train_text:
            raise NoisyNNError(f"the training text contains evaluation text ({para[:60]!r}...); "
                               "train and evaluate on disjoint texts")


def training_chunks(tokenizer, text: str, n: int, seq_len: int) -> torch.Tensor:
    """The first ``n`` consecutive, non-overlapping windows of ``seq_len`` tokens of ``text``: (n', seq_len)."""
    need = n * seq_len
    chars = need * 8 + 1000  # ~4.5 characters per token here; generous so one pass suffices
    ids = tokenize(tokenizer, text[:chars])
    usable = ids.numel() // seq_len
    if usable == 0:
        raise NoisyNNError(f"the training text has {ids.numel()} tokens, fewer than --seq_len {seq_len}")
    if usable < n:
        log.warning("training text gives %d windows of %d tokens, fewer than --max_samples %d", usable, seq_len, n)
    n = min(n, usable)
    return ids[: n * seq_len].view(n, seq_len).clone()


def batch_order(n_samples: int, cfg: TrainConfig) -> list[torch.Tensor]:
    """Index batches for ``cfg.steps`` steps: each epoch a fresh seeded permutation of the samples."""
    batches, epoch = [], 0
    while len(batches) < cfg.steps:
        perm = torch.randperm(n_samples, generator=make_generator(derive_seed(cfg.seed, "train-data", epoch)))
        batches += [perm[i: i + cfg.batch_size] for i in range(0, n_samples, cfg.batch_size)]
        epoch += 1
    return batches[: cfg.steps]


# ---------------------------------------------------------------------------------------------- training

def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup x steps`` steps, then linear decay towards 0 at the last step."""
    warm = max(1, round(cfg.warmup * cfg.steps))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))


@torch.no_grad()
def clip_weights(targets, clip_sigma: float) -> None:
    """AFM/aihwkit per-channel Gaussian clipping: |W_ij| <= clip_sigma x std(W_i.) for output channel i."""
    for t in targets:
        w = t.param.data
        if w.dim() < 2:
            continue
        dims = [d for d in range(w.dim()) if d != t.out_axis]
        bound = w.std(dim=dims, keepdim=True) * clip_sigma
        torch.maximum(torch.minimum(w, bound), -bound, out=w)


def noisy_step(model, batch: torch.Tensor, optimizer, cfg: TrainConfig, step: int, accelerator=None,
               module=None) -> tuple[float, float]:
    """One optimizer step whose gradient is taken at freshly noised weights; returns (loss, grad norm).

    The noise (``noisy_weights``: the library's injector, seeded from (seed, step)) is added
    to the targeted weights for the forward *and* backward pass and removed, bit-exactly,
    before the optimizer updates the clean weights; it never persists. With
    ``cfg.noise_level == 0`` this is an ordinary step (the control).

    Across processes (``accelerate launch``), ``module`` is the DDP-wrapped ``model``: every
    process draws the *same* noise (same seed, drawn on the CPU), runs its equal share of the
    batch, and DDP averages the gradients, so the step equals the single-process one on the
    whole batch up to float summation order. The returned loss is the mean over processes.
    """
    accelerator = accelerator or distributed.accelerator()
    optimizer.zero_grad(set_to_none=True)
    noise = (noisy_weights(model, cfg.noise_level, cfg.noise_type, scale=cfg.scale, targets=cfg.targets,
                           include_bias=cfg.include_bias, seed=derive_seed(cfg.seed, "train-noise", step),
                           noise_params=cfg.noise_params)
             if cfg.noise_level > 0 else contextlib.nullcontext())
    with noise:
        loss = (module or model)(input_ids=batch, labels=batch, use_cache=False).loss
        accelerator.backward(loss)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = float(accelerator.clip_grad_norm_(params, cfg.grad_clip)) if cfg.grad_clip > 0 else float("nan")
    optimizer.step()
    return float(accelerator.reduce(loss.detach(), "mean")), norm


def check_launch(accelerator) -> None:
    """DDP or one process only: FSDP/DeepSpeed shard the weights that the noise must address whole."""
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM", "XLA"):
        raise NoisyNNError(f"noise-aware training runs under DDP only; this launch uses {kind}, which shards the "
                           "weights the noise must address whole (use an accelerate config without FSDP/DeepSpeed)")


def check_batch_split(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise NoisyNNError(f"--batch_size {batch_size} does not split evenly across {world} processes; "
                           "make it a multiple of the number of processes")


def share_of_batch(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's equal, contiguous share of a batch of windows (all of it in one process)."""
    check_batch_split(batch.shape[0], world)
    return batch.chunk(world)[rank] if world > 1 else batch


def finetune(model, chunks: torch.Tensor, cfg: TrainConfig, progress=None) -> tuple[dict, list[dict]]:
    """Fine-tune the targeted weights of ``model`` on ``chunks``; returns (trained tensors, history).

    Only the targeted tensors are trained (float32, AdamW); everything else is frozen. The
    model is left exactly as it was given (weights restored bit-exactly, requires_grad and
    train/eval mode as before): the trained tensors are returned, not kept in the model.
    """
    targets = select_targets(model, cfg.targets, include_bias=cfg.include_bias)
    names = [t.name for t in targets]
    original = {t.name: t.param.detach().clone() for t in targets}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    trained_ids = {id(t.param) for t in targets}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained_ids)
    optimizer = torch.optim.AdamW([t.param for t in targets], lr=cfg.lr, betas=tuple(cfg.betas),
                                  weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    accelerator = distributed.accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    check_launch(accelerator)
    # Across processes: DDP around the model (only the trained tensors need gradients). The
    # optimizer stays a plain one on every process: the gradients it sees are already averaged.
    module = accelerator.prepare_model(model) if world > 1 else None
    history = []
    model.train()
    t0 = time.perf_counter()
    try:
        steps = batch_order(chunks.shape[0], cfg)
        iterator = progress(range(len(steps))) if progress else range(len(steps))
        for step in iterator:
            lr = optimizer.param_groups[0]["lr"]
            batch = share_of_batch(chunks[steps[step]], rank, world).to(next(model.parameters()).device)
            loss, norm = noisy_step(model, batch, optimizer, cfg, step, accelerator, module)
            schedule.step()
            if cfg.clip_sigma > 0:
                clip_weights(targets, cfg.clip_sigma)
            history.append({"step": step, "loss": loss, "lr": lr, "grad_norm": norm, "tokens": batch.numel() * world,
                            "seconds": round(time.perf_counter() - t0, 3)})
            if hasattr(iterator, "set_postfix"):
                iterator.set_postfix(loss=f"{loss:.3f}")
            if not math.isfinite(loss):
                raise NoisyNNError(f"training diverged at step {step} (loss {loss}); lower --lr or --noise_level")
        trained = {t.name: t.param.detach().clone() for t in targets}
    finally:
        with torch.no_grad():
            for t in targets:
                t.param.data.copy_(original[t.name])
        for n, p in model.named_parameters():
            p.requires_grad_(flags.get(n, False))
        model.train(was_training)
        optimizer.zero_grad(set_to_none=True)
        for t in targets:
            t.param.grad = None
        if module is not None:
            accelerator.free_memory()  # drops Accelerate's reference to the DDP wrapper (and its hooks)
    return {n: trained[n] for n in names}, history


# ---------------------------------------------------------------------------------------------- weights

def save_weights(path: Path, tensors: dict, metadata: dict) -> None:
    """Atomically write the trained tensors as safetensors (metadata values become strings)."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)


def read_weights(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    tensors, meta = {}, {}
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        for k in fh.keys():
            tensors[k] = fh.get_tensor(k)
    return tensors, meta


@torch.no_grad()
def set_weights(model, tensors: dict) -> None:
    """Copy named tensors into ``model`` (unties a tied head first if the head is among them)."""
    params = dict(model.named_parameters())
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and any(params.get(k) is head.weight for k in tensors):
        untie_head(model)
        params = dict(model.named_parameters())
    missing = [k for k in tensors if k not in params]
    if missing:
        raise NoisyNNError(f"the saved weights name tensors the model lacks: {missing[:3]}")
    for k, v in tensors.items():
        if params[k].shape != v.shape:
            raise NoisyNNError(f"saved tensor {k} has shape {tuple(v.shape)}, the model's is {tuple(params[k].shape)}")
        params[k].data.copy_(v.to(params[k].dtype))


def load_finetuned(run_dir: str | Path, variant: str = "finetuned", device: str = "cpu", dtype: str | None = None):
    """The fine-tuned model of a run folder: its base model (from run.json) with the saved tensors copied in.

    The run folder stores only the trained tensors (``finetuned.safetensors``, and
    ``control.safetensors`` for the no-noise control); the base is loaded with ``load_model``
    and its fingerprint checked against the one recorded in run.json.
    """
    from ...models import load_model

    run_dir = Path(run_dir)
    meta = read_run(run_dir).meta
    path = run_dir / WEIGHTS.format(variant=variant)
    if not path.is_file():
        raise NoisyNNError(f"{path} does not exist (weights are saved only with --save_weights, and never "
                           "committed; rerun the experiment with --save_weights)")
    lm = load_model(meta["config"]["model"], device, dtype or meta["config"].get("dtype"))
    want = meta.get("model", {}).get("fingerprint")
    if want and lm.info.get("fingerprint") and want != lm.info["fingerprint"]:
        raise NoisyNNError(f"the base model's fingerprint differs from the one in {run_dir / 'run.json'}")
    tensors, _ = read_weights(path)
    set_weights(lm.model, tensors)
    lm.info.update(finetuned_from=str(path))
    return lm


# ---------------------------------------------------------------------------------------------- command line

def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p, scale="relative_channel")
    g = p.add_argument_group("training (noise uses --noise_type --scale --targets above)")
    g.add_argument("--noise_level", type=nonneg_float, default=0.03,
                   help="sigma of the training noise, in --scale units (default: %(default)s, AFM's 3%% of per-channel max|W|)")
    g.add_argument("--epochs", type=positive_int, default=1, help="passes over the --max_samples windows (default: %(default)s)")
    g.add_argument("--max_samples", type=positive_int, default=192,
                   help="training windows of --seq_len tokens from the training split (default: %(default)s)")
    g.add_argument("--steps", type=positive_int, default=None,
                   help="optimizer steps (default: epochs x ceil(max_samples / batch_size)); overrides --epochs")
    g.add_argument("--lr", type=positive_float, default=1e-4, help="AdamW peak learning rate (default: %(default)s)")
    g.add_argument("--seq_len", type=positive_int, default=128, help="tokens per training window (default: %(default)s)")
    g.add_argument("--batch_size", type=positive_int, default=4, help="windows per step (default: %(default)s)")
    g.add_argument("--warmup", type=nonneg_float, default=0.1, help="warm-up fraction of the steps (default: %(default)s)")
    g.add_argument("--weight_decay", type=nonneg_float, default=0.0, help="AdamW weight decay (default: %(default)s)")
    g.add_argument("--clip_sigma", type=nonneg_float, default=0.0,
                   help="AFM weight clipping at this many per-channel stds after each step; 0 = off (default)")
    g.add_argument("--no_control", action="store_true", help="skip the control fine-tuned without noise (saves ~40%% of the time)")
    # default None (not False): run folders recorded before this flag existed resume unchanged
    g.add_argument("--save_weights", action="store_true", default=None,
                   help="save the trained tensors (finetuned/control.safetensors, ~4 bytes per trained weight: "
                        "425 MB each for the default targets of SmolLM2-135M) so load_finetuned can rebuild the "
                        "models and a resumed run skips training; without it a resumed run trains again (same "
                        "seed, same weights)")
    g.add_argument("--train_file", default=None, help="train on this UTF-8 text file instead of the embedded training split")
    g = p.add_argument_group("evaluation sweep (same noise seeds for every model)")
    g.add_argument("--max_noise", type=nonneg_float, default=0.05, help="largest sigma (default: %(default)s)")
    g.add_argument("--n_levels", type=positive_int, default=6, help="levels incl. 0 (default: %(default)s)")
    g.add_argument("--spacing", choices=("log", "linear"), default="linear", help="level spacing (default: %(default)s)")
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
    return args


def train_config(args, n_samples: int) -> TrainConfig:
    steps = args.steps or args.epochs * math.ceil(n_samples / args.batch_size)
    return TrainConfig(noise_level=args.noise_level, noise_type=args.noise_type, scale=args.scale,
                       targets=args.targets, include_bias=args.include_bias, noise_params=noise_params(args),
                       steps=steps, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
                       clip_sigma=args.clip_sigma, batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed)


def load_training_text(args, eval_text) -> tuple[str, dict]:
    """The training text and what run.json records about it; refuses overlap with the evaluation text."""
    if args.train_file:
        text = load_text(args.train_file)
    else:
        text = load_text(split="train")
        if eval_text.info.get("source") == "embedded":
            # the embedded splits are disjoint by construction (a prefix / the rest of one fixed order); check it
            overlap = {t for t, _ in embedded_split("eval")} & {t for t, _ in embedded_split("train")}
            if overlap:
                raise NoisyNNError(f"embedded train and eval splits share articles: {sorted(overlap)[:3]}")
    check_disjoint(text.text, eval_text.text)
    return text.text, text.info


def _write_training_csv(folder: Path, variant: str, history: list[dict]) -> None:
    """training.csv: one row per (variant, step); rewritten whole, other variants' rows kept."""
    import csv
    import io

    from ...results import read_rows

    path = folder / TRAINING_CSV
    rows = [r for r in read_rows(path) if r.get("variant") != variant] + [{"variant": variant, **h} for h in history]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["variant", "step", "loss", "lr", "grad_norm", "tokens", "seconds"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


def run(argv=None) -> int:
    args = parse(argv)
    t_start = time.perf_counter()
    sigmas = levels(args.max_noise, args.n_levels, args.spacing)
    variants = [v for v in VARIANTS if not (v == "control" and args.no_control)]
    # The training text is read and checked against the evaluation text before the run folder is touched.
    train_text, train_info = load_training_text(args, load_text(args.text_file, args.dataset))
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
        vcfg = TrainConfig(**{**asdict(cfg), "noise_level": cfg.noise_level if variant == "finetuned" else 0.0})
        path = folder.path / WEIGHTS.format(variant=variant)
        distributed.barrier()  # every process sees the same saved files (the main one saves)
        if path.is_file():  # resumed run: this variant was trained and saved before
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
            _write_training_csv(folder.path, variant, history)
        if folder.is_main and args.save_weights:
            save_weights(path, tensors, {"variant": variant, "base_model": args.model,
                                         "base_fingerprint": lm.info.get("fingerprint"), **training[variant],
                                         "noise_level": vcfg.noise_level, "scale": vcfg.scale,
                                         "targets": vcfg.targets})
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
    finish(ctx, figures, report=numbers, eval_seconds=eval_seconds,
           wall_seconds=round(time.perf_counter() - t_start, 1))
    write_json_atomic(folder.path / "report.json", numbers)
    print(report.format_noise_aware_report(numbers))
    print(f"\nrun folder: {folder.path} (results.csv, summary.csv, training.csv, report.json, "
          f"{', '.join(WEIGHTS.format(variant=v) for v in variants[1:])}, {figures[0].name})")
    return 0


def main(argv=None) -> int:
    return script_main(run, argv)
