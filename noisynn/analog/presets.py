"""Named analog settings (``--analog_preset NAME``): aihwkit_default, aihwkit_hwa, afm, with their sources.

A preset is a whole setting, as aihwkit's ``InferenceRPUConfig`` is one object.

A preset is a setting that overrides fields (aihwkit ``simulator/presets/``): each value is a field declared
in noisynn.analog.fields and passes that field's check (tests/analog/test_setting.py); ``aihwkit_default`` is
the declarations' defaults themselves. A preset holds the converters and tiles (an ``AnalogIO``: DAC, ADC, noise
and bound management, units) and the device side (``device``: the weight-to-conductance mapping ``scale``, the ``pair`` through drift, the drift
``compensation_method``, and the device model it was written for). A flag given with a preset overrides that one
field; run.json records which fields came from the preset and which from flags (``noisynn.spec.resolve_preset``).
The device fields apply where the noise is a device model (pcm, pcm_afm, stuck_at): for an additive
distribution ``--scale`` is the unit of sigma, not a conductance mapping, and stays the experiment's.
Sources: IBM/aihwkit at commit 4545f11 (``src/aihwkit/...``), IBM/analog-foundation-models (AFM) at its
published commit (``data/training_files/meta-llama/Llama-3.2-1B-Instruct/config.yaml``, ``apply_noise_model.py``),
IBM/aihwkit-lightning 2.1.0 (``src/aihwkit_lightning/nn/modules/torch_utils/torch_linear.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .fields import io_defaults
from .mvm import AnalogIO
from ..errors import NoisyNNError


@dataclass(frozen=True)
class Preset:
    """A named ``AnalogIO``: its field values, a one-line summary, the sources and what is not modelled."""

    name: str
    summary: str
    values: dict
    sources: tuple[str, ...]
    notes: str = ""
    device: dict = field(default_factory=dict)

    def io(self, **overrides) -> AnalogIO:
        return AnalogIO(**{**self.values, **overrides, "preset": self.name})

    def describe(self) -> dict:
        return {"name": self.name, "summary": self.summary, "sources": list(self.sources), "notes": self.notes,
                "device": dict(self.device)}


PRESETS: dict[str, Preset] = {}


def _register(preset: Preset) -> None:
    PRESETS[preset.name] = preset


_register(Preset(
    "aihwkit_default",
    "aihwkit IOParameters() + MappingParameter(): the declared defaults (noisynn.analog.fields), as --analog_io "
    "lists them; weights unscaled in the tile",
    io_defaults(),
    ("aihwkit src/aihwkit/simulator/parameters/io.py l.46 inp_bound 1, l.49 inp_noise 0, l.56 inp_res 1/(2^7-2), "
     "l.74 out_bound 12, l.77 out_noise 0.06, l.105 out_res 1/(2^9-2), l.129 ITERATIVE, l.138 ABS_MAX, "
     "l.141-145 w_noise 0 / NONE, l.222 max_bm_factor 1000, l.228 max_bm_res 0.25",
     "aihwkit src/aihwkit/simulator/parameters/mapping.py l.46 weight_scaling_omega 0, l.53 columnwise False, "
     "l.79 max_input_size 512, l.91 max_output_size 512"),
    "out_noise and out_bound are in units of (normalized input) x (raw weight): weights are not rescaled in the "
    "tile (omega = 0). Drift compensation on or off stays the experiment's choice (drift_over_time reads both).",
    device=dict(noise_type="pcm", scale="relative_max", pair="tile", compensation_method="readout",
                source="aihwkit InferenceRPUConfig (simulator/configs/configs.py l.152-240: noise_model l.187, drift_compensation l.195, clip/remap/modifier off): PCMLikeNoiseModel (g_max 25 "
                       "uS), GlobalDriftCompensation, SinglePairConductanceConverter: one abs-max per tile maps to "
                       "g_max (inference/converter/conductance.py l.55)")))

_register(Preset(
    "aihwkit_hwa",
    "aihwkit StandardHWATrainingPreset forward + mapping: DAC 8 bits, ADC 8 bits, out_noise 0.04, out_bound 10, "
    "no bound management, static input range, PCM_READ w_noise 0.0175, 512-input tiles, weights scaled per row",
    dict(dac_bits=8, adc_bits=8, out_noise=0.04, out_bound=10.0, input_range="calibrated", per_channel=True,
         tile_size=(512, 0), bound_management="none", max_bm_factor=1000.0, max_bm_res=0.25, inp_noise=0.0,
         w_noise=0.0175, w_noise_type="pcm_read", out_noise_units="normalized", weight_scaling_omega=0.0,
         range_std=3.0),
    ("aihwkit src/aihwkit/simulator/presets/inference.py l.78-88 mapping: weight_scaling_omega 1.0, "
     "weight_scaling_columnwise True, max_input_size 512, max_output_size 0; l.90-103 forward: inp_res 254, "
     "out_res 254, bound_management NONE, noise_management CONSTANT nm_thres 1.0, w_noise 0.0175 PCM_READ, "
     "ir_drop 1.0, out_noise 0.04, out_bound 10; l.117-132 pre_post input_range enabled, init_from_data 100, "
     "init_std_alpha 3.0",
     "aihwkit src/aihwkit/simulator/presets/utils.py l.24-63 PresetIOParameters (the rest of the forward)"),
    "IR drop (ir_drop 1.0) is not modelled. The input range is learned during HWA training in aihwkit; here it is "
    "measured on calibration text as aihwkit initialises it (3 x std of the tile's input, averaged over "
    "windows by their tokens, through the analog forward). "
    "weight_scaling_omega 1 = out_noise_units normalized; learned out scales (1 at start) are not modelled.",
    device=dict(noise_type="pcm", scale="relative_channel", pair="tile", compensation_method="readout",
                source="aihwkit presets/inference.py l.78-88: weights scaled per column (output row) to omega 1, so "
                       "the tile's abs-max mapping puts each row's max|W| at g_max; PCMLikeNoiseModel, "
                       "GlobalDriftCompensation")))

_register(Preset(
    "afm",
    "Analog Foundation Models evaluation: 8-bit static-range DAC, 8-bit ADC (out_bound 14), no output noise, "
    "512-input tiles, weights normalized per output channel of each tile",
    dict(dac_bits=8, adc_bits=8, out_noise=0.0, out_bound=14.0, input_range="calibrated", per_channel=True,
         tile_size=(512, 0), bound_management="none", max_bm_factor=1000.0, max_bm_res=0.25, inp_noise=0.0,
         w_noise=0.0, w_noise_type="none", out_noise_units="normalized", weight_scaling_omega=0.0, range_std=18.0),
    ("analog-foundation-models data/training_files/meta-llama/Llama-3.2-1B-Instruct/config.yaml l.26 "
     "forward_inp_res 254, l.27 forward_out_bound 14, l.28 forward_out_noise 0.0, l.30 forward_out_res 254, "
     "l.8 clip_type gaussian_channel, l.36-44 static learned input range (init_from_data 500, init_std_alpha 18)",
     "analog-foundation-models apply_noise_model.py l.184 max_inp_size=512 (the hardware evaluation's tiles)",
     "aihwkit-lightning 2.1.0 src/aihwkit_lightning/nn/modules/torch_utils/torch_linear.py l.133-192 (input "
     "slices, static range, DAC), l.217-222 and l.285-300 (out_bound in units of input range x per-channel "
     "max|W| of the slice), no bound management"),
    "AFM learns its input ranges during training; here they are measured on calibration text with AFM's init "
    "rule (18 x std). Weight noise is the device model's (--noise_type), not a converter setting. AFM's own "
    "hardware model is --noise_type pcm_afm (no read time); the drift studies read AFM's converters over pcm.",
    device=dict(noise_type="pcm_afm", scale="relative_channel", pair="tile", compensation_method="readout",
                source="analog-foundation-models apply_noise_model.py l.92-102: per output row, abs-max over each "
                       "tile of 512 inputs maps to G_MAX")))


# The preset fields that are device flags (options.add_noise_args), applied where the noise is a device model.
DEVICE_FIELDS = ("scale", "pair", "compensation_method", "tile_size")  # tile_size: the AnalogIO's, for the mapping too


def get_preset(name: str, **overrides) -> AnalogIO:
    """The ``AnalogIO`` of preset ``name`` (fields in ``overrides`` replace the preset's)."""
    if name not in PRESETS:
        raise NoisyNNError(f"unknown analog preset '{name}'; known: {', '.join(PRESETS)}")
    return PRESETS[name].io(**overrides)
