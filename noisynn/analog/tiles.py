"""How a layer is split into analog tiles, and the tiles' weight scales (aihwkit's mapping).

A (out x in) weight is split in each dimension the way aihwkit's ``TileModuleArray`` splits it
(``simulator/tiles/array.py`` ``get_split_sizes`` l.94-97, via noisynn.tiling.split_sizes, which the PCM
mapping uses too); ``TileLayout`` gives each tile's slices of the weight (the analog forward reads the tiles as
views of the layer's weight, one input tile at a time).
``weight_scales``: c_w = max|W| / omega per tile (or per tile row), aihwkit's ``apply_weight_scaling``
(``simulator/tiles/periphery.py`` l.436-496).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..tiling import split_sizes

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

    def in_slices(self) -> list[slice]:
        """The input columns of each input tile."""
        return _slices(self.in_sizes)

    def out_slices(self) -> list[slice]:
        """The output rows of each output tile."""
        return _slices(self.out_sizes)

    def in_index(self, device):
        return _padded_index(self.in_sizes, self.i_max).to(device)

    def split_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in) -> (n_in, N, i_max); padded inputs are 0."""
        n = x.shape[0]
        if len(set(self.in_sizes)) == 1:
            return x.view(n, self.n_in, self.i_max).transpose(0, 1)
        padded = x.new_zeros(n, self.n_in * self.i_max)
        padded[:, self.in_index(x.device)] = x
        return padded.view(n, self.n_in, self.i_max).transpose(0, 1)


def _slices(sizes: tuple[int, ...]) -> list[slice]:
    out, start = [], 0
    for size in sizes:
        out.append(slice(start, start + size))
        start += size
    return out


@lru_cache(maxsize=256)
def tile_layout(out_features: int, in_features: int, tile_size: tuple[int, int]) -> TileLayout:
    return TileLayout(out_features, in_features, tuple(split_sizes(in_features, tile_size[0])),
                      tuple(split_sizes(out_features, tile_size[1])))


def weight_scales(weight: torch.Tensor, io, layout: TileLayout | None = None) -> torch.Tensor | None:
    """c_w of each tile output, (n_in, 1, out): max|W| / omega over the tile (over each tile row with
    ``per_channel``), 1 where that is 0; None when the weights are unscaled (omega = 0).
    ``io``: a noisynn.analog.mvm.AnalogIO (its ``omega``, ``per_channel``, ``tile_size``)."""
    if io.omega <= 0:
        return None
    lay = layout or tile_layout(*weight.shape, io.tile_size)
    w = weight.detach()
    rows = []
    for cols in lay.in_slices():
        tile = w[:, cols]
        peak = torch.maximum(tile.amax(dim=1), tile.amin(dim=1).neg_())  # (out,): max|W| per tile row, no |W| copy
        if not io.per_channel:
            peak = torch.cat([part.amax().expand(part.numel()) for part in peak.split(list(lay.out_sizes))])
        rows.append(peak)
    scale = torch.stack(rows) / io.omega
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale[:, None, :]
