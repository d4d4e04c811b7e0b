"""Weight quantization (``quantize``), the digital baseline: W_q = round(W / (sigma u)) sigma u.

``sigma`` is the step in units of the scale unit u; symmetric b-bit quantization per channel is ``--scale
relative_channel`` with sigma = 1 / (2^(b-1) - 1) (b = 8: 1/127, b = 4: 1/7).
"""

from __future__ import annotations

import torch

from ..errors import NoisyNNError
from .base import NoiseDistribution, register_noise


@register_noise("quantize")
class WeightQuantization(NoiseDistribution):
    """Digital baseline: round W to a grid of step sigma * u (u: the scale unit, e.g. max|W| per channel)."""

    location_scale = False
    sigma_meaning = "quantization step in scale units (symmetric b bits with relative_channel: 1 / (2^(b-1) - 1))"

    def sample(self, shape, scale, device=None, generator=None):
        raise NoisyNNError("'quantize' rounds weights, it draws no samples: use noisy_weights() or NoiseInjector")

    def describe(self) -> dict:
        return {**super().describe(), "sigma": self.sigma_meaning}

    @torch.no_grad()
    def weights(self, clean, state, level, unit, generator, out) -> None:
        step = unit * level
        torch.div(clean, step, out=out)
        out.round_().mul_(step)


def bits_to_step(bits: int) -> float:
    """Quantization step (in units of max|W|) of symmetric ``bits``-bit weights: 1 / (2^(bits-1) - 1)."""
    if bits < 2:
        raise NoisyNNError(f"weight quantization needs >= 2 bits, got {bits}")
    if bits > 32:  # 2 ** bits alone would fill memory for a huge value
        raise NoisyNNError(f"weight quantization takes at most 32 bits, got {bits:,} (float32 resolves at most "
                           "2^24 steps; more bits change nothing)")
    return 1.0 / (2 ** (bits - 1) - 1)
