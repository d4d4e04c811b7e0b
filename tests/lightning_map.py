"""noisynn's analog settings as aihwkit-lightning 2.1.0 layers (the cross-check's and the benchmark's mapping).

aihwkit-lightning is a test / benchmark dependency only (installed with ``pip install --no-deps``,
requirements-test-nodeps.txt); the library never imports it. Its analog forward
(``TorchLinear.linear`` in ``aihwkit_lightning/nn/modules/torch_utils/torch_linear.py``), per input
slice t (a tile of at most ``mapping.max_input_size`` inputs, all outputs) and per token:

    r_t      = max|x_t| (``input_range.dynamic``), or the slice's stored ``input_range[t]`` (inputs clipped to +-r_t)
    x_q      = round(x_t / d) d,  d = 2 r_t / inp_res                      (inp_res = 2^dac_bits - 2 steps)
    w_t      = max|W_t| over the whole slice (``assumed_wmax.max()``: per tensor within the tile)
    y_t      = x_q W_t^T (+ out_noise / sqrt(n_slices) r_t w_t N(0, 1), TRAINING MODE ONLY)
    b_t      = r_t out_bound w_t;  y_t = clip(round(y_t / s) s, -b_t, b_t),  s = 2 b_t / out_res
    y        = sum_t y_t (+ bias)

so lightning's settings map onto noisynn's AnalogIO as (setting names of noisynn in the keys below):

    dac_bits          -> forward.inp_res = 2^bits - 2       (None -> -1: no DAC)
    adc_bits          -> forward.out_res = 2^bits - 2       (None -> -1: no ADC)
    out_bound         -> forward.out_bound                  (None -> 0: no clipping)
    out_noise         -> forward.out_noise = out_noise sqrt(n_slices), in normalized units (r_t w_t);
                         lightning adds it in training mode only: build the layer with train=True
    tile_in           -> mapping.max_input_size             (0 -> -1: one slice; lightning never splits outputs)
    input_range       -> pre_post.input_range: enable, dynamic ("dynamic") or a stored range per slice
                         (a number; not learned, init_from_data = 0 so training mode does not overwrite it)
    w_noise (per MVM) -> modifier.noise_type ADD_NORMAL, std_dev = w_noise: W_t + w_noise w_t N(0, 1),
                         training mode only, drawn once per forward call (shared by the call's tokens)

Not in lightning, so outside the cross-check: bound management (it only clips, = noisynn's "none"),
noise management NONE with a DAC or an ADC (lightning asserts an input range), output tiles
(``max_output_size``), input noise, PCM_READ weight noise, per-MVM (per-token) independence of weight noise.
"""

from __future__ import annotations

import math

import torch


def analog_io(dac_bits=None, adc_bits=None, out_bound=None, out_noise=0.0, tile_in=0, input_range="dynamic",
              w_noise=0.0, bound_management="none", tile_out=0, out_noise_units="normalized"):
    """noisynn's AnalogIO for the same settings: per-tensor (per-tile) w_max, output noise in normalized
    units (r x max|W_tile|, lightning's), weight noise additive relative to max|W_tile|.

    ``out_noise_units = "tile"`` (aihwkit's default: weights unscaled in the tile) puts out_noise, out_bound and
    w_noise in units of r x raw weight: lightning's values are noisynn's / max|W_t|, which is one number only
    when every tile has the same max|W| (the cross-check builds such a weight). ``tile_out = 0`` keeps all
    outputs on one tile (lightning never splits outputs); the cross-check uses
    bound_management "none" (lightning only clips); the benchmark also times "iterative" and output tiles.
    """
    from noisynn.analog.mvm import AnalogIO

    return AnalogIO(dac_bits=dac_bits, adc_bits=adc_bits, out_bound=out_bound, out_noise=out_noise,
                    input_range=input_range, per_channel=False, tile_size=(tile_in, tile_out),
                    bound_management=bound_management, out_noise_units=out_noise_units, inp_noise=0.0,
                    w_noise=w_noise, w_noise_type="additive_constant" if w_noise else "none")


def lightning_available() -> bool:
    try:
        import aihwkit_lightning  # noqa: F401
    except ImportError:
        return False
    return True


def split_sizes(size: int, max_size: int) -> list[int]:
    """aihwkit's and lightning's split of ``size`` inputs into tiles of at most ``max_size``: equal pieces
    (``get_split_sizes`` in aihwkit ``simulator/tiles/array.py`` and lightning ``nn/modules/linear.py``)."""
    if max_size <= 0:
        return [size]
    n = -(-size // max_size)
    base, extra = divmod(size, n)
    return [base + (i < extra) for i in range(n)]


def rpu_config(*, dac_bits=None, adc_bits=None, out_bound=None, out_noise=0.0, tile_in=0,
               input_range="dynamic", w_noise=0.0, in_features=None):
    """A lightning ``TorchInferenceRPUConfig`` for noisynn's settings (the mapping in the module doc).

    ``out_noise`` is noisynn's per-tile std in normalized units; lightning's value is that times
    sqrt(n_slices), so ``in_features`` is needed when out_noise > 0 and the layer has several slices.
    """
    from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig
    from aihwkit_lightning.simulator.parameters.enums import WeightNoiseInjectionType

    cfg = TorchInferenceRPUConfig()
    cfg.forward.inp_res = 2 ** dac_bits - 2 if dac_bits else -1
    cfg.forward.out_res = 2 ** adc_bits - 2 if adc_bits else -1
    cfg.forward.out_bound = float(out_bound or 0.0)
    cfg.mapping.max_input_size = tile_in if tile_in else -1
    n_slices = len(split_sizes(in_features, cfg.mapping.max_input_size)) if in_features else 1
    if out_noise and in_features is None and tile_in:
        raise ValueError("out_noise on several slices needs in_features (lightning divides by sqrt(n_slices))")
    cfg.forward.out_noise = float(out_noise) * math.sqrt(n_slices)
    cfg.forward.out_noise_per_channel = False
    ir = cfg.pre_post.input_range
    ir.enable = input_range is not None
    ir.dynamic = input_range == "dynamic"
    ir.learn_input_range = False
    ir.init_from_data = 0
    if not isinstance(input_range, str) and input_range is not None:
        ir.init_value = float(input_range)
    if w_noise:
        cfg.modifier.noise_type = WeightNoiseInjectionType.ADD_NORMAL
        cfg.modifier.std_dev = float(w_noise)
    return cfg


def lightning_linear(weight: torch.Tensor, *, train: bool = False, **settings):
    """A bias-free lightning ``AnalogLinear`` holding ``weight`` (out x in), in weight's dtype and device.

    ``train=True`` puts it in training mode, the only mode in which lightning adds output and weight
    noise; call it under ``torch.no_grad()``. Settings: see ``rpu_config``.
    """
    from aihwkit_lightning.nn import AnalogLinear

    out_features, in_features = weight.shape
    cfg = rpu_config(in_features=in_features, **settings)
    layer = AnalogLinear(in_features, out_features, bias=False, device=weight.device, dtype=weight.dtype,
                         rpu_config=cfg)
    layer.set_weights(weight)
    layer.requires_grad_(False)
    return layer.train(train)


def lightning_reference(x: torch.Tensor, weight: torch.Tensor, *, dac_bits=None, adc_bits=None, out_bound=None,
                        tile_in=0, input_range="dynamic") -> torch.Tensor:
    """The noiseless formula of the module doc, written out: checks that lightning does what the mapping says."""
    out = 0
    start = 0
    for size in split_sizes(weight.shape[1], tile_in):
        xs, ws = x[..., start:start + size], weight[:, start:start + size]
        start += size
        if input_range == "dynamic":
            r = xs.abs().amax(dim=-1, keepdim=True)
        else:
            r = torch.as_tensor(float(input_range), dtype=x.dtype)
            xs = xs.clamp(-r, r)
        if dac_bits:
            d = 2 * r / (2 ** dac_bits - 2)
            xs = torch.round(xs / d) * d
        y = xs @ ws.T
        if out_bound:
            b = r * out_bound * ws.abs().max()
            if adc_bits:
                s = 2 * b / (2 ** adc_bits - 2)
                y = torch.round(y / s) * s
            y = torch.minimum(torch.maximum(y, -b), b)
        out = out + y
    return out
