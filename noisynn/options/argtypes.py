"""argparse types of numeric flags: finite, non-negative, positive, in [0, 1]; the flag of a declared analog field
(noisynn.analog.fields: type, choices and help from its declaration)."""

from __future__ import annotations

import argparse
import math

from ..analog.fields import Field
from ..errors import NoisyNNError


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


def nonneg_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be >= 0")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be > 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be >= 1")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be >= 0")
    return value


def unit_float(text: str) -> float:
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"'{text}' must lie in [0, 1]")
    return value


def add_field_flag(g, f: Field) -> argparse.Action:
    """The flag of declared field ``f``: its type (``Field.read``, the CLI's value ``Field.cli_value``), choices and
    help; argparse.SUPPRESS unless the field says otherwise."""
    default = argparse.SUPPRESS if f.suppress else None
    if f.kind == "bool":
        return g.add_argument(f"--{f.name}", action="store_true", default=default, help=f.flag_help)
    choices = f.choices if f.kind == "choice" else None
    return g.add_argument(f"--{f.name}", type=None if choices else field_type(f), choices=choices, default=default,
                          metavar=f.metavar, help=f.flag_help)


def field_type(f: Field):
    """argparse type of field ``f``'s flag: its declaration's check, as an argparse error."""
    def parse(text: str):
        try:
            return f.cli_value(text)
        except NoisyNNError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = f.name  # argparse names the type in its "invalid value" message
    return parse
