"""The Analog Foundation Models recipe (``--recipe afm``): distillation loss and the resumable training loop.

Distillation from the clean model through the analog training forward, resumable from the last saved step.

Loss (AFM ``src/analog_foundation_models/utils/train_utils.py`` l. 31-52 and l. 138-155, IBM/analog-foundation-
models at 4f4c505): with student logits z_s, teacher logits z_t, temperature T, over B x S positions,

    KL = T^2 / (B S) sum_{b,s} sum_v p_t(v) (log p_t(v) - log p_s(v)),  p = softmax(z / T)
    loss = beta KL + (1 - beta) CE(next token)                           (AFM: T = 1, beta = 1)

The teacher is the same model with the clean snapshot of the trained tensors swapped in for its
forward pass (``torch.func.functional_call``: no second copy of the model, one copy of the trained
tensors) and the analog forward off; ``teacher="shared"`` uses the student's current weights instead
(no copy; ``lean.py``). Optimizer as AFM's config (``config.yaml``): AdamW betas
(0.9, 0.98), eps 1e-6, weight decay 0.01, warm-up then decay, gradient-norm clipping 1.0; weights
clipped at ``clip_sigma`` (2.5) per-channel stds after every step (``training.clip_weights``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ...runs import distributed
from ...errors import NoisyNNError
from ...runs.files import read_saved, write_via_temp
from ...targets import select_targets
from .analog_train import AnalogTrainConfig, AnalogTraining
from .lean import Snapshot, check_choice, make_optimizer
from .training import (CONSTANT, NoiseSchedule, batch_order, check_launch, clip_weights, lr_factor, noise_factor,
                       restore_model, share_of_batch)

log = logging.getLogger(__name__)


@dataclass
class AFMConfig:
    """One AFM-recipe training run (recorded in run.json). ``analog=None``: the analog forward is off
    (the control); ``distill=False``: plain next-token loss."""

    steps: int = 60
    lr: float = 1e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0
    clip_sigma: float = 2.5
    batch_size: int = 4
    seq_len: int = 128
    seed: int = 0
    targets: str = "blocks"
    include_bias: bool = False
    distill: bool = True
    temperature: float = 1.0
    beta: float = 1.0
    analog: AnalogTrainConfig | None = field(default_factory=AnalogTrainConfig)
    range_lr: float = 1e-2
    grad_checkpointing: bool = False
    save_every: int = 10
    teacher: str = "copy"  # copy: the clean snapshot; shared: the student's own weights, analog off (lean.py)
    optimizer: str = "adamw"  # adamw | adamw8bit | paged_adamw8bit (lean.py)
    anneal: NoiseSchedule = CONSTANT  # the weight noise at step s: analog.weight_noise x noise_factor(s)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of the next-token distributions, mean over positions, times T^2 (module doc)."""
    t = float(temperature)
    dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32  # never in half precision
    log_s = F.log_softmax(student_logits.to(dtype) / t, dim=-1)
    log_t = F.log_softmax(teacher_logits.to(dtype) / t, dim=-1)
    positions = student_logits.numel() // student_logits.shape[-1]
    return (log_t.exp() * (log_t - log_s)).sum() / positions * (t * t)


def afm_loss(out, teacher_logits: torch.Tensor | None, cfg: AFMConfig) -> tuple[torch.Tensor, dict]:
    """beta KL + (1 - beta) CE (or CE alone without distillation); and both parts for the log."""
    parts = {}
    if teacher_logits is None:
        parts["ce"] = out.loss
        return out.loss, parts
    kl = distillation_loss(out.logits, teacher_logits, cfg.temperature)
    parts["kl"] = kl
    if cfg.beta >= 1.0:
        return kl, parts
    parts["ce"] = out.loss
    return cfg.beta * kl + (1.0 - cfg.beta) * out.loss, parts


def afm_step(model, batch: torch.Tensor, optimizer, cfg: AFMConfig, step: int, clean: dict | None,
             analog: AnalogTraining | None, accelerator, module=None) -> dict:
    """One optimizer step: teacher pass (digital: the ``clean`` snapshot swapped in, or with ``clean=None``
    the student's own current weights), student pass (analog), backward, step."""
    optimizer.zero_grad(set_to_none=True)
    teacher = None
    if cfg.distill:
        if analog is not None:
            analog.enabled = False
        with torch.no_grad():
            if clean is None:  # shared teacher: the student's weights, digital
                teacher = model(input_ids=batch, use_cache=False).logits
            else:
                teacher = torch.func.functional_call(model, clean, (), {"input_ids": batch, "use_cache": False}).logits
    if analog is not None:  # the noise factor is a function of the step alone: a resumed run sees the same
        analog.enabled, analog.step = True, step
        analog.noise_scale = noise_factor(step, cfg.steps, cfg.anneal)
    need_ce = not cfg.distill or cfg.beta < 1.0
    out = (module or model)(input_ids=batch, labels=batch if need_ce else None, use_cache=False)
    loss, parts = afm_loss(out, teacher, cfg)
    del out, teacher
    accelerator.backward(loss)
    if analog is not None and analog.ranges.grad is not None and accelerator.num_processes > 1:
        # the ranges live outside the DDP module: average their gradients by hand
        analog.ranges.grad = accelerator.reduce(analog.ranges.grad, "mean")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = float(accelerator.clip_grad_norm_(params, cfg.grad_clip)) if cfg.grad_clip > 0 else float("nan")
    optimizer.step()
    out = {"loss": float(accelerator.reduce(loss.detach(), "mean")), "grad_norm": norm}
    out.update({k: float(accelerator.reduce(v.detach(), "mean")) for k, v in parts.items()})
    return out


def step_noise_level(step: int, cfg: AFMConfig) -> float:
    """The weight-noise std (in units of the per-channel max|W|) of ``step``'s analog forward; 0 without one."""
    if cfg.analog is None:
        return 0.0
    return cfg.analog.weight_noise * noise_factor(step, cfg.steps, cfg.anneal)


# ---------------------------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, state: dict) -> None:
    """Atomically write a training checkpoint (torch.save through ``write_via_temp``: on a full disk no temporary
    file stays, and the previous checkpoint is kept)."""
    write_via_temp(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: Path | None, cfg: AFMConfig) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    state = read_saved(path, lambda p: torch.load(p, map_location="cpu", weights_only=False),
                       "remove it: a rerun of the same command trains from step 0")
    if not isinstance(state, dict):
        raise NoisyNNError(f"{path} is not a training checkpoint; remove it: a rerun of the same command trains from "
                           "step 0")
    if state.get("config") != _config_record(cfg):
        raise NoisyNNError(f"{path} is a checkpoint of another training configuration; remove it or use another --out")
    return state


# fields added later: left out of the record at their defaults, so older checkpoints still resume
_LATER_DEFAULTS = {"teacher": "copy", "optimizer": "adamw", "anneal": asdict(CONSTANT)}


def _config_record(cfg: AFMConfig) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()
            if k != "save_every" and not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])}


# ---------------------------------------------------------------------------------------------- the loop

def _release(targets, optimizer) -> None:
    """Free the trained tensors' gradients and the optimizer's moments (training is over): at the end of
    ``afm_finetune`` the trained tensors are copied out and the snapshot restored, which would otherwise
    stack on top of the training peak."""
    for t in targets:
        t.param.grad = None
    optimizer.state.clear()


def _checkpointing(model, on: bool) -> None:
    """Activation (gradient) checkpointing of the HF model; non-reentrant, so frozen inputs are fine."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name is deprecated
        if on:
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def afm_finetune(model, chunks: torch.Tensor, cfg: AFMConfig, checkpoint: Path | None = None, progress=None,
                 on_step=None) -> tuple[dict, dict, list[dict]]:
    """Train the targeted tensors with the AFM recipe; returns (trained tensors, input ranges, history).

    The model is left as given (clean weights restored bit-exactly from the snapshot, plain forwards,
    flags and mode restored). With ``checkpoint`` the state (trained tensors, ranges, optimizer,
    schedule, history) is saved every ``cfg.save_every`` steps and at the end, and a rerun continues
    from the last saved step: data order and noise depend on (seed, step) only, so the final weights
    equal an uninterrupted run's. ``on_step(step, saved)`` is called after every step.
    """
    check_choice(cfg.teacher, cfg.optimizer, cfg.distill, cfg.clip_sigma)
    targets = select_targets(model, cfg.targets, include_bias=cfg.include_bias)
    names = [t.name for t in targets]
    # the restore snapshot; with the copy teacher also the teacher's weights, else it waits on disk
    snapshot = Snapshot(targets, "memory" if cfg.teacher == "copy" else "disk",
                        Path(checkpoint).parent if checkpoint is not None else None)
    clean = snapshot.tensors
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    trained_ids = {id(t.param) for t in targets}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained_ids)
    accelerator = distributed.accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    check_launch(accelerator)
    analog = AnalogTraining(model, targets, cfg.analog, cfg.seed) if cfg.analog else None
    groups = [{"params": [t.param for t in targets], "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if analog is not None and cfg.analog.input_ranges and cfg.analog.learn_ranges:
        groups.append({"params": [analog.ranges], "lr": cfg.range_lr, "weight_decay": 0.0})
    optimizer = make_optimizer(groups, cfg.optimizer, cfg.betas, cfg.eps, targets[0].param.device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    module = accelerator.prepare_model(model) if world > 1 else None
    history, first = [], 0
    state = load_checkpoint(checkpoint, cfg)
    if state is not None:
        with torch.no_grad():
            for t in targets:
                t.param.data.copy_(state["weights"][t.name])
        if analog is not None:
            analog.load_state_dict(state["analog"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        history, first = list(state["history"]), state["step"] + 1
        log.info("resuming training from step %d of %s", first, checkpoint)
    if cfg.grad_checkpointing:
        _checkpointing(model, True)
    model.train()
    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    try:
        steps = batch_order(chunks.shape[0], cfg)
        todo = range(first, len(steps))
        iterator = progress(todo) if progress else todo
        for step in iterator:
            lr = optimizer.param_groups[0]["lr"]
            batch = share_of_batch(chunks[steps[step]], rank, world).to(next(model.parameters()).device)
            logged = afm_step(model, batch, optimizer, cfg, step, clean, analog, accelerator, module)
            schedule.step()
            if cfg.clip_sigma > 0:
                clip_weights(targets, cfg.clip_sigma)
            history.append({"step": step, **logged, "lr": lr, "tokens": batch.numel() * world,
                            "noise_level": step_noise_level(step, cfg),
                            "range_mean": float(analog.ranges.detach().mean()) if analog is not None else float("nan"),
                            "seconds": round(time.perf_counter() - t0, 3)})
            if hasattr(iterator, "set_postfix"):
                iterator.set_postfix(loss=f"{logged['loss']:.4f}")
            if not math.isfinite(logged["loss"]):
                raise NoisyNNError(f"training diverged at step {step} (loss {logged['loss']}); lower --lr")
            saved = checkpoint is not None and ((step + 1) % cfg.save_every == 0 or step + 1 == len(steps))
            if saved:
                if accelerator.is_main_process:
                    save_checkpoint(checkpoint, {
                        "step": step, "config": _config_record(cfg), "history": history,
                        "weights": {t.name: t.param.detach().cpu().clone() for t in targets},
                        "analog": analog.state_dict() if analog is not None else None,
                        "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict()})
                distributed.barrier()
            if on_step is not None:
                on_step(step, saved)
        _release(targets, optimizer)  # gradients and moments go before the trained tensors are copied out
        trained = {t.name: t.param.detach().clone() for t in targets}
        ranges = analog.range_dict() if analog is not None and cfg.analog.input_ranges else {}
    finally:
        if analog is not None:
            analog.remove()
        if cfg.grad_checkpointing:
            _checkpointing(model, False)
        _release(targets, optimizer)  # (again, after an error) before a disk snapshot is read back
        try:
            restore_model(model, targets, snapshot.load(), flags, was_training, optimizer,
                          accelerator if module is not None else None)
        finally:
            snapshot.close()
    return {n: trained[n] for n in names}, ranges, history
