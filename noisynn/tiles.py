"""How a layer is split into analog tiles, and the tiles' weight scales (aihwkit's mapping).

A (out x in) weight is split in each dimension the way aihwkit's ``TileModuleArray`` splits it
(``simulator/tiles/array.py`` ``get_split_sizes`` l.94-97, via noisynn.noise.mapping.split_sizes, which the PCM
mapping uses too); ``TileLayout`` packs the tiles for one batched product, padding uneven tiles with zeros.
``weight_scales``: c_w = max|W| / omega per tile (or per tile row), aihwkit's ``apply_weight_scaling``
(``simulator/tiles/periphery.py`` l.436-496).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .noise.mapping import split_sizes

@lru_cache(maxsize=256)
def _padded_index(sizes: tuple[int, ...], width: int) -> torch.Tensor:
    """Positions of the real entries when tiles of ``sizes`` are padded to ``width`` each."""
    return torch.tensor([t * width + j for t, s in enumerate(sizes) for j in range(s)])


@dataclass(frozen=True)
class TileLayout:
    """How a (out x in) weight is split: sizes per dimension, padded to the largest tile for batched products."""

    out_features: int
    in_features: int
    in_sizes: tuple[int, ...]
    out_sizes: tuple[int, ...]

    @property
    def n_in(self) -> int:
        return len(self.in_sizes)

    @property
    def n_out(self) -> int:
        return len(self.out_sizes)

    @property
    def i_max(self) -> int:
        return max(self.in_sizes)

    @property
    def o_max(self) -> int:
        return max(self.out_sizes)

    @property
    def even(self) -> bool:
        return len(set(self.in_sizes)) == 1 and len(set(self.out_sizes)) == 1

    def blocks(self) -> list[tuple[slice, slice]]:
        """(out slice, in slice) of every tile, input tiles outer."""
        out = []
        i0 = 0
        for si in self.in_sizes:
            o0 = 0
            for so in self.out_sizes:
                out.append((slice(o0, o0 + so), slice(i0, i0 + si)))
                o0 += so
            i0 += si
        return out

    def in_index(self, device):
        return _padded_index(self.in_sizes, self.i_max).to(device)

    def out_index(self, device):
        return _padded_index(self.out_sizes, self.o_max).to(device)

    def split_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in) -> (n_in, N, i_max); padded inputs are 0."""
        n = x.shape[0]
        if len(set(self.in_sizes)) == 1:
            return x.view(n, self.n_in, self.i_max).transpose(0, 1)
        padded = x.new_zeros(n, self.n_in * self.i_max)
        padded[:, self.in_index(x.device)] = x
        return padded.view(n, self.n_in, self.i_max).transpose(0, 1)

    def pack_weight(self, w: torch.Tensor) -> torch.Tensor:
        """(out, in) -> (n_in, n_out * o_max, i_max) (a view when the tiles are even); padding is 0."""
        if self.even:
            return w.view(self.out_features, self.n_in, self.i_max).transpose(0, 1)
        padded = w.new_zeros(self.n_out * self.o_max, self.n_in * self.i_max)
        rows, cols = self.out_index(w.device), self.in_index(w.device)
        padded[rows[:, None], cols[None, :]] = w
        return padded.view(self.n_out * self.o_max, self.n_in, self.i_max).transpose(0, 1)

    def merge_outputs(self, y: torch.Tensor) -> torch.Tensor:
        """(N, n_out * o_max) -> (N, out)."""
        if len(set(self.out_sizes)) == 1:
            return y
        return y.index_select(1, self.out_index(y.device))

    def in_mask(self, device) -> torch.Tensor | None:
        """(n_in, 1, i_max) True where an input is real (None when there is no padding)."""
        if len(set(self.in_sizes)) == 1:
            return None
        mask = torch.zeros(self.n_in * self.i_max, dtype=torch.bool, device=device)
        mask[self.in_index(device)] = True
        return mask.view(self.n_in, 1, self.i_max)

    def out_mask(self, device) -> torch.Tensor | None:
        """(n_out * o_max,) True where an output is real (None when there is no padding)."""
        if len(set(self.out_sizes)) == 1:
            return None
        mask = torch.zeros(self.n_out * self.o_max, dtype=torch.bool, device=device)
        mask[self.out_index(device)] = True
        return mask


@lru_cache(maxsize=256)
def tile_layout(out_features: int, in_features: int, tile_size: tuple[int, int]) -> TileLayout:
    return TileLayout(out_features, in_features, tuple(split_sizes(in_features, tile_size[0])),
                      tuple(split_sizes(out_features, tile_size[1])))


def weight_scales(weight: torch.Tensor, io, layout: TileLayout | None = None) -> torch.Tensor | None:
    """c_w of each tile output, (n_in, 1, n_out * o_max): max|W| / omega per tile (per tile row with
    ``per_channel``), 1 where the tile is all zero; None when the weights are unscaled (omega = 0).
    ``io``: a noisynn.analog_mvm.AnalogIO (its ``omega``, ``per_channel``, ``tile_size``)."""
    if io.omega <= 0:
        return None
    lay = layout or tile_layout(*weight.shape, io.tile_size)
    wt = lay.pack_weight(weight.detach()).abs().amax(dim=-1)  # (n_in, O): max per tile row
    if not io.per_channel:
        wt = wt.view(lay.n_in, lay.n_out, lay.o_max).amax(dim=-1, keepdim=True).expand(-1, -1, lay.o_max)
        wt = wt.reshape(lay.n_in, lay.n_out * lay.o_max)
    scale = wt / io.omega
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale[:, None, :]
