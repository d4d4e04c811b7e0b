"""What noise goes on which weights, and which converters on which layers: built and checked once.

``make_noise_spec`` is the one place where a noise setting is checked (the registered name and its
parameters, the scale, the targets and blocks); ``spec_from_args`` and ``converter_spec_from_args``
make the specs from an experiment's parsed flags, and the explorer (``noisynn ui``) calls
``make_noise_spec`` with its widgets' values. Library code then takes the typed specs, never the
argparse Namespace: ``NoiseInjector(model, spec)``, ``install_converters(converter_spec, lm, targets)``.
Checks that need the loaded model (do the blocks exist? do the targets match a weight?) happen
in ``targets.select_targets``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from .analog.fields import ATTENTION_FIELDS, DEVICE_PARAMS
from .analog.kv_store import AttentionSetting
from .analog.setting import CONVERTER_FLAGS, SHARED_CONVERTER_FLAGS, AnalogSetting, ConverterSpec
from .errors import NoisyNNError
from .noise import NoiseDistribution, get_noise
from .noise.schedule import LayerSchedule, make_schedule, read_table
from .placements import read_digital

SCALES = ("absolute", "relative", "relative_max", "relative_channel")
KINDS = ("attention", "mlp", "head", "embedding", "other")
PROJECTIONS = ("q", "k", "v", "o", "qkv", "gate", "up", "down")
TARGET_GROUPS = {"blocks": ("attention", "mlp"), "all": ("attention", "mlp", "head", "other")}
# Flags passed to the noise class's constructor (when given; declared in noisynn.analog.fields); the rest of a
# noise flag set is the spec's. CONVERTER_FLAGS (any given turns the converters on) and SHARED_CONVERTER_FLAGS
# (--tile_size: the converters' tiles and the device mapping's) are noisynn.analog.setting's.
NOISE_PARAMS = DEVICE_PARAMS


def parse_targets(targets: str | Sequence[str]) -> tuple[set[str], set[str]]:
    """Split a target spec into (kinds, projections); ``"blocks"`` = attention + mlp."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    kinds, projs = set(), set()
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item in TARGET_GROUPS:
            kinds.update(TARGET_GROUPS[item])
        elif item in KINDS:
            kinds.add(item)
        elif item in PROJECTIONS:
            projs.add(item)
        else:
            known = ", ".join(list(TARGET_GROUPS) + list(KINDS) + list(PROJECTIONS))
            raise NoisyNNError(f"unknown target '{item}'; known: {known}")
    if not kinds and not projs:
        raise NoisyNNError("no targets given")
    return kinds, projs


def parse_blocks(spec: str | Iterable[int] | None) -> list[int] | None:
    """Block indices from ``"0-3,7"`` (ranges inclusive), sorted; None, ``""`` or ``"all"`` = every block."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return sorted({int(b) for b in spec})
    text = spec.strip().lower()
    if text in ("", "all"):
        return None
    found: set[int] = set()
    for item in (i.strip() for i in text.split(",")):
        lo, _, hi = item.partition("-")
        if not lo.strip().isdigit() or (hi and not hi.strip().isdigit()):
            raise NoisyNNError(f"blocks take indices and ranges like 0-3,7; got '{spec}'")
        lo_i, hi_i = int(lo), int(hi) if hi else int(lo)
        if hi_i < lo_i:
            raise NoisyNNError(f"block range '{item}' runs backwards")
        found.update(range(lo_i, hi_i + 1))
    return sorted(found)


def check_scale(noise: NoiseDistribution, scale: str) -> None:
    """A device model names the scales it accepts (its weight-to-conductance mapping); others take any."""
    if scale not in SCALES:
        raise NoisyNNError(f"unknown scale '{scale}'; known: {', '.join(SCALES)}")
    allowed = getattr(noise, "scales", None)
    if allowed and scale not in allowed:
        raise NoisyNNError(f"noise '{noise.name}' maps weights to conductances by max|W| and needs --scale "
                           f"{' or '.join(allowed)} (per output channel or per tensor), got '{scale}'")


@dataclass(frozen=True)
class NoiseSpec:
    """A checked noise setting: the noise instance, its scale, and which weights it goes on.

    ``noise_type``: the registered name; ``noise``: its instance, built once with ``params``;
    ``scale``: one of SCALES (the unit u of sigma); ``targets``: comma list of kinds, groups or
    projections; ``blocks``: block indices for attention/mlp weights (None: every block);
    ``include_bias``: noise the targeted layers' biases too; ``digital``: parameter names kept digital
    (``--digital placement.json``): left out of the targets, so they stay clean and get no converters.
    ``draw_on``: where the additive noise is drawn, "cpu" (one stream for every device: the same noise on a
    CPU and a GPU) or "device" (the weight's own device: on a GPU its Philox stream, fast, other numbers).
    """

    noise_type: str
    noise: NoiseDistribution = field(compare=False, repr=False)
    params: dict = field(default_factory=dict)
    scale: str = "absolute"
    targets: str = "blocks"
    blocks: tuple[int, ...] | None = None
    include_bias: bool = False
    digital: frozenset = frozenset()
    draw_on: str = "cpu"
    schedule: LayerSchedule | None = None
    multipliers: tuple[float, ...] | None = None

    def with_targets(self, targets: str | Sequence[str], blocks: Iterable[int] | str | None = None) -> "NoiseSpec":
        """The same noise (the same instance) on other weights, checked like the original."""
        targets, blocks = _checked_targets(targets, blocks)
        return replace(self, targets=targets, blocks=blocks)


def _checked_targets(targets, blocks) -> tuple[str, tuple[int, ...] | None]:
    spec = targets if isinstance(targets, str) else ",".join(targets)
    kinds, projs = parse_targets(spec)
    block_list = parse_blocks(blocks)
    if block_list is not None and not projs and not ({"attention", "mlp"} & kinds):
        raise NoisyNNError("a block selection applies to attention/mlp targets; choose one of them or 'all' blocks")
    return spec, None if block_list is None else tuple(block_list)


def make_noise_spec(noise_type: str | NoiseDistribution = "gaussian", params: dict | None = None,
                    scale: str = "absolute", targets: str | Sequence[str] = "blocks",
                    blocks: Iterable[int] | str | None = None, include_bias: bool = False,
                    digital: Iterable[str] = (), schedule: LayerSchedule | None = None) -> NoiseSpec:
    """The one check of a noise setting (call after plugins are loaded); raises NoisyNNError in one line.

    ``digital``: tensor names kept digital (whether the model has them is checked by ``targets.select_targets``).
    ``schedule``: a per-layer schedule (``noise.schedule.make_schedule``); a constant one is stored as None.
    """
    params = {k: v for k, v in (params or {}).items() if v is not None}
    noise = get_noise(noise_type, **params)
    check_scale(noise, scale)  # also an unknown scale name
    spec, block_tuple = _checked_targets(targets, blocks)
    name = noise_type if isinstance(noise_type, str) else noise.name
    if schedule is not None and schedule.is_constant:
        schedule = None
    return NoiseSpec(name, noise, params, scale, spec, block_tuple, bool(include_bias), frozenset(digital),
                     schedule=schedule)


def schedule_from_args(args) -> LayerSchedule | None:
    """The per-layer schedule the flags ask for (``--layer_schedule --schedule_start --schedule_end
    --schedule_file --schedule_normalize``; all absent unless given), checked; None when constant."""
    kind = getattr(args, "layer_schedule", None)
    path = getattr(args, "schedule_file", None)
    start, end = getattr(args, "schedule_start", None), getattr(args, "schedule_end", None)
    normalize = getattr(args, "schedule_normalize", None)
    if kind is None and path is None and start is None and end is None and normalize is None:
        return None
    if kind is None:
        kind = "table" if path is not None else "constant"
        if kind == "constant":
            raise NoisyNNError("--schedule_start, --schedule_end and --schedule_normalize need --layer_schedule "
                               "linear, exp or cosine (or table)")
    values = read_table(path) if path is not None else None
    schedule = make_schedule(kind, start, end, values, normalize, path)
    return None if schedule.is_constant else schedule


def noise_params(args) -> dict:
    """The noise class's constructor parameters among the parsed flags (those given); tile_size as (in, out)."""
    params = {k: getattr(args, k) for k in NOISE_PARAMS if getattr(args, k, None) is not None}
    if "tile_size" in params:
        params["tile_size"] = tuple(params["tile_size"])
    return params


def preset_name(args) -> str | None:
    """The analog preset the flags name: ``--analog_preset``, or ``aihwkit_default`` for ``--analog_io``."""
    return getattr(args, "analog_preset", None) or ("aihwkit_default" if getattr(args, "analog_io", False) else None)


def preset_device_flags(preset: str | None, noise_type, given: dict) -> tuple[dict, dict]:
    """(device flags to use, record) for analog preset ``preset`` over a device model.

    ``given``: the device flags (DEVICE_FIELDS) the user gave; ``noise_type``: the experiment's noise (name or
    instance). A preset's mapping, pair and compensation method apply only where the noise is a device model
    (a class with ``scales``: it maps weights to conductances); a flag given overrides its field. The record says
    per field where its value came from ("preset" or "flag"), or why the preset's device fields did not apply.
    """
    from .analog.presets import DEVICE_FIELDS, PRESETS

    if not preset:
        return dict(given), {}
    device = PRESETS[preset].device
    noise = get_noise(noise_type) if isinstance(noise_type, str) else noise_type
    if not getattr(noise, "scales", None):
        return dict(given), {"preset": preset, "device_fields": f"not applied: '{noise.name}' is not a device model "
                                                                f"(--scale is the unit of sigma)"}
    import inspect

    accepted = set(inspect.signature(type(noise).__init__).parameters)
    device = {**device, "tile_size": list(PRESETS[preset].values["tile_size"])}
    values, skipped = {}, {}
    for k in DEVICE_FIELDS:
        if k == "scale" and device[k] not in noise.scales:
            skipped[k] = f"{device[k]} (not a mapping of '{noise.name}', which takes {', '.join(noise.scales)})"
        elif k != "scale" and k not in accepted:
            skipped[k] = f"{device[k]} ('{noise.name}' has no such parameter)"
        else:
            values[k] = device[k]
    values.update(given)
    record = {"preset": preset, "device_model": device.get("noise_type"),
              "fields": {k: ("flag" if k in given else "preset") for k in values}}
    if skipped:
        record["not_applied"] = skipped
    return values, record


def resolve_preset(args) -> dict:
    """Apply the analog preset's device fields to the parsed flags (in place; idempotent) and return the record.

    ``--scale`` filled in by its experiment default (``args._defaulted``) counts as not given; ``--pair`` and
    ``--compensation_method`` are absent unless given. The record goes to run.json (``preset_resolution``).
    """
    preset = preset_name(args)
    if not preset or not hasattr(args, "noise_type"):
        return {}
    from .analog.presets import DEVICE_FIELDS

    defaulted = getattr(args, "_defaulted", set())
    given = {k: getattr(args, k) for k in DEVICE_FIELDS if hasattr(args, k) and k not in defaulted}
    values, record = preset_device_flags(preset, args.noise_type, given)
    for k, v in values.items():
        setattr(args, k, v)
    args._defaulted = set(defaulted) | {k for k in values if k not in given}  # a second call gives the same record
    return record


def spec_from_args(args) -> NoiseSpec:
    """NoiseSpec from the noise flags (options.add_noise_args; ``--blocks`` and ``--digital`` where the
    experiment has them), after the analog preset's device fields (``resolve_preset``)."""
    resolve_preset(args)
    if args.scale not in SCALES:  # the same check as make_noise_spec's, worded with the flag's name
        raise NoisyNNError(f"unknown --scale '{args.scale}'; known: {', '.join(SCALES)}")
    digital = read_digital(args.digital) if getattr(args, "digital", None) else ()
    spec = make_noise_spec(args.noise_type, noise_params(args), args.scale, args.targets,
                           getattr(args, "blocks", None), args.include_bias, digital, schedule_from_args(args))
    return replace(spec, draw_on=getattr(args, "noise_draw", "cpu"))


def make_converter_spec(flags: dict, analog_io: bool = False, per_channel: bool = False,
                        text_file: str | None = None, dataset: str | None = None,
                        max_length: int = 512, preset: str | None = None) -> ConverterSpec | None:
    """ConverterSpec from converter settings (``flags``: CONVERTER_FLAGS and tile_size given), or None when no
    converter setting, ``analog_io`` or ``preset`` is given: ``AnalogSetting.from_flags`` (noisynn.analog.setting),
    which says how a preset, ``analog_io`` (the declared defaults) and the flags combine.
    ``per_channel`` (``--scale relative_channel``) applies unless a preset sets it.
    """
    given = {k: v for k, v in flags.items() if k in CONVERTER_FLAGS + SHARED_CONVERTER_FLAGS}
    setting = AnalogSetting.from_flags({**given, "analog_io": bool(analog_io), "analog_preset": preset,
                                        "per_channel": bool(per_channel)})
    return setting.converter_spec(text_file, dataset, max_length)


def converter_spec_from_args(args) -> ConverterSpec | None:
    """ConverterSpec from the converter flags (options.add_converter_args), or None when none is given: the
    flags' ``AnalogSetting`` (noisynn.analog.setting), as the explorer builds it."""
    return AnalogSetting.from_args(args).converter_spec(getattr(args, "text_file", None),
                                                       getattr(args, "dataset", None),
                                                       getattr(args, "max_length", 512))


def attention_from_args(args) -> AttentionSetting | None:
    """The analog attention setting from its flags (options.add_attention_args; each checked by its field's
    declaration, noisynn.analog.fields), None when none is given."""
    flags = {n: getattr(args, n) for n in ATTENTION_FIELDS if hasattr(args, n)}
    preset = getattr(args, "attn_preset", None)
    if not flags and preset is None:
        return None
    return AttentionSetting.from_flags(flags, preset)
