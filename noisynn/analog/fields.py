"""The analog setting's fields, each declared once: default, bounds, unit, choices, help (no torch).

As aihwkit's ``simulator/parameters/io.py`` writes every ``IOParameters`` field with its default and docstring
under it, this module declares every field of the analog setting once: the converters of ``AnalogIO``
(noisynn.analog.mvm) and the device parameters of the noise classes (noisynn.noise.pcm, .faults; ``df`` of
student_t). Everything else is made from these declarations: ``AnalogIO``'s and the noise constructors' defaults,
the CLI flags (noisynn.analog.flags, options.flags: type, choices, help with default and unit), their bounds
(options.parser.FLAG_BOUNDS), the explorer's controls (noisynn.ui.controls, from those flags), the
``aihwkit_default`` preset, and the checks of ``AnalogSetting.from_flags`` (noisynn.analog.setting).

A field's value is checked by ``Field.read`` (typed or as text, the CLI's wording) against its domain (``least``,
``choices``) and, where given, by ``Field.bound`` against ``most``: the largest value a run can finish with.
``off`` is the value a converter field takes when the converters are on by other flags only (no DAC, no ADC,
no output noise): each converter flag turns on only its own effect unless --analog_io or a preset is given.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Callable

from ..errors import NoisyNNError
from ..tiling import DEFAULT_TILE_SIZE, parse_tile_size

GROUPS = ("mapping", "device", "converters", "tiles", "bound_management", "noise_management", "compensation",
          "attention")
KINDS = ("int", "float", "fraction", "bool", "choice", "tile", "range")
_SIGMA = ("beyond 1e30 no float32 headroom is left (its largest value is 3.4e38): weights, figure axes and "
          "summaries overflow to inf, where every model was pure noise long before")
_BITS = "float32 resolves at most 2^24 steps; more bits change nothing"
NOT_GIVEN = object()  # ``Field.off`` of a field that the converters' on-switch leaves at its default
F32_TINY, F32_MAX = 2.0 ** -126, (2 - 2.0 ** -23) * 2.0 ** 127  # float32's smallest normal and largest magnitude


def float32_error(number: float) -> str | None:
    """Why ``number`` (finite, float64) degenerates in float32 (0, subnormal or inf while it is not), else None.

    The weights and activations are float32: a parameter that becomes 0 there draws no noise (student_t df 1e-300)
    or divides by zero (an input range of 1e-300), silently."""
    if number == 0 or math.isnan(number):
        return None
    stored = as_float32(number)  # rounded to nearest: 1.17549435082e-38 is stored as the normal 2^-126
    if math.isinf(stored):
        return f"{number:g} is inf in float32 (it takes magnitudes up to {F32_MAX:.4g})"
    if abs(stored) < F32_TINY:
        return (f"{number:g} is {'0' if stored == 0 else 'subnormal'} in float32 (the smallest "
                f"normal magnitude is {F32_TINY:.4g})")
    return None


def as_float32(number: float) -> float:
    """``number`` as float32 stores it (round to nearest; +-inf past its range)."""
    try:
        return struct.unpack("f", struct.pack("f", number))[0]
    except OverflowError:
        return math.copysign(math.inf, number)


@dataclass(frozen=True)
class Need:
    """What gives a field's value a meaning: ``holds(view)`` over the setting in effect (noisynn.analog.setting
    ``AnalogSetting.view``: every field's value, given or from a preset or the declared default, with
    ``converters`` on/off and ``noise_type``). A field given while its need does not hold means nothing in that
    combination and is refused with ``message`` (``str.format`` over the view)."""

    holds: Callable[[dict], bool]
    message: str


@dataclass(frozen=True)
class Field:
    """One field of the analog setting.

    ``kind``: int, float, fraction (a float in [0, 1]), bool, choice, tile (IN or INxOUT), range (a choice or a
    number > 0). ``least`` (``strict``: > rather than >=): the smallest value; ``most`` and ``why``: the largest
    value a run can finish with, and why (options.parser.FLAG_BOUNDS). ``io``: a field of ``AnalogIO``;
    ``device``: a parameter of the device noise classes' constructors; ``flag``: has a CLI flag of its own;
    ``suppress``: that flag is absent from run.json's config unless given (argparse.SUPPRESS).
    """

    name: str
    group: str
    kind: str
    default: object
    help: str
    unit: str = ""
    least: float | None = None
    strict: bool = False
    most: float | None = None
    why: str = ""
    choices: tuple = ()
    off: object = NOT_GIVEN
    io: bool = False
    device: bool = False
    flag: bool = True
    suppress: bool = True
    default_text: str = ""
    metavar: str | None = None
    needs: tuple = ()

    def show(self, value) -> str:
        """A value as the CLI writes it: 512x512, 1e+12, true."""
        if self.kind == "tile" and value is not None:
            return "x".join(str(v) for v in value)
        if isinstance(value, bool):
            return str(value).lower()
        return f"{value:g}" if isinstance(value, float) else str(value)

    @property
    def flag_help(self) -> str:
        """The flag's help: the declared text, then its default and unit."""
        default = self.default_text or self.show(self.default)
        if self.off is not NOT_GIVEN and not self.default_text:
            default = f"{default} with --analog_io, else {'off' if self.off in (None, 0.0) else self.show(self.off)}"
        unit = f"; unit: {self.unit}" if self.unit else ""
        return f"{self.help} (default: {default}{unit})"

    def read(self, value):
        """The typed value of ``value`` (typed, or text as typed in a box), checked against the field's domain;
        raises NoisyNNError worded as the CLI's argument errors (without the flag's name)."""
        text = value.strip() if isinstance(value, str) else value
        if self.kind == "bool":
            if isinstance(text, bool):
                return text
            if str(text).lower() in ("true", "false"):
                return str(text).lower() == "true"
            raise NoisyNNError(f"'{value}' is not true or false")
        if self.kind == "choice":
            if text not in self.choices:
                raise NoisyNNError(f"invalid choice: '{value}' (choose from {', '.join(map(repr, self.choices))})")
            return text
        if self.kind == "tile":
            return parse_tile_size(text)
        if self.kind == "range":
            return self._range(text)
        number = self._number(value, text)
        if self.kind == "fraction" and not 0 <= number <= 1:
            raise NoisyNNError(f"'{value}' must lie in [0, 1]")
        if self.least is not None and (number <= self.least if self.strict else number < self.least):
            unit = " bits" if self.unit == "bits" else ""
            raise NoisyNNError(f"'{value}' must be {'>' if self.strict else '>='} {self.least:g}{unit}")
        if self.most is not None and number > self.most:  # before float32's limit: the bound's reason says more
            raise NoisyNNError(above(number, self.most, self.why))
        degenerate = float32_error(number) if self.kind != "int" else None
        if degenerate:  # the run computes in float32: 1e-300 would be 0 there, 1e39 inf
            raise NoisyNNError(f"'{value}': {degenerate}")
        return number

    def _number(self, value, text):
        if self.kind == "int":
            if isinstance(text, bool) or (isinstance(text, float) and text != int(text)):
                raise NoisyNNError(f"'{value}' is not an integer")
            try:
                return int(text)
            except (TypeError, ValueError):
                raise NoisyNNError(f"'{value}' is not an integer") from None
        if isinstance(text, bool):
            raise NoisyNNError(f"'{value}' is not a number")
        try:
            number = float(text)
        except (TypeError, ValueError):
            raise NoisyNNError(f"'{value}' is not a number") from None
        if not math.isfinite(number):
            raise NoisyNNError(f"'{value}' is not a finite number")
        return number

    def _range(self, text):
        if text in self.choices:
            return text
        try:
            number = float(text)
        except (TypeError, ValueError):
            raise NoisyNNError(f"{self.name} is {', '.join(self.choices)} or a number, got '{text}'") from None
        if not (math.isfinite(number) and number > 0):
            raise NoisyNNError(f"a fixed {self.name} must be > 0, got {text}")
        degenerate = float32_error(number)
        if degenerate:
            raise NoisyNNError(f"a fixed {self.name} of {text}: {degenerate}")
        return number

    def bound(self, value) -> str | None:
        """The message for a value above ``most`` (each of a tile's two sizes), else None."""
        if self.most is None:
            return None
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > self.most:
                return above(v, self.most, self.why)
        return None

    def check(self, value):
        """``read`` and ``bound``, with the flag's name: the one check of a value given for this field."""
        try:
            typed = self.read(value)
        except NoisyNNError as err:
            raise NoisyNNError(f"--{self.name}: {err}") from None
        message = self.bound(typed)
        if message:
            raise NoisyNNError(f"--{self.name}: {message}")
        return typed

    def cli_value(self, value):
        """The value as the CLI's parser stores it (run.json's config): a tile as a list, a range as typed."""
        typed = self.read(value)
        if self.kind == "tile":
            return list(typed)
        if self.kind == "range":
            return value.strip() if isinstance(value, str) else value
        return typed


def above(value, most, why: str) -> str:
    """The one wording of a value above its bound (options.parser.bound_error, ``Field.bound``)."""
    show = (lambda x: f"{x:,}" if isinstance(x, int) else f"{x:g}")
    return f"{show(value)} is above {show(most)}, the most it takes ({why})"


def _declare(*fields: Field) -> dict[str, Field]:
    out = {}
    for f in fields:
        if f.name in out or f.group not in GROUPS or f.kind not in KINDS:
            raise ValueError(f"bad declaration of field '{f.name}'")
        out[f.name] = f
    return out


# In the CLI's order within each group: the converter group (noisynn.analog.flags) and the device group
# (options.flags); the explorer's controls and its reproducing command follow this order.
FIELDS: dict[str, Field] = _declare(
    # converters: aihwkit IOParameters() (simulator/parameters/io.py l.46-238) at commit 4545f11
    Field("dac_bits", "converters", "int", 7, "input DAC bits (2^bits - 2 steps over the input range; aihwkit inp_res)",
          unit="bits", least=2, most=32, why=_BITS, off=None, io=True),
    Field("adc_bits", "converters", "int", 9, "output ADC bits (2^bits - 2 steps over [-out_bound, out_bound]; "
          "aihwkit out_res)", unit="bits", least=2, most=32, why=_BITS, off=None, io=True),
    Field("out_noise", "converters", "float", 0.06, "output noise std per tile output (aihwkit out_noise)",
          unit="--out_noise_units", least=0, most=1e30, why=_SIGMA, off=0.0, io=True),
    Field("out_bound", "converters", "float", 12.0, "ADC bound per tile output (aihwkit out_bound); an ADC "
          "without a bound gets this default", unit="--out_noise_units", least=0, strict=True, most=1e30,
          why=_SIGMA, off=None, io=True),
    Field("out_noise_units", "mapping", "choice", "tile", "units of out_noise and out_bound: 'tile' (aihwkit's "
          "default: normalized input x weight as stored) | 'normalized' (input range x max|W| of the tile, or of "
          "its row with --scale relative_channel; aihwkit weight_scaling_omega 1)", choices=("tile", "normalized"),
          io=True),
    Field("input_range", "noise_management", "range", "dynamic", "dynamic (per-token abs-max per input tile) | "
          "none (inputs clipped to [-1, 1]) | calibrated (static per input tile, on 512 training tokens; see "
          "--range_calibration) | a number", choices=("dynamic", "none", "calibrated"), io=True),
    Field("range_std", "noise_management", "float", 0.0, "calibrated ranges: K x std of the tile's input "
          "(aihwkit's init_std_alpha) instead of max|x| (0: max|x|)", unit="input std", least=0, most=1e6,
          why="a range of a million standard deviations is no range", io=True,
          needs=(Need(lambda v: v["input_range"] == "calibrated", "sets calibrated input ranges, and the input "
                      "range is {input_range}: give --input_range calibrated (or a preset that calibrates)"),)),
    Field("range_calibration", "noise_management", "choice", "analog", "calibrated ranges are measured through "
          "the analog forward, each layer converting with its running range (analog, as aihwkit-lightning "
          "initialises them) | digital: layers digital while measured (the former way)",
          choices=("analog", "digital"), io=True),
    Field("bound_management", "bound_management", "choice", "iterative", "iterative (aihwkit's default): a "
          "vector whose output saturates the ADC is redone with its input halved, up to --max_bm_factor | none: "
          "outputs are clipped", choices=("iterative", "none"), io=True),
    Field("max_bm_factor", "bound_management", "float", 1000.0, "largest input reduction of iterative bound "
          "management (aihwkit also stops at max_bm_res / DAC step)", least=1, most=2.0 ** 60,
          why="the input would be divided below any float's resolution", io=True,
          needs=(Need(lambda v: v["bound_management"] != "none", "means nothing with bound management none "
                      "(outputs are clipped, no input is reduced)"),)),
    Field("inp_noise", "converters", "float", 0.0, "input noise std after the DAC (aihwkit inp_noise)",
          unit="input range", least=0, most=1e30, why=_SIGMA, io=True),
    Field("w_noise", "converters", "float", 0.0, "weight read noise drawn at every MVM (needs --w_noise_type)",
          unit="--out_noise_units", least=0, most=1e30, why=_SIGMA, io=True,
          needs=(Need(lambda v: v["w_noise"] == 0 or v["w_noise_type"] != "none", "needs --w_noise_type "
                      "additive_constant or pcm_read (with none no weight read noise is drawn)"),)),
    Field("w_noise_type", "converters", "choice", "none", "additive_constant: y_i += w_noise ||x|| xi | pcm_read: "
          "y_i += w_noise sqrt(sum_j |W_ij| x_j^2) xi (aihwkit OutputWeightNoiseType)",
          choices=("none", "additive_constant", "pcm_read"), io=True,
          needs=(Need(lambda v: v["w_noise_type"] == "none" or v["w_noise"] > 0, "needs --w_noise > 0 (with "
                      "w_noise {w_noise:g} no weight read noise is drawn)"),)),
    # converter fields without a flag of their own (set by presets, --scale, or in code)
    Field("per_channel", "mapping", "bool", False, "with scaled weights, the scale c_w is max|W| per row of each "
          "tile, else per tile (aihwkit weight_scaling_columnwise; from --scale relative_channel)", io=True,
          flag=False),
    Field("max_bm_res", "bound_management", "float", 0.25, "iterative bound management stops once the reduction "
          "passes max_bm_res / DAC step (aihwkit max_bm_res)", least=0, strict=True, io=True, flag=False),
    Field("weight_scaling_omega", "mapping", "float", 0.0, "max|W| of a tile maps to omega in the tile (0: "
          "weights unscaled; aihwkit weight_scaling_omega)", least=0, io=True, flag=False),
    # device: the noise classes' constructor parameters (noisynn.noise.pcm, .faults, .additive)
    Field("df", "device", "float", 3.0, "degrees of freedom for student_t", least=0, strict=True, most=1e6,
          why="student_t beyond df 1e6 is a gaussian; use --noise_type gaussian", device=True, suppress=False),
    Field("t_seconds", "device", "float", 86400.0, "pcm: read time after programming",
          unit="s", least=0, most=1e12, device=True,
          why="the drift model is calibrated for seconds to years; 1e12 s is 30,000 years"),
    Field("drift_compensation", "compensation", "bool", False, "pcm: global drift compensation, one digital "
          "factor per layer", device=True),
    Field("stuck_fraction", "device", "fraction", 0.0, "pcm: fraction of devices stuck; for stuck_at the "
          "fraction is sigma", device=True),
    Field("stuck_on_ratio", "device", "fraction", 0.5, "pcm, stuck_at: share of stuck devices stuck at g_max "
          "rather than 0", device=True),
    Field("clip_std", "mapping", "float", None, "pcm, stuck_at: map min(max|W|, K std(W)) to g_max, clipping "
          "larger weights", unit="std(W)", least=0, strict=True, default_text="no clip", device=True),
    Field("tile_size", "tiles", "tile", DEFAULT_TILE_SIZE, "analog tiles of at most IN inputs x OUT outputs, for "
          "the PCM mapping and the converters (aihwkit MappingParameter max_input_size, max_output_size; 0 = the "
          "whole layer)", unit="weights", most=1_048_576, why="no layer is that wide", io=True, device=True,
          metavar="IN[xOUT]", needs=(Need(lambda v: v["converters"] or v["noise_params"] is None
                                          or "tile_size" in v["noise_params"], "means nothing without converters or "
                                          "a device model: noise '{noise_type}' has no tiles"),)),
    Field("pair", "device", "choice", "tile", "pcm: 'tile' (aihwkit): the programmed weight is turned back into a "
          "fresh pair that drifts; 'independent': both devices drift and are read independently",
          choices=("tile", "independent"), device=True),
    Field("compensation_method", "compensation", "choice", "readout", "pcm --drift_compensation: 'readout' "
          "(aihwkit): per tile, one-hot probes through the layer's analog forward, factor applied after the ADC; "
          "'exact': sum|W_prog| / sum|W_t| per layer, folded into the weights", choices=("readout", "exact"),
          device=True, needs=(Need(lambda v: bool(v["drift_compensation"]), "needs --drift_compensation (without "
                                   "it no drift compensation runs)"),)),
)

# analog attention and its gain-cell KV store (noisynn.analog.attention; Leroux et al., Nat. Comput. Sci. 2025):
# flags of their own (noisynn.analog.flags.add_attention_args), not part of the projections' setting above
ATTENTION_FIELDS: dict[str, Field] = _declare(
    Field("kv_bits", "attention", "int", None, "write DAC of the stored K and V: 2^bits - 2 steps over [-r, r] "
          "(the paper: 8 levels, about 3 bits)", unit="bits", least=2, most=24, why=_BITS, default_text="off"),
    Field("kv_range", "attention", "range", "row", "write range r of a stored vector: row (its own abs-max, kept "
          "digitally with it) | a number (one fixed range, activations clipped)", choices=("row",)),
    Field("kv_write_noise", "attention", "float", 0.0, "write noise std of each stored cell, drawn once when "
          "written", unit="full scale r", least=0, most=1e30, why=_SIGMA),
    Field("kv_read_noise", "attention", "float", 0.0, "read noise drawn at every use: y_i += kv_read_noise "
          "||x_n|| xi per MVM output (aihwkit additive_constant w_noise)", unit="full scale r", least=0, most=1e30,
          why=_SIGMA),
    Field("kv_tau", "attention", "float", None, "retention: a stored value decays as exp(-age / tau), age in "
          "decode steps (the paper's 1.6e-4 per step is tau 6250)", unit="tokens", least=0, strict=True, most=1e30,
          why=_SIGMA, default_text="no leak"),
    Field("kv_tau_spread", "attention", "float", 0.0, "device-to-device spread of tau: lognormal, tau_cell = tau "
          "exp(spread xi), tau the median (0: one tau, the paper's)", unit="ln tau std", least=0, most=10.0,
          why="a spread of 10 in ln tau spans e^20 between neighbours"),
    Field("kv_tau_per", "attention", "choice", "row", "what one tau draw covers: row (one stored vector's cells "
          "of one kv head) | array (a layer's kv head)", choices=("row", "array")),
    Field("attn_window", "attention", "int", 0, "sliding window: a query reads only the last N stored keys "
          "(gain-cell arrays of N rows; 0 = the whole context)", unit="tokens", least=0, most=1_048_576,
          why="no model's context is longer", default_text="whole context"),
    Field("attn_dac_bits", "attention", "int", None, "DAC of both attention MVMs' inputs (queries, attention "
          "weights)", unit="bits", least=2, most=24, why=_BITS, default_text="off"),
    Field("attn_adc_bits", "attention", "int", None, "ADC of both attention MVMs' outputs (needs "
          "--attn_out_bound)", unit="bits", least=2, most=24, why=_BITS, default_text="off"),
    Field("attn_out_noise", "attention", "float", 0.0, "output noise std of both attention MVMs, per tile output",
          unit="normalized input x full scale", least=0, most=1e30, why=_SIGMA),
    Field("attn_out_bound", "attention", "float", None, "ADC bound of both attention MVMs, iterative bound "
          "management", unit="normalized input x full scale", least=0, strict=True, most=1e30, why=_SIGMA,
          default_text="none"),
    Field("attn_tile", "attention", "tile", (64, 64), "gain-cell sub-arrays: IN x OUT (QK: head dims x keys; AV: "
          "keys x head dims; the paper's 64-row arrays, their outputs summed digitally)", unit="cells", most=1_048_576,
          why="no layer is that wide", metavar="IN[xOUT]"),
)

IO_FIELDS = tuple(n for n, f in FIELDS.items() if f.io)  # AnalogIO's declared fields
DEVICE_PARAMS = tuple(n for n, f in FIELDS.items() if f.device)  # the noise constructors' (spec.NOISE_PARAMS)


def default(name: str):
    """The declared default of field ``name`` (``AnalogIO``'s and the noise constructors' defaults read it)."""
    return FIELDS[name].default


def io_defaults() -> dict:
    """``AnalogIO``'s fields at their declared defaults: aihwkit's IOParameters() + MappingParameter()."""
    return {n: FIELDS[n].default for n in IO_FIELDS}


def defaults_text() -> str:
    """The converter flags' defaults in words (the --analog_io help, the aihwkit_default preset's summary)."""
    return ", ".join(f"{n} {f.show(f.default)}" for n, f in FIELDS.items() if f.io and f.flag)
