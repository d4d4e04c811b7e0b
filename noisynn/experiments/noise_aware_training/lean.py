"""Lean options of the AFM recipe for bigger models: the teacher's disk snapshot, 8-bit optimizers.

Where the teacher's weights come from, the optimizer's state, and where the restore snapshot waits while the
model trains.

Memory of one AFM step, float32, for N trained parameters (bytes; activations come on top):

    weights 4 N  +  gradients 4 N  +  AdamW moments 8 N  +  teacher copy 4 N        (``copy``, ``adamw``)
    8-bit moments (bitsandbytes, blockwise: one float32 absmax per 256 values):  2 N + 2 N/256 * 4 = ~2.03 N
    ``--teacher shared``: no teacher copy (the snapshot that restores the model waits on disk instead)

``teacher="copy"`` (the default, AFM's): the teacher is the clean model, i.e. the trained tensors as they
were before step 0, swapped in for the teacher's forward (``torch.func.functional_call``); that snapshot
also restores the model after training. ``teacher="shared"``: the teacher's logits come from the student's
own current weights, with the analog forward (DAC, weight noise, ADC) off, under ``no_grad``: no second copy
of the trained tensors is held. It distils from the *current* student, not the frozen clean model; at AFM's
lr (5e-7) AdamW moves a weight by at most about lr per step, so over a few hundred steps the two teachers
differ negligibly (measured in ``benchmarks/bench_afm_memory.py``, docs/noise_aware_training.md).

Optimizers (``--optimizer``): ``adamw`` (torch), ``adamw8bit`` (bitsandbytes ``AdamW8bit``: 8-bit blockwise
moments, works on the CPU too; tensors under 4,096 values keep 32-bit moments), ``paged_adamw8bit``
(bitsandbytes ``PagedAdamW8bit``: the same, paged between GPU and host memory; CUDA only).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...clean_weights import CleanWeights
from ...errors import NoisyNNError

TEACHERS = ("copy", "shared")
OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw8bit")
BITSANDBYTES = {"adamw8bit": "AdamW8bit", "paged_adamw8bit": "PagedAdamW8bit"}


def check_choice(teacher: str, optimizer: str, distill: bool, clip_sigma: float = 0.0) -> None:
    """Refuse unknown names, a shared teacher without distillation, and a shared teacher with weight clipping
    (one-line NoisyNNError): clipping changes the student at once, whatever the lr, so the shared teacher would
    be the clipped model (on the embedded model: KL ~8 nats per token from the clean one after 2 steps at
    ``clip_sigma`` 2.5, ``benchmarks/results/afm_memory.json``), not a negligible drift."""
    if teacher not in TEACHERS:
        raise NoisyNNError(f"unknown teacher '{teacher}'; known: {', '.join(TEACHERS)}")
    if optimizer not in OPTIMIZERS:
        raise NoisyNNError(f"unknown optimizer '{optimizer}'; known: {', '.join(OPTIMIZERS)}")
    if teacher == "shared" and not distill:
        raise NoisyNNError("--teacher shared needs distillation: --no_distill trains without a teacher")
    if teacher == "shared" and clip_sigma > 0:
        raise NoisyNNError("--teacher shared with --clip_sigma > 0 would distil from the clipped student, far from the "
                           "clean model; use --teacher copy, or --clip_sigma 0")


def check_optimizer(name: str, device: torch.device | str | None = None) -> None:
    """The optimizer can be built here: bitsandbytes installed for the 8-bit ones, CUDA for the paged one."""
    if name == "adamw":
        return
    _bitsandbytes(name)
    if name == "paged_adamw8bit" and device is not None and torch.device(device).type != "cuda":
        raise NoisyNNError("--optimizer paged_adamw8bit pages its state between GPU and host memory and needs a CUDA "
                           f"device (this model is on {torch.device(device).type}); use --optimizer adamw8bit")


def _bitsandbytes(name: str):
    try:
        import bitsandbytes
    except ImportError:
        raise NoisyNNError(f"--optimizer {name} needs bitsandbytes (pip install -r requirements-optional.txt)") from None
    return bitsandbytes


def make_optimizer(groups: list[dict], name: str, betas: tuple, eps: float, device) -> torch.optim.Optimizer:
    """AdamW over ``groups`` (each with its own lr and weight_decay) with fp32 or 8-bit moments."""
    check_optimizer(name, device)
    if name == "adamw":
        return torch.optim.AdamW(groups, betas=tuple(betas), eps=eps)
    bnb = _bitsandbytes(name)
    return getattr(bnb.optim, BITSANDBYTES[name])(groups, betas=tuple(betas), eps=eps)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's per-parameter state (moments, quantization maps, absmax; not the weights)."""
    total = 0
    for state in optimizer.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total


class Snapshot:
    """The targeted tensors before training, to restore the model afterwards (bit-exact): a
    ``noisynn.clean_weights.CleanWeights`` store.

    ``where="memory"``: clones on the model's device (``tensors`` is also the copy teacher's weights).
    ``where="disk"``: an unlinked spill file (in ``folder``, else ``$NOISYNN_SPILL_DIR`` or the temporary folder),
    read back only by ``load``: while the model trains, no copy is held in memory.
    """

    def __init__(self, targets, where: str = "memory", folder: Path | None = None):
        self.where, self.names = where, [t.name for t in targets]
        self.store = CleanWeights([t.param for t in targets], where, str(folder) if folder is not None else None)
        self.tensors: dict[str, torch.Tensor] | None = dict(zip(self.names, self.store)) if where == "memory" else None

    def load(self) -> dict[str, torch.Tensor]:
        """The snapshot's tensors (read back from the spill file for ``where="disk"``)."""
        return self.tensors if self.tensors is not None else dict(zip(self.names, self.store))

    def close(self) -> None:
        """Drop the copies or the spill file."""
        self.store.close()
