"""Processes of a run launched with ``accelerate launch`` (or torchrun): rank, world size, barrier.

A plain ``python script.py`` is one process and never touches torch.distributed. Under
``accelerate launch --multi_gpu --num_processes N`` (or ``torchrun --nproc_per_node N``;
``--num_machines M`` across nodes) Accelerate's ``PartialState`` sets up the process group:
NCCL on GPUs, gloo on a CPU-only node. (In accelerate 1.15, ``accelerate launch --cpu
--num_processes N`` starts a single process unless it is given an MPI hostfile; the
``--multi_gpu`` launcher is the one that starts N processes, and works without GPUs.)
The sweep runner then gives each process its own slice of the points.
"""

from __future__ import annotations

import os
from functools import lru_cache


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@lru_cache(maxsize=1)
def _state():
    import torch
    from accelerate import PartialState

    # cpu=True makes Accelerate use gloo when the node has no GPU (its MULTI_CPU mode).
    return PartialState(cpu=not torch.cuda.is_available())


@lru_cache(maxsize=1)
def accelerator():
    """The run's ``accelerate.Accelerator`` (for training: DDP across processes, a no-op wrapper in one)."""
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def rank() -> int:
    return _state().process_index if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if world_size() > 1:
        _state().wait_for_everyone()


def local_device():
    """This process's device under a launcher (cuda:<local rank> or cpu); None in a single process."""
    if world_size() == 1:
        return None
    device = _state().device
    return "cpu" if device.type == "cpu" else device
