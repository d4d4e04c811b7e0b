"""Analog presets from the command line (noisynn.analog.presets, noisynn.analog.flags): documented values,
flags over a preset, bad analog flags in one line, and the resolved settings in run.json."""

from __future__ import annotations

import pytest
from hypothesis import settings

from noisynn.analog.mvm import AnalogIO
from noisynn.errors import NoisyNNError


# ---------------------------------------------------------------- presets, flags, run.json

def test_presets_resolve_to_their_documented_values():
    from noisynn.analog.presets import PRESETS, get_preset

    assert set(PRESETS) == {"aihwkit_default", "aihwkit_hwa", "afm"}
    assert get_preset("aihwkit_default") == AnalogIO(preset="aihwkit_default")  # IOParameters() defaults
    hwa = get_preset("aihwkit_hwa")  # presets/inference.py l.78-132
    assert (hwa.dac_bits, hwa.adc_bits, hwa.out_noise, hwa.out_bound) == (8, 8, 0.04, 10.0)
    assert (hwa.w_noise, hwa.w_noise_type, hwa.bound_management) == (0.0175, "pcm_read", "none")
    assert hwa.tile_size == (512, 0) and hwa.omega == 1.0 and hwa.per_channel and hwa.input_range == "calibrated"
    afm = get_preset("afm")  # AFM config.yaml l.26-30
    assert (afm.dac_bits, afm.adc_bits, afm.out_noise, afm.out_bound) == (8, 8, 0.0, 14.0)
    assert afm.tile_size == (512, 0) and afm.input_range == "calibrated" and afm.range_std == 18.0
    for p in PRESETS.values():
        assert p.sources and all(".py" in s or ".yaml" in s for s in p.sources)
    assert get_preset("afm", out_noise=0.02).out_noise == 0.02
    with pytest.raises(NoisyNNError):
        get_preset("nope")


def test_flags_override_a_preset():
    from noisynn.experiments.sweep import run as sweep_run
    from noisynn.spec import converter_spec_from_args

    args = sweep_run.parse(["--analog_preset", "aihwkit_hwa", "--out_noise", "0.01", "--tile_size", "256x128",
                            "--bound_management", "iterative"])
    io = converter_spec_from_args(args).io
    assert io.preset == "aihwkit_hwa" and io.out_noise == 0.01 and io.tile_size == (256, 128)
    assert io.bound_management == "iterative" and io.w_noise == 0.0175
    tiles = ["--noise_type", "pcm", "--scale", "relative_channel", "--tile_size", "64"]
    assert converter_spec_from_args(sweep_run.parse(tiles)) is None  # a device model's tiles alone: no converters
    io = converter_spec_from_args(sweep_run.parse(["--w_noise", "0.01", "--w_noise_type", "additive_constant"])).io
    assert io.w_noise == 0.01 and io.dac_bits is None and io.out_noise == 0.0


@pytest.mark.parametrize("flags", [["--tile_size", "5x5x5"], ["--bound_management", "sometimes"],
                                   ["--w_noise", "-1"], ["--analog_preset", "nope"], ["--inp_noise", "1e31"],
                                   ["--input_range", "sometimes"], ["--w_noise", "0.1"],
                                   ["--analog_preset", "afm", "--analog_io"], ["--max_bm_factor", "0.5"]])
def test_bad_analog_flags_exit_2_in_one_line(flags, tmp_path, capsys, tiny_model_dir, text_file):
    from noisynn.experiments.sweep import run as sweep_run

    out = tmp_path / "run"
    try:
        rc = sweep_run.main(["--model", str(tiny_model_dir), "--text_file", str(text_file), "--quiet",
                             "--out", str(out)] + flags)
    except SystemExit as err:
        rc = err.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "error" in err
    assert not out.exists()


def test_run_json_records_the_resolved_preset(tmp_path, tiny_model_dir, text_file):
    import json

    from noisynn.experiments.sweep import run as sweep_run

    out = tmp_path / "run"
    assert sweep_run.main(["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32",
                           "--max_length", "32", "--max_new_tokens", "2", "--n_samples", "1", "--quiet",
                           "--n_levels", "2", "--n_trials", "1", "--analog_preset", "aihwkit_hwa",
                           "--out_noise", "0.02", "--out", str(out)]) == 0
    conv = json.loads((out / "run.json").read_text())["converters"]
    assert conv["preset"] == "aihwkit_hwa" and conv["out_noise"] == 0.02 and conv["w_noise_type"] == "pcm_read"
    assert conv["tile_size"] == [512, 0] and conv["dac_steps"] == 254 and conv["calibration"]["rule"] == "3 x std"


def test_run_config_holds_the_resolved_analog_settings(tmp_path, tiny_model_dir, text_file):
    """A run folder resumes only under the same resolved converter settings, not just the same flags."""
    import json

    from noisynn.experiments.sweep import run as sweep_run

    out = tmp_path / "run"
    base = ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32", "--max_length",
            "32", "--max_new_tokens", "2", "--n_samples", "1", "--quiet", "--n_levels", "2", "--n_trials", "1",
            "--dac_bits", "6", "--out", str(out)]
    assert sweep_run.main(base) == 0
    analog = json.loads((out / "run.json").read_text())["config"]["analog"]
    assert analog["dac_bits"] == 6 and analog["tile_size"] == [512, 512] and analog["bound_management"] == "iterative"
