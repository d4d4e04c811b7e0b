"""Flags that mean nothing in their combination, and parameters whose float32 value degenerates (issue 25).

A field given where it means nothing (``Field.needs``, or a device parameter the noise's constructor does not take)
is one ``NoisyNNError`` line from ``AnalogSetting.from_flags``: the command line and the explorer refuse alike.
Only flags given count: a preset's fields, or a field the experiment sets itself, are never refused. The CLI cases
(exit 2, one line, the run folder untouched) are in tests/options/test_bad_input.py.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noisynn.analog.fields import F32_MAX, F32_TINY, FIELDS, float32_error
from noisynn.analog.setting import AnalogSetting
from noisynn.errors import NoisyNNError
from noisynn.noise.base import get_noise, noise_parameters, NoiseDistribution
from noisynn.options.argtypes import field_type
from tests.helpers import exits_2_with_one_line


def _sweep(argv):
    from noisynn.experiments.sweep import run as sweep_run

    return sweep_run.parse(argv)


def _cli_error(argv) -> str | None:
    """What the CLI's checks of the noise and analog flags say (None: accepted), as ``runs.context.start``."""
    from noisynn.spec import spec_from_args

    args = _sweep(argv)
    try:
        spec_from_args(args)
        AnalogSetting.from_args(args)
    except NoisyNNError as err:
        return str(err)
    return None


PCM = ["--noise_type", "pcm", "--scale", "relative_channel"]


@pytest.mark.parametrize("argv", [
    ["--analog_preset", "afm", *PCM],  # the preset fills pair, compensation_method, tile_size: not given
    ["--analog_preset", "aihwkit_hwa", "--noise_type", "pcm"],  # its range_std with its calibrated ranges
    ["--analog_preset", "aihwkit_hwa", "--range_std", "5"],  # the preset calibrates: range_std means something
    ["--analog_preset", "aihwkit_hwa", "--input_range", "dynamic"],  # the preset's range_std is not given
    ["--input_range", "calibrated", "--range_std", "2"],
    [*PCM, "--drift_compensation", "--compensation_method", "exact"],
    [*PCM, "--tile_size", "64", "--pair", "independent", "--t_seconds", "60"],
    ["--tile_size", "64", "--adc_bits", "8"],  # additive noise, but converters: their tiles
    ["--w_noise", "0.01", "--w_noise_type", "pcm_read"],
    ["--bound_management", "iterative", "--max_bm_factor", "10"],
    ["--noise_type", "student_t", "--df", "1e-30"],
])
def test_a_combination_that_means_something_is_accepted(argv):
    assert _cli_error(argv) is None


def test_a_field_the_experiment_sets_gives_meaning_and_is_not_given():
    flags = {"noise_type": "pcm", "compensation_method": "exact"}
    with pytest.raises(NoisyNNError, match="--compensation_method: needs --drift_compensation"):
        AnalogSetting.from_flags(flags)
    assert AnalogSetting.from_flags(flags, fixed={"drift_compensation": True}).device_params() == {
        "compensation_method": "exact"}
    assert AnalogSetting.from_flags(flags, filled={"compensation_method"}).values["compensation_method"] == "exact"


def test_drift_over_time_reads_the_method_when_it_compensates():
    from noisynn import registry

    drift = registry.run_module("drift_over_time")
    for compensation, refused in (("both", False), ("on", False), ("off", True)):
        args = drift.parse(["--compensation", compensation, "--compensation_method", "exact", "--times", "1h"])
        if refused:
            with pytest.raises(NoisyNNError, match="needs --drift_compensation"):
                drift.check_args(args)
        else:
            drift.check_args(args)


@pytest.mark.parametrize("noise_type,flags", [
    ("gaussian", (("tile_size", "64"),)),
    ("gaussian", (("range_std", "2"),)),
    ("pcm", (("compensation_method", "exact"),)),
    ("gaussian", (("w_noise_type", "pcm_read"),)),
    ("gaussian", (("bound_management", "none"), ("max_bm_factor", "10"))),
])
def test_the_explorer_refuses_with_the_cli_line(noise_type, flags):
    from noisynn.ui.controls import flag_argv
    from noisynn.ui.setting import Setting, check_setting

    scale = "relative_channel" if noise_type == "pcm" else "absolute"
    with pytest.raises(NoisyNNError) as page:
        check_setting(Setting(noise_type=noise_type, scale=scale, flags=flags))
    cli = _cli_error(["--noise_type", noise_type, "--scale", scale, *flag_argv(flags)])
    assert str(page.value) == cli and "\n" not in cli


def test_afm_recipe_refuses_a_noise_type_it_does_not_use_before_any_folder(tmp_path, capsys):
    from noisynn import registry

    main = registry.run_module("noise_aware_training").main
    out = tmp_path / "run"
    err = exits_2_with_one_line(main, ["--recipe", "afm", "--noise_type", "uniform", "--out", str(out)], capsys)
    assert "--noise_type uniform means nothing with --recipe afm" in err
    assert not out.exists()


def test_noise_parameters_are_the_constructors_and_unknown_for_an_open_user_class():
    assert noise_parameters("gaussian") == frozenset() and noise_parameters("student_t") == {"df"}
    assert {"pair", "t_seconds", "compensation_method", "tile_size"} <= noise_parameters("pcm")
    assert noise_parameters("no_such_noise") is None

    class Open(NoiseDistribution):  # a user's class that reads any parameter: nothing is refused for it
        def __init__(self, **params):
            super().__init__(**params)

    assert noise_parameters(Open) is None and noise_parameters(Open()) is None
    assert AnalogSetting.from_flags({"noise_type": Open(), "pair": "tile"}).device_params() == {"pair": "tile"}


def _f32(x: float) -> float:
    """x rounded to float32 (inf beyond its range), as torch stores it."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _degenerate(x: float) -> bool:
    y = _f32(x)
    return x != 0 and (y == 0 or math.isinf(y) or abs(y) < F32_TINY)


FLOAT_FIELDS = [n for n, f in FIELDS.items() if f.kind in ("float", "fraction", "range")]
# (just below 2^-126 a float64 rounds up to float32's smallest normal: not degenerate, hence the filter)
DEGENERATE = st.one_of(st.floats(min_value=5e-324, max_value=F32_TINY, exclude_max=True),
                       st.floats(min_value=F32_MAX * (1 + 2 ** -23), max_value=1.7e308)).filter(_degenerate)


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(FLOAT_FIELDS), value=DEGENERATE)
def test_any_float_whose_float32_degenerates_is_refused_in_one_line(name, value):
    assert _degenerate(value)
    f = FIELDS[name]
    for typed in (value, repr(value)):
        with pytest.raises(NoisyNNError) as err:
            f.check(typed)
        message = str(err.value)
        assert message.startswith(f"--{name}: ") and "\n" not in message
        assert "float32" in message or "is above" in message or "must" in message, message  # or its domain's
    with pytest.raises(Exception, match="float32|is above|must"):  # the CLI flag's type: the same check
        field_type(f)(repr(value))


@settings(max_examples=80, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float32_error_is_exactly_the_degenerate_values(value):
    assert (float32_error(value) is not None) == _degenerate(value)


@pytest.mark.parametrize("df", [1e-300, 1e-45, 1e39])
def test_student_t_refuses_a_df_that_float32_cannot_hold(df):
    with pytest.raises(NoisyNNError, match="student_t df .* in float32"):
        get_noise("student_t", df=df)
    assert get_noise("student_t", df=1e-30).df == 1e-30


@pytest.mark.parametrize("value, degenerate", [(1.1754943508222872e-38, False),  # stored as 2^-126, a normal
                                               (F32_TINY / 2, True), (F32_MAX * (1 + 2 ** -26), False),
                                               (F32_MAX * (1 + 2 ** -23), True), (1e-46, True)])
def test_float32_error_at_the_rounding_edges(value, degenerate):
    assert (float32_error(value) is not None) is degenerate
