"""The analog forward of a layer, as aihwkit computes it: tiles, noise and bound management, DAC, MVM, ADC.

``analog_matmul(x, W, io)`` is one layer's analog product without bias, ``AnalogIO`` its settings;
noisynn.converters puts it on the targeted layers of a model as forward hooks. Sources (IBM/aihwkit, commit 4545f11, ``src/aihwkit/``):

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
    bound management  "iterative": while an output of the vector saturates (|y| > out_bound), the vector is
            redone with r doubled and fresh noise, until r > max_bm_factor or r > max_bm_res / d
            (``analog_mvm.py`` l.116-160, the loop at l.128). The test is per vector, as in rpucuda's CPU
            ``forwardVector`` (``rpu_forward_backward_pass.cpp`` l.901-987) and CUDA's per-batch scale values (``cuda/io_manager.cu``
            l.292-325); aihwkit's pure-torch tile tests the whole batch at once. Only failing vectors are redone.
    out     y s r c_w alpha: back to weight units; alpha = the tile's drift-compensation factor (applied after
            the ADC, ``simulator/tiles/inference.py`` ``post_forward`` l.268-282; see noisynn.compensation)

Not modelled: IR drop (``ir_drop``), output non-linearity, asymmetries, voltage offsets, stochastic rounding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .errors import NoisyNNError
from .noise.mapping import tile_shape
from .tiles import TileLayout, tile_layout, weight_scales

INPUT_RANGES = ("dynamic", "none", "calibrated")
BOUND_MANAGEMENT = ("iterative", "none")
W_NOISE_TYPES = ("none", "additive_constant", "pcm_read")
OUT_NOISE_UNITS = ("tile", "normalized")
DEFAULT_TILE = (512, 512)


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


@dataclass
class AnalogIO:
    """The analog tile's periphery (aihwkit ``IOParameters`` + ``MappingParameter`` conventions; 0 / None = off).

    Defaults are aihwkit's ``IOParameters()`` and ``MappingParameter()`` (``simulator/parameters/io.py`` l.46-238,
    ``mapping.py`` l.46-91): DAC 7 bits, ADC 9 bits, out_noise 0.06, out_bound 12, ABS_MAX noise management,
    ITERATIVE bound management (max_bm_factor 1000, max_bm_res 0.25), tiles of 512 x 512, weights unscaled in
    the tile (out_noise and out_bound in units of normalized input x raw weight).

    ``input_range``: "dynamic" (per-token abs-max per input tile), "none" (inputs used as they are, clipped to
    [-1, 1]), "calibrated" (one static range per input tile, measured by ``ConverterHooks.calibrate``: max|x|, or
    ``range_std`` x std(x) averaged over the calibration windows as aihwkit's input-range init) or a number.
    ``per_channel``: with scaled weights, the scale c_w is max|W| per row of each tile (else per tile).
    ``tile_size``: (max inputs, max outputs) of a tile, 0 = the whole layer in that dimension.
    ``out_noise_units``: "tile" (weights as stored, scaled only when ``weight_scaling_omega`` > 0) or
    "normalized" (omega = 1: units of input range x max|W|). ``preset``: the name this was resolved from.
    """

    dac_bits: int | None = 7
    adc_bits: int | None = 9
    out_noise: float = 0.06
    out_bound: float | None = 12.0
    input_range: str | float = "dynamic"
    per_channel: bool = False
    tile_size: tuple[int, int] = DEFAULT_TILE
    bound_management: str = "iterative"
    max_bm_factor: float = 1000.0
    max_bm_res: float = 0.25
    inp_noise: float = 0.0
    w_noise: float = 0.0
    w_noise_type: str = "none"
    out_noise_units: str = "tile"
    weight_scaling_omega: float = 0.0
    range_std: float = 0.0
    preset: str | None = None

    def __post_init__(self):
        for name in ("dac_bits", "adc_bits"):
            bits = getattr(self, name)
            if bits is not None and bits < 2:
                raise NoisyNNError(f"{name} must be >= 2 (2^bits - 2 steps), got {bits}")
        for name in ("out_noise", "inp_noise", "w_noise", "weight_scaling_omega", "range_std"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise NoisyNNError(f"{name} must be a number >= 0, got {value}")
        if self.out_bound is not None and not self.out_bound > 0:
            self.out_bound = None
        if self.adc_bits and not self.out_bound:
            raise NoisyNNError("an ADC needs an output bound (out_bound > 0)")
        if isinstance(self.input_range, str) and self.input_range not in INPUT_RANGES:
            try:
                self.input_range = float(self.input_range)
            except ValueError:
                raise NoisyNNError(f"input_range is {', '.join(INPUT_RANGES)} or a number, "
                                   f"got '{self.input_range}'") from None
        if not isinstance(self.input_range, str) and not (math.isfinite(self.input_range) and self.input_range > 0):
            raise NoisyNNError(f"a fixed input_range must be > 0, got {self.input_range}")
        self.tile_size = parse_tile_size(self.tile_size)
        for name, known in (("bound_management", BOUND_MANAGEMENT), ("w_noise_type", W_NOISE_TYPES),
                            ("out_noise_units", OUT_NOISE_UNITS)):
            if getattr(self, name) not in known:
                raise NoisyNNError(f"{name} is one of {', '.join(known)}, got '{getattr(self, name)}'")
        if not self.max_bm_factor >= 1 or not self.max_bm_res > 0:
            raise NoisyNNError("max_bm_factor must be >= 1 and max_bm_res > 0")
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
    def adc_step(self) -> float | None:
        return 2 * self.out_bound / (2 ** self.adc_bits - 2) if self.adc_bits else None

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


# ---------------------------------------------------------------- one pass through the tiles


def _randn(shape, like: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def _tile_pass(xn: torch.Tensor, wt: torch.Tensor, scale, io: AnalogIO, generator, out_mask, n_out: int,
               in_mask=None):
    """One analog MVM of normalized inputs ``xn`` (T, N, i_max) on tiles ``wt`` (T, O, i_max); ``in_mask``
    (T, 1, i_max): the real inputs of padded tiles (input noise on padding would enter ||x||).

    Returns (y, saturated): y (T, N, O) after the ADC in ADC steps (y x adc_step is the output in tile units;
    the step is 1 without an ADC), saturated (T, N, n_out): an output of that tile's vector beyond the bound.
    Works in DAC levels and ADC steps so that the output tensor is touched as few times as possible."""
    half = io.dac_half or 1.0
    if io.dac_half:
        xl = torch.round(xn * half).clamp_(-half, half)  # DAC levels: d = 1 / half = 2 / steps of [-1, 1]
    else:
        xl = xn.clamp(-1.0, 1.0)
    if io.inp_noise:
        xl = xl.add_(_randn(xl.shape, xl, generator), alpha=io.inp_noise * half)
        if in_mask is not None:
            xl = xl.mul_(in_mask)
    step = io.adc_step or 1.0
    y = torch.matmul(xl, wt.transpose(-1, -2))  # in (level x raw weight)
    inv = 1.0 / (half * step)  # -> ADC steps of the tile output
    if scale is not None:
        inv = (scale * (half * step)).reciprocal_()
    if not (isinstance(inv, float) and inv == 1.0):
        y = y.mul_(inv)
    # Weight read noise and output noise are independent Gaussians at each output: one draw with the summed
    # variance has exactly their sum's distribution (and halves the cost of drawing).
    std: torch.Tensor | float = io.out_noise / step
    if io.w_noise and io.w_noise_type != "none":
        if io.w_noise_type == "additive_constant":  # w_noise ||x_n||_2, x_n = levels / half
            var = torch.linalg.vector_norm(xl, dim=-1, keepdim=True).square_().mul_((io.w_noise / half) ** 2)
        else:  # pcm_read: w_noise^2 sum_j |W_ij / c_w| x_nj^2
            var = torch.matmul(xl * xl, wt.abs().transpose(-1, -2))
            var = var.mul_(io.w_noise ** 2 / half ** 2) if scale is None else var.div_(scale / (io.w_noise / half) ** 2)
        std = var.clamp_(min=0).add_(io.out_noise ** 2).sqrt_().div_(step)
    if isinstance(std, torch.Tensor):
        y = y.add_(_randn(y.shape, y, generator).mul_(std))
    elif std:
        y = y.add_(_randn(y.shape, y, generator), alpha=std)
    if io.adc_step:
        y = y.round_()
    if not io.out_bound:
        return y, None
    bound = io.out_bound / step
    t, n, o = y.shape
    probe = y if out_mask is None else y * out_mask
    peak = probe.view(t, n, n_out, o // n_out).abs().amax(dim=-1)
    y = y.clamp_(-bound, bound)
    return y, peak > bound


def _noise_management(xt: torch.Tensor, io: AnalogIO, input_range):
    """(scale used to normalize (T, N, 1) or float, scale applied at the output): ABS_MAX, NONE, CONSTANT, or a
    static range per input tile. A zero vector (ABS_MAX, no input noise) gives a zero output, as rpucuda."""
    mode = io.input_range
    if mode == "dynamic":
        s = xt.abs().amax(dim=-1, keepdim=True)
        nonzero = s > 0
        used = torch.where(nonzero, s, torch.ones_like(s))
        return used, (used if io.inp_noise else s)
    if mode == "none":
        return 1.0, 1.0
    if mode == "calibrated":
        if input_range is None:
            raise NoisyNNError("input_range 'calibrated' needs the measured ranges (ConverterHooks.calibrate)")
        r = torch.as_tensor(input_range, dtype=xt.dtype, device=xt.device).reshape(-1, 1, 1)
        return r, r
    return float(mode), float(mode)


def analog_matmul(x: torch.Tensor, weight: torch.Tensor, io: AnalogIO, *, input_range=None,
                  generator: torch.Generator | None = None, scales: torch.Tensor | None = None,
                  alpha: torch.Tensor | None = None) -> torch.Tensor:
    """The analog forward x W^T of one layer without bias (see the module doc), in x's dtype and device.

    ``weight``: (out, in) in weight units. ``input_range``: the static range per input tile (a number or a
    tensor of n_in) for ``io.input_range == "calibrated"``. ``generator``: the stream of every noise draw (on
    x's device). ``scales``: c_w per tile output as from ``weight_scales`` (default: from ``weight``; the hooks
    pass those of the programmed weights, as aihwkit fixes them at programming). ``alpha``: (n_in, n_out)
    drift-compensation factors per tile, applied after the ADC.
    """
    out_f, in_f = weight.shape
    lay = tile_layout(out_f, in_f, io.tile_size)
    lead = x.shape[:-1]
    xf = x.reshape(-1, in_f)
    w = weight if weight.dtype == x.dtype else weight.to(x.dtype)
    xt = lay.split_inputs(xf)  # (n_in, N, i_max)
    wt = lay.pack_weight(w)  # (n_in, O, i_max)
    if scales is None:
        scales = weight_scales(w, io, lay)
    elif scales.dtype != x.dtype:
        scales = scales.to(x.dtype)
    used, applied = _noise_management(xt, io, input_range)
    out_mask = lay.out_mask(x.device)
    in_mask = lay.in_mask(x.device) if io.inp_noise else None
    y, over = _tile_pass(xt / used if not isinstance(used, float) or used != 1.0 else xt, wt, scales, io,
                         generator, out_mask, lay.n_out, in_mask)
    factor = applied if io.adc_step is None else applied * io.adc_step
    if over is not None and io.bound_management == "iterative" and bool(over.any()):
        red = _bound_management(y, over, xt, used, wt, scales, io, generator, out_mask, lay, in_mask)
        factor = red * factor
    if scales is not None:
        factor = factor * scales
    if alpha is not None:
        factor = factor * alpha.to(x.dtype).repeat_interleave(lay.o_max, dim=1)[:, None, :]
    if not (isinstance(factor, float) and factor == 1.0):
        y = y.mul_(factor)
    out = y.sum(dim=0) if lay.n_in > 1 else y[0]
    return lay.merge_outputs(out).reshape(*lead, out_f)


def _bound_management(y, over, xt, used, wt, scales, io: AnalogIO, generator, out_mask, lay: TileLayout,
                      in_mask=None):
    """Iterative bound management in place on ``y``: the (tile, vector) pairs that saturated are redone with the
    input divided by r = 2, 4, ... and fresh noise, until none saturates or r reaches ``io.bm_limit()``.
    Returns r per output (n_in, N, O)."""
    red = torch.ones(over.shape, dtype=y.dtype, device=y.device)  # (n_in, N, n_out)
    limit = io.bm_limit()
    r = 1.0
    fail = over
    while r < limit and bool(fail.any()):
        r *= 2
        for i in range(lay.n_in):
            rows = fail[i].any(dim=-1).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            xi = xt[i:i + 1, rows]
            ui = used[i:i + 1, rows] if isinstance(used, torch.Tensor) and used.shape[1] > 1 else (
                used[i:i + 1] if isinstance(used, torch.Tensor) else used)
            si = scales[i:i + 1] if scales is not None else None
            mi = in_mask[i:i + 1] if in_mask is not None else None
            yi, oi = _tile_pass(xi / (ui * r), wt[i:i + 1], si, io, generator, out_mask, lay.n_out, mi)
            redo = fail[i, rows]  # (R, n_out): these tiles of these vectors take the new pass
            cols = redo.repeat_interleave(lay.o_max, dim=1)
            y[i, rows] = torch.where(cols, yi[0], y[i, rows])
            red[i, rows] = torch.where(redo, torch.full_like(red[i, rows], r), red[i, rows])
            fail[i, rows] = redo & oi[0]
    return red.repeat_interleave(lay.o_max, dim=2)


def dac_levels(x: torch.Tensor, io: AnalogIO, input_range=None) -> torch.Tensor:
    """The DAC's integer levels of ``x`` (N, in) per input tile, (n_in, N, i_max): round(x / s * half), clipped."""
    lay = tile_layout(1, x.shape[-1], io.tile_size)
    xt = lay.split_inputs(x.reshape(-1, x.shape[-1]))
    used, _ = _noise_management(xt, io, input_range)
    return torch.round(xt / used * io.dac_half).clamp_(-io.dac_half, io.dac_half)


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
    wt = lay.pack_weight(w)
    if scales is None:
        scales = weight_scales(w, io, lay)
    eye = torch.eye(lay.i_max, dtype=w.dtype, device=w.device)
    valid_in = torch.zeros(lay.n_in, lay.i_max, dtype=torch.bool, device=w.device)
    for i, s in enumerate(lay.in_sizes):
        valid_in[i, :s] = True
    probes = eye.expand(lay.n_in, -1, -1) * valid_in[:, :, None]  # padded probes are zero
    constant = 1.0 if isinstance(io.input_range, str) else float(io.input_range)
    if constant != 1.0:  # CONSTANT noise management is inside aihwkit's tile: the probe enters as e_j / c
        probes = probes / constant
    out_mask = lay.out_mask(w.device)
    in_mask = valid_in[:, None, :] if io.inp_noise and lay.in_mask(w.device) is not None else None
    y, over = _tile_pass(probes, wt, scales, io, generator, out_mask, lay.n_out, in_mask)
    if over is not None and io.bound_management == "iterative" and bool(over.any()):
        y = y * _bound_management(y, over, probes, 1.0, wt, scales, io, generator, out_mask, lay, in_mask)
    if io.adc_step or constant != 1.0:
        y = y * ((io.adc_step or 1.0) * constant)
    valid = valid_in[:, :, None] & (out_mask if out_mask is not None else torch.ones(
        lay.n_out * lay.o_max, dtype=torch.bool, device=w.device))[None, None, :]
    y = y.abs() * valid
    sums = y.sum(dim=1).view(lay.n_in, lay.n_out, lay.o_max).sum(dim=-1)
    counts = valid.sum(dim=1).view(lay.n_in, lay.n_out, lay.o_max).sum(dim=-1)
    return (sums / counts).clamp_(min=1e-4)
