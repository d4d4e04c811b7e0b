"""Device models from the shell: drift_over_time and the main sweep with pcm / stuck_at / converters."""

import json
import math

import pytest

from noisynn.experiments.drift_over_time import report as drift_report
from noisynn.experiments.drift_over_time import run as drift_over_time
from noisynn.experiments.sweep import run as sweep
from noisynn.runs.read import read_rows

SWEEP_SCHEMA = ["experiment", "model", "noise_type", "scale", "sigma", "trial", "seed", "perplexity", "nll",
                "bits_per_byte", "eval_tokens", "entropy_bits", "distinct_1", "distinct_2", "repetition", "finite"]


@pytest.fixture
def tiny(tiny_model_dir, text_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64", "--max_length", "32",
            "--max_new_tokens", "4", "--n_samples", "1", "--quiet"]


def test_drift_over_time_run_folder(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    args = tiny + ["--times", "1s,1d,1y", "--n_trials", "2", "--digital_bits", "4", "--out", str(out)]
    assert drift_over_time.main(args) == 0
    rows = read_rows(out / "results.csv")
    assert list(rows[0])[:14] == ["experiment", "model", "noise_type", "scale", "sigma", "trial", "seed", "condition",
                                  "preset", "t_seconds", "t_label", "compensation", "drift_ratio", "alpha_mean"]
    assert {r["preset"] for r in rows} == {"digital", "none"}  # one setting: the weights only, as before
    pcm = [r for r in rows if r["condition"] == "pcm"]
    assert [r["condition"] for r in rows if r["condition"] != "pcm"] == ["float", "int4"]
    assert len(pcm) == 3 * 2 * 2 and {r["t_label"] for r in pcm} == {"1 s", "1 d", "1 y"}
    assert all(r["noise_type"] == "pcm" and r["sigma"] == 1.0 and r["scale"] == "relative_channel" for r in pcm)
    # One programming per trial: the seed depends on the trial only.
    assert len({(r["trial"], r["seed"]) for r in pcm}) == 2
    for trial in (0, 1):
        by = {(r["t_seconds"], r["compensation"]): r for r in pcm if r["trial"] == trial}
        for t in (1.0, 86400.0, 365 * 86400.0):
            off, on = by[(t, False)], by[(t, True)]
            assert off["drift_ratio"] == on["drift_ratio"]  # the same read
            assert off["alpha_mean"] == 1.0 and on["alpha_mean"] > 1.0
        assert 0.45 < by[(365 * 86400.0, False)]["drift_ratio"] < by[(86400.0, False)]["drift_ratio"] < 0.75
    assert all(math.isfinite(r["perplexity"]) and r["eval_tokens"] == 64 for r in rows)
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["times_s"] == [1.0, 86400.0, 31536000.0]
    assert "multiplier" in meta["sigma"] and "once per trial" in meta["programming"]
    assert meta["injection"]["noise"]["name"] == "pcm" and "Nandakumar" in meta["injection"]["noise"]["sources"]
    assert len(meta["drift_reference"]["factor"]) == 60
    assert meta["presets"] == {"none": None} and meta["converters_by_preset"] == {"none": None}
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(rows) * 2 and {s["kind"] for s in samples} == {"greedy", "sampled"}
    assert (out / "drift_over_time.png").stat().st_size > 10_000 and (out / "summary.csv").is_file()
    assert "compensated" in capsys.readouterr().out
    # Rerunning resumes: nothing is recomputed, the rows stay as they are.
    assert drift_over_time.main(args) == 0
    assert read_rows(out / "results.csv") == rows


def test_drift_plot_redraws_from_the_folder_alone(tmp_path, tiny):

    out = tmp_path / "run"
    assert drift_over_time.main(tiny + ["--times", "1h,1y", "--n_trials", "1", "--digital_bits", "",
                                        "--compensation", "on", "--out", str(out)]) == 0
    (out / "drift_over_time.png").unlink()
    (path,) = drift_report.plot(out)
    assert path.stat().st_size > 10_000
    assert {r["compensation"] for r in read_rows(out / "results.csv") if r["condition"] == "pcm"} == {True}


def _pcm_by(rows, preset):
    return {(r["trial"], r["t_seconds"], r["compensation"]): r for r in rows
            if r["condition"] == "pcm" and r["preset"] == preset}


def test_drift_over_time_presets_in_one_run(tmp_path, tiny):
    """--presets reads the same programmings (per mapping) through each setting, and each preset's rows are the rows of a run of
    that preset alone (so no preset's converters, calibration or compensation reference leak into another's)."""
    common = tiny + ["--times", "1s,1y", "--n_trials", "2", "--digital_bits", ""]
    out = tmp_path / "multi"
    args = common + ["--presets", "none,aihwkit_default,afm", "--out", str(out)]
    assert drift_over_time.main(args) == 0
    rows = read_rows(out / "results.csv")
    assert [r["preset"] for r in rows if r["condition"] != "pcm"] == ["digital"]
    by = {p: _pcm_by(rows, p) for p in ("none", "aihwkit_default", "afm")}
    assert all(len(b) == 2 * 2 * 2 for b in by.values()) and len(rows) == 1 + 3 * 8
    for key, none in by["none"].items():  # one programming per trial and mapping: afm maps per row as none does
        assert by["afm"][key]["drift_ratio"] == none["drift_ratio"]
        assert by["aihwkit_default"][key]["seed"] == none["seed"]  # aihwkit_default: its per-tile abs-max mapping
        assert by["aihwkit_default"][key]["scale"] == "relative_max" and none["scale"] == "relative_channel"
    assert any(by["aihwkit_default"][k]["perplexity"] != r["perplexity"] for k, r in by["none"].items())
    assert any(by["afm"][k]["perplexity"] != by["aihwkit_default"][k]["perplexity"] for k in by["none"])
    # compensated through the converters after the ADC: per-tile factors, not exactly the weights' factor
    year_on = [k for k in by["none"] if k[1] > 1e7 and k[2]]
    assert all(by["aihwkit_default"][k]["alpha_mean"] > 1.0 for k in year_on)
    meta = json.loads((out / "run.json").read_text())
    assert meta["presets"]["none"] is None and meta["presets"]["afm"]["dac_bits"] == 8
    assert meta["presets"]["aihwkit_default"]["adc_bits"] == 9 and meta["converters_by_preset"]["afm"]["n_layers"] > 0
    summary = read_rows(out / "summary.csv")
    assert {r["preset"] for r in summary if r["condition"] == "pcm"} == {"none", "aihwkit_default", "afm"}
    for preset, flags in (("none", []), ("aihwkit_default", ["--analog_preset", "aihwkit_default"])):
        single = tmp_path / preset
        assert drift_over_time.main(common + flags + ["--out", str(single)]) == 0
        alone = read_rows(single / "results.csv")
        assert {r["preset"] for r in alone if r["condition"] == "pcm"} == {preset}
        for key, r in _pcm_by(alone, preset).items():
            assert (r["perplexity"], r["alpha_mean"]) == (by[preset][key]["perplexity"], by[preset][key]["alpha_mean"])
    # An interrupted run resumes: the rows it has are kept, the rest computed, the same as a whole run.
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:12]))
    assert drift_over_time.main(args) == 0
    assert read_rows(out / "results.csv") == rows


def test_drift_over_time_calibrated_preset_without_max_length(tmp_path, tiny):
    """A calibrated input range (afm) is measured in windows of the fitted --max_length, also when none is given."""
    i = tiny.index("--max_length")
    args = tiny[:i] + tiny[i + 2:] + ["--times", "1d", "--n_trials", "1", "--digital_bits", "", "--compensation", "on"]
    assert drift_over_time.main(args + ["--presets", "afm", "--out", str(tmp_path / "run")]) == 0
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["converters_by_preset"]["afm"]["calibration"]["tokens"] > 0


@pytest.mark.parametrize("extra,message", [
    (["--presets", "none,afm", "--analog_preset", "afm"], "not both"),
    (["--presets", "none", "--analog_io"], "not both"),
    (["--presets", "none,hwa"], "comma list of none"),
    (["--presets", "afm,afm"], "distinct"),
    (["--times", "abc"], "is not a time"),
    (["--times", "1h,3600"], "distinct"),
    (["--t_seconds", "5"], "use --times"),
    (["--noise_type", "gaussian"], "has no read time"),
    (["--scale", "absolute"], "needs --scale relative_channel or relative_max"),
    (["--digital_bits", "1"], ">= 2 bits"),
    (["--dac_bits", "1"], "must be >= 2 bits"),
    (["--input_range", "sometimes"], "input_range is dynamic"),
])
def test_drift_over_time_bad_input_exits_2(tmp_path, tiny, capsys, extra, message):
    capsys.readouterr()
    try:
        code = drift_over_time.main(tiny + ["--out", str(tmp_path / "run")] + extra)
    except SystemExit as exit_info:  # argparse type errors
        code = exit_info.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra,check", [
    (["--noise_type", "pcm", "--scale", "relative_channel", "--t_seconds", "3600", "--drift_compensation"],
     lambda n: n["name"] == "pcm" and n["params"]["t_seconds"] == 3600 and n["params"]["drift_compensation"]),
    (["--noise_type", "stuck_at", "--scale", "relative_max", "--stuck_on_ratio", "0.2"],
     lambda n: n["name"] == "stuck_at" and n["params"]["stuck_on_ratio"] == 0.2 and "fraction" in n["sigma"]),
    (["--noise_type", "quantize", "--scale", "relative_channel"], lambda n: n["name"] == "quantize"),
])
def test_sweep_takes_device_models(tmp_path, tiny, extra, check):
    out = tmp_path / "run"
    assert sweep.main(tiny + ["--n_levels", "3", "--n_trials", "2", "--max_noise", "0.2", "--out", str(out)] + extra) == 0
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == SWEEP_SCHEMA and len(rows) == 6
    assert {r["noise_type"] for r in rows} == {extra[1]}
    meta = json.loads((out / "run.json").read_text())
    assert check(meta["injection"]["noise"]) and meta["status"] == "finished"
    clean = [r["perplexity"] for r in rows if r["sigma"] == 0]
    assert clean[0] == clean[1]  # sigma 0 is the clean model in every trial


def test_sweep_with_converters(tmp_path, tiny):
    out = tmp_path / "run"
    assert sweep.main(tiny + ["--n_levels", "2", "--n_trials", "1", "--analog_io", "--dac_bits", "4",
                              "--input_range", "calibrated", "--out", str(out)]) == 0
    meta = json.loads((out / "run.json").read_text())
    conv = meta["converters"]
    assert conv["dac_bits"] == 4 and conv["adc_bits"] == 9 and conv["out_noise"] == 0.06 and conv["n_layers"] == 14
    assert conv["calibration"]["tokens"] == 512 and conv["calibration"]["range_max"] > 0
    plain = tmp_path / "plain"
    assert sweep.main(tiny + ["--n_levels", "2", "--n_trials", "1", "--out", str(plain)]) == 0
    assert "converters" not in json.loads((plain / "run.json").read_text())
    hooked, digital = read_rows(out / "results.csv")[0], read_rows(plain / "results.csv")[0]
    assert hooked["sigma"] == digital["sigma"] == 0 and hooked["perplexity"] != digital["perplexity"]


@pytest.mark.integration
def test_drift_over_time_on_embedded_model(tmp_path):
    out = tmp_path / "run"
    args = ["--targets", "down", "--times", "1h,1y", "--n_trials", "1", "--eval_tokens", "64", "--max_new_tokens", "4",
            "--entropy_tokens", "4", "--n_samples", "1", "--digital_bits", "", "--quiet", "--out", str(out)]
    assert drift_over_time.main(args) == 0
    rows = read_rows(out / "results.csv")
    clean = next(r["perplexity"] for r in rows if r["condition"] == "float")
    pcm = {(r["t_label"], r["compensation"], r["trial"]): r for r in rows if r["condition"] == "pcm"}
    assert len(pcm) == 4 and 5 < clean < 40
    for trial in (0,):
        year_off, year_on = pcm[("1 y", False, trial)], pcm[("1 y", True, trial)]
        assert year_off["perplexity"] > clean and year_on["perplexity"] > clean
        assert year_on["perplexity"] < year_off["perplexity"]  # compensation helps after a year of drift
        assert 0.4 < year_off["drift_ratio"] < pcm[("1 h", False, trial)]["drift_ratio"] < 0.85
    meta = json.loads((out / "run.json").read_text())
    assert meta["injection"]["n_tensors"] == 30 and meta["model"]["fingerprint"]
