"""Today's recipe (``--recipe weight_noise``): fine-tuning with a fresh weight-noise draw in every step.

The gradient is taken at the noisy weights and applied to the clean ones (hardware-aware
training); the shared pieces (schedule, batch order, per-channel clipping, DDP checks) are
used by the AFM recipe too (``afm.py``).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch

from ...runs import distributed
from ...errors import NoisyNNError
from ...inject import noisy_weights
from ...targets import select_targets
from ...seeding import derive_seed, make_generator


ANNEAL_KINDS = ("constant", "linear", "cosine", "step")


@dataclass(frozen=True)
class NoiseSchedule:
    """How the training noise follows the steps (``--anneal``): a multiplier of the recipe's noise level.

    ``kind`` constant: the factor is 1 at every step (today's training, bit for bit); linear, cosine, step:
    it goes from ``start`` to ``end`` over the first ``ramp`` x steps and stays at ``end`` after (see
    ``noise_factor``). start > end anneals the noise down; start < end is a curriculum up to it.
    """

    kind: str = "constant"
    start: float = 1.0  # the factor at step 0 (a multiple of --noise_level / the AFM weight noise)
    end: float = 1.0  # the factor at the end of the ramp and after it
    ramp: float = 1.0  # fraction of the steps the change takes, in (0, 1]
    stairs: int = 4  # levels of the step schedule (start and end included), >= 2

    def __post_init__(self):
        if self.kind not in ANNEAL_KINDS:
            raise NoisyNNError(f"unknown noise schedule {self.kind!r}; known: {', '.join(ANNEAL_KINDS)}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise NoisyNNError(f"the noise schedule's {name} must be a finite number >= 0, not {v!r}")
        if not (isinstance(self.ramp, (int, float)) and 0 < self.ramp <= 1):
            raise NoisyNNError(f"the noise schedule's ramp must lie in (0, 1], not {self.ramp!r}")
        if not (isinstance(self.stairs, int) and self.stairs >= 2):
            raise NoisyNNError(f"the noise schedule's stairs must be an integer >= 2, not {self.stairs!r}")

    @property
    def constant(self) -> bool:
        return self.kind == "constant"


CONSTANT = NoiseSchedule()
# what --anneal_start/_end/_ramp/_stairs mean when not given with a non-constant --anneal: from no noise up to the level
ANNEAL_DEFAULTS = {"anneal_start": 0.0, "anneal_end": 1.0, "anneal_ramp": 1.0, "anneal_stairs": 4}


def make_schedule(kind: str | None, start=None, end=None, ramp=None, stairs=None) -> NoiseSchedule:
    """The schedule of the (resolved) ``--anneal*`` values; ``kind`` None or constant: ``CONSTANT``."""
    if kind in (None, "constant"):
        return CONSTANT
    d = ANNEAL_DEFAULTS
    return NoiseSchedule(kind, float(d["anneal_start"] if start is None else start),
                         float(d["anneal_end"] if end is None else end), float(d["anneal_ramp"] if ramp is None else ramp),
                         int(d["anneal_stairs"] if stairs is None else stairs))


def noise_factor(step: int, total_steps: int, schedule: NoiseSchedule = CONSTANT) -> float:
    """The multiplier of the training noise level at optimizer ``step`` (0-based) of ``total_steps``.

    With n = max(1, round(ramp x total_steps)) steps of ramp and p = clamp(step / max(1, n - 1), 0, 1)
    (0 at step 0, 1 from step n - 1 on)::

        factor = start + (end - start) g(p)
        constant  factor = 1 exactly (start, end ignored)
        linear    g = p
        cosine    g = (1 - cos(pi p)) / 2                          (flat at both ends)
        step      g = min(floor(p K), K - 1) / (K - 1),  K = stairs (K equal-width levels, start to end)

    Every g is non-decreasing in p with g(0) = 0 and g(1) = 1, so the factor stays between start and end
    and is monotone in the step. It depends on the step alone: a resumed run sees the same factors.
    """
    if schedule.kind == "constant":
        return 1.0
    n = max(1, round(schedule.ramp * total_steps))
    p = min(max(step / max(1, n - 1), 0.0), 1.0)
    if schedule.kind == "linear":
        g = p
    elif schedule.kind == "cosine":
        g = (1.0 - math.cos(math.pi * p)) / 2.0
    else:  # step
        k = schedule.stairs
        g = min(math.floor(p * k), k - 1) / (k - 1)
    return schedule.start + (schedule.end - schedule.start) * g


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
    anneal: NoiseSchedule = CONSTANT  # the training noise per step: noise_level x noise_factor(step)



def batch_order(n_samples: int, cfg: TrainConfig) -> list[torch.Tensor]:
    """Index batches for ``cfg.steps`` steps: each epoch a fresh seeded permutation of the samples."""
    batches, epoch = [], 0
    while len(batches) < cfg.steps:
        perm = torch.randperm(n_samples, generator=make_generator(derive_seed(cfg.seed, "train-data", epoch)))
        batches += [perm[i: i + cfg.batch_size] for i in range(0, n_samples, cfg.batch_size)]
        epoch += 1
    return batches[: cfg.steps]



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


def step_noise_level(step: int, cfg: TrainConfig) -> float:
    """The training noise level at ``step``: ``noise_level`` x ``noise_factor`` (``noise_level`` itself, constant)."""
    return cfg.noise_level * noise_factor(step, cfg.steps, cfg.anneal)


def noisy_step(model, batch: torch.Tensor, optimizer, cfg: TrainConfig, step: int, accelerator=None,
               module=None) -> tuple[float, float]:
    """One optimizer step whose gradient is taken at freshly noised weights; returns (loss, grad norm).

    The noise (``noisy_weights``: the library's injector, seeded from (seed, step)) is added
    to the targeted weights for the forward *and* backward pass and removed, bit-exactly,
    before the optimizer updates the clean weights; it never persists. Its level is
    ``step_noise_level(step, cfg)`` (``cfg.anneal``); at level 0 this is an ordinary step (the control).

    Across processes (``accelerate launch``), ``module`` is the DDP-wrapped ``model``: every
    process draws the *same* noise (same seed, drawn on the CPU), runs its equal share of the
    batch, and DDP averages the gradients, so the step equals the single-process one on the
    whole batch up to float summation order. The returned loss is the mean over processes.
    """
    accelerator = accelerator or distributed.accelerator()
    optimizer.zero_grad(set_to_none=True)
    level = step_noise_level(step, cfg)
    noise = (noisy_weights(model, level, cfg.noise_type, scale=cfg.scale, targets=cfg.targets,
                           include_bias=cfg.include_bias, seed=derive_seed(cfg.seed, "train-noise", step),
                           noise_params=cfg.noise_params)
             if level > 0 else contextlib.nullcontext())
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
                            "seconds": round(time.perf_counter() - t0, 3), "noise_level": step_noise_level(step, cfg)})
            if hasattr(iterator, "set_postfix"):
                iterator.set_postfix(loss=f"{loss:.3f}")
            if not math.isfinite(loss):
                raise NoisyNNError(f"training diverged at step {step} (loss {loss}); lower --lr or --noise_level")
        trained = {t.name: t.param.detach().clone() for t in targets}
    finally:
        restore_model(model, targets, original, flags, was_training, optimizer, accelerator if module is not None else None)
    return {n: trained[n] for n in names}, history


def restore_model(model, targets, clean: dict, flags: dict, was_training: bool, optimizer, accelerator=None) -> None:
    """Leave ``model`` as it was before training: the targeted tensors back to ``clean`` (bit-exact), every
    parameter's requires_grad from ``flags``, the train/eval mode, no gradients; with ``accelerator`` (a
    DDP run) drop Accelerate's reference to the DDP wrapper (and its hooks) too."""
    with torch.no_grad():
        for t in targets:
            t.param.data.copy_(clean[t.name])
    for n, p in model.named_parameters():
        p.requires_grad_(flags.get(n, False))
    model.train(was_training)
    optimizer.zero_grad(set_to_none=True)
    for t in targets:
        t.param.grad = None
    if accelerator is not None:
        accelerator.free_memory()

