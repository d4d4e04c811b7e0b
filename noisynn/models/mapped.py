"""Weights loaded from a memory-mapped file, copied into process memory without holding them twice."""

from __future__ import annotations

import ctypes
import mmap
from pathlib import Path

import torch


@torch.no_grad()
def materialize(model: torch.nn.Module) -> None:
    """Copy CPU parameters out of the memory-mapped weights file into process memory, one at a time.

    safetensors loads are mapped copy-on-write: the first write to each 4 KiB page (the first
    noise level) then faults and copies, which costs ~1.3 s for SmolLM2-135M here against
    ~0.15 s for this one copy. Each parameter's file pages are released once it is copied
    (``madvise(MADV_DONTNEED)``; the mapping stays until the load ends), so the copy never holds
    the weights twice: the load peaks at one copy plus one tensor, not two copies. Tied
    parameters stay tied (each Parameter is copied once).
    """
    mapped = _file_mappings()
    for p in model.parameters():
        if p.device.type == "cpu":
            old = p.data
            p.data = old.clone()
            _release_file_pages(old, mapped)
            del old


def _file_mappings() -> list[tuple[int, int]]:
    """(start, end) addresses of this process's file-backed mappings (Linux; empty elsewhere)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append((start, end))
    return out


def _release_file_pages(t: torch.Tensor, mapped: list[tuple[int, int]]) -> None:
    """Drop from this process the whole pages inside ``t``'s bytes when they map a file (re-read from the file if
    touched again; anonymous memory is never touched: there this would zero it)."""
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    if not any(a <= start and end <= b for a, b in mapped):
        return
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page
    if hi > lo:
        ctypes.CDLL(None).madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 4)  # 4: MADV_DONTNEED
