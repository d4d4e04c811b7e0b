"""The converter flags: presets, DAC, ADC, noise and bound management, units (noisynn.analog.mvm.AnalogIO).

Every flag defaults to argparse.SUPPRESS: left out of run.json's config unless given, so older run folders
resume. ``spec.converter_spec_from_args`` turns them into a checked ``ConverterSpec``. ``--tile_size`` (shared
with the PCM mapping), ``--pair`` and ``--compensation_method`` are device flags (``options.add_noise_args``).
"""

from __future__ import annotations

import argparse

from ..errors import NoisyNNError
from ..options.argtypes import nonneg_float, positive_float, positive_int
from .presets import PRESETS


def add_converter_args(p: argparse.ArgumentParser) -> None:
    """The analog forward on the targeted layers (noisynn.analog.hooks.ConverterHooks); off unless a flag is given."""

    g = p.add_argument_group("converters (the analog forward of the targeted layers, per tile; aihwkit IOParameters "
                             "conventions; see docs/analog.md)")
    g.add_argument("--analog_preset", choices=tuple(PRESETS), default=argparse.SUPPRESS,
                   help="start from a named setting: " + "; ".join(f"{n}: {p.summary}" for n, p in PRESETS.items())
                        + ". Flags given override its fields")
    g.add_argument("--analog_io", action="store_true", default=argparse.SUPPRESS,
                   help="turn on aihwkit's defaults (= --analog_preset aihwkit_default): DAC 7 bits, ADC 9 bits, "
                        "out_noise 0.06, out_bound 12, iterative bound management, 512x512 tiles")
    g.add_argument("--dac_bits", type=_bits, default=argparse.SUPPRESS,
                   help="input DAC bits (2^bits - 2 steps over the input range)")
    g.add_argument("--adc_bits", type=_bits, default=argparse.SUPPRESS,
                   help="output ADC bits (2^bits - 2 steps over [-out_bound, out_bound]; bound 12 unless given)")
    g.add_argument("--out_noise", type=nonneg_float, default=argparse.SUPPRESS,
                   help="output noise std per tile output, in --out_noise_units")
    g.add_argument("--out_bound", type=positive_float, default=argparse.SUPPRESS,
                   help="ADC bound per tile output, in --out_noise_units")
    g.add_argument("--out_noise_units", choices=("tile", "normalized"), default=argparse.SUPPRESS,
                   help="units of out_noise and out_bound: 'tile' (aihwkit's default: normalized input x weight as "
                        "stored) | 'normalized' (input range x max|W| of the tile, or of its row with --scale "
                        "relative_channel; aihwkit weight_scaling_omega 1)")
    g.add_argument("--input_range", default=argparse.SUPPRESS,
                   help="dynamic (per-token abs-max per input tile, default) | none (inputs clipped to [-1, 1]) | "
                        "calibrated (static per input tile, on 512 training tokens; see --range_calibration) | a number")
    g.add_argument("--range_std", type=nonneg_float, default=argparse.SUPPRESS,
                   help="calibrated ranges: K x std of the tile's input (aihwkit's init_std_alpha) instead of max|x|")
    g.add_argument("--range_calibration", choices=("analog", "digital"), default=argparse.SUPPRESS,
                   help="calibrated ranges are measured through the analog forward, each layer converting with its "
                        "running range (default, as aihwkit-lightning initialises them) | digital: layers digital "
                        "while measured (the former way)")
    g.add_argument("--bound_management", choices=("iterative", "none"), default=argparse.SUPPRESS,
                   help="iterative (aihwkit's default): a vector whose output saturates the ADC is redone with its "
                        "input halved, up to --max_bm_factor | none: outputs are clipped")
    g.add_argument("--max_bm_factor", type=positive_float, default=argparse.SUPPRESS,
                   help="largest input reduction of iterative bound management (default 1000; aihwkit also stops "
                        "at max_bm_res 0.25 / DAC step)")
    g.add_argument("--inp_noise", type=nonneg_float, default=argparse.SUPPRESS,
                   help="input noise std after the DAC, in units of the input range (default 0)")
    g.add_argument("--w_noise", type=nonneg_float, default=argparse.SUPPRESS,
                   help="weight read noise drawn at every MVM (needs --w_noise_type), in --out_noise_units")
    g.add_argument("--w_noise_type", choices=("none", "additive_constant", "pcm_read"), default=argparse.SUPPRESS,
                   help="additive_constant: y_i += w_noise ||x|| xi | pcm_read: y_i += w_noise sqrt(sum_j |W_ij| "
                        "x_j^2) xi (aihwkit OutputWeightNoiseType)")


def tile_size(text: str) -> list[int]:
    """argparse type of ``--tile_size``: IN or INxOUT (0 = the whole layer) -> [IN, OUT] (a list: run.json's
    config reads back equal on resume)."""
    from ..tiling import parse_tile_size

    try:
        return list(parse_tile_size(text))
    except NoisyNNError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _bits(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"'{text}' must be >= 2 bits")
    return value
