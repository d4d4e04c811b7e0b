"""The original toolkit's remaining public names that have no other home in the package.

``NoiseType``, ``get_noise_distribution`` and ``get_model_weight_stats`` kept the original
``noise_distributions`` module's signatures; the root ``noise_distributions.py`` re-exports them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .targets import Conv1D
from .noise import NOISE_REGISTRY, NoiseDistribution, get_noise

# The names the package registers itself (a plugin's names are added at run time, so a static
# type cannot list them; they are still accepted everywhere a name is).
BUILTIN_NOISE_TYPES = tuple(name for name, cls in NOISE_REGISTRY.items()
                            if getattr(cls, "__module__", "").startswith("noisynn."))
NoiseType = Literal[BUILTIN_NOISE_TYPES]


def get_noise_distribution(noise_type: NoiseType | str) -> NoiseDistribution:
    """An instance of the registered noise ``noise_type`` (default parameters).

    Raises ``ValueError`` (also a ``NoisyNNError``) naming the known types when it is unknown.
    """
    return get_noise(noise_type)


@torch.no_grad()
def get_model_weight_stats(model: nn.Module) -> dict:
    """Pooled statistics of every ``nn.Linear`` and GPT-2 ``Conv1D`` weight and bias.

    Keys as in the original: ``mean``, ``std`` (with Bessel's correction, as ``torch.std``),
    ``min``, ``max``, ``total_params``; ``{}`` for a model with no such layer. A tensor shared
    by two layers counts once. The original counted ``nn.Linear`` only (on GPT-2 that was the
    head alone); Conv1D layers are the same matrices stored transposed, so they count here.
    Accumulated per tensor in float64, so no concatenated copy of the weights is made.
    """
    seen: set[int] = set()
    count, mean, m2 = 0, 0.0, 0.0
    low, high = float("inf"), float("-inf")
    for module in model.modules():
        if not (isinstance(module, nn.Linear) or (Conv1D and isinstance(module, Conv1D))):
            continue
        for tensor in (module.weight, getattr(module, "bias", None)):
            if tensor is None or id(tensor) in seen or tensor.numel() == 0:
                continue
            seen.add(id(tensor))
            x = tensor.detach().double()
            n, m = x.numel(), float(x.mean())
            # Chan et al.'s pairwise update of (count, mean, sum of squared deviations).
            delta = m - mean
            m2 += float(((x - m) ** 2).sum()) + delta ** 2 * count * n / (count + n)
            mean += delta * n / (count + n)
            count += n
            low, high = min(low, float(x.min())), max(high, float(x.max()))
    if not count:
        return {}
    std = (m2 / (count - 1)) ** 0.5 if count > 1 else float("nan")
    return {"mean": mean, "std": std, "min": low, "max": high, "total_params": count}
