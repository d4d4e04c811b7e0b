"""Devices and dtypes: 'auto' -> cuda / mps / cpu, the dtype a device computes in, --max_memory."""

from __future__ import annotations

import torch

from ..errors import NoisyNNError


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; asking for an absent accelerator is an error."""
    device = (device or "auto").lower()
    kind = device.split(":")[0]
    if kind not in DEVICES:
        raise NoisyNNError(f"unknown device '{device}'; choose from {', '.join(DEVICES)}")
    if kind == "auto":
        from ..runs.distributed import local_device

        if local_device() is not None:  # one device per process under accelerate launch
            return torch.device(local_device())
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise NoisyNNError(f"--device cuda was asked for but CUDA is not available (torch {torch.__version__}); "
                           "use --device cpu or auto")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise NoisyNNError("--device mps was asked for but MPS is not available; use --device cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """float32 unless asked; float16/bfloat16 only where the device runs them."""
    name = (dtype or "float32").lower()
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "auto": "float32"}
    name = aliases.get(name, name)
    if name not in DTYPES:
        raise NoisyNNError(f"unknown dtype '{dtype}'; choose from {', '.join(DTYPES)}")
    if name == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise NoisyNNError("this GPU does not support bfloat16; use --dtype float16 or float32")
    if name == "float16" and device.type == "cpu":
        raise NoisyNNError("float16 is not supported on CPU here; use --dtype bfloat16 or float32")
    return DTYPES[name]


def parse_max_memory(text: str | None) -> dict | None:
    """``"0=20GiB,1=20GiB,cpu=60GiB"`` -> {0: "20GiB", 1: "20GiB", "cpu": "60GiB"} (Accelerate's format)."""
    if not text:
        return None
    out: dict = {}
    for item in text.split(","):
        dev, sep, size = item.strip().partition("=")
        if not sep or not dev or not size:
            raise NoisyNNError(f"--max_memory takes DEVICE=SIZE pairs like 0=20GiB,cpu=60GiB; got '{item}'")
        out[int(dev) if dev.isdigit() else dev] = size
    return out
