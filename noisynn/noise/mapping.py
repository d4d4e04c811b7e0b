"""Weights -> conductances: a differential pair per weight, per tile (aihwkit's SinglePairConductanceConverter).

Each weight W of a tensor is held by two devices, g+ and g-, with W = (g+ - g-) w_max / g_max. The device
of W's sign is programmed to the target gT = min(|W| / w_max, 1) (in units of g_max = 25 uS), the other to
0 (aihwkit ``inference/converter/conductance.py`` lines 54-65, g_min = 0).

Tiles. A layer is split into tiles of at most ``tile_size = (inputs, outputs)`` (default 512 x 512, aihwkit
``MappingParameter.max_input_size / max_output_size``, ``simulator/parameters/mapping.py`` lines 79-101; 0 = the
whole dimension) the way aihwkit's ``TileModuleArray`` splits it (``simulator/tiles/array.py`` lines 82-97): n =
ceil(size / max) near-equal parts, the first ``size mod n`` one element longer (576 inputs -> 2 tiles of 288, not
512 + 64). ``w_max`` is taken per tile:
    ``--scale relative_max``      max|W| over each tile: aihwkit's default. Its mapping leaves the weights unscaled
                                  (``weight_scaling_omega = 0``, mapping.py line 46) and the converter maps each
                                  tile's abs-max to g_max (conductance.py line 55).
    ``--scale relative_channel``  max|W| over each output row within each tile: aihwkit with
                                  ``weight_scaling_columnwise`` (mapping.py line 53; its hardware-aware-training
                                  preset, ``simulator/presets/inference.py`` lines 78-88), and Analog
                                  Foundation Models (``apply_noise_model.py`` lines 92-102).
With ``clip_std = k`` the range is min(max|W|, k std(W)) (std over the same tile or row) and larger weights are
clipped to g_max (Buechel et al., NeurIPS 2025, clip at 2.5 std). A tensor that is not 2-D is one tile.

``DeviceModel`` is the base of the models that program conductances (pcm, pcm_afm, stuck_at) rather than add
i.i.d. samples.

``stuck_mask`` sets stuck devices (pcm's stuck_fraction, stuck_at's sigma).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import NoisyNNError
from ..tiling import tile_index
from .base import NoiseDistribution

G_MAX_US = 25.0  # uS: conductance that max|W| maps to
SOURCES = ("Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 11, 2473 (2020); "
           "aihwkit PCMLikeNoiseModel, GlobalDriftCompensation, IOParameters")


def work_dtype(clean: torch.Tensor) -> torch.dtype:
    """float64 for a float64 weight (exact tests), else float32: the dtype conductances are computed in."""
    return torch.float64 if clean.dtype == torch.float64 else torch.float32


def mapping_range(clean: torch.Tensor, unit, clip_std: float | None = None, out_axis: int = 0,
                  tile_size=None):
    """w_max, the weight that maps to g_max, broadcastable to ``clean``.

    ``unit`` is the injector's max|W| (a number per tensor, or a tensor per output channel: ``relative_channel``).
    One tile (``tile_size`` None / 0, or a layer no larger than a tile): ``unit``, or min(unit, k std) with
    ``clip_std = k``. Several tiles: a tensor of ``clean``'s shape holding each tile's range (per tile, or per
    output row within each tile when ``unit`` is a tensor), each min(max, k std) over the same elements.
    """
    tiles = tile_index(clean.shape, tile_size, out_axis) if tile_size is not None else [(Ellipsis,)]
    tiny = torch.finfo(torch.float32).tiny
    if len(tiles) == 1:
        return _one_range(clean, unit, clip_std, out_axis, tiny)
    per_row = isinstance(unit, torch.Tensor) and unit.numel() > 1
    w = clean.detach().to(work_dtype(clean))
    full = torch.empty_like(w)
    in_axis = 1 - out_axis
    for idx in tiles:
        part = w[idx]
        if per_row:
            top = part.abs().amax(dim=in_axis, keepdim=True)
            if clip_std is not None:
                top = torch.minimum(top, part.std(dim=in_axis, keepdim=True).nan_to_num_(0.0) * clip_std)
        else:
            top = part.abs().max()
            if clip_std is not None:
                top = torch.minimum(top, part.std().nan_to_num_(0.0) * clip_std)
        full[idx] = top.clamp(min=tiny)
    return full


def _one_range(clean: torch.Tensor, unit, clip_std, out_axis, tiny):
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
        return w_max.to(work_dtype(clean)).clamp(min=tiny)
    return max(float(w_max), tiny)


def conductance_targets(clean: torch.Tensor, w_max) -> tuple[torch.Tensor, torch.Tensor]:
    """(gT in [0, 1], sign in {-1, +1}); zero weights count as positive (both devices near 0)."""
    w = clean.detach().to(work_dtype(clean))
    g_t = w.abs().div_(w_max).clamp_(max=1.0)
    sign = torch.where(w < 0, -1.0, 1.0).to(w.dtype)
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
