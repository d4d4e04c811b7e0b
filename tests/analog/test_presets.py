"""A preset is a whole setting (noisynn.analog.presets, noisynn.spec.resolve_preset) and bound management as aihwkit tests it.

A preset holds converters, tiles, the weight-to-conductance mapping, the pair and the compensation method, as
aihwkit's ``InferenceRPUConfig`` is one object; a flag given overrides one field and run.json says which.
"""

from __future__ import annotations

import json

import pytest
import torch

from noisynn.analog.mvm import AnalogIO, analog_matmul


def _drift_args(*flags):
    from noisynn.experiments.drift_over_time import run as drift_run

    return drift_run.parse(list(flags))


def test_aihwkit_default_maps_one_abs_max_per_tile():
    """InferenceRPUConfig(): SinglePairConductanceConverter maps each tile's abs-max to g_max (relative_max), where
    drift_over_time's own default is per row (relative_channel)."""
    from noisynn.spec import resolve_preset, spec_from_args

    assert _drift_args().scale == "relative_channel"
    args = _drift_args("--analog_preset", "aihwkit_default")
    spec = spec_from_args(args)
    assert spec.scale == "relative_max" and spec.params["pair"] == "tile" and spec.params["tile_size"] == (512, 512)
    assert spec.params["compensation_method"] == "readout"
    assert resolve_preset(args)["fields"] == {"scale": "preset", "pair": "preset", "compensation_method": "preset",
                                              "tile_size": "preset"}
    hwa = spec_from_args(_drift_args("--analog_preset", "aihwkit_hwa"))
    assert hwa.scale == "relative_channel" and hwa.params["tile_size"] == (512, 0)
    # --analog_io is aihwkit_default
    assert spec_from_args(_drift_args("--analog_io")).scale == "relative_max"


def test_a_flag_given_overrides_one_field_and_the_record_says_so():
    from noisynn.spec import resolve_preset, spec_from_args

    args = _drift_args("--analog_preset", "aihwkit_default", "--scale", "relative_channel", "--pair", "independent")
    spec = spec_from_args(args)
    assert spec.scale == "relative_channel" and spec.params["pair"] == "independent"
    record = resolve_preset(args)
    assert record["fields"]["scale"] == "flag" and record["fields"]["pair"] == "flag"
    assert record["fields"]["compensation_method"] == "preset"
    # the same --scale as the experiment default, given explicitly, still counts as given
    args = _drift_args("--analog_preset", "aihwkit_default", "--scale", "relative_channel")
    assert spec_from_args(args).scale == "relative_channel"


def test_device_fields_apply_only_to_device_models():
    """For an additive distribution --scale is the unit of sigma, not a mapping: the sweep keeps its own."""
    from noisynn.experiments.sweep import run as sweep_run
    from noisynn.spec import resolve_preset, spec_from_args

    args = sweep_run.parse(["--analog_preset", "aihwkit_default"])
    assert spec_from_args(args).scale == "absolute"
    assert "not a device model" in resolve_preset(args)["device_fields"]
    # pcm_afm maps per row only: the aihwkit_default abs-max mapping is named as not applied, not an error
    args = _drift_args("--analog_preset", "aihwkit_default", "--noise_type", "pcm_afm")
    record = resolve_preset(args)
    assert args.scale == "relative_channel" and "scale" in record["not_applied"] and "pair" in record["not_applied"]


def test_run_json_records_where_each_field_came_from(tmp_path, tiny_model_dir, text_file):
    from noisynn.experiments.drift_over_time import run as drift_run

    out = tmp_path / "run"
    assert drift_run.main(["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32",
                           "--max_length", "32", "--max_new_tokens", "2", "--n_samples", "1", "--quiet",
                           "--times", "1d", "--n_trials", "1", "--digital_bits", "", "--compensation", "on",
                           "--analog_preset", "aihwkit_default", "--pair", "independent", "--out", str(out)]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["preset_resolution"]["fields"] == {"scale": "preset", "pair": "flag", "compensation_method": "preset",
                                                   "tile_size": "preset"}
    assert meta["config"]["scale"] == "relative_max" and meta["injection"]["scale"] == "relative_max"


def test_drift_presets_each_read_through_their_own_mapping(tmp_path, tiny_model_dir, text_file):
    """--presets: aihwkit_default programs with its per-tile abs-max, none and afm per row (the same seed: the
    same unit draws); the scale column and run.json name each entry's mapping."""
    from noisynn.experiments.drift_over_time import run as drift_run
    from noisynn.runs.read import read_rows

    out = tmp_path / "multi"
    assert drift_run.main(["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32",
                           "--max_length", "32", "--max_new_tokens", "2", "--n_samples", "1", "--quiet",
                           "--times", "1d", "--n_trials", "1", "--digital_bits", "", "--compensation", "off",
                           "--presets", "none,aihwkit_default,afm", "--out", str(out)]) == 0
    rows = [r for r in read_rows(out / "results.csv") if r["condition"] == "pcm"]
    scale = {r["preset"]: r["scale"] for r in rows}
    assert scale == {"none": "relative_channel", "aihwkit_default": "relative_max", "afm": "relative_channel"}
    ratio = {r["preset"]: r["drift_ratio"] for r in rows}
    assert ratio["none"] == ratio["afm"] != ratio["aihwkit_default"]
    mappings = json.loads((out / "run.json").read_text())["mappings"]
    assert mappings["aihwkit_default"]["scale"] == "relative_max" and mappings["none"]["scale"] == "relative_channel"


# ---------------------------------------------------------------- bound management's test, as aihwkit's float32

def test_saturation_level_follows_aihwkit_float32():
    """255 x float32(24/510) = 12.000001 > 12: with 9 bits and bound 12 the top level counts as saturated;
    127 x float32(20/254) rounds to 10 exactly: with 8 bits and bound 10 it does not."""
    assert AnalogIO(adc_bits=9, out_bound=12.0).saturation_level() == 254.5
    assert AnalogIO(adc_bits=8, out_bound=10.0).saturation_level() == 127.0
    assert AnalogIO(adc_bits=None, dac_bits=None, out_bound=3.0).saturation_level() == 3.0


@pytest.mark.parametrize("bits, bound, redone", [(9, 12.0, True), (8, 10.0, False)])
def test_an_output_on_the_top_level_is_redone_where_aihwkit_redoes_it(bits, bound, redone):
    """y = bound exactly lands on the top ADC level. Where aihwkit counts it saturated, the vector is redone at half
    the input: level 127.5 rounds to 128 (half to even), x 2 = 256 steps, one step above the bound."""
    io = AnalogIO(dac_bits=None, adc_bits=bits, out_bound=bound, out_noise=0.0, input_range="none",
                  bound_management="iterative", tile_size=(0, 0))
    x = torch.tensor([[1.0]], dtype=torch.float64)
    w = torch.tensor([[bound]], dtype=torch.float64)
    y = analog_matmul(x, w, io, generator=torch.Generator().manual_seed(0))
    step = 2 * bound / (2 ** bits - 2)
    expected = 2 * round((2 ** bits - 2) / 4) * step if redone else bound
    assert float(y) == pytest.approx(expected, rel=1e-9)
    assert (float(y) > bound) == redone


def test_set_mapping_starts_from_the_injectors_own_spec(llama):
    """Switching presets in one run: a preset that names no tile size gets the injector's, not the tiles of the
    preset read before it (found in the issue-22 drift rerun: `none` after `afm` kept afm's 512 x whole tiles)."""
    from noisynn.inject import NoiseInjector
    from noisynn.spec import make_noise_spec

    inj = NoiseInjector(llama, make_noise_spec("pcm", {"t_seconds": 3600.0}, scale="relative_channel"))
    base = dict(inj.spec.params)
    inj.set_mapping("relative_channel", tile_size=(16, 0), pair="independent")
    assert inj.spec.params["tile_size"] == (16, 0) and inj.noise.tile_size == (16, 0)
    inj.set_mapping("relative_channel")
    assert inj.spec.params == base and inj.noise.tile_size == (512, 512) and inj.noise.pair == "tile"
    inj.realize(0, 1.0)
    first = [t.param.detach().clone() for t in inj.targets]
    inj.set_mapping("relative_max")
    inj.realize(0, 1.0)
    assert any(not torch.equal(a, t.param) for a, t in zip(first, inj.targets))  # another mapping, same seed
    inj.set_mapping("relative_channel")
    inj.realize(0, 1.0)
    assert all(torch.equal(a, t.param) for a, t in zip(first, inj.targets))  # back: the same programming
    inj.restore()
