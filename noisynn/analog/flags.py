"""The analog setting's CLI flags, made from the field declarations (noisynn.analog.fields).

Every flag defaults to argparse.SUPPRESS (``Field.suppress``): left out of run.json's config unless given, so older
run folders resume. Type, choices and help (with the default and the unit) come from the field's declaration;
its bound (``Field.most``) is checked after parsing (options.parser.FLAG_BOUNDS). ``spec.converter_spec_from_args``
turns them into a checked ``ConverterSpec`` through ``AnalogSetting`` (noisynn.analog.setting). ``--tile_size``
(shared with the PCM mapping), ``--pair`` and ``--compensation_method`` are device flags (``options.add_noise_args``,
by ``options.argtypes.add_field_flag``).
"""

from __future__ import annotations

import argparse

from ..options.argtypes import add_field_flag, field_type
from .fields import ATTENTION_FIELDS, FIELDS, defaults_text
from .kv_store import PRESETS as ATTENTION_PRESETS
from .presets import PRESETS


def add_converter_args(p: argparse.ArgumentParser) -> None:
    """The analog forward on the targeted layers (noisynn.analog.hooks.ConverterHooks); off unless a flag is given."""

    g = p.add_argument_group("converters (the analog forward of the targeted layers, per tile; aihwkit IOParameters "
                             "conventions; see docs/analog.md)")
    g.add_argument("--analog_preset", choices=tuple(PRESETS), default=argparse.SUPPRESS,
                   help="start from a named setting: " + "; ".join(f"{n}: {p.summary}" for n, p in PRESETS.items())
                        + ". Flags given override its fields")
    g.add_argument("--analog_io", action="store_true", default=argparse.SUPPRESS,
                   help="turn on aihwkit's defaults (= --analog_preset aihwkit_default): " + defaults_text())
    for f in FIELDS.values():
        if f.io and f.flag and not f.device:
            add_field_flag(g, f)


def tile_size(text: str) -> list[int]:
    """argparse type of ``--tile_size``: IN or INxOUT (0 = the whole layer) -> [IN, OUT] (a list: run.json's
    config reads back equal on resume); ``tiling.parse_tile_size`` through the field's declaration."""
    return field_type(FIELDS["tile_size"])(text)


def add_attention_args(p: argparse.ArgumentParser) -> None:
    """Analog attention on a gain-cell KV store (noisynn.analog.attention); off unless a flag is given."""
    g = p.add_argument_group("analog attention (QK^T and AV on a leaking gain-cell KV cache; Leroux et al. 2025; "
                             "see docs/analog_attention.md)")
    g.add_argument("--attn_preset", choices=tuple(ATTENTION_PRESETS), default=argparse.SUPPRESS,
                   help="start from a named setting: " + "; ".join(f"{n}: {', '.join(f'{k} {v:g}' for k, v in s.items())}"
                                                                 for n, s in ATTENTION_PRESETS.items())
                        + " (the paper's hardware model). Flags given override its fields")
    for f in ATTENTION_FIELDS.values():
        add_field_flag(g, f)
