"""Hostile models and extreme flags (issue 11): one line, exit 2, nothing touched, never a traceback.

Broken model folders are made in tmp from the tiny random LLaMA of conftest (save_pretrained),
then damaged one way each: invalid or non-object config.json, unknown model_type, a config
field of the wrong type, no weights, truncated or garbage safetensors, no tokenizer, a broken
tokenizer, a file that is not GGUF, an encoder (BERT) that loads as a causal LM but attends to
later tokens. Every case runs in-process (the script's ``main(argv)``) on the bad-input folder
setup of test_bad_input.py: where a run folder exists it must stay byte-identical, and a new
``--out`` (@NEW) must not be created. A few go through the real entry points.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, byte_tokenizer, exits_2_with_one_line, script_env, run_python
from noisynn.ui import app as ui
from noisynn.errors import NoisyNNError
from tests.options.test_bad_input import MAIN, files, no_server, prepared, snapshot, substitute, with_run  # noqa: F401 - fixtures

PROMPT_100K = "the fox " * 12_500  # 100 kB: 100,000 tokens of the byte tokenizer, on a 256-position model


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_dir):
    """@NAME -> a damaged copy of the tiny model folder (or another hostile file)."""
    d = tmp_path_factory.mktemp("hostile-models")
    good = Path(tiny_model_dir)
    config = json.loads((good / "config.json").read_text())
    weights = (good / "model.safetensors").read_bytes()

    def damaged(name, damage):
        folder = d / name
        shutil.copytree(good, folder)
        damage(folder)
        return str(folder)

    def drop_tokenizer(f):
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (f / name).unlink(missing_ok=True)

    out = {
        "@BADJSON": damaged("badjson", lambda f: (f / "config.json").write_text("{not json")),
        "@LISTJSON": damaged("listjson", lambda f: (f / "config.json").write_text("[]")),
        "@UNKNOWN_TYPE": damaged("unknown", lambda f: (f / "config.json").write_text(
            json.dumps({**config, "model_type": "nosuchthing"}))),
        "@BADFIELD": damaged("badfield", lambda f: (f / "config.json").write_text(
            json.dumps({**config, "hidden_size": "abc"}))),
        "@NOWEIGHTS": damaged("noweights", lambda f: (f / "model.safetensors").unlink()),
        "@TRUNCATED": damaged("truncated", lambda f: (f / "model.safetensors").write_bytes(weights[:-1000])),
        "@GARBAGE": damaged("garbage", lambda f: (f / "model.safetensors").write_bytes(b"\0" * 5000)),
        "@NOTOK": damaged("notok", drop_tokenizer),
        "@MISMATCH": damaged("mismatch", lambda f: (f / "config.json").write_text(
            json.dumps({**config, "intermediate_size": 128}))),
        "@BADTOK": damaged("badtok", lambda f: (f / "tokenizer.json").write_text("{garbage")),
    }
    (d / "fake.gguf").write_text("this is not a GGUF file\n")
    (d / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")  # the magic bytes, then the header cut off
    out["@CUT_GGUF"] = str(d / "cut.gguf")
    plugin_head = ("import torch\nfrom noisynn import NoiseDistribution, register_noise\n"
                   "@register_noise('{name}')\nclass {cls}(NoiseDistribution):\n")
    for key, name, body in [  # plugins whose sample or name misbehaves at run time (not at import)
            ("@P_SAMPLE_EXIT", "audit_exit", "    def sample(self, shape, scale, device=None, generator=None):\n"
                                             "        raise SystemExit(0)\n"),
            ("@P_SAMPLE_NAN", "audit_nan", "    def sample(self, shape, scale, device=None, generator=None):\n"
                                           "        return torch.full(tuple(shape), float('nan'))\n"),
            ("@P_NAME_RAISES", "audit_name", "    @property\n    def name(self):\n        raise RuntimeError('no name')\n"
                                             "    def sample(self, shape, scale, device=None, generator=None):\n"
                                             "        return torch.zeros(tuple(shape))\n")]:
        (d / f"{name}.py").write_text(plugin_head.format(name=name, cls=name.title().replace("_", "")) + body)
        out[key] = str(d / f"{name}.py")
    out["@FAKE_GGUF"] = str(d / "fake.gguf")
    out["@CONFIG_FILE"] = str(good / "config.json")

    from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

    bert = d / "bert"  # an encoder: AutoModelForCausalLM makes it a BertLMHeadModel with is_decoder=False
    BertForMaskedLM(BertConfig(vocab_size=258, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=256)).save_pretrained(bert)
    byte_tokenizer().save_pretrained(bert)
    out["@BERT"] = str(bert)
    small = d / "small-vocab"  # 100 embedding rows, but the byte tokenizer has 258 tokens
    LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                 eos_token_id=99, pad_token_id=98, bos_token_id=None)).save_pretrained(small)
    byte_tokenizer().save_pretrained(small)
    out["@SMALL_VOCAB"] = str(small)
    other = d / "other-arch"  # a LLaMA config over a GPT-2's weights: nothing of the LLaMA would be loaded
    shutil.copytree(good, other)
    from tests.helpers import tiny_gpt2

    tiny_gpt2().save_pretrained(d / "gpt2")
    shutil.copy(d / "gpt2" / "model.safetensors", other / "model.safetensors")
    out["@OTHER_ARCH"] = str(other)
    (d / "empty.txt").write_text("")
    (d / "empty.py").write_text("\n")
    out["@EMPTY"], out["@EMPTY_PY"] = str(d / "empty.txt"), str(d / "empty.py")
    return out


@pytest.fixture
def busy_port():
    """A port with a listener on 127.0.0.1, bound as a server binds (SO_REUSEADDR): a running ui."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield str(sock.getsockname()[1])


def case(script, extra, message):
    return pytest.param(script, extra, message, id=f"{script}:{' '.join(extra)}"[:70])


# (script, extra flags, fragment of the one stderr line). @NAME: a path of `files` or `models`;
# @RUN: the prepared run folder (a copy); @NEW: an --out that must not be created.
CASES = [
    # broken models: one boundary in models.load_model, before the run folder is touched
    case("sweep", ["--model", "@BADJSON"], "config.json is not valid JSON"),
    case("sweep", ["--model", "@LISTJSON"], "config.json holds a list, not an object"),
    case("sweep", ["--model", "@UNKNOWN_TYPE"], "names model_type 'nosuchthing', which transformers"),
    case("sweep", ["--model", "@BADFIELD"], "Field 'hidden_size' expected int"),
    case("sweep", ["--model", "@NOWEIGHTS"], "has no weights file"),
    case("sweep", ["--model", "@TRUNCATED"], "model.safetensors is truncated"),
    case("sweep", ["--model", "@GARBAGE"], "is damaged or not safetensors"),
    case("sweep", ["--model", "@NOTOK"], "has no tokenizer"),
    case("sweep", ["--model", "@BADTOK"], "cannot load the tokenizer of model"),
    case("sweep", ["--model", "@FAKE_GGUF"], "is not a GGUF file"),
    case("sweep", ["--model", "@CONFIG_FILE"], "is a file, not a model folder or a .gguf file"),
    case("sweep", ["--model", "@MISMATCH"], "6 parameters have other shapes (model.layers."),
    case("sweep", ["--model", "@OTHER_ARCH"], "parameters are missing from them"),
    case("sweep", ["--model", "@SMALL_VOCAB"], "has 258 tokens but the model's embedding has 100 rows"),
    case("layer_sensitivity", ["--model", "@TRUNCATED"], "is truncated"),
    case("temporal_drift", ["--model", "@FAKE_GGUF"], "is not a GGUF file"),
    case("llama_scaling", ["--models", "@GARBAGE"], "is damaged or not safetensors"),
    case("llama_scaling", ["--models", "@UNKNOWN_TYPE"], "which transformers"),
    case("noise_aware_training", ["--model", "@NOWEIGHTS"], "has no weights file"),
    # not a causal language model
    case("sweep", ["--model", "@BERT"], "is not a causal language model"),
    case("optimal_jitter", ["--model", "@BERT", "--out", "@NEW"], "is not a causal language model"),
    case("llama_scaling", ["--models", "@BERT"], "is not a causal language model"),
    # --tokenizer
    case("sweep", ["--model", "@NOTOK", "--tokenizer", "@MISSING_DIR/tok"], "does not exist"),
    case("sweep", ["--model", "@NOTOK", "--tokenizer", "@ADIR"], "has no tokenizer"),
    case("sweep", ["--tokenizer", "@CONFIG_FILE"], "cannot load tokenizer"),
    # context length: the tiny models have 256 positions
    case("sweep", ["--max_length", "512"], "--max_length 512 is longer than the 256 positions"),
    case("sweep", ["--max_new_tokens", "300", "--out", "@NEW"], "300 generated tokens do not fit"),
    case("sweep", ["--prompt", PROMPT_100K, "--out", "@NEW"], "is 100,000 tokens"),
    case("optimal_jitter", ["--prompts", "The fox", PROMPT_100K], "beyond the 256 positions"),
    case("temporal_drift", ["--total_tokens", "300", "--out", "@NEW"], "300 generated tokens do not fit"),
    case("temporal_drift", ["--total_tokens", "250", "--out", "@NEW"], "in all, beyond the 256 positions"),
    case("drift_over_time", ["--max_new_tokens", "250", "--prompt", "x" * 10], "260 in all, beyond the 256"),
    case("layer_sensitivity", ["--max_length", "1000"], "longer than the 256 positions"),
    case("noise_aware_training", ["--max_length", "257"], "longer than the 256 positions"),
    case("llama_scaling", ["--max_length", "1000"], "--max_length 1,000 is longer than the 256 positions"),
    # text and plugin paths say what they are
    case("sweep", ["--text_file", "@ADIR"], "text file @ADIR is a folder"),
    case("sweep", ["--text_file", "/dev/null"], "text file /dev/null is not a regular file"),
    case("sweep", ["--plugin", "@ADIR"], "plugin file @ADIR is a folder"),
    case("sweep", ["--plugin", "/dev/null"], "plugin file /dev/null is not a regular file"),
    case("sweep", ["--plugin", "@EMPTY_PY"], "is empty"),
    case("noise_aware_training", ["--train_file", "@ADIR"], "is a folder"),
    case("llama_scaling", ["--text_file", "/dev/null"], "is not a regular file"),
    case("ui", ["--text_file", "@ADIR"], "is a folder"),
    # extreme values, bounded at parse time with the reason
    case("sweep", ["--n_trials", "100000000000000000000000"], "--n_trials: 100,000,000,000,000,000,000,000 is above"),
    case("sweep", ["--n_levels", "1000000000"], "is above 10,000, the most it takes (each point"),
    case("sweep", ["--max_noise", "1e308"], "--max_noise: 1e+308 is above 1e+30"),
    case("sweep", ["--eval_tokens", "1000000000000"], "--eval_tokens: 1,000,000,000,000 is above"),
    case("sweep", ["--max_new_tokens", "1000000000"], "--max_new_tokens: 1,000,000,000 is above"),
    case("sweep", ["--n_samples", "1000000"], "decoded in one batch"),
    case("sweep", ["--seed", str(2**64)], "seeds are 63-bit integers"),
    case("layer_sensitivity", ["--noise_level", "1e308"], "--noise_level: 1e+308 is above"),
    case("layer_sensitivity", ["--max_noise", "1e308"], "--max_noise: 1e+308 is above"),
    case("optimal_jitter", ["--search_range", "0.1", "1e300"], "--search_range: 1e+300 is above"),
    case("temporal_drift", ["--end_sigma", "1e300"], "--end_sigma: 1e+300 is above"),
    case("noise_aware_training", ["--steps", "1000000000000"], "--steps: 1,000,000,000,000 is above"),
    case("llama_scaling", ["--n_levels", "99999999"], "--n_levels: 99,999,999 is above"),
    case("drift_over_time", ["--n_trials", "99999999"], "--n_trials: 99,999,999 is above"),
    case("ui", ["--sigma", "1e300"], "--sigma: 1e+300 is above"),
    # found by the audit (issue 11, other members of each class)
    case("sweep", ["--model", "@CUT_GGUF"], "cannot load model"),
    case("ui", ["--model", "@CUT_GGUF"], "cannot load model"),
    case("drift_over_time", ["--digital_bits", "100000000000000000000"], "takes at most 32 bits"),
    case("drift_over_time", ["--times", "1e300", "--out", "@NEW"], "is above 1e+12 s, the most it takes"),
    case("sweep", ["--out_bound", "1e308", "--out", "@NEW"], "--out_bound: 1e+308 is above 1e+30"),
    case("noise_aware_training", ["--weight_decay", "1e308", "--out", "@NEW"], "--weight_decay: 1e+308 is above"),
    case("sweep", ["--text_file", "", "--out", "@NEW"], "argument --text_file: an empty value"),
    case("sweep", ["--tokenizer", "", "--out", "@NEW"], "argument --tokenizer: an empty value"),
    case("sweep", ["--out", ""], "argument --out: an empty value"),
    case("sweep", ["--device", "", "--out", "@NEW"], "argument --device: an empty value"),
    case("sweep", ["--dtype", " ", "--out", "@NEW"], "argument --dtype: an empty value"),
    case("noise_aware_training", ["--train_file", "", "--out", "@NEW"], "argument --train_file: an empty value"),
    case("llama_scaling", ["--dataset", ""], "argument --dataset: an empty value"),
    case("generate_graphs", ["--results_dir", ""], "argument --results_dir: an empty value"),
    case("generate_graphs", ["--compare", "@RUN", "--output_dir", ""], "argument --output_dir: an empty value"),
    case("ui", ["--blocks", ""], "argument --blocks: an empty value"),
    case("ui", ["--runs", "@MISSING_DIR"], "argument --runs: '@MISSING_DIR' does not exist"),
    case("ui", ["--runs", "@CONFIG_FILE"], "is not a folder"),
    case("sweep", ["--plugin", "@P_NAME_RAISES", "--noise_type", "audit_name", "--out", "@NEW"],
         "failed to initialise: RuntimeError: no name"),
    # messages that misled
    case("llama_scaling", ["--include_modern"], "--models PATH"),
    # noisynn ui: checked before serving
    case("ui", ["--port", "@BUSY_PORT"], "is in use"),
    case("ui", ["--blocks", "7"], "block 7 does not exist: this model has blocks 0-1"),
    case("ui", ["--model", "@BERT"], "is not a causal language model"),
    case("ui", ["--model", "@TRUNCATED"], "is truncated"),
    case("ui", ["--max_length", "1000"], "longer than the 256 positions"),
    case("ui", ["--prompt", PROMPT_100K], "is 100,000 tokens"),
]


def quiet_ui(monkeypatch):
    """The ui runs its checks and loads its model, but never builds a page or serves."""
    monkeypatch.setattr(ui, "_import_gradio", lambda: None)
    monkeypatch.setattr(ui, "build_app", no_server)
    monkeypatch.setattr(ui, "launch", no_server)
    for key, value in ui.OFFLINE_ENV.items():  # the ui sets these; keep them from outliving the test
        monkeypatch.setenv(key, os.environ.get(key, value))


@pytest.mark.parametrize("script,extra,message", CASES)
def test_hostile_invocation_exits_2_with_one_line(script, extra, message, files, models, prepared, tmp_path,
                                                  capsys, monkeypatch, request):
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    quiet_ui(monkeypatch)
    argv, paths, run = with_run(script, files, prepared, tmp_path)
    paths.update(models, **{"@NEW": str(tmp_path / "new-run")})
    if "@BUSY_PORT" in extra:
        paths["@BUSY_PORT"] = request.getfixturevalue("busy_port")
    before = snapshot(run) if run else None
    err = exits_2_with_one_line(MAIN[script], argv + substitute(extra, paths), capsys)
    assert substitute([message], paths)[0] in err and "Traceback" not in err, err
    if run:
        assert snapshot(run) == before, "the hostile invocation changed the run folder"
    assert not (tmp_path / "new-run").exists(), "a run folder was created before the check"


@pytest.mark.parametrize("plugin,name,message", [
    ("@P_SAMPLE_EXIT", "audit_exit", "sample failed: SystemExit: 0"),  # used to end the run silently with exit 0
    ("@P_SAMPLE_NAN", "audit_nan", ".sample returned NaN values"),  # 0 x nan: even the clean level was broken
])
def test_a_plugin_sample_failing_mid_run_is_one_line_and_the_run_marked_failed(plugin, name, message, files, models,
                                                                                tmp_path, capsys):
    """A sample is drawn once the run folder exists: one line, exit 2, run.json 'failed' (never 'running')."""
    out = tmp_path / "run"
    argv = ["--model", files["@MODEL"], "--text_file", files["@TEXT"], "--eval_tokens", "32", "--max_length", "32",
            "--quiet", "--max_new_tokens", "2", "--n_samples", "1", "--entropy_tokens", "2", "--n_levels", "2",
            "--n_trials", "1", "--max_noise", "0.5", "--plugin", models[plugin], "--noise_type", name, "--out", str(out)]
    err = exits_2_with_one_line(MAIN["sweep"], argv, capsys)
    assert message in err and "Traceback" not in err, err
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert not (out / ".lock").exists()


def test_the_table_covers_every_class():
    assert len(CASES) >= 50 and {p.values[0] for p in CASES} >= {"sweep", "layer_sensitivity", "optimal_jitter",
                                                                   "noise_aware_training", "temporal_drift",
                                                                   "llama_scaling", "drift_over_time", "ui"}


# A few through the real entry points, in a fresh interpreter.
SUBPROCESS = [
    ([str(ROOT / "thermal_noise_simulation.py")], "sweep", ["--model", "@BADJSON"], "config.json is not valid JSON"),
    ([str(ROOT / "llama_scaling.py")], "llama_scaling", ["--models", "@TRUNCATED"], "is truncated"),
    (["-m", "noisynn.cli", "ui"], "ui", ["--port", "@BUSY_PORT"], "is in use"),
]


@pytest.mark.parametrize("entry,script,extra,message", SUBPROCESS, ids=[s[1] for s in SUBPROCESS])
def test_real_entry_points(entry, script, extra, message, files, models, prepared, tmp_path, busy_port):
    argv, paths, run = with_run(script, files, prepared, tmp_path)
    paths.update(models, **{"@BUSY_PORT": busy_port})
    before = snapshot(run) if run else None
    env = script_env(HF_HUB_OFFLINE="1")
    proc = run_python([*entry, *argv, *substitute(extra, paths)], cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    if run:
        assert snapshot(run) == before


# -- what works when the user gives what is needed ---------------------------------------------

def sweep_argv(model: str, text: str, out: Path, *extra: str) -> list[str]:
    return ["--model", model, "--text_file", text, "--eval_tokens", "32", "--quiet", "--max_new_tokens", "2",
            "--n_samples", "1", "--entropy_tokens", "2", "--n_levels", "2", "--n_trials", "1", "--max_noise", "0.5",
            "--out", str(out), *extra]


def test_a_folder_without_tokenizer_runs_with_tokenizer_flag(files, models, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert MAIN["sweep"](sweep_argv(models["@NOTOK"], files["@TEXT"], out, "--tokenizer", str(tiny_model_dir))) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["tokenizer"] == str(tiny_model_dir)
    assert meta["model"]["tokenizer"] == str(tiny_model_dir)


def test_max_length_defaults_to_the_model_context_and_is_recorded(files, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert MAIN["sweep"](sweep_argv(str(tiny_model_dir), files["@TEXT"], out)) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["max_length"] == 256 and meta["model"]["context_length"] == 256
    # resuming without --max_length, or with the value it resolved to, is the same run
    assert MAIN["sweep"](sweep_argv(str(tiny_model_dir), files["@TEXT"], out)) == 0
    assert MAIN["sweep"](sweep_argv(str(tiny_model_dir), files["@TEXT"], out, "--max_length", "256")) == 0


def test_a_folder_recorded_with_512_resumes_without_max_length(files, tmp_path, capsys):
    """Runs made when --max_length defaulted to 512 (every committed results/ folder) resume unchanged."""
    model = tmp_path / "long-llama"
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                                 eos_token_id=256, pad_token_id=257, bos_token_id=None)).save_pretrained(model)
    byte_tokenizer().save_pretrained(model)
    out = tmp_path / "run"
    assert MAIN["sweep"](sweep_argv(str(model), files["@TEXT"], out, "--max_length", "512")) == 0
    assert MAIN["sweep"](sweep_argv(str(model), files["@TEXT"], out)) == 0
    assert json.loads((out / "run.json").read_text())["sessions"] == 2


def test_ui_port_0_serves_on_a_port_the_os_picks(files, tiny_model_dir, monkeypatch, capsys):
    served = {}
    monkeypatch.setattr(ui, "_import_gradio", lambda: None)
    monkeypatch.setattr(ui, "build_app", lambda *a, **k: "app")
    monkeypatch.setattr(ui, "launch", lambda app, port, block=True: served.setdefault("port", port))
    for key, value in ui.OFFLINE_ENV.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    assert ui.main(["--model", str(tiny_model_dir), "--text_file", files["@TEXT"], "--eval_tokens", "32",
                    "--port", "0"]) == 0
    assert 0 < served["port"] < 65536
    assert f"serving on http://127.0.0.1:{served['port']}" in capsys.readouterr().out


def test_ui_a_second_instance_on_the_same_port_is_refused(files, tiny_model_dir, monkeypatch, capsys):
    """The first instance holds its port (as the Gradio server does); the second says so in one line."""
    def serve(app, port, block=True):  # the first instance's server, listening
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(1)
        return server

    monkeypatch.setattr(ui, "_import_gradio", lambda: None)
    monkeypatch.setattr(ui, "build_app", lambda *a, **k: "app")
    argv = ["--model", str(tiny_model_dir), "--text_file", files["@TEXT"], "--eval_tokens", "32"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    servers = []
    monkeypatch.setattr(ui, "launch", lambda app, p, block=True: servers.append(serve(app, p)))
    for key, value in ui.OFFLINE_ENV.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    assert ui.main(argv + ["--port", port]) == 0
    try:
        err = exits_2_with_one_line(ui.main, argv + ["--port", port], capsys)
        assert f"port {port} on 127.0.0.1 is in use" in err
    finally:
        for s in servers:
            s.close()


# -- the checks as functions -------------------------------------------------------------------

def test_decoding_refuses_no_tokens_to_generate_and_an_empty_prompt(llama, tokenizer):
    """The original API's generate_text_samples: max_new_tokens=0 or an empty prompt used to end in a
    torch RuntimeError deep inside the model; now one NoisyNNError line (n_samples=0 gives [])."""
    from noisynn.evaluation import generate_text_samples

    with pytest.raises(NoisyNNError, match="max_new_tokens must be >= 1"):
        generate_text_samples(llama, tokenizer, "The", "cpu", n_samples=1, max_new_tokens=0)
    with pytest.raises(NoisyNNError, match="a prompt is empty"):
        generate_text_samples(llama, tokenizer, "", "cpu", n_samples=1, max_new_tokens=2)
    assert generate_text_samples(llama, tokenizer, "The", "cpu", n_samples=0, max_new_tokens=2) == []


@pytest.mark.parametrize("argv,message", [
    (["--bootstrap_iters", str(10**20)], "--bootstrap_iters: 100,000,000,000,000,000,000 is above 1,000,000"),
    (["--num_fewshot", str(10**12)], "--num_fewshot: 1,000,000,000,000 is above 10,000"),
    (["--limit", str(10**12)], "--limit: 1,000,000,000,000 is above 10,000,000"),
    (["--model", ""], "argument --model: an empty value"),
])
def test_task_accuracy_sizes_and_empty_values_are_refused_at_parse_time(argv, message, capsys):
    from noisynn import registry

    err = exits_2_with_one_line(registry.run_module("task_accuracy").build_parser().parse_args, argv, capsys)
    assert message in err, err


def test_an_empty_value_is_allowed_only_where_it_means_none():
    """drift_over_time's --digital_bits '' (no digital reference) stays valid; every other string flag refuses ''."""
    from noisynn import registry

    args = registry.run_module("drift_over_time").build_parser().parse_args(["--digital_bits", ""])
    assert args.digital_bits == ""

def test_causality_is_measured(gpt2, llama):
    from transformers import BertConfig, BertLMHeadModel

    from noisynn.models.checks import is_causal

    encoder = BertLMHeadModel(BertConfig(vocab_size=258, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=64)).eval()
    decoder = BertLMHeadModel(BertConfig(vocab_size=258, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=64, is_decoder=True)).eval()
    assert is_causal(llama) and is_causal(gpt2) and is_causal(decoder)
    assert not is_causal(encoder)


def test_context_limit_reads_each_config_family(gpt2, llama):
    from transformers import GPT2Config

    from noisynn.models.checks import context_limit, context_window

    assert context_limit(llama.config) == 256 and context_limit(gpt2.config) == 256
    assert context_limit(GPT2Config(n_positions=64)) == 64
    assert context_window(None, 256, "m") == 256 and context_window(None, 4096, "m") == 512
    assert context_window(None, None, "m") == 512 and context_window(100, 256, "m") == 100
    with pytest.raises(NoisyNNError, match="longer than the 256 positions"):
        context_window(300, 256, "m")


def test_every_bounded_flag_exists_in_some_script():
    """FLAG_BOUNDS names real destinations (a typo would bound nothing)."""
    from noisynn import registry
    from noisynn.options.parser import FLAG_BOUNDS

    parsers = [registry.parser(name) for name in [*registry.names(), *registry.TOOLS]]
    dests = {a.dest for p in parsers for a in p._actions}
    assert set(FLAG_BOUNDS) <= dests, set(FLAG_BOUNDS) - dests


def test_a_folder_from_before_a_flag_existed_resumes(files, tiny_model_dir, tmp_path, capsys):
    """A run.json written before --tokenizer (or --device_map ...) existed lacks those keys; left at their
    None default they change nothing, so the folder resumes (the committed results/ folders are such)."""
    out = tmp_path / "run"
    argv = sweep_argv(str(tiny_model_dir), files["@TEXT"], out)
    assert MAIN["sweep"](argv) == 0
    meta = json.loads((out / "run.json").read_text())
    for key in ("tokenizer", "device_map", "max_memory"):
        meta["config"].pop(key)
    (out / "run.json").write_text(json.dumps(meta))
    assert MAIN["sweep"](argv) == 0
    assert json.loads((out / "run.json").read_text())["sessions"] == 2


@pytest.mark.integration
def test_the_committed_sweep_resumes_unchanged(tmp_path, capsys):
    """results/sweep (recorded with max_length 512, before --tokenizer existed) resumes: nothing to run."""
    run = tmp_path / "sweep"
    shutil.copytree(ROOT / "results" / "sweep", run)
    rows = (run / "results.csv").read_bytes()
    assert MAIN["sweep"](["--out", str(run), "--quiet"]) == 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["resumed"] and meta["config"]["max_length"] == 512 and (run / "results.csv").read_bytes() == rows


def test_an_encoder_without_is_decoder_in_its_config_is_measured_non_causal(tmp_path, monkeypatch):
    """The measured check (not the config flag) refuses a bidirectional model whose config has no is_decoder."""
    from transformers import BertConfig, BertForMaskedLM

    from noisynn.models.loading import load_model

    folder = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=258, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("is_decoder", None)
    (folder / "config.json").write_text(json.dumps(config))
    from noisynn.models import checks as model_checks

    monkeypatch.setattr(model_checks, "check_causal_config", lambda config, name: None)  # a config that states nothing
    with pytest.raises(NoisyNNError, match="its prediction at a position changes with later tokens"):
        load_model(str(folder), device="cpu")
