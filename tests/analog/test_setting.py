"""One typed analog setting (issue 24): every field declared once (noisynn.analog.fields), and the CLI flags, the
explorer's controls, the flag bounds, the presets and the defaults of AnalogIO and the noise classes made from or
checked against those declarations; ``AnalogSetting.from_flags`` is the one check, for the CLI and the explorer."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noisynn.analog.fields import DEVICE_PARAMS, FIELDS, IO_FIELDS, NOT_GIVEN, float32_error
from noisynn.analog.mvm import AnalogIO
from noisynn.analog.presets import DEVICE_FIELDS, PRESETS
from noisynn.analog.setting import AnalogSetting, cli_values
from noisynn.errors import NoisyNNError


def _sweep_actions() -> dict[str, argparse.Action]:
    from noisynn import registry

    return {a.dest: a for a in registry.parser("sweep")._actions if a.option_strings}


def test_cli_help_controls_bounds_and_presets_come_from_the_declarations(capsys):
    from noisynn import registry
    from noisynn.options.parser import FLAG_BOUNDS
    from noisynn.ui.controls import flag_controls

    actions = _sweep_actions()
    controls = {c.dest: c for c in flag_controls()}
    with pytest.raises(SystemExit):
        registry.parser("sweep").parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    flagged = [n for n, f in FIELDS.items() if f.flag]
    for name in flagged:
        f, action = FIELDS[name], actions[name]
        assert action.help == f.flag_help and controls[name].help == f.flag_help
        assert " ".join(f.flag_help.split()) in text  # --help prints the declared help, default and unit
        assert f.show(f.default) in f.flag_help or f.default_text in f.flag_help
        assert (f.unit in f.flag_help) if f.unit else True
        assert action.default is (argparse.SUPPRESS if f.suppress else None)
        if f.kind == "choice":
            assert tuple(action.choices) == f.choices == controls[name].choices and controls[name].kind == "choice"
        assert controls[name].kind == ("bool" if f.kind == "bool" else "choice" if f.kind == "choice" else "text")
        if f.most is not None:
            assert FLAG_BOUNDS[name] == (f.most, f.why)
        else:
            assert name not in FLAG_BOUNDS
    # the explorer offers every declared flag, per group in the CLI's (the declarations') order
    assert [d for d, c in controls.items() if c.group == "device"] == [n for n in flagged if FIELDS[n].device]
    assert [d for d, c in controls.items() if c.group == "converter" and d in FIELDS] == \
        [n for n in flagged if not FIELDS[n].device]
    assert set(flagged) <= set(controls)
    # the aihwkit_default preset is the declarations' defaults; --analog_io's help lists them
    assert PRESETS["aihwkit_default"].values == {n: FIELDS[n].default for n in IO_FIELDS}
    assert all(f"{n} {FIELDS[n].show(FIELDS[n].default)}" in actions["analog_io"].help
               for n in IO_FIELDS if FIELDS[n].flag)


def test_defaults_of_analogio_and_the_noise_classes_are_the_declarations():
    from noisynn.noise import NOISE_REGISTRY
    from noisynn.noise.units import MAX_SECONDS
    from noisynn.ui.curve import DEFAULT_T_SECONDS

    io_fields = {f.name: f.default for f in dataclasses.fields(AnalogIO)}
    assert {n: io_fields[n] for n in IO_FIELDS} == {n: FIELDS[n].default for n in IO_FIELDS}
    for noise in ("pcm", "stuck_at", "pcm_afm", "student_t"):
        params = inspect.signature(NOISE_REGISTRY[noise].__init__).parameters
        for name in set(params) & set(DEVICE_PARAMS):
            assert params[name].default == FIELDS[name].default, (noise, name)
    assert DEFAULT_T_SECONDS == FIELDS["t_seconds"].default == 86400.0
    assert MAX_SECONDS == FIELDS["t_seconds"].most == 1e12


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_values_are_declared_fields_that_pass_their_checks(name):
    preset = PRESETS[name]
    for field, value in preset.values.items():
        assert field in FIELDS and FIELDS[field].io, field
        assert FIELDS[field].read(value) == value and FIELDS[field].bound(value) is None, (field, value)
    for field in DEVICE_FIELDS:
        if field in preset.device and field in FIELDS:
            FIELDS[field].check(preset.device[field])
    from noisynn.spec import SCALES

    assert preset.device["scale"] in SCALES


def test_dac_bits_is_checked_once_with_one_wording():
    from noisynn import registry

    with pytest.raises(NoisyNNError, match="^--dac_bits: '1' must be >= 2 bits$"):
        AnalogSetting.from_flags({"dac_bits": "1"})
    with pytest.raises(NoisyNNError, match="dac_bits: '1' must be >= 2 bits"):
        AnalogIO(dac_bits=1)
    with pytest.raises(SystemExit):
        registry.parser("sweep").parse_args(["--dac_bits", "1"])


def test_tile_size_is_parsed_in_one_place():
    from noisynn.tiling import DEFAULT_TILE_SIZE

    assert FIELDS["tile_size"].default == DEFAULT_TILE_SIZE == AnalogIO().tile_size
    args = _parse(["--tile_size", "256x128"])
    assert args.tile_size == [256, 128]
    assert AnalogSetting.from_flags({"tile_size": "256x128"}).device_params() == {"tile_size": (256, 128)}
    with pytest.raises(NoisyNNError, match="tile_size takes IN or INxOUT"):
        AnalogSetting.from_flags({"tile_size": "wide"})


def _parse(argv):
    from noisynn.experiments.sweep import run as sweep_run

    return sweep_run.parse(argv)


def _text(field, value) -> str:
    if field.kind == "tile":
        return "x".join(map(str, value))
    if field.kind == "bool":
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def _values(field):
    """Hypothesis strategy of values inside field's domain and bound."""
    if field.kind == "bool":
        return st.booleans()
    if field.kind == "choice":
        return st.sampled_from(field.choices)
    if field.kind == "tile":
        size = st.integers(0, int(field.most))
        return st.tuples(size, size)
    if field.kind == "range":
        return st.one_of(st.sampled_from(field.choices), st.floats(1e-6, 1e6))
    if field.kind == "fraction":
        return st.floats(0, 1)
    lo = field.least if field.least is not None else 0.0
    hi = field.most if field.most is not None else 1e6
    if field.kind == "int":
        return st.integers(int(lo) + int(field.strict), int(hi))
    return st.floats(lo, hi, exclude_min=field.strict).filter(lambda x: float32_error(x) is None)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_from_flags_of_typed_values_equals_from_flags_of_their_text(data):
    names = data.draw(st.lists(st.sampled_from(list(FIELDS)), unique=True, max_size=6))
    typed = {n: data.draw(_values(FIELDS[n]), label=n) for n in names}
    text = {n: _text(FIELDS[n], v) for n, v in typed.items()}
    a, b = _setting_or_error(typed), _setting_or_error(text)
    assert a == b  # the same setting, or the same one-line refusal of a combination that means nothing
    if isinstance(a, AnalogSetting):
        assert a.device_params() == b.device_params()


def _setting_or_error(flags):
    try:
        return AnalogSetting.from_flags(flags)
    except NoisyNNError as err:
        return str(err)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_out_of_bound_or_domain_is_one_noisynn_error_line(data):
    name = data.draw(st.sampled_from([n for n, f in FIELDS.items() if f.most is not None or f.least is not None]))
    f = FIELDS[name]
    if f.most is not None and (f.least is None or data.draw(st.booleans())):
        value = data.draw(st.floats(f.most * 1.001 + 1, f.most * 10 + 10)) if f.kind != "tile" else \
            (data.draw(st.integers(int(f.most) + 1, int(f.most) * 2)), 1)
        value = int(value) if f.kind == "int" else value
        message = "is above"
    else:
        value = data.draw(st.floats(f.least - 100, f.least, exclude_max=not f.strict))
        value = int(value) - (1 if f.kind == "int" and value == int(value) else 0) if f.kind == "int" else value
        message = "must be"
    for given_ in (value, _text(f, value)):
        with pytest.raises(NoisyNNError, match=message) as err:
            AnalogSetting.from_flags({name: given_})
        assert "\n" not in str(err.value) and str(err.value).startswith(f"--{name}: ")


@pytest.mark.parametrize("argv", [
    [],
    ["--noise_type", "pcm", "--scale", "relative_channel", "--tile_size", "64"],
    ["--dac_bits", "6"],
    ["--analog_io", "--out_noise", "0.1", "--tile_size", "128x64"],
    ["--analog_preset", "afm", "--adc_bits", "6", "--input_range", "0.5"],
    ["--w_noise", "0.01", "--w_noise_type", "additive_constant", "--scale", "relative_channel"],
    ["--noise_type", "pcm", "--scale", "relative_channel", "--t_seconds", "3600", "--drift_compensation",
     "--adc_bits", "8", "--out_bound", "4"],
])
def test_explorer_and_cli_yield_the_same_converters_and_device_params(argv):
    from noisynn.options.flags import config_of
    from noisynn.spec import converter_spec_from_args, noise_params
    from noisynn.ui.controls import defaults_from_args, flag_argv, given_flags
    from noisynn.ui.setting import Setting, cli_command

    args = _parse(argv + ["--max_length", "512"])  # the page's window
    noise_type = args.noise_type
    flags = given_flags(noise_type, defaults_from_args(args))  # the page's controls, filled as typed
    page = Setting(noise_type=noise_type, scale=args.scale, flags=flags)
    assert page.converter_spec() == converter_spec_from_args(args)
    assert page.analog.device_params() == noise_params(args)
    # the command the page prints gives the CLI these flags back
    again = _parse(flag_argv(flags) + ["--noise_type", noise_type, "--scale", args.scale, "--max_length", "512"])
    assert config_of(again) == config_of(args)
    assert "thermal_noise_simulation.py" in cli_command(page)
    assert cli_values(dict(flags)) == {k: v for k, v in vars(args).items() if k in cli_values(dict(flags))}


def test_record_is_the_resolved_analogio_and_absent_without_converters():
    assert AnalogSetting.from_flags({"tile_size": "64"}).record() is None
    rec = AnalogSetting.from_flags({"analog_io": True, "dac_bits": 6}).record()
    assert rec == dataclasses.asdict(AnalogIO(dac_bits=6))
    off = AnalogSetting.from_flags({"out_noise": "0.1"}).io()
    assert (off.dac_bits, off.adc_bits, off.out_bound, off.out_noise) == (None, None, None, 0.1)
    assert all(FIELDS[n].off is NOT_GIVEN or getattr(AnalogSetting.from_flags({"w_noise_type": "pcm_read", "w_noise": 0.1}).io(), n)
               == FIELDS[n].off for n in IO_FIELDS)
    with pytest.raises(NoisyNNError, match="unknown analog setting 'dac_bit'"):
        AnalogSetting.from_flags({"dac_bit": 4})
