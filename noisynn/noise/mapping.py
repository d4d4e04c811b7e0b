"""Weight-to-conductance mapping (a differential pair per weight, as aihwkit's ``SinglePairConductanceConverter``)
    Each weight W of a tensor is held by two devices, g+ and g-, with W = (g+ - g-) w_max / g_max. The device
    of W's sign is programmed to the target gT = min(|W| / w_max, 1) (in units of g_max = 25 uS), the other to
    0. ``w_max`` is max|W| over the tensor (``--scale relative_max``) or over each output channel
    (``--scale relative_channel``, one row of conductances per output); with ``clip_std = k`` it is
    min(max|W|, k std(W)) and larger weights are clipped to g_max (Buechel et al., NeurIPS 2025, clip at 2.5 std).

``DeviceModel`` is the base of the models that program conductances (pcm, stuck_at) rather than add
i.i.d. samples.

``stuck_mask`` sets stuck devices (pcm's stuck_fraction, stuck_at's sigma).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import NoisyNNError
from .base import NoiseDistribution

G_MAX_US = 25.0  # uS: conductance that max|W| maps to
SOURCES = ("Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 11, 2473 (2020); "
           "aihwkit PCMLikeNoiseModel, GlobalDriftCompensation, IOParameters")


def mapping_range(clean: torch.Tensor, unit, clip_std: float | None = None, out_axis: int = 0):
    """w_max, the weight that maps to g_max: ``unit`` (max|W| per tensor or channel), or min(unit, k std)."""
    w_max = unit
    if clip_std is not None:
        w = clean.detach().float()
        if isinstance(unit, torch.Tensor):
            dims = [d for d in range(w.dim()) if d != out_axis]
            std = w.std(dim=dims, keepdim=True)
            w_max = torch.minimum(unit.float(), std * clip_std)
        else:
            w_max = min(float(unit), float(w.std()) * clip_std)
    if isinstance(w_max, torch.Tensor):
        return w_max.float().clamp(min=torch.finfo(torch.float32).tiny)
    return max(float(w_max), torch.finfo(torch.float32).tiny)


def conductance_targets(clean: torch.Tensor, w_max) -> tuple[torch.Tensor, torch.Tensor]:
    """(gT in [0, 1], sign in {-1, +1}); zero weights count as positive (both devices near 0)."""
    w = clean.detach().float()
    g_t = w.abs().div_(w_max).clamp_(max=1.0)
    sign = torch.where(w < 0, -1.0, 1.0)
    return g_t, sign


class DeviceModel(NoiseDistribution):
    """Base of the conductance-based models: weights are not perturbed by i.i.d. samples but programmed."""

    location_scale = False
    scales = ("relative_channel", "relative_max")
    sigma_meaning = ""

    def sample(self, shape, scale, device=None, generator=None):
        raise NoisyNNError(f"'{self.name}' is a device model, not an i.i.d. distribution: use noisy_weights(), "
                           "NoiseInjector or --noise_type in an experiment")

    def describe(self) -> dict:
        return {**super().describe(), "sigma": self.sigma_meaning, "sources": SOURCES}

    def _generator_seed(self, generator: torch.Generator) -> int:
        return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def stuck_mask(g: torch.Tensor, fraction: float, on_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Bool mask of stuck devices (u < fraction); sets g in place to 1 (stuck on, v < on_ratio) or 0 there.

    Two uniforms per device, u (whether) and v (where), so faults are nested across fractions: a device
    stuck at a fraction is stuck, at the same value, at every larger fraction.
    """
    u = torch.rand(g.shape, generator=generator, device=g.device)
    v = torch.rand(g.shape, generator=generator, device=g.device)
    stuck = u < fraction
    g.masked_fill_(stuck, 0.0)
    g.masked_fill_(stuck & (v < on_ratio), 1.0)
    return stuck


@dataclass
class DeviceState:
    seed: int
    w_max: torch.Tensor | float
