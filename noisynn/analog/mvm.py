"""The analog forward of a layer, as aihwkit computes it: tiles, noise and bound management, DAC, MVM, ADC.

``analog_matmul(x, W, io)`` is one layer's analog product without bias, ``AnalogIO`` its settings;
noisynn.analog.hooks puts it on the targeted layers of a model as forward hooks. Sources (IBM/aihwkit, commit 4545f11, ``src/aihwkit/``):

  tiles     a layer (out x in) is split into tiles of at most ``tile_size = (max_in, max_out)``; each dimension
            in n = ceil(size / max) near-equal parts, the first size % n one larger
            (``simulator/tiles/array.py`` ``get_split_sizes`` l.94-97; defaults 512 x 512,
            ``simulator/parameters/mapping.py`` l.79, l.91; 0 = no split). Tile outputs are rescaled and summed
            digitally over input tiles (``array.py`` ``forward``).
  per tile, for each input vector x (one token's slice of the tile's inputs):
    noise management  s = max|x| ("dynamic", ABS_MAX), 1 ("none"), c (a number, CONSTANT nm_thres = c), or the
            tile's static range ("calibrated": aihwkit's pre_post input range, ``tiles/periphery.py`` l.803-856);
            x_n = x / (s r), r = the bound-management reduction (1, 2, 4, ...)
            (``tiles/analog_mvm.py`` ``_compute_noise_management`` l.328-358, ``matmul`` l.49-167)
    DAC     x_n = round(x_n / d) d, d = 2 / (2^dac_bits - 2) (inp_res = 1 / steps over [-inp_bound, inp_bound],
            inp_bound = 1; ``tiles/utils.py`` UniformQuantize), then clipped to [-1, 1]; x_n += inp_noise xi
            (``analog_mvm.py`` ``_prepare_input`` l.278-326)
    MVM     y = x_n W_tile^T, W_tile = W (``out_noise_units = "tile"``, aihwkit's default weight_scaling_omega = 0)
            or W / c_w with c_w = max|W| / omega over the tile (or over each of its rows with ``per_channel``,
            aihwkit's weight_scaling_columnwise) (``tiles/periphery.py`` ``apply_weight_scaling`` l.436-496);
            ``"normalized"`` is omega = 1: units of (input range x max|W|), this toolkit's earlier convention
    w_noise fresh at every MVM, y_i += w_noise ||x_n||_2 xi_i (additive_constant) or
            y_i += w_noise sqrt(sum_j |W_ij| x_nj^2) xi_i (pcm_read)
            (``src/rpucuda/rpu_forward_backward_pass.cpp`` ``applyOutputWeightNoise`` l.326-380)
    noise   y += out_noise xi
    ADC     y = round(y / e) e, e = 2 out_bound / (2^adc_bits - 2), then clipped to [-out_bound, out_bound]
            (``analog_mvm.py`` ``_finalize_output`` l.230-276)
    bound management  "iterative": while an output of the vector saturates (|y| > out_bound in aihwkit's float32
            arithmetic: an output on the top ADC level counts where that level rounds above the bound, as with 9 bits
            and bound 12; ``AnalogIO.saturation_level``), the vector is
            redone with r doubled and fresh noise, until r > max_bm_factor or r > max_bm_res / d
            (``analog_mvm.py`` l.116-160, the loop at l.128). The test is per vector, as in rpucuda's CPU
            ``forwardVector`` (``rpu_forward_backward_pass.cpp`` l.901-987) and CUDA's per-batch scale values (``cuda/io_manager.cu``
            l.292-325); aihwkit's pure-torch tile tests the whole batch at once. Only failing vectors are redone.
    out     y s r c_w alpha: back to weight units; alpha = the tile's drift-compensation factor (applied after
            the ADC, ``simulator/tiles/inference.py`` ``post_forward`` l.268-282; see noisynn.analog.compensation)

Computed one input tile at a time into one (tokens x outputs) sum (the tiles are views of the weight, so uneven
splits copy nothing). The noise is drawn input tile by input tile: input noise, output (+ weight read) noise,
then that tile's bound-management redos. Without input noise, without redos and with even output tiles these
are the draws of the earlier all-tiles-at-once code (torch's CPU normal fills 16 at a time, and a tile's
tokens x outputs is a multiple of 16 here); otherwise the stream differs (the padded outputs of uneven output
tiles no longer draw noise), with the same distributions.

Not modelled: IR drop (``ir_drop``), output non-linearity, asymmetries, voltage offsets, stochastic rounding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import NoisyNNError
from .fields import FIELDS, IO_FIELDS, default
from .tiles import TileLayout, tile_layout, weight_scales

INPUT_RANGES = FIELDS["input_range"].choices
BOUND_MANAGEMENT = FIELDS["bound_management"].choices
W_NOISE_TYPES = FIELDS["w_noise_type"].choices
OUT_NOISE_UNITS = FIELDS["out_noise_units"].choices
RANGE_CALIBRATIONS = FIELDS["range_calibration"].choices


@dataclass
class AnalogIO:
    """The analog tile's periphery (aihwkit ``IOParameters`` + ``MappingParameter`` conventions; 0 / None = off).

    Each field, its default (aihwkit's ``IOParameters()`` and ``MappingParameter()``, ``simulator/parameters/io.py``
    l.46-238, ``mapping.py`` l.46-91), its domain and help are declared once in noisynn.analog.fields; this class
    reads them (defaults, the per-field checks) and adds the checks between fields.

    ``input_range``: "dynamic" (per-token abs-max per input tile), "none" (inputs used as they are, clipped to
    [-1, 1]), "calibrated" (one static range per input tile, measured by ``ConverterHooks.calibrate``: max|x|, or
    ``range_std`` x std(x) averaged over the calibration windows, weighted by their tokens, as aihwkit's input-range
    init) or a number. ``range_calibration``: "analog" (the calibration passes run through the analog forward, each
    layer converting with its running range, as aihwkit-lightning's init_from_data) or "digital" (layers digital
    while measured).
    ``per_channel``: with scaled weights, the scale c_w is max|W| per row of each tile (else per tile).
    ``tile_size``: (max inputs, max outputs) of a tile, 0 = the whole layer in that dimension.
    ``out_noise_units``: "tile" (weights as stored, scaled only when ``weight_scaling_omega`` > 0) or
    "normalized" (omega = 1: units of input range x max|W|). ``preset``: the name this was resolved from.
    """

    dac_bits: int | None = default("dac_bits")
    adc_bits: int | None = default("adc_bits")
    out_noise: float = default("out_noise")
    out_bound: float | None = default("out_bound")
    input_range: str | float = default("input_range")
    per_channel: bool = default("per_channel")
    tile_size: tuple[int, int] = default("tile_size")
    bound_management: str = default("bound_management")
    max_bm_factor: float = default("max_bm_factor")
    max_bm_res: float = default("max_bm_res")
    inp_noise: float = default("inp_noise")
    w_noise: float = default("w_noise")
    w_noise_type: str = default("w_noise_type")
    out_noise_units: str = default("out_noise_units")
    weight_scaling_omega: float = default("weight_scaling_omega")
    range_std: float = default("range_std")
    range_calibration: str = default("range_calibration")
    preset: str | None = None

    def __post_init__(self):
        # Each field's own check is its declaration's (noisynn.analog.fields); None = off (no DAC, no ADC).
        if self.out_bound is not None and isinstance(self.out_bound, (int, float)) and not self.out_bound > 0:
            self.out_bound = None
        for name in IO_FIELDS:
            value = getattr(self, name)
            if value is not None or name not in ("dac_bits", "adc_bits", "out_bound"):
                try:
                    setattr(self, name, FIELDS[name].read(value))
                except NoisyNNError as err:
                    raise NoisyNNError(f"{name}: {err}") from None
        if self.adc_bits and not self.out_bound:
            raise NoisyNNError("an ADC needs an output bound (out_bound > 0)")
        if self.w_noise > 0 and self.w_noise_type == "none":
            raise NoisyNNError("w_noise needs a w_noise_type (additive_constant or pcm_read)")
        if self.out_noise_units == "normalized" and self.weight_scaling_omega not in (0.0, 1.0):
            raise NoisyNNError("out_noise_units normalized means weight_scaling_omega 1; use out_noise_units tile "
                               "to scale the weights to another omega")

    @property
    def omega(self) -> float:
        """max|W| of a tile is mapped to omega (0: weights unscaled)."""
        return 1.0 if self.out_noise_units == "normalized" else float(self.weight_scaling_omega)

    @property
    def dac_half(self) -> float | None:
        return (2 ** self.dac_bits - 2) / 2 if self.dac_bits else None

    @property
    def dac_res(self) -> float | None:
        """The DAC step over [-1, 1] as aihwkit holds it: float32(1 / (2^bits - 2)) x float32(2)
        (``rpu_pulsed_meta_parameter.cpp`` l.31-37, l.57); d h = 1 up to float32 rounding."""
        if not self.dac_bits:
            return None
        f32 = torch.float32
        return float(torch.tensor(1 / (2 ** self.dac_bits - 2), dtype=f32) * torch.tensor(2.0, dtype=f32))

    @property
    def adc_step(self) -> float | None:
        return 2 * self.out_bound / (2 ** self.adc_bits - 2) if self.adc_bits else None

    def saturation_level(self) -> float:
        """The output, in ADC steps (tile units without an ADC), above which iterative bound management redoes a
        vector. aihwkit tests ``value > out_bound`` on the discretized output in float32
        (``src/rpucuda/rpu_forward_backward_pass.cpp`` ``finalizeOutputImplStage5`` l.700-708), the step being
        res = float32(1 / (2^bits - 2)) x float32(2 out_bound) (``rpu_pulsed_meta_parameter.cpp`` l.31-37, l.56).
        Where the top level h x res rounds above the bound in float32 (9 bits, bound 12: 255 x 0.04705883 =
        12.000001) an output on the top level already counts as saturated: the level is h - 0.5; else h."""
        bound = float(self.out_bound)
        if not self.adc_bits:
            return bound
        h = (2 ** self.adc_bits - 2) / 2
        f32 = torch.float32
        res = torch.tensor(1 / (2 ** self.adc_bits - 2), dtype=f32) * torch.tensor(2 * bound, dtype=f32)
        top = torch.tensor(h, dtype=f32) * res
        return h - 0.5 if bool(top > torch.tensor(bound, dtype=f32)) else h

    def bm_limit(self) -> float:
        """Largest reduction r tried by iterative bound management: the first power of 2 above
        min(max_bm_factor, max_bm_res / d) (d = the DAC step over [-1, 1]), as aihwkit's loop stops."""
        limit = float(self.max_bm_factor)
        if self.dac_bits:
            limit = min(limit, self.max_bm_res / (2 / (2 ** self.dac_bits - 2)))
        r = 1.0
        while r <= limit:
            r *= 2
        return r

    def describe(self) -> dict:
        d = asdict(self)
        d["tile_size"] = list(self.tile_size)
        d["dac_steps"] = 2 ** self.dac_bits - 2 if self.dac_bits else None
        d["adc_steps"] = 2 ** self.adc_bits - 2 if self.adc_bits else None
        d["max_bm_reduction"] = self.bm_limit() if self.bound_management == "iterative" and self.out_bound else 1.0
        d["convention"] = ("aihwkit IOParameters/MappingParameter: per tile, inputs divided by the noise-management "
                           "scale and quantized with 1 / (2^bits - 2) of [-1, 1]; out_noise and out_bound in units "
                           "of (normalized input) x " + ("(raw weight)" if self.omega == 0 else
                                                        f"(weight / (max|W| / {self.omega:g}) per "
                                                        f"{'tile row' if self.per_channel else 'tile'})"))
        d["not_modelled"] = "IR drop, output non-linearity, asymmetries, voltage offsets, stochastic rounding"
        return d


# ---------------------------------------------------------------- one input tile at a time
#
# The layer is computed one input tile at a time into one (tokens x outputs) accumulator, as aihwkit's tile
# array sums its tiles: every elementwise step (noise, ADC, clip, rescale) then runs on a (tokens x outputs)
# tensor that is reused, instead of a fresh (input tiles x tokens x outputs) one, and a tile's weights are a
# view of the layer's (no padding, no copy, even for uneven splits). All output tiles of an input tile go in
# one product: they differ only in their scale and in which outputs their saturation test covers.


def _randn(shape, like: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def _dac(x: torch.Tensor, divisor, io: AnalogIO) -> torch.Tensor:
    """DAC levels of x / divisor (noise management x bound-management reduction): round(x (1 / divisor) / d)
    clipped to [-h, h], h = dac_half, d = ``io.dac_res`` (a new tensor); without a DAC, x / divisor clipped to
    [-1, 1]. Multiplied by the reciprocal and divided by the float32 step, as rpucuda's ``prepareInputImplStage4``
    (``value *= scale``, then ``round(value / res)``, ``rpu_forward_backward_pass.cpp`` l.583-588): a tie such
    as 0.5 / 0.015873017 = 31.4999986 then rounds as aihwkit rounds it (31), not as the exact 0.5 x 63 (32)."""
    xn = x * divisor.reciprocal() if isinstance(divisor, torch.Tensor) else (
        x * (1.0 / divisor) if divisor != 1.0 else x)
    if io.dac_half:
        half = io.dac_half
        return (xn.div_(io.dac_res) if xn is not x else xn / io.dac_res).round_().clamp_(-half, half)
    return xn.clamp(-1.0, 1.0) if xn is x else xn.clamp_(-1.0, 1.0)


def _noise_std(xl: torch.Tensor, w: torch.Tensor, scale, io: AnalogIO):
    """Std of the summed output and weight read noise, in ADC steps e (tile units without an ADC):
    sqrt(out_noise^2 + var_w) / e, var_w = (w_noise ||x_n||_2)^2 (additive_constant) or
    w_noise^2 sum_j |W_ij / c_w| x_nj^2 (pcm_read), x_n = levels / h. Independent Gaussians at each output: one
    draw with the summed variance has exactly their sum's distribution (and halves the cost of drawing)."""
    half, step = io.dac_half or 1.0, io.adc_step or 1.0
    if not (io.w_noise and io.w_noise_type != "none"):
        return io.out_noise / step
    if io.w_noise_type == "additive_constant":
        var = torch.linalg.vector_norm(xl, dim=-1, keepdim=True).square_().mul_((io.w_noise / half) ** 2)
    else:
        var = torch.matmul(xl * xl, w.abs().t())
        var = var.mul_(io.w_noise ** 2 / half ** 2) if scale is None else var.div_(scale / (io.w_noise / half) ** 2)
    return var.clamp_(min=0).add_(io.out_noise ** 2).sqrt_().div_(step)


@dataclass(frozen=True)
class Gains:
    """Per-vector factors on the cells one MVM reads (the analog attention's leaked KV store,
    noisynn.analog.attention): ``inputs`` (N, in) multiplies the DAC'd input of vector n at input j (a stored
    value leaked by that factor, read by that vector), ``outputs`` (N, out) the ideal product at output o (a
    stored row leaked as a whole), ``absent`` (N, out) bool: outputs that vector does not read (future keys,
    outside the window): 0, no noise, not in the bound-management test. Noise std is that of the unleaked
    cells (additive_constant read noise depends on the input only)."""

    inputs: torch.Tensor | None = None
    outputs: torch.Tensor | None = None
    absent: torch.Tensor | None = None

    def rows(self, rows: torch.Tensor) -> "Gains":
        pick = (lambda t: None if t is None else t[rows])
        return Gains(pick(self.inputs), pick(self.outputs), pick(self.absent))

    def columns(self, cols: slice) -> "Gains":
        return Gains(None if self.inputs is None else self.inputs[:, cols], self.outputs, self.absent)


def _tile_pass(x: torch.Tensor, divisor, w: torch.Tensor, scale, io: AnalogIO, generator,
               gains: Gains | None = None) -> torch.Tensor:
    """One analog MVM of one input tile, all its output tiles: x (N, i) the tile's inputs, w (O, i) its
    weights, scale c_w per output (O,) or None. y = round(DAC(x / divisor) W^T / (h e c_w) + noise), in ADC
    steps e of the tile output (e = 1 without an ADC), before the clip at the bound; with ``gains`` (``Gains``)
    y = round((DAC(x / divisor) g_in) W^T g_out / (h e c_w) + noise), absent outputs 0."""
    half, step = io.dac_half or 1.0, io.adc_step or 1.0
    xl = _dac(x, divisor, io)
    if io.inp_noise:
        xl = xl.add_(_randn(xl.shape, xl, generator), alpha=io.inp_noise * half)
    xg = xl * gains.inputs if gains is not None and gains.inputs is not None else xl
    y = torch.matmul(xg, w.t())  # in (level x raw weight)
    inv = 1.0 / (half * step) if scale is None else (scale * (half * step)).reciprocal_()
    if not (isinstance(inv, float) and inv == 1.0):
        y = y.mul_(inv)
    if gains is not None and gains.outputs is not None:
        y = y.mul_(gains.outputs)
    std = _noise_std(xl, w, scale, io)
    if isinstance(std, torch.Tensor):
        y = y.add_(_randn(y.shape, y, generator).mul_(std))  # not addcmul_: its fused rounding can move an ADC level
    elif std:
        y = y.add_(_randn(y.shape, y, generator), alpha=std)
    if gains is not None and gains.absent is not None:
        y = y.masked_fill_(gains.absent, 0.0)
    return y.round_() if io.adc_step else y


def _saturated(y: torch.Tensor, bound: float, out_sizes: tuple[int, ...]) -> torch.Tensor:
    """(N, n_out): some output of that vector's output tile beyond the bound (max y > bound or min y < -bound;
    two reductions, no |y| temporary, and faster than torch.aminmax along a dimension on the CPU)."""
    if len(set(out_sizes)) == 1:
        parts = [y.view(y.shape[0], len(out_sizes), out_sizes[0])]
    else:
        parts = [part[:, None, :] for part in y.split(list(out_sizes), dim=-1)]
    over = [(p.amax(dim=-1) > bound) | (p.amin(dim=-1) < -bound) for p in parts]
    return over[0] if len(over) == 1 else torch.cat(over, dim=-1)


def _clip_and_rescale(y: torch.Tensor, col, row, io: AnalogIO) -> torch.Tensor:
    """Clip at the bound (in ADC steps), then back to weight units in place: y col row, col = s e (r) per
    vector (N, 1) or a number, row = c_w alpha per output (O,) or None."""
    if io.out_bound:
        bound = io.out_bound / (io.adc_step or 1.0)
        y = y.clamp_(-bound, bound)
    if row is not None:
        y = y.mul_(row)
    return y if isinstance(col, float) and col == 1.0 else y.mul_(col)


def _take_rows(value, rows):
    """The entries of a per-vector (N, 1) factor for ``rows``; a number or a per-tile 0-d tensor as it is."""
    return value[rows] if isinstance(value, torch.Tensor) and value.dim() == 2 else value


def _bound_management(y, over, x, used, col, w, scale, row, io: AnalogIO, generator, out_sizes, gains=None):
    """Iterative bound management in place on one input tile's output ``y`` (N, O, weight units): the vectors
    with a saturated output tile (``over``, (N, n_out)) are redone with the input divided by s r, r = 2, 4, ...,
    and fresh noise; the output tiles that saturated take the new output (times r), until none saturates or r
    reaches ``io.bm_limit()``."""
    bound = io.saturation_level()
    sizes = torch.tensor(out_sizes, device=y.device)
    limit, r, fail = io.bm_limit(), 1.0, over
    while r < limit and bool(fail.any()):
        r *= 2
        rows = fail.any(dim=-1).nonzero().squeeze(1)
        u, c = _take_rows(used, rows), _take_rows(col, rows)
        y_r = _tile_pass(x[rows], u * r, w, scale, io, generator, None if gains is None else gains.rows(rows))
        over_r = _saturated(y_r, bound, out_sizes)
        y_r = _clip_and_rescale(y_r, c * r, row, io)
        redo = fail[rows]  # (R, n_out): these output tiles of these vectors take the new pass
        y[rows] = torch.where(redo.repeat_interleave(sizes, dim=1), y_r, y[rows])
        fail[rows] = redo & over_r
    return y


def _input_tile(x, used, col, w, scale, row, io: AnalogIO, generator, out_sizes, gains=None) -> torch.Tensor:
    """One input tile's contribution (N, O) in weight units: its pass, clip, rescale (y e s c_w alpha) and,
    with iterative bound management, the redone vectors."""
    y = _tile_pass(x, used, w, scale, io, generator, gains)
    iterative = io.out_bound and io.bound_management == "iterative"
    over = _saturated(y, io.saturation_level(), out_sizes) if iterative else None
    y = _clip_and_rescale(y, col, row, io)
    if over is not None and bool(over.any()):
        y = _bound_management(y, over, x, used, col, w, scale, row, io, generator, out_sizes, gains)
    return y


def _noise_management(x: torch.Tensor, io: AnalogIO, input_range):
    """(s used to normalize, (N, 1) or a number, s applied at the output) of one input tile's inputs x (N, i):
    ABS_MAX, NONE, CONSTANT, or the tile's static range. A zero vector (ABS_MAX, no input noise) gives a zero
    output, as rpucuda."""
    mode = io.input_range
    if mode == "dynamic":
        s = x.abs().amax(dim=-1, keepdim=True)
        used = torch.where(s > 0, s, torch.ones_like(s))
        return used, (used if io.inp_noise else s)
    if mode == "none":
        return 1.0, 1.0
    if mode == "calibrated":
        if input_range is None:
            raise NoisyNNError("input_range 'calibrated' needs the measured ranges (ConverterHooks.calibrate)")
        return input_range, input_range
    return float(mode), float(mode)


def _calibrated_ranges(input_range, n_in: int, like: torch.Tensor):
    """The static range of each input tile as 0-d tensors in x's dtype (None when there is none)."""
    if input_range is None:
        return [None] * n_in
    r = torch.as_tensor(input_range, dtype=like.dtype, device=like.device).reshape(-1)
    return [r[i] if r.numel() > 1 else r[0] for i in range(n_in)]


def _row_factors(scales, alpha, lay: TileLayout, dtype) -> list:
    """Per input tile, (c_w per output (O,) or None, c_w alpha per output (O,) or None)."""
    alpha_rows = None
    if alpha is not None:
        sizes = torch.tensor(lay.out_sizes, device=alpha.device)
        alpha_rows = alpha.to(dtype).reshape(lay.n_in, lay.n_out).repeat_interleave(sizes, dim=1)
    out = []
    for i in range(lay.n_in):
        scale = None if scales is None else scales[i, 0]
        row = scale if alpha_rows is None else (alpha_rows[i] if scale is None else scale * alpha_rows[i])
        out.append((scale, row))
    return out


def analog_matmul(x: torch.Tensor, weight: torch.Tensor, io: AnalogIO, *, input_range=None,
                  generator: torch.Generator | None = None, scales: torch.Tensor | None = None,
                  alpha: torch.Tensor | None = None, gains: Gains | None = None) -> torch.Tensor:
    """The analog forward x W^T of one layer without bias (see the module doc), in x's dtype and device:
    y = sum over input tiles of ADC(MVM(DAC(x_tile / s r))) e s r c_w alpha.

    ``weight``: (out, in) in weight units. ``input_range``: the static range per input tile (a number or a
    tensor of n_in) for ``io.input_range == "calibrated"``. ``generator``: the stream of every noise draw (on
    x's device), drawn input tile by input tile (input noise, then output noise, then bound-management redos).
    ``scales``: c_w per tile output, (n_in, 1, out), as from ``weight_scales`` (default: from ``weight``; the
    hooks pass those of the programmed weights, as aihwkit fixes them at programming). ``alpha``: (n_in, n_out)
    drift-compensation factors per tile, applied after the ADC. ``gains``: per-vector factors on the cells read
    and absent outputs (``Gains``, over x's vectors flattened to (N, ...)).
    """
    out_f, in_f = weight.shape
    lay = tile_layout(out_f, in_f, io.tile_size)
    lead = x.shape[:-1]
    xf = x.reshape(-1, in_f)
    w = weight if weight.dtype == x.dtype else weight.to(x.dtype)
    if scales is None:
        scales = weight_scales(w, io, lay)
    elif scales.dtype != x.dtype:
        scales = scales.to(x.dtype)
    ranges = _calibrated_ranges(input_range, lay.n_in, xf) if io.input_range == "calibrated" else [None] * lay.n_in
    step = io.adc_step or 1.0
    acc = None
    for (cols, (scale, row), rng) in zip(lay.in_slices(), _row_factors(scales, alpha, lay, x.dtype), ranges):
        xi = xf[:, cols]
        used, applied = _noise_management(xi, io, rng)
        y = _input_tile(xi, used, applied * step, w[:, cols], scale, row, io, generator, lay.out_sizes,
                        None if gains is None else gains.columns(cols))
        acc = y if acc is None else acc.add_(y)
    return acc.reshape(*lead, out_f)


def dac_levels(x: torch.Tensor, io: AnalogIO, input_range=None) -> torch.Tensor:
    """The DAC's integer levels of ``x`` (N, in) per input tile, (n_in, N, i_max): round(x / s * half), clipped."""
    lay = tile_layout(1, x.shape[-1], io.tile_size)
    xf = x.reshape(-1, x.shape[-1])
    ranges = _calibrated_ranges(input_range, lay.n_in, xf) if io.input_range == "calibrated" else [None] * lay.n_in
    levels = xf.new_zeros(lay.n_in, xf.shape[0], lay.i_max)
    for i, (cols, rng) in enumerate(zip(lay.in_slices(), ranges)):
        used, _ = _noise_management(xf[:, cols], io, rng)
        levels[i, :, : lay.in_sizes[i]] = _dac(xf[:, cols], used, io)
    return levels


def tile_readout(weight: torch.Tensor, io: AnalogIO, *, generator=None, scales=None) -> torch.Tensor:
    """mean |y| per tile (n_in, n_out) of the one-hot probes sent through each tile's analog forward (noise, ADC
    and bound management included; output in tile units times the bound-management reduction), clamped at 1e-4:
    aihwkit's ``GlobalDriftCompensation.readout`` (``inference/compensation/drift.py`` l.28-38) of
    ``tile.forward(eye(in))`` (``simulator/tiles/inference.py`` l.149-157). The probe enters the tile as e_j
    (ABS_MAX leaves it unchanged, max|e_j| = 1, and a calibrated range is applied before the tile, as aihwkit's
    input range; a fixed number c is CONSTANT noise management inside the tile: e_j / c, output times c)."""
    out_f, in_f = weight.shape
    lay = tile_layout(out_f, in_f, io.tile_size)
    w = weight.detach()
    if scales is None:
        scales = weight_scales(w, io, lay)
    constant = 1.0 if isinstance(io.input_range, str) else float(io.input_range)
    col = (io.adc_step or 1.0) * constant
    means = []
    for (cols, (scale, _)) in zip(lay.in_slices(), _row_factors(scales, None, lay, w.dtype)):
        probes = torch.eye(cols.stop - cols.start, dtype=w.dtype, device=w.device)
        if constant != 1.0:  # CONSTANT noise management is inside aihwkit's tile: the probe enters as e_j / c
            probes = probes / constant
        y = _input_tile(probes, 1.0, col, w[:, cols], scale, None, io, generator, lay.out_sizes).abs_()
        means.append(torch.stack([part.mean() for part in y.split(list(lay.out_sizes), dim=-1)]))
    return torch.stack(means).clamp_(min=1e-4)
