"""Stuck-at faults (``stuck_at``): devices stuck at g_max or at 0, a fraction ``sigma`` of them.

Each device of the pair is independently stuck with probability ``sigma`` (the sweep variable is the
fault fraction), at g_max with probability ``stuck_on_ratio`` and else at 0. Faults are nested across
levels (a device stuck at 5% is also stuck at 10%). ``pcm`` takes the same faults at a fixed
``stuck_fraction``; stuck devices neither drift nor add read noise. The mapping (w_max, hence the value
g_max stands for) is per tile of ``tile_size`` (inputs, outputs), default 512 x 512, as pcm's
(noisynn.noise.mapping).
"""

from __future__ import annotations

import torch

from ..errors import NoisyNNError
from ..seeding import make_generator
from .base import register_noise
from ..analog.fields import default
from ..tiling import tile_shape
from .mapping import DeviceModel, DeviceState, conductance_targets, mapping_range, stuck_mask


@register_noise("stuck_at")
class StuckAtFaults(DeviceModel):
    """A fraction ``sigma`` of the devices stuck at g_max (share ``stuck_on_ratio``) or at 0; others exact."""

    sigma_meaning = "fraction of devices (two per weight) stuck, at g_max with probability stuck_on_ratio, else at 0"

    def __init__(self, stuck_on_ratio: float = default("stuck_on_ratio"), clip_std: float | None = default("clip_std"),
                 tile_size=default("tile_size"), **params):
        if not 0 <= stuck_on_ratio <= 1:
            raise NoisyNNError(f"stuck_on_ratio must lie in [0, 1], got {stuck_on_ratio}")
        self.tile_size = tile_shape(tile_size)
        super().__init__(stuck_on_ratio=float(stuck_on_ratio), clip_std=clip_std, tile_size=list(self.tile_size),
                         **params)
        self.stuck_on_ratio, self.clip_std = float(stuck_on_ratio), clip_std

    def program(self, clean, unit, generator, out_axis=0) -> DeviceState:
        return DeviceState(self._generator_seed(generator),
                           mapping_range(clean, unit, self.clip_std, out_axis, self.tile_size))

    @torch.no_grad()
    def weights(self, clean, state: DeviceState, level, unit, generator, out) -> None:
        if level > 1:
            raise NoisyNNError(f"stuck_at: sigma is a fraction of devices and must be <= 1, got {level}")
        gen = make_generator(state.seed, clean.device)  # the same uniforms at every level: nested faults
        g_on, sign = conductance_targets(clean, state.w_max)
        g_off = torch.zeros_like(g_on)
        stuck_mask(g_on, level, self.stuck_on_ratio, gen)
        stuck_mask(g_off, level, self.stuck_on_ratio, gen)
        torch.mul(g_on.sub_(g_off).mul_(sign), state.w_max, out=out)
