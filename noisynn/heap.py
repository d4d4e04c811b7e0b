"""The C heap of a threaded server (the explorer): freed tensor memory goes back to the system.

glibc's malloc serves a block by ``mmap`` (returned on ``free``) only above a threshold that grows after each
such free, up to 32 MiB; below it a block comes from the calling thread's arena (up to 8 per core), and an arena
keeps what is freed. A web server runs each event (and each step of a generator) on any of its worker threads,
so the per-tensor buffers of a noise draw (3.5 MiB each for SmolLM2's MLP) end in many arenas, each keeping up to
a model's worth: the explorer's RSS grew by ~0.65x the weights' bytes per new PCM setting (SmolLM2-135M driven
from 16 threads on the 2-core machine, benchmarks/bench_explorer_heap.py: 1.28 -> 3.57 GB over 12 settings;
bounded: 0.95 -> 1.01 GB, flat once every thread has run).

``bound_heap`` allows 2 arenas for the whole process (mallopt ``M_ARENA_MAX``: the threads share them);
``release_heap`` (``malloc_trim(0)``) returns their free pages after each computation. Measured on a 210 MB
stand-in model, 24 draws from 16 threads (tests/test_heap.py's drive run twice as long; times from a 40-draw run
scaled to 24): 4.2 GB unbounded, 0.43 GB bounded, in about 1.3x the time; a fixed 1 MiB mmap threshold (``M_MMAP_THRESHOLD``) bounds it as well but took 1.8x the time. Both
calls are no-ops where the C library has no such calls (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def bound_heap(arenas: int = ARENAS) -> bool:
    """Share ``arenas`` arenas among all threads (process-wide; call it before the worker threads start); True if
    the C library did."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas))


def release_heap() -> None:
    """Give the arenas' free pages back to the system (a few ms)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
