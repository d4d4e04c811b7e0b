"""The explorer's device and converter controls (issue 17; noisynn.ui.controls): one control per flag, shown
for the noise type that uses them, reaching the computation and the exported command."""

import shlex
from dataclasses import replace

import pytest

from noisynn.ui import explore
from noisynn.ui import setting as ui_setting
from noisynn.evaluation import compute_perplexity
from noisynn.ui.setting import check_setting
from noisynn.inject import noisy_weights
from tests.ui.test_explore import explorer, setting  # noqa: F401 - fixtures


# -- issue 17: the explorer's device controls, cancellation, the curve -----------------------------------
def _cli_device_and_converter_flags():
    """The flags of the CLI's groups that the page must offer: noise-constructor flags and every converter flag."""
    import argparse

    from noisynn.options.flags import add_attention_args, add_converter_args, add_noise_args
    from noisynn.spec import NOISE_PARAMS

    def actions(adder):
        p = argparse.ArgumentParser(add_help=False)
        adder(p)
        return [a for a in p._actions if a.option_strings]

    return ({a.dest for a in actions(add_noise_args) if a.dest in NOISE_PARAMS}
            | {a.dest for a in actions(add_converter_args)} | {a.dest for a in actions(add_attention_args)})


def test_every_device_and_converter_flag_is_a_control_of_the_page(explorer):
    pytest.importorskip("gradio")
    from noisynn.ui import app as ui
    from noisynn.ui.controls import flag_controls

    wanted = _cli_device_and_converter_flags()
    assert {"t_seconds", "drift_compensation", "stuck_fraction", "clip_std", "dac_bits", "input_range", "kv_tau",
            "attn_preset"} <= wanted
    assert {c.dest for c in flag_controls()} == wanted
    config = ui.build_app(explorer, check_setting(setting()), run_roots=("nowhere",)).get_config_file()
    ids = {c["props"].get("elem_id") for c in config["components"]}
    assert {f"flag-{d}" for d in wanted} <= ids, sorted({f"flag-{d}" for d in wanted} - ids)


def test_controls_are_shown_for_the_noise_type_that_uses_them():
    from noisynn.ui.controls import shown_for, sigma_meaning

    converters = {"dac_bits", "adc_bits", "out_noise", "out_bound", "input_range", "analog_io", "kv_write_noise"}
    assert converters <= shown_for("gaussian") and "df" not in shown_for("gaussian")
    assert "df" in shown_for("student_t") and "t_seconds" not in shown_for("student_t")
    assert {"t_seconds", "drift_compensation", "stuck_fraction", "stuck_on_ratio", "clip_std"} <= shown_for("pcm")
    assert "stuck_on_ratio" in shown_for("stuck_at") and "t_seconds" not in shown_for("stuck_at")
    assert "multiplier of the PCM model" in sigma_meaning("pcm", "relative_channel")
    assert "fraction of devices" in sigma_meaning("stuck_at", "relative_channel")
    assert "quantization step" in sigma_meaning("quantize", "relative_channel")
    assert "weight units" in sigma_meaning("gaussian", "absolute")


def test_device_flags_change_the_computation_and_the_command(explorer):
    from noisynn.ui.controls import given_flags

    base = setting(noise_type="pcm", scale="relative_channel", sigma=1.0)
    flags = given_flags("pcm", {"t_seconds": "1e8", "drift_compensation": True, "df": "3", "dac_bits": ""})
    assert flags == (("t_seconds", "1e8"), ("drift_compensation", "true"))  # df is not pcm's; empty = default
    late = check_setting(replace(base, flags=flags))
    early = check_setting(replace(base, flags=(("t_seconds", "1"),)))
    assert late.spec.noise.t_seconds == 1e8 and late.spec.noise.drift_compensation
    lm = explorer.model("tiny")
    _, p_late = explorer.perplexity(late)
    _, p_early = explorer.perplexity(early)
    with noisy_weights(lm.model, 1.0, late.spec.noise, scale="relative_channel", seed=explore.noise_seed(0)):
        ref = compute_perplexity(lm.model, lm.tokenizer, explorer.eval_ids(late), max_length=64)
    assert p_late.perplexity == pytest.approx(ref.perplexity, rel=1e-5) != p_early.perplexity
    argv = shlex.split(ui_setting.cli_command(late))
    assert argv[argv.index("--t_seconds") + 1] == "1e8" and "--drift_compensation" in argv
    # A converter flag is used too: a 2-bit DAC on the targeted layers changes the noisy perplexity.
    _, with_dac = explorer.perplexity(replace(setting(sigma=0.0), flags=(("dac_bits", "2"),)))
    clean, plain = explorer.perplexity(setting(sigma=0.0))
    assert plain.perplexity == pytest.approx(clean.perplexity) and with_dac.perplexity != plain.perplexity


def test_ui_command_line_device_flags_reach_the_page():
    from noisynn.ui import app as ui
    from noisynn.ui.controls import defaults_from_args

    args = ui.build_parser().parse_args(["--noise_type", "pcm", "--scale", "relative_channel", "--t_seconds", "1e8",
                                         "--dac_bits", "6", "--tile_size", "256x128"])
    given = {"t_seconds": "100000000.0", "dac_bits": "6", "tile_size": "256x128"}
    assert defaults_from_args(args) == given  # SUPPRESSed flags: only those given
    s = ui.defaults_from(args)
    assert dict(s.flags) == given and s.spec.noise.t_seconds == 1e8 and s.analog.values["tile_size"] == (256, 128)


def test_ui_starts_on_gaussian_with_a_pcm_control_given():
    """The starting flags fill controls: --t_seconds with the default gaussian starts the pcm control (the CLI's
    combination rule does not apply); each value is still checked alone."""
    from noisynn.errors import NoisyNNError
    from noisynn.ui import app as ui

    s = ui.defaults_from(ui.build_parser().parse_args(["--t_seconds", "1e8"]))
    assert s.noise_type == "gaussian" and "t_seconds" not in dict(s.flags)  # the page keeps its noise's flags
    with pytest.raises(SystemExit) as refused:
        ui.build_parser().parse_args(["--t_seconds", "-1"])
    assert refused.value.code == 2
    with pytest.raises(NoisyNNError, match="--tile_size"):  # a converter flag alone is still one line
        ui.defaults_from(ui.build_parser().parse_args(["--tile_size", "0x4"]))


@pytest.mark.parametrize("typed, want", [("-10", (-4.0, "clamped to -4")), ("3", (0.0, "clamped to 0")),
                                         ("-2", (-2.0, "")), ("", (None, "empty: nothing changed")),
                                         (None, (None, "empty")), ("x", (None, "must be a number")),
                                         ("nan", (None, "finite"))])
def test_typed_log_sigma_is_clamped_or_refused(typed, want):
    value, note = ui_setting.read_log_sigma(typed)
    assert value == want[0] and want[1] in note and "\n" not in note


@pytest.mark.parametrize("seconds, shown", [(0.5, "0.5 s"), (1, "1 s"), (90, "1.5 min"), (3600, "1 h"),
                                            (86400, "1 d"), (1e8, "3.17 y"), (10 * 365.25 * 86400, "10 y")])
def test_read_times_are_shown_in_their_unit(seconds, shown):
    assert ui_setting.human_time(seconds) == shown


def test_a_preset_shows_its_values_in_the_empty_converter_boxes():
    """Issue 25, item 6: choosing a preset fills the boxes' placeholders with its values, not '(CLI default)'."""
    from noisynn.analog.presets import PRESETS
    from noisynn.ui.controls import preset_placeholders

    none = preset_placeholders(None)
    assert set(none.values()) == {"(CLI default)"} and {"dac_bits", "adc_bits", "out_noise"} <= set(none)
    shown = preset_placeholders("aihwkit_default")
    values = PRESETS["aihwkit_default"].values
    assert shown["dac_bits"] == f"{values['dac_bits']} (preset aihwkit_default)"
    assert shown["out_noise"] == f"{values['out_noise']:g} (preset aihwkit_default)"
    assert shown.keys() == none.keys()


def test_a_device_models_sigma_reaches_ten_times_the_device():
    """Issue 25, item 6: sigma of pcm multiplies the device as measured; the slider goes to 10x, not 1x."""
    sigma_log_max = ui_setting.sigma_log_max
    assert sigma_log_max("pcm") == 1.0 and sigma_log_max("gaussian") == 0.0
    assert ui_setting.read_log_sigma("3", -4.0, sigma_log_max("pcm")) == (1.0, "log10 sigma 3 is outside [-4, 1]: "
                                                                                "clamped to 1")
