"""The explorer's device and converter controls, made from the command line's own flags (no torch).

Every flag that ``options.add_noise_args`` adds for a noise class's constructor (``spec.NOISE_PARAMS``)
and every flag of ``options.add_converter_args`` becomes one control of the page; those flags are made
from the field declarations (noisynn.analog.fields), so a field declared there appears in the page
without an edit here. A control's value is the flag's text as typed (empty: not given, the CLI's
default); the page's setting keeps the given ones as ``(dest, text)`` pairs, which become one
``AnalogSetting.from_flags`` (noisynn.analog.setting: the declared types, bounds and the CLI's one-line
messages), the object the command line builds from its parsed flags - so the page computes what the
exported command computes. ``flag_argv`` writes the pairs back as the command's words.

Which controls a noise type shows: a constructor parameter when the noise class's constructor names it
(``df`` for student_t; ``t_seconds``, ``drift_compensation`` ... for pcm), a converter flag always
(converters are forward hooks on the targeted layers, whatever the weight noise), an analog attention flag
always (noisynn.analog.attention), and a device flag the converters share (``--tile_size``) always.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import math
from dataclasses import dataclass
from typing import Iterable

from ..noise import NOISE_REGISTRY
from ..options.flags import add_attention_args, add_converter_args, add_noise_args
from .. import spec
from ..spec import NOISE_PARAMS

# The noise flags the page has as its own controls (or never offers: a plugin is loaded at startup).
CORE_NOISE_DESTS = ("noise_type", "scale", "targets", "include_bias", "plugin")
SCALE_UNITS = {"absolute": "weight units", "relative": "units of each layer's weight std",
               "relative_max": "units of each layer's max|W|",
               "relative_channel": "units of each output channel's max|W|"}


@dataclass(frozen=True)
class FlagControl:
    """One flag as a control: ``kind`` bool (a checkbox), choice (a dropdown) or text (a box)."""

    dest: str
    flag: str
    kind: str
    help: str
    group: str  # "device" (a noise constructor's parameter), "converter" or "attention" (analog attention)
    choices: tuple[str, ...] = ()

    @property
    def elem_id(self) -> str:
        return f"flag-{self.dest}"


def _actions(adder) -> list[argparse.Action]:
    p = argparse.ArgumentParser(add_help=False)
    adder(p)
    return [a for a in p._actions if a.option_strings]


def _kind(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "bool"
    return "choice" if action.choices else "text"


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    try:
        return text % {"default": action.default}
    except (TypeError, ValueError, KeyError):
        return text


@functools.lru_cache(maxsize=1)
def flag_controls() -> tuple[FlagControl, ...]:
    """Every device parameter (noise constructor flags), converter and analog attention flag of the CLI, in the
    CLI's order."""
    out = [FlagControl(a.dest, a.option_strings[0], _kind(a), _help(a), "device",
                       tuple(str(c) for c in a.choices or ()))
           for a in _actions(add_noise_args) if a.dest in NOISE_PARAMS and a.dest not in CORE_NOISE_DESTS]
    for group, adder in (("converter", add_converter_args), ("attention", add_attention_args)):
        out += [FlagControl(a.dest, a.option_strings[0], _kind(a), _help(a), group,
                            tuple(str(c) for c in a.choices or ())) for a in _actions(adder)]
    return tuple(out)


def constructor_params(noise_type: str) -> set[str]:
    """The named parameters of the noise class's constructor (its MRO's), e.g. {'df'} for student_t."""
    cls = NOISE_REGISTRY.get(noise_type)
    names: set[str] = set()
    for klass in getattr(cls, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                     and p.name != "self")
    return names


def shown_for(noise_type: str) -> set[str]:
    """Dests of the controls the page shows for this noise type: its constructor's, the converters', and the
    device flags the converters share (``spec.SHARED_CONVERTER_FLAGS``: ``--tile_size``)."""
    params = constructor_params(noise_type) | set(getattr(spec, "SHARED_CONVERTER_FLAGS", ()))
    return {c.dest for c in flag_controls() if c.group in ("converter", "attention") or c.dest in params}


def given_flags(noise_type: str, values: dict) -> tuple[tuple[str, str], ...]:
    """The (dest, text) pairs of controls that are shown for ``noise_type`` and given (a ticked box, a text)."""
    shown = shown_for(noise_type)
    out = []
    for c in flag_controls():
        value = values.get(c.dest)
        if c.dest not in shown or value is None:
            continue
        if c.kind == "bool":
            if value is True or str(value).lower() == "true":
                out.append((c.dest, "true"))
        elif isinstance(value, float) and math.isfinite(value):
            out.append((c.dest, repr(value)))
        elif str(value).strip():
            out.append((c.dest, str(value).strip()))
    return tuple(out)


def flag_argv(flags: Iterable[tuple[str, str]]) -> list[str]:
    """The command-line words of the given flags, in the CLI's order."""
    by_dest = {c.dest: c for c in flag_controls()}
    given = dict(flags)
    argv: list[str] = []
    for dest, c in by_dest.items():
        if dest in given:
            argv += [c.flag] if c.kind == "bool" else [c.flag, given[dest]]
    return argv


def defaults_from_args(args: argparse.Namespace) -> dict:
    """The device and converter flags given on ``noisynn ui``'s command line, as the controls' initial texts."""
    out = {}
    for c in flag_controls():
        if not hasattr(args, c.dest):
            continue
        value = getattr(args, c.dest)
        if c.kind == "bool":
            out[c.dest] = bool(value)
        elif isinstance(value, (list, tuple)):  # --tile_size 512x256 parses to [512, 256]
            out[c.dest] = "x".join(str(v) for v in value)
        elif value is not None:
            out[c.dest] = repr(value) if isinstance(value, float) else str(value)
    return out


def sigma_meaning(noise_type: str, scale: str) -> str:
    """One line on what sigma is for this noise type: the class's ``sigma_meaning``, else an additive std."""
    cls = NOISE_REGISTRY.get(noise_type)
    meaning = getattr(cls, "sigma_meaning", "") if cls is not None else ""
    unit = SCALE_UNITS.get(scale, scale)
    if meaning:
        return f"**sigma for {noise_type}**: {meaning}."
    doc = (inspect.getdoc(cls) or "").splitlines()[0] if cls is not None else ""
    return (f"**sigma for {noise_type}**: the scale of additive noise W + sigma u Z, u in {unit}"
            + (f" ({doc.rstrip('.')})." if doc else "."))


def preset_placeholders(preset: str | None) -> dict[str, str]:
    """The converter text boxes' placeholders under ``preset`` (its value, 'preset NAME'), or '(CLI default)'
    for every box when no preset is chosen: an empty box shows what it will be."""
    from ..analog.presets import PRESETS

    values = PRESETS[preset].values if preset in PRESETS else {}
    return {c.dest: (f"{values[c.dest]:g} (preset {preset})" if isinstance(values.get(c.dest), float)
                     else f"{values[c.dest]} (preset {preset})" if c.dest in values else "(CLI default)")
            for c in flag_controls() if c.group == "converter" and c.kind == "text"}
