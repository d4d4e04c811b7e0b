"""Where the clean weights wait while the model carries noise: not as a second copy next to the model.

An injector computes every noisy level from the clean weights and restores them bit-exactly, so it must keep
them somewhere. A clone doubles the targeted weights in memory (3x the weights with the unit-noise buffer the
injector used to keep). Here they are kept, by ``where``:

  ``disk``    written once to an unlinked temporary file and read back one tensor at a time (``os.preadv``
              straight into the weight when it restores): process memory holds one tensor at most. The file
              lives in the page cache while memory is free, so reads cost about a memory copy. The default for
              CPU weights. Its folder: ``$NOISYNN_SPILL_DIR``, else the system's temporary folder; on a tmpfs
              (RAM) that saves nothing, and a warning says so.
  ``cpu``     clones in host memory: the default for weights on a GPU, whose memory then holds the model only.
  ``memory``  clones on the weights' own device (the fastest; the former behaviour).

``$NOISYNN_CLEAN_WEIGHTS`` (auto | disk | cpu | memory) overrides the default; results never depend on it.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import weakref
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .errors import NoisyNNError

log = logging.getLogger(__name__)
WHERE = ("auto", "disk", "cpu", "memory")
ENV_WHERE, ENV_DIR = "NOISYNN_CLEAN_WEIGHTS", "NOISYNN_SPILL_DIR"


def _bytes_of(t: torch.Tensor):
    """A writable byte view of a contiguous CPU tensor (any dtype, bfloat16 included)."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _on_tmpfs(folder: Path) -> bool:
    """True when ``folder`` sits on a RAM file system (tmpfs/ramfs), read from /proc/mounts (False elsewhere)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return False
    path = str(folder.resolve())
    best = max((m for m in mounts if path == m[0] or path.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best is not None and best[1] in ("tmpfs", "ramfs")


class _Spill:
    """One unlinked temporary file: tensors written at offsets, read back into given buffers."""

    def __init__(self, folder: str | None):
        where = Path(folder or os.environ.get(ENV_DIR) or tempfile.gettempdir())
        if not where.is_dir():
            raise NoisyNNError(f"${ENV_DIR} '{where}' is not a folder (it holds the clean weights during a run)")
        if _on_tmpfs(where):
            log.warning("clean weights spill to %s, a RAM file system: set $%s to a folder on disk to keep them "
                        "out of memory", where, ENV_DIR)
        fd, name = tempfile.mkstemp(prefix="noisynn-clean-", dir=where)
        os.unlink(name)  # gone with the process, however it ends
        self.fd, self.size = fd, 0
        self._close = weakref.finalize(self, os.close, fd)

    def write(self, t: torch.Tensor) -> int:
        """Append ``t``'s bytes; returns their offset."""
        offset, view = self.size, _bytes_of(t.detach().contiguous().cpu())
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], offset + done)
        self.size += len(view)
        return offset

    def read_into(self, buf: torch.Tensor, offset: int) -> None:
        """Fill the contiguous CPU tensor ``buf`` from ``offset``."""
        view, done = _bytes_of(buf), 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n <= 0:
                raise NoisyNNError("the clean weights' spill file ended early (was its folder cleaned?)")
            done += n

    def close(self) -> None:
        self._close()


def resolve_where(where: str | None, tensors: Sequence[torch.Tensor]) -> str:
    """``where`` checked; ``auto``: ``$NOISYNN_CLEAN_WEIGHTS`` if set, else disk for CPU weights, cpu otherwise."""
    where = where or "auto"
    if where == "auto":
        where = os.environ.get(ENV_WHERE, "auto") or "auto"
    if where not in WHERE:
        raise NoisyNNError(f"clean weights kept '{where}' (${ENV_WHERE}?); known: {', '.join(WHERE)}")
    if where == "auto":
        where = "disk" if all(t.device.type == "cpu" for t in tensors) else "cpu"
    return where


class CleanWeights:
    """The clean values of ``tensors`` (in their order, then those ``append``-ed), read back one at a time.

    ``store[i]``: a fresh tensor on the i-th tensor's device; ``restore(i, dest)``: the clean values into
    ``dest`` (for ``disk`` and a contiguous CPU ``dest`` read straight into it, no buffer). ``resident_bytes``:
    what the store holds in process memory (host or device).
    """

    def __init__(self, tensors: Sequence[torch.Tensor], where: str | None = "auto", folder: str | None = None):
        self.where = resolve_where(where, tensors)
        self._meta: list[tuple] = []
        self._copies: list[torch.Tensor] | None = None if self.where == "disk" else []
        self._spill, self._offsets = (_Spill(folder), []) if self.where == "disk" else (None, [])
        for t in tensors:
            self.append(t)

    @torch.no_grad()
    def append(self, t: torch.Tensor) -> None:
        """Keep one more tensor (its values now), as the next index."""
        self._meta.append((tuple(t.shape), t.dtype, t.device))
        if self._spill is not None:
            self._offsets.append(self._spill.write(t))
        else:
            self._copies.append(t.detach().to("cpu", copy=True) if self.where == "cpu" else t.detach().clone())

    def __len__(self) -> int:
        return len(self._meta)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.read(i)

    def read(self, i: int, scratch: torch.Tensor | None = None) -> torch.Tensor:
        """The i-th tensor (do not write to it); from a spill file into ``scratch`` when given (a flat CPU
        buffer of the dtype, at least as long: reusing one saves the page faults of a fresh buffer)."""
        shape, dtype, device = self._meta[i]
        if self._copies is not None:
            c = self._copies[i]
            return c if c.device == device else c.to(device)
        n = math.prod(shape)
        usable = scratch is not None and scratch.dtype == dtype and scratch.device.type == "cpu" and scratch.numel() >= n
        buf = scratch[:n].view(shape) if usable else torch.empty(shape, dtype=dtype)
        self._spill.read_into(buf, self._offsets[i])
        return buf if device.type == "cpu" else buf.to(device)

    def largest(self) -> int:
        """The most elements of one kept tensor (the size of a scratch buffer)."""
        return max((math.prod(m[0]) for m in self._meta), default=0)

    @torch.no_grad()
    def restore(self, i: int, dest: torch.Tensor) -> None:
        """``dest`` = the i-th clean tensor, bit-exact."""
        if self._spill is not None and dest.device.type == "cpu" and dest.is_contiguous() \
                and (tuple(dest.shape), dest.dtype) == self._meta[i][:2]:
            self._spill.read_into(dest, self._offsets[i])
        elif self._copies is not None:
            dest.copy_(self._copies[i])  # across devices too, without a temporary on the device
        else:
            dest.copy_(self[i])

    @property
    def resident_bytes(self) -> int:
        return sum(c.numel() * c.element_size() for c in self._copies) if self._copies is not None else 0

    def close(self) -> None:
        """Drop the copies or the spill file (the store is unusable after this)."""
        self._copies = None
        if self._spill is not None:
            self._spill.close()


class Scratch:
    """Flat CPU buffers reused across one ``apply``'s tensors, by role and dtype (``n`` elements each)."""

    def __init__(self, n: int):
        self.n, self._bufs = n, {}

    def get(self, role: str, dtype: torch.dtype) -> torch.Tensor:
        key = (role, dtype)
        if key not in self._bufs:
            self._bufs[key] = torch.empty(self.n, dtype=dtype)
        return self._bufs[key]
