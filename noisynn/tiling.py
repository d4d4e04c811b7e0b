"""How a layer is split into tiles: aihwkit's split, and the tile size written as a flag (no torch).

A (out x in) weight is split into tiles of at most ``tile_size = (inputs, outputs)`` (default 512 x 512:
aihwkit ``MappingParameter.max_input_size / max_output_size``, ``simulator/parameters/mapping.py`` l.79, l.91;
0 = the whole dimension), each dimension in n = ceil(size / max) near-equal parts, the first ``size mod n`` one
longer (``simulator/tiles/array.py`` ``get_split_sizes`` l.82-97). The device mapping (noisynn.noise.mapping) and
the analog forward (noisynn.analog) both split layers with these functions.
"""

from __future__ import annotations

from .errors import NoisyNNError

DEFAULT_TILE_SIZE = (512, 512)  # (inputs, outputs): aihwkit MappingParameter max_input_size, max_output_size

Block = tuple[slice, slice]


def tile_shape(tile_size) -> tuple[int, int]:
    """(inputs, outputs) from a pair, one int for both, or None / 0 (the whole layer); 0 in a place = whole."""
    if tile_size is None:
        return (0, 0)
    if isinstance(tile_size, (int, float)) and not isinstance(tile_size, bool):
        tile_size = (tile_size, tile_size)
    try:
        sizes = tuple(tile_size)
        ok = len(sizes) == 2 and all(float(s) == int(s) and int(s) >= 0 for s in sizes)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise NoisyNNError(f"tile_size takes (inputs, outputs), whole numbers >= 0 (0 = the whole layer), "
                           f"got {tile_size!r}")
    return int(sizes[0]), int(sizes[1])


def split_sizes(size: int, max_size: int) -> list[int]:
    """Part lengths of one dimension: aihwkit's ``get_split_sizes`` (simulator/tiles/array.py lines 82-97).

    n = ceil(size / max_size) parts of near-equal length, the first ``size mod n`` one longer; one part
    when ``max_size <= 0``.
    """
    if max_size <= 0 or size <= max_size:
        return [int(size)]
    n = -(-size // max_size)
    base, extra = divmod(size, n)
    return [base + (i < extra) for i in range(n)]


def tile_blocks(shape, tile_size=DEFAULT_TILE_SIZE, out_axis: int = 0) -> list[Block]:
    """The tiles of a 2-D weight as (out slice, in slice) blocks, input tile major, as aihwkit's array holds them
    (``simulator/tiles/array.py`` lines 71-79, 112-123).

    ``shape``: the weight's shape, outputs on ``out_axis`` (0 for nn.Linear (out, in), 1 for GPT-2's Conv1D
    (in, out)); ``tile_size``: (inputs, outputs), 0 = the whole dimension. Index the tensor with
    ``block_index(block, out_axis)``.
    """
    if len(shape) != 2 or out_axis not in (0, 1):
        raise NoisyNNError(f"tile_blocks needs a 2-D weight shape and out_axis 0 or 1, got {tuple(shape)}, {out_axis}")
    max_in, max_out = tile_shape(tile_size)
    n_out, n_in = int(shape[out_axis]), int(shape[1 - out_axis])
    blocks = []
    in_start = 0
    for in_len in split_sizes(n_in, max_in):
        out_start = 0
        for out_len in split_sizes(n_out, max_out):
            blocks.append((slice(out_start, out_start + out_len), slice(in_start, in_start + in_len)))
            out_start += out_len
        in_start += in_len
    return blocks


def block_index(block: Block, out_axis: int = 0) -> tuple[slice, slice]:
    """The index of a (out slice, in slice) block into a weight with outputs on ``out_axis``."""
    out_slice, in_slice = block
    return (out_slice, in_slice) if out_axis == 0 else (in_slice, out_slice)


def tile_index(shape, tile_size=DEFAULT_TILE_SIZE, out_axis: int = 0) -> list[tuple]:
    """Indices of the tiles into a tensor of ``shape``: ``block_index`` of each ``tile_blocks``; a tensor that is
    not 2-D is one tile, ``[(Ellipsis,)]``."""
    if len(shape) != 2:
        return [(Ellipsis,)]
    return [block_index(b, out_axis) for b in tile_blocks(shape, tile_size, out_axis)]


def parse_tile_size(value) -> tuple[int, int]:
    """(max inputs, max outputs) from ``"512"``, ``"512x256"``, ``0`` or a pair; 0 = no split in that dimension."""
    if isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = str(value).lower().replace(" ", "").split("x")
    if len(parts) == 1:
        parts = parts * 2
    try:
        size = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise NoisyNNError(f"tile_size takes IN or INxOUT (integers, 0 = the whole layer), got '{value}'") from None
    if len(size) != 2 or min(size) < 0:
        raise NoisyNNError(f"tile_size takes IN or INxOUT (integers >= 0, 0 = the whole layer), got '{value}'")
    return tile_shape(size)
