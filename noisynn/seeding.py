"""Seeds: one ``set_seed`` for global state, and ``derive_seed`` for independent streams.

Every random stream in a run is a ``torch.Generator`` seeded by ``derive_seed(base, *keys)``,
a hash of the base seed and the keys (trial, level, layer name, ...). Streams derived from a
layer's name do not depend on the order in which layers are visited.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(base: int, *keys: object) -> int:
    """A 63-bit seed from ``base`` and any keys: sha256 of their repr, stable across runs."""
    text = repr((int(base),) + tuple(str(k) for k in keys)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch global generators (for code outside our own streams)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
