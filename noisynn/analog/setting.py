"""The analog setting, built and checked once from flag values: converters and device parameters together.

``AnalogSetting`` plays the role of aihwkit's ``InferenceRPUConfig``: one typed object for the analog side of a
run, whose fields are declared once in noisynn.analog.fields. ``AnalogSetting.from_flags(flags)`` takes the flag
values (typed, as argparse gives them, or text, as typed in the explorer's boxes), checks each with its
declaration (one-line ``NoisyNNError``, the CLI's wording) and yields the converters (``io()``, ``converter_spec()``:
None when no converter is asked for), the device parameters of the noise class (``device_params()``) and what
run.json records (``record()``). The command line (``spec.converter_spec_from_args``) and the explorer
(noisynn.ui.setting) both go through it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import NoisyNNError
from ..noise.base import NOISE_REGISTRY, noise_parameters
from .fields import DEVICE_PARAMS, FIELDS, NOT_GIVEN
from .mvm import AnalogIO
from .presets import PRESETS

# The converter flags (AnalogIO fields with a flag of their own); any of them given turns the converters on.
CONVERTER_FLAGS = tuple(n for n, f in FIELDS.items() if f.io and f.flag and not f.device)
# Shared with the device mapping (PCM tiles): sets the converters' tiles but does not turn them on.
SHARED_CONVERTER_FLAGS = tuple(n for n, f in FIELDS.items() if f.io and f.flag and f.device)
SWITCHES = ("analog_preset", "analog_io")  # the flags that start from a whole setting
# read, not checked here: --scale relative_channel scales the weights per row (per_channel); the noise type says
# which device parameters mean something (its constructor's) and whether tiles do (a device model)
CONTEXT = ("scale", "noise_type")


@dataclass(frozen=True)
class ConverterSpec:
    """Checked converter settings: the tile's ``io`` and where a calibrated input range is measured.

    ``text_file`` / ``dataset``: the evaluation text's source (its training split, or its head, calibrates);
    ``calibration_tokens``: tokens of it; ``max_length``: the window of the calibration passes.
    """

    io: AnalogIO
    text_file: str | None = None
    dataset: str | None = None
    calibration_tokens: int = 512
    max_length: int = 512


@dataclass(frozen=True)
class AnalogSetting:
    """A checked analog setting: the fields given (typed) and the preset or aihwkit defaults it starts from.

    ``values``: declared field -> typed value, only those given; ``preset``: a name of noisynn.analog.presets;
    ``analog_io``: start from the declarations' defaults (= preset aihwkit_default); ``scale``: the noise's
    ``--scale`` (checked by noisynn.spec), read for ``per_channel``; ``noise_type``: the weight noise (a name or
    an instance; None: unknown, its rules are not checked).
    """

    values: dict = field(default_factory=dict)
    preset: str | None = None
    analog_io: bool = False
    scale: str | None = None
    noise_type: object = None

    @classmethod
    def from_flags(cls, flags: dict, filled=(), fixed: dict | None = None) -> "AnalogSetting":
        """The setting of ``flags`` (declared field names, ``analog_preset``, ``analog_io``, ``scale``,
        ``noise_type``; None or an empty text = not given); raises NoisyNNError in one line (``--flag: reason``,
        bounds from the declarations), also for a field given where it means nothing (``combination_error``).

        ``filled``: names in ``flags`` that were filled in, not given (a preset's device fields): never refused for
        their combination. ``fixed``: fields the experiment sets itself (drift_over_time: drift compensation per
        point), seen by the combination rules only."""
        known = list(FIELDS) + list(SWITCHES) + list(CONTEXT)
        unknown = sorted(set(flags) - set(known))
        if unknown:
            raise NoisyNNError(f"unknown analog setting '{unknown[0]}'; known: {', '.join(known)}")
        given = {k: v for k, v in flags.items() if v is not None and not (isinstance(v, str) and not v.strip())}
        values = {k: FIELDS[k].check(v) for k, v in given.items() if k in FIELDS}
        preset = given.get("analog_preset")
        if preset is not None and preset not in PRESETS:
            raise NoisyNNError(f"--analog_preset: invalid choice: '{preset}' (choose from "
                               f"{', '.join(map(repr, PRESETS))})")
        analog_io = given.get("analog_io", False)
        if not isinstance(analog_io, bool):
            analog_io = str(analog_io).strip().lower() == "true"
        if analog_io and preset:
            raise NoisyNNError("give --analog_preset or --analog_io (= --analog_preset aihwkit_default), not both")
        setting = cls(values, preset, analog_io, given.get("scale"), given.get("noise_type"))
        message = setting.combination_error(set(values) - set(filled), fixed)
        if message:
            raise NoisyNNError(message)
        return setting

    @classmethod
    def from_args(cls, args, combinations: bool = True) -> "AnalogSetting":
        """The setting of an experiment's parsed flags (those it has; a flag not given is absent or None). Fields
        a preset filled in (``args._defaulted``, noisynn.spec.resolve_preset) are not given; ``args._fixed``: the
        fields the experiment sets itself. ``combinations=False`` checks each value alone (the explorer's starting
        controls: ``--t_seconds`` starts the pcm control even while the page starts on gaussian)."""
        names = list(FIELDS) + list(SWITCHES) + list(CONTEXT)
        flags = {k: getattr(args, k) for k in names if hasattr(args, k)}
        filled = FIELDS if not combinations else getattr(args, "_defaulted", ())
        return cls.from_flags(flags, filled=filled, fixed=getattr(args, "_fixed", None))

    def view(self, fixed: dict | None = None) -> dict:
        """The setting in effect, as the fields' ``Need`` rules read it: every declared field's value (the
        converters' as ``io()`` resolves them, the device fields given, else the declared defaults), ``fixed``
        over them, and ``converters`` (on or off), ``noise_type``, ``noise_params`` (its constructor's
        parameters; None when unknown)."""
        out = {n: f.default for n, f in FIELDS.items()}
        io = self.io()
        if io is not None:
            out.update({k: v for k, v in asdict(io).items() if k in FIELDS})
        out.update({k: v for k, v in self.values.items() if not FIELDS[k].io})
        out.update(fixed or {})
        name = self.noise_type if isinstance(self.noise_type, str) or self.noise_type is None \
            else getattr(self.noise_type, "name", type(self.noise_type).__name__)
        params = None if self.noise_type is None else noise_parameters(self.noise_type)
        return {**out, "converters": io is not None, "noise_type": name, "noise_params": params}

    def combination_error(self, given, fixed: dict | None = None) -> str | None:
        """The one line for a field among ``given`` that means nothing in this setting, else None: a device
        parameter the noise's constructor does not take, or a field whose ``Need`` (noisynn.analog.fields) fails."""
        view = self.view(fixed)
        params = view["noise_params"]
        for name, f in FIELDS.items():
            if name not in given:
                continue
            if f.device and not f.io and params is not None and name not in params:
                takers = sorted(n for n in NOISE_REGISTRY if name in (noise_parameters(n) or ()))
                return (f"--{name}: noise '{view['noise_type']}' has no such parameter (a parameter of "
                        f"{', '.join(takers) or 'no registered noise'})")
            for need in f.needs:
                if not need.holds(view):
                    return f"--{name}: {need.message.format(**view)}"
        return None

    @property
    def converters_on(self) -> bool:
        return bool(self.preset or self.analog_io or any(k in self.values for k in CONVERTER_FLAGS))

    def io(self) -> AnalogIO | None:
        """The converters' ``AnalogIO``, or None when no converter flag, ``analog_io`` or preset is given.

        A preset (or ``analog_io``: the declarations' defaults) is the start; without one each converter flag turns
        on only its own effect (the others ``off``: no DAC, no ADC, no output noise). Given fields override the
        start. An ADC without a bound gets the declared default bound. ``per_channel`` (given, or from ``--scale
        relative_channel``) applies unless a preset sets it.
        """
        if not self.converters_on:
            return None
        if self.preset:
            start = {k: v for k, v in asdict(PRESETS[self.preset].io()).items()}
        else:
            start = {n: (f.default if self.analog_io or f.off is NOT_GIVEN else f.off)
                     for n, f in FIELDS.items() if f.io}
        given = {k: v for k, v in self.values.items() if FIELDS[k].io and k != "per_channel"}
        values = {**start, **given}
        if values.get("adc_bits") and not values.get("out_bound"):
            values["out_bound"] = FIELDS["out_bound"].default
        if not self.preset:
            values["per_channel"] = self.per_channel
        return AnalogIO(**values)

    @property
    def per_channel(self) -> bool:
        if "per_channel" in self.values:
            return self.values["per_channel"]
        return self.scale == "relative_channel"

    def converter_spec(self, text_file: str | None = None, dataset: str | None = None, max_length: int = 512):
        """The converters as a ``spec.ConverterSpec`` (where a calibrated range is measured), or None."""
        io = self.io()
        return None if io is None else ConverterSpec(io, text_file, dataset, max_length=max_length)

    def device_params(self) -> dict:
        """The noise class's constructor parameters given (``tile_size`` as (in, out)): ``spec.noise_params``."""
        return {k: self.values[k] for k in DEVICE_PARAMS if k in self.values}

    def record(self) -> dict | None:
        """What run.json records of the converters (config ``analog``): the resolved ``AnalogIO``, or None."""
        io = self.io()
        return None if io is None else asdict(io)


def cli_values(flags: dict) -> dict:
    """Flag values (typed or text, as ``from_flags`` takes them) as the CLI's parser stores them in run.json's
    config: a tile as a list, an input range as typed, a switch as True; flags not given are left out."""
    out = {}
    for k, v in flags.items():
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if k in FIELDS:
            out[k] = FIELDS[k].cli_value(v)
        elif k == "analog_io":
            out[k] = v is True or str(v).strip().lower() == "true"
        elif k == "analog_preset":
            out[k] = str(v).strip()
    return out
