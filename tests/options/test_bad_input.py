"""Bad input, tried systematically across every script (issue 5, "Reliability").

For each case a real run folder of the script exists first (one tiny run on the tiny model per
script, copied per case); the bad invocation then names the same --out. Every case must end
with exit code 2, exactly one non-empty line on stderr that names the problem, and the run
folder byte-identical (no file added, removed or changed).

Scripts are called as users call them: each module's main(argv) in-process (argparse errors
arrive as SystemExit(2)), and a few through the real root scripts / console entry point.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, exits_2_with_one_line, script_env, run_python
from noisynn import cli, registry
from noisynn.ui import app as ui
from noisynn import graphs as generate_graphs

(drift_over_time, layer_sensitivity, llama_scaling, noise_aware_training, optimal_jitter, sweep, temporal_drift) = (
    registry.run_module(name) for name in ("drift_over_time", "layer_sensitivity", "llama_scaling",
                                           "noise_aware_training", "optimal_jitter", "sweep", "temporal_drift"))

MAIN = {
    "sweep": sweep.main, "layer_sensitivity": layer_sensitivity.main, "optimal_jitter": optimal_jitter.main,
    "noise_aware_training": noise_aware_training.main, "temporal_drift": temporal_drift.main,
    "llama_scaling": llama_scaling.main, "drift_over_time": drift_over_time.main,
    "generate_graphs": generate_graphs.main, "ui": ui.main, "noisynn": cli.main,
}
# The run folder a case must leave alone: the script's own; generate_graphs reads a sweep's.
FOLDER_OF = {name: name for name in MAIN if name not in ("generate_graphs", "ui", "noisynn")}
FOLDER_OF["generate_graphs"] = "sweep"


def base_args(script: str, f: dict) -> list[str]:
    """The tiny, valid invocation of each script (what the prepared folder was made with)."""
    common = ["--model", f["@MODEL"], "--text_file", f["@TEXT"], "--eval_tokens", "32", "--max_length", "32", "--quiet"]
    gen = ["--max_new_tokens", "2", "--n_samples", "1"]
    return {
        "sweep": common + gen + ["--entropy_tokens", "2", "--n_levels", "2", "--n_trials", "1", "--max_noise", "0.5"],
        "layer_sensitivity": common + ["--heatmap_tokens", "16", "--n_levels", "2", "--n_trials", "1", "--max_noise",
                                       "2", "--targets", "attention", "--blocks", "0", "--projections", "q"],
        "optimal_jitter": common + gen + ["--search_range", "0.05", "0.5", "--n_points", "1", "--n_trials", "1",
                                          "--prompts", "The fox"],
        "noise_aware_training": common + ["--train_file", f["@TRAIN"], "--seq_len", "16", "--max_samples", "2",
                                          "--batch_size", "2", "--steps", "1", "--no_control", "--n_levels", "2",
                                          "--n_trials", "1", "--noise_level", "0.3", "--max_noise", "0.6"],
        "temporal_drift": common + ["--total_tokens", "3", "--n_trials", "1", "--end_sigma", "0.5"],
        "llama_scaling": ["--models", f["@MODEL"], "--text_file", f["@TEXT"], "--eval_chars", "300", "--max_length",
                          "64", "--n_levels", "2", "--n_trials", "1", "--quiet"],
        "drift_over_time": common + gen + ["--entropy_tokens", "2", "--times", "1h", "--n_trials", "1",
                                           "--digital_bits", "", "--compensation", "off"],
        "generate_graphs": ["--output_dir", f["@IMAGES"]],
        "ui": ["--model", f["@MODEL"]],
        "noisynn": [],
    }[script]


def case(script, extra, message, **kw):
    return pytest.param(script, extra, message, id=f"{script}:{' '.join(extra)}"[:70], **kw)


# (script, extra flags, fragment of the one stderr line). @NAME stands for a path of the `files` fixture;
# @RUN for the prepared run folder (the case's copy).
CASES = [
    # thermal_noise_simulation.py (noisynn sweep)
    case("sweep", ["--max_noise", "-0.1"], "'-0.1' must be >= 0"),
    case("sweep", ["--max_noise", "1e999"], "is not a finite number"),
    case("sweep", ["--max_noise", "0"], "--max_noise must be > 0"),
    case("sweep", ["--n_levels", "2.5"], "'2.5' is not an integer"),
    case("sweep", ["--dtype", "int8"], "unknown dtype 'int8'"),
    case("sweep", ["--blocks", "9"], "block 9 does not exist: this model has blocks 0-1"),
    case("sweep", ["--targets", "qkv"], "targets 'qkv' match no weights"),
    case("sweep", ["--prompt", ""], "the prompt is empty"),
    case("sweep", ["--plugin", "@PLUGIN_TXT"], "is not a Python file"),
    case("sweep", ["--max_memory", "0=1GiB"], "--max_memory needs --device_map auto"),
    case("sweep", ["--noise_type", "pcm"], "needs --scale relative_channel or relative_max"),
    case("sweep", ["--n_trials", "2"], "holds a different run (differs in: n_trials)"),
    case("sweep", ["--output", "@MISSING_DIR/sweep.png"], "does not exist"),
    # flags that mean nothing in their combination (noisynn.analog.fields Field.needs, issue 25)
    case("sweep", ["--noise_type", "pcm", "--scale", "relative_channel", "--compensation_method", "exact"],
         "--compensation_method: needs --drift_compensation"),
    case("sweep", ["--range_std", "3"], "--range_std: sets calibrated input ranges, and the input range is dynamic"),
    case("sweep", ["--analog_preset", "afm", "--input_range", "dynamic", "--range_std", "3"], "input range is dynamic"),
    case("sweep", ["--w_noise_type", "pcm_read"], "--w_noise_type: needs --w_noise > 0"),
    case("sweep", ["--w_noise", "0.1", "--w_noise_type", "none"], "w_noise needs a w_noise_type"),
    case("sweep", ["--bound_management", "none", "--max_bm_factor", "10"], "--max_bm_factor: means nothing with bound"),
    case("sweep", ["--analog_preset", "afm", "--max_bm_factor", "10"], "--max_bm_factor: means nothing with bound"),
    case("sweep", ["--tile_size", "64"], "--tile_size: means nothing without converters or a device model"),
    case("sweep", ["--pair", "independent"], "--pair: noise 'gaussian' has no such parameter (a parameter of pcm)"),
    case("sweep", ["--t_seconds", "60"], "--t_seconds: noise 'gaussian' has no such parameter"),
    case("sweep", ["--noise_type", "laplacian", "--compensation_method", "exact"], "noise 'laplacian' has no such"),
    case("sweep", ["--noise_type", "pcm", "--scale", "relative_channel", "--df", "4"], "--df: noise 'pcm' has no such"),
    # parameters whose float32 value degenerates (0, subnormal, inf) while the typed number does not
    case("sweep", ["--noise_type", "student_t", "--df", "1e-300"], "--df: '1e-300': 1e-300 is 0 in float32"),
    case("sweep", ["--input_range", "1e-300"], "--input_range: a fixed input_range of 1e-300: 1e-300 is 0 in float32"),
    case("sweep", ["--inp_noise", "1e-40"], "is subnormal in float32"),
    # layer_sensitivity.py
    case("layer_sensitivity", ["--ppl_threshold", "nan"], "'nan' is not a finite number"),
    case("layer_sensitivity", ["--blocks", "5"], "--blocks 5: the model has blocks 0-1"),
    case("layer_sensitivity", ["--targets", "attention,qkv"], "targets 'qkv' match no weights"),
    case("layer_sensitivity", ["--projections", "qq"], "unknown projection 'qq'"),
    case("layer_sensitivity", ["--mode", "groups", "--max_noise", "0"], "--max_noise must be > 0 for the group sweep"),
    case("layer_sensitivity", ["--plugin", "@SYNTAX"], "failed to import: SyntaxError"),
    case("layer_sensitivity", ["--compensation_method", "readout"], "--compensation_method: noise 'gaussian' has no"),
    # optimal_jitter.py
    case("optimal_jitter", ["--search_range", "0.5", "0.1"], "needs LOW <= HIGH"),
    case("optimal_jitter", ["--temperature", "0"], "'0' must be > 0"),
    case("optimal_jitter", ["--top_k", "abc"], "'abc' is not an integer"),
    case("optimal_jitter", ["--prompts", " "], "--prompts needs at least one non-empty prompt"),
    case("optimal_jitter", ["--output", "@RUN"], "is a folder"),
    # noise_aware_training.py
    case("noise_aware_training", ["--train_file", "@MISSING_DIR/train.txt"], "does not exist"),
    case("noise_aware_training", ["--train_file", "@TEXT"], "contains evaluation text"),
    case("noise_aware_training", ["--warmup", "2"], "must be <= 1"),
    case("noise_aware_training", ["--lr", "-1"], "'-1' must be > 0"),
    case("noise_aware_training", ["--max_noise", "0"], "--max_noise must be > 0"),
    case("noise_aware_training", ["--targets", "qkv"], "targets 'qkv' match no weights"),
    case("noise_aware_training", ["--seq_len", "100000"], "--seq_len 100,000 is longer than the 256 positions"),
    case("noise_aware_training", ["--train_file", "@SHORT_TRAIN", "--seq_len", "200"], "fewer than --seq_len 200"),
    case("noise_aware_training", ["--seq_len", "1"], "--seq_len: '1' must be >= 2"),
    case("noise_aware_training", ["--tile_size", "64"], "--tile_size: means nothing without converters"),
    # temporal_drift.py
    case("temporal_drift", ["--schedule", "cubic"], "unknown schedule 'cubic'"),
    case("temporal_drift", ["--accumulate", "--noise_type", "pcm", "--scale", "relative_channel"],
         "--accumulate needs an additive noise"),
    case("temporal_drift", ["--start_sigma", "-1"], "'-1' must be >= 0"),
    case("temporal_drift", ["--total_tokens", "many"], "'many' is not an integer"),
    case("temporal_drift", ["--prompt", "   "], "the prompt is empty"),
    # llama_scaling.py
    case("llama_scaling", ["--models", "a,,b"], "has an empty name"),
    case("llama_scaling", ["--models", "@ADIR"], "has no config.json"),
    case("llama_scaling", ["--eval_chars", "100000"], "fewer than --eval_chars"),
    case("llama_scaling", ["--dataset", "wikitext"], "give either --text_file or --dataset"),
    case("llama_scaling", ["--device_map", "auto", "--max_memory", "lots"], "--max_memory takes DEVICE=SIZE pairs"),
    # drift_over_time.py
    case("drift_over_time", ["--times", "abc"], "is not a time"),
    case("drift_over_time", ["--times", "nan"], "must be finite"),
    case("drift_over_time", ["--noise_type", "gaussian"], "has no read time"),
    case("drift_over_time", ["--t_seconds", "5"], "use --times and --compensation"),
    case("drift_over_time", ["--digital_bits", "x"], "--digital_bits takes a comma list of integers"),
    case("drift_over_time", ["--stuck_fraction", "2"], "must lie in [0, 1]"),
    case("drift_over_time", ["--times", "0"], "--times must be > 0 s"),
    case("drift_over_time", ["--times", "0,1h"], "--times must be > 0 s"),
    case("drift_over_time", ["--compensation_method", "exact"], "--compensation_method: needs --drift_compensation"),
    # generate_graphs.py (the folder it must leave alone is a sweep's)
    case("generate_graphs", ["--output", "@RUN/x.png"], "--output goes with --compare"),
    case("generate_graphs", ["--compare", "@RUN", "@MISSING_DIR"], "not a run folder"),
    case("generate_graphs", ["--compare", "@RUN", "@CORRUPT"], "not a run folder (no readable run.json)"),
    case("generate_graphs", ["--compare", "@RUN", "--output", "@RUN/results.csv/x.png"], "is not a folder"),
    case("generate_graphs", ["--compare", "@RUN", "--output_dir", "@RUN/run.json"], "--output_dir"),
    case("generate_graphs", ["--results_dir", "@RUN/results.csv"], "is not a folder"),
    # noisynn ui (argument errors only: launch is replaced by a failure below, so no server starts)
    case("ui", ["--sigma", "-1"], "'-1' must be >= 0"),
    case("ui", ["--port", "70000"], "is not a port"),
    case("ui", ["--targets", "q"], "the ui offers the targets"),
    case("ui", ["--noise_type", "pcm"], "needs --scale relative_channel or relative_max"),
    case("ui", ["--plugin", "@RAISES"], "failed to import: RuntimeError: plugin is broken"),
    case("ui", ["--max_memory", "0=1GiB"], "--max_memory needs --device_map auto"),
    case("ui", ["--model", "@ADIR"], "has no config.json"),
    case("ui", ["--text_file", "@MISSING_DIR/text.txt"], "does not exist"),
    case("ui", ["--tile_size", "64"], "--tile_size: means nothing without converters or a device model"),
    case("ui", ["--noise_type", "pcm", "--t_seconds", "1e-300"], "--t_seconds: '1e-300': 1e-300 is 0 in float32"),
    case("ui", ["--range_std", "2"], "--range_std: sets calibrated input ranges"),
    # the noisynn console dispatcher
    case("noisynn", ["nosuch"], "unknown experiment 'nosuch'"),
    case("noisynn", ["--bogus"], "unknown experiment '--bogus'"),
    case("noisynn", ["ui", "--port", "abc"], "'abc' is not an integer"),
    case("noisynn", ["optimal_jitter", "--n_points", "-3"], "'-3' must be >= 1"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir, text_file):
    """Paths the cases name: good inputs, and bad ones (broken plugins, a folder that is no model, ...)."""
    d = tmp_path_factory.mktemp("bad-input-files")
    (d / "train.txt").write_text(("Pack my box with five dozen liquor jugs, said the sphinx of black quartz. " * 60)
                                 .strip(), encoding="utf-8")
    (d / "short_train.txt").write_text("Sphinx of black quartz, judge my vow.", encoding="utf-8")
    (d / "raises.py").write_text("raise RuntimeError('plugin is broken')\n")
    (d / "syntax.py").write_text("def broken(:\n")
    (d / "plugin.txt").write_text("from noisynn import register_noise\n")
    (d / "adir").mkdir()  # exists, holds no model
    (d / "corrupt").mkdir()
    (d / "corrupt" / "run.json").write_text("{")
    return {"@MODEL": str(tiny_model_dir), "@TEXT": str(text_file), "@TRAIN": str(d / "train.txt"), "@SHORT_TRAIN": str(d / "short_train.txt"),
            "@RAISES": str(d / "raises.py"), "@SYNTAX": str(d / "syntax.py"), "@PLUGIN_TXT": str(d / "plugin.txt"),
            "@ADIR": str(d / "adir"), "@CORRUPT": str(d / "corrupt"), "@MISSING_DIR": str(d / "no" / "such"),
            "@IMAGES": str(d / "images")}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, files):
    """prepared(script) -> a finished run folder of that script (made on first use, ~1 s each)."""
    made = {}

    def get(script: str) -> Path:
        if script not in made:
            out = tmp_path_factory.mktemp(f"prepared-{script}") / "run"
            assert MAIN[script](base_args(script, files) + ["--out", str(out)]) == 0
            made[script] = out
        return made[script]

    return get


def snapshot(folder: Path) -> dict:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def substitute(args, paths: dict) -> list[str]:
    out = []
    for a in args:
        for key in sorted(paths, key=len, reverse=True):  # @MISSING_DIR before a shorter prefix
            a = a.replace(key, paths[key])
        out.append(a)
    return out


def with_run(script, files, prepared, tmp_path):
    """The script's base arguments and path substitutions, with a copy of its prepared run folder
    as ``--out`` (or as @RUN for generate_graphs); returns (argv, paths, run folder or None)."""
    paths, argv, run = dict(files), list(base_args(script, files)), None
    if script in FOLDER_OF:
        run = tmp_path / "run"
        shutil.copytree(prepared(FOLDER_OF[script]), run)
        paths["@RUN"] = str(run)
        if script != "generate_graphs":
            argv += ["--out", str(run)]
    return argv, paths, run


def no_server(*args, **kwargs):
    raise AssertionError("the ui got past its argument checks (it would load the model and serve)")


@pytest.mark.parametrize("script,extra,message", CASES)
def test_bad_invocation_exits_2_with_one_line_and_keeps_the_run(script, extra, message, files, prepared, tmp_path,
                                                                capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])  # cli.main rewrites argv[0]
    monkeypatch.setattr(ui, "_import_gradio", no_server)
    for key, value in ui.OFFLINE_ENV.items():  # the ui sets these; keep them from outliving the test
        monkeypatch.setenv(key, os.environ.get(key, value))
    argv, paths, run = with_run(script, files, prepared, tmp_path)
    before = snapshot(run) if run else None
    err = exits_2_with_one_line(MAIN[script], argv + substitute(extra, paths), capsys)
    assert message in err and "Traceback" not in err, err
    if run:
        assert snapshot(run) == before, "the bad invocation changed the run folder"
    assert not Path(files["@MISSING_DIR"]).parent.exists()  # nothing created for a path that did not exist


def test_the_table_spans_every_script():
    scripts = [p.values[0] for p in CASES]
    assert set(scripts) == set(MAIN) and all(scripts.count(s) >= 2 for s in MAIN) and len(CASES) >= 15


# The real entry points: root scripts and the console module, each in a fresh interpreter.
SUBPROCESS = [
    ([str(ROOT / "thermal_noise_simulation.py")], "sweep", ["--plugin", "@RAISES"], "failed to import"),
    ([str(ROOT / "temporal_drift.py")], "temporal_drift", ["--accumulate", "--noise_type", "pcm", "--scale",
                                                           "relative_channel"], "--accumulate needs an additive noise"),
    ([str(ROOT / "generate_graphs.py")], "generate_graphs", ["--compare", "@RUN", "@CORRUPT"], "not a run folder"),
    ([str(ROOT / "layer_sensitivity.py")], "layer_sensitivity", ["--ppl_threshold", "1"], "must be > 1"),
    ([str(ROOT / "optimal_jitter.py")], "optimal_jitter", ["--max_ppl_ratio", "1"], "must be > 1"),
    (["-m", "noisynn.cli"], "noisynn", ["nosuch"], "unknown experiment 'nosuch'"),
]


@pytest.mark.parametrize("entry,script,extra,message", SUBPROCESS, ids=[s[1] for s in SUBPROCESS])
def test_real_entry_points_exit_2_with_one_line(entry, script, extra, message, files, prepared, tmp_path):
    argv, paths, run = with_run(script, files, prepared, tmp_path)
    before = snapshot(run) if run else None
    env = script_env(HF_HUB_OFFLINE="1")
    proc = run_python([*entry, *argv, *substitute(extra, paths)], cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.strip() and message in proc.stderr, proc.stderr
    if run:
        assert snapshot(run) == before


def test_a_sigma_beyond_the_float_range_overflows_to_inf_instead_of_raising():
    """--max_noise 1e300 is a finite number: the weights become inf (recorded as non-finite), no traceback."""
    import torch

    from tests.helpers import tiny_llama
    from noisynn.inject import NoiseInjector

    model = tiny_llama()
    injector = NoiseInjector(model, "gaussian", "absolute", "mlp")
    injector.draw(0)
    injector.apply(1e300)
    assert not torch.isfinite(injector.targets[0].param).all()
    injector.restore()
    assert all(torch.equal(t.param, c) for t, c in zip(injector.targets, injector.clean))
