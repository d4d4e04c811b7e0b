"""The logic behind `noisynn ui` on tiny random models: no browser, no embedded model."""

import json
import math
import shlex
from dataclasses import replace

import pytest
import torch

from tests.helpers import byte_tokenizer, tiny_llama
from noisynn.ui import explore, figures
from noisynn.ui import setting as ui_setting
from noisynn.errors import NoisyNNError
from noisynn.evaluation import compute_perplexity, decode, tokenize
from noisynn.ui.explore import Explorer
from noisynn.ui.setting import Setting, check_setting
from noisynn.inject import noisy_weights
from noisynn.spec import parse_blocks
from noisynn.models.loaded import LoadedModel
from noisynn.noise import NOISE_REGISTRY, NoiseDistribution
from noisynn.runs.read import read_rows


def tiny_loader(name, device="cpu", dtype=None):
    tok = byte_tokenizer()
    return LoadedModel(tiny_llama(layers=3), tok, {"name": name})


@pytest.fixture
def explorer(text_file):
    return Explorer(device="cpu", text_file=str(text_file), loader=tiny_loader)


def setting(**kw):
    base = dict(model="tiny", prompt="The quick brown", max_new_tokens=12, eval_tokens=128, max_length=64, top_k=5,
                sigma=0.5, scale="relative")
    return Setting(**{**base, **kw})


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("change,message", [
    ({"prompt": "   "}, "prompt is empty"),
    ({"max_new_tokens": 100_000}, "max new tokens must be between 1 and"),
    ({"max_new_tokens": 2.5}, "whole number"),
    ({"sigma": -0.1}, "sigma must be a finite number >= 0"),
    ({"sigma": float("nan")}, "sigma must be a finite number >= 0"),
    ({"noise_type": "pink"}, "unknown noise type 'pink'"),
    ({"targets": ()}, "choose at least one target"),
    ({"blocks": "x-1"}, "blocks take indices"),
    ({"blocks": "3-1"}, "runs backwards"),
    ({"targets": ("head",), "blocks": "0"}, "applies to attention/mlp"),
    ({"noise_type": "student_t", "flags": (("df", "0"),)}, "--df: '0' must be > 0"),
    ({"noise_type": "pcm", "scale": "relative_channel", "flags": (("t_seconds", "-1"),)}, "--t_seconds"),
    ({"noise_type": "pcm", "scale": "relative_channel", "flags": (("stuck_fraction", "3"),)}, "must lie in"),
    ({"flags": (("dac_bits", "1"),)}, "--dac_bits: '1' must be >= 2 bits"),
    ({"flags": (("input_range", "wide"),)}, "input_range is dynamic, .*or a number, got .wide."),
    ({"eval_tokens": 0}, "evaluation tokens must be between"),
    ({"seed": -1}, "seed must be between"),
    ({"seed": None}, "the seed box is empty"),  # not "got None"
    ({"max_new_tokens": 1e30}, r"got 1e\+30$"),  # not its float's 31 digits
    ({"noise_type": "pcm", "scale": "relative_channel", "flags": (("compensation_method", "exact"),)},
     "--compensation_method: .*drift_compensation"),  # issue 25: a method without compensation means nothing
    ({"flags": (("kv_tau", "0"),)}, "--kv_tau: '0' must be > 0"),  # issue 26: the analog attention flags
    ({"flags": (("kv_tau_spread", "0.5"),)}, "needs --kv_tau"),
])
def test_bad_settings_raise_one_line(change, message):
    with pytest.raises(NoisyNNError, match=message) as err:
        check_setting(setting(**change))
    assert "\n" not in str(err.value)


def test_check_setting_normalises_and_knows_block_count():
    s = check_setting(setting(blocks=" 3, 0-1 ", seed=4.0, noise_type="gaussian"))
    assert s.blocks == "0-1,3" and s.block_list == [0, 1, 3] and s.seed == 4
    assert check_setting(setting(blocks="ALL")).blocks == "all"
    with pytest.raises(NoisyNNError, match="block 3 does not exist: this model has blocks 0-2"):
        check_setting(setting(blocks="3"), n_blocks=3)
    assert parse_blocks("0-2,5") == [0, 1, 2, 5] and parse_blocks(None) is None and parse_blocks([2, 1]) == [1, 2]


def test_log_slider_gives_rounded_sigma():
    assert ui_setting.sigma_from_slider(-2) == 0.01
    assert ui_setting.sigma_from_slider(-1.5) == 0.03162
    assert ui_setting.sigma_from_slider(0) == 1.0


def test_compare_clean_stays_noisy_moves_weights_restored(explorer):
    lm = explorer.model("tiny")
    before = state(lm.model)
    low = explorer.compare(setting(sigma=0.0))
    assert low.noisy.text == low.clean.text
    assert torch.equal(low.noisy.first_probs, low.clean.first_probs)
    assert all(abs(c - n) < 1e-7 for _, c, n in low.top)
    high = explorer.compare(setting(sigma=2.0))
    assert high.clean.text == low.clean.text and high.clean.entropy == low.clean.entropy
    assert high.noisy.text != high.clean.text
    assert not torch.allclose(high.noisy.first_probs, high.clean.first_probs)
    assert same_state(before, state(lm.model))
    # Top-k table: the union of both top-5 sets, with real probabilities.
    assert 5 <= len(high.top) <= 10 and all(0 <= c <= 1 and 0 <= n <= 1 for _, c, n in high.top)
    assert len(high.noisy.entropy) == len(high.noisy.logprob) >= len(high.noisy.tokens)
    assert all(0 <= h <= math.log2(258) + 1e-4 for h in high.noisy.entropy)
    assert high.injection["n_params"] > 0


def test_compare_is_the_sweeps_noise_realization(explorer):
    """The noisy continuation is what noisy_weights + decode give with the sweep's trial-0 seed."""
    s = check_setting(setting(sigma=0.7, seed=3, blocks="1-2", targets=("mlp",)))
    got = explorer.compare(s)
    lm = explorer.model("tiny")
    with noisy_weights(lm.model, 0.7, "gaussian", scale="relative", targets="mlp", blocks=[1, 2],
                       seed=explore.noise_seed(3)) as inj:
        want = decode(lm.model, lm.tokenizer, [s.prompt], s.max_new_tokens, greedy=True)
        assert got.injection["n_params"] == inj.n_params
    assert got.noisy.text == want.texts[0]
    other_seed = explorer.compare(replace(s, seed=4))
    assert other_seed.noisy.text != got.noisy.text or not torch.equal(other_seed.noisy.first_probs,
                                                                      got.noisy.first_probs)


def test_perplexity_matches_library_and_reports_progress(explorer, text_file):
    s = setting(sigma=0.3)
    seen = []
    clean, noisy = explorer.perplexity(s, progress=seen.append)
    lm = explorer.model("tiny")
    ids = tokenize(lm.tokenizer, text_file.read_text(), 128)
    ref = compute_perplexity(lm.model, lm.tokenizer, ids, max_length=64)
    assert clean.perplexity == pytest.approx(ref.perplexity, rel=1e-5) and clean.n_tokens == 128
    with noisy_weights(lm.model, 0.3, "gaussian", scale="relative", seed=explore.noise_seed(0)):
        ref_noisy = compute_perplexity(lm.model, lm.tokenizer, ids, max_length=64)
    assert noisy.perplexity == pytest.approx(ref_noisy.perplexity, rel=1e-5)
    assert noisy.perplexity != pytest.approx(clean.perplexity, rel=1e-3)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) >= 4
    seen.clear()
    explorer.perplexity(replace(s, sigma=0.6), progress=seen.append)  # clean is cached: one pass
    assert seen[-1] == pytest.approx(1.0) and len(seen) == 2


def test_perplexity_refuses_more_tokens_than_the_text(explorer):
    with pytest.raises(NoisyNNError, match="only .* tokens"):
        explorer.perplexity(setting(eval_tokens=4000))


def test_drift_grows_sigma_token_by_token_and_restores(explorer):
    lm = explorer.model("tiny")
    before = state(lm.model)
    s = setting(max_new_tokens=10)
    steps = list(explorer.drift(s, 0.01, 2.0))
    sigmas = [st.sigma for st in steps]
    assert len(steps) == 10 and sigmas[0] == pytest.approx(0.01) and sigmas[-1] == pytest.approx(2.0)
    assert sigmas == sorted(sigmas) and [st.t for st in steps] == list(range(10))
    assert steps[-1].text.startswith(steps[3].text[:3]) and all(math.isfinite(st.entropy) for st in steps)
    assert same_state(before, state(lm.model))
    flat = list(explorer.drift(s, 0.0, 0.0))
    assert flat[-1].text == explorer.compare(replace(s, sigma=0.0)).clean.text[:len(flat[-1].text)]
    # Closing early stops the worker and leaves the model clean and unlocked.
    it = explorer.drift(setting(max_new_tokens=50), 0.01, 1.0)
    next(it)
    it.close()
    assert explorer.lock.acquire(timeout=30)
    explorer.lock.release()
    assert same_state(before, state(lm.model))
    with pytest.raises(NoisyNNError, match="end sigma"):
        list(explorer.drift(s, 0.1, -1))


def test_drift_sigmas():
    assert explore.drift_sigmas(0.001, 0.1, 3) == pytest.approx([0.001, 0.01, 0.1])
    assert explore.drift_sigmas(0.0, 0.1, 3) == pytest.approx([0.0, 0.05, 0.1])
    assert explore.drift_sigmas(0.001, 0.1, 1) == [0.1]


def test_rows_csv_and_table(explorer, tmp_path):
    s = setting(sigma=0.25)
    cmp = explorer.compare(s)
    ppl = explorer.perplexity(s)
    rows = explore.result_rows(cmp, ppl)
    path = figures.write_csv(rows, tmp_path)
    back = read_rows(path)
    assert [r["sigma"] for r in back] == [0.0, 0.25]
    assert list(back[0])[:7] == ["experiment", "model", "noise_type", "scale", "sigma", "trial", "seed"]
    assert back[1]["perplexity"] == pytest.approx(ppl[1].perplexity) and back[1]["continuation"] == cmp.noisy.text
    assert back[1]["seed"] == explore.noise_seed(0) and back[0]["eval_tokens"] == 128
    table = figures.metrics_table(explore.result_rows(cmp))  # before perplexity: blanks, no crash
    assert table[0][0] == "clean" and table[1][2] == ""


def test_figures_draw(explorer):
    cmp = explorer.compare(setting(sigma=1.0))
    for fig in (figures.probability_figure(cmp.top, 1.0),
                figures.entropy_figure(cmp.clean.entropy, cmp.noisy.entropy, 1.0),
                figures.drift_figure(list(explorer.drift(setting(max_new_tokens=5), 0.01, 1.0)))):
        assert fig.axes and fig.axes[0].has_data()


def test_exported_command_reproduces_the_setting(tmp_path, tiny_model_dir, text_file, monkeypatch):
    """Run the exported thermal_noise_simulation.py command: same perplexity, same noisy greedy text."""
    from noisynn.experiments.sweep import run as sweep

    ex = Explorer(device="cpu", text_file=str(text_file))
    s = check_setting(Setting(model=str(tiny_model_dir), sigma=0.4, scale="relative_channel", targets=("attention",),
                              blocks="1", seed=5, prompt="A quick test", max_new_tokens=8, eval_tokens=96,
                              max_length=48))
    cmp = ex.compare(s)
    clean, noisy = ex.perplexity(s)
    out = tmp_path / "export"
    cmd = ui_setting.cli_command(s, out=str(out), text_file=str(text_file))
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "thermal_noise_simulation.py"]
    assert argv[argv.index("--blocks") + 1] == "1" and argv[argv.index("--text_file") + 1] == str(text_file)
    assert sweep.main(argv[2:] + ["--quiet"]) == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 1 and rows[0]["sigma"] == 0.4 and rows[0]["seed"] == explore.noise_seed(5)
    assert rows[0]["perplexity"] == pytest.approx(noisy.perplexity, rel=1e-5)
    greedy = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert next(g["text"] for g in greedy if g["kind"] == "greedy") == cmp.noisy.text
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["blocks"] == [1] and meta["injection"]["n_params"] == cmp.injection["n_params"]


def test_sweep_blocks_flag(tmp_path, tiny_model_dir, text_file, capsys):
    from noisynn.experiments.sweep import run as sweep

    base = ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32", "--max_length", "32",
            "--n_levels", "1", "--n_trials", "1", "--max_new_tokens", "2", "--n_samples", "1", "--quiet"]
    assert sweep.main(base + ["--out", str(tmp_path / "all")]) == 0
    assert sweep.main(base + ["--out", str(tmp_path / "one"), "--blocks", "0"]) == 0
    all_meta = json.loads((tmp_path / "all" / "run.json").read_text())
    one_meta = json.loads((tmp_path / "one" / "run.json").read_text())
    assert "blocks" not in all_meta["config"]  # no --blocks: config (and resuming old folders) unchanged
    assert one_meta["injection"]["n_params"] * 2 == all_meta["injection"]["n_params"]
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(base + ["--out", str(tmp_path / "bad"), "--blocks", "a-b"])
    assert exit_info.value.code == 2 and "blocks take indices" in capsys.readouterr().err


def test_app_builds_and_lists_every_registered_noise(explorer):
    pytest.importorskip("gradio")
    from noisynn.ui import app as ui

    class Pink(NoiseDistribution):
        def sample(self, shape, scale, device=None, generator=None):
            return torch.randn(shape, generator=generator) * scale

    NOISE_REGISTRY["pink_test"] = Pink
    try:
        app = ui.build_app(explorer, check_setting(setting()), run_roots=("nowhere",))
        config = app.get_config_file()
        noise = next(c for c in config["components"] if c["props"].get("elem_id") == "noise-type")
        assert {choice[1] for choice in noise["props"]["choices"]} == set(NOISE_REGISTRY)
    finally:
        del NOISE_REGISTRY["pink_test"]


def test_cli_ui_bad_input_is_one_line(capsys):
    from noisynn import cli

    assert cli.main(["ui", "--targets", "q,k"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the ui offers the targets attention, mlp, head" in err and len(err.splitlines()) == 1
    assert cli.main(["ui", "--noise_type", "pink"]) == 2
    assert "unknown noise type 'pink'" in capsys.readouterr().err
    assert cli.main(["ui", "--blocks", "2-1"]) == 2
    assert "runs backwards" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0 and "  ui" in capsys.readouterr().out


def test_device_map_reaches_the_loader(text_file, tiny_model_dir):
    """noisynn ui --device_map auto --max_memory ... loads the model sharded, like the scripts."""
    seen = {}

    def loader(name, device="cpu", dtype=None, **placement):
        seen.update(placement)
        return tiny_loader(name, device, dtype)

    Explorer(device="cpu", text_file=str(text_file), loader=loader, device_map="auto",
             max_memory="cpu=4GiB").model("tiny")
    assert seen == {"device_map": "auto", "max_memory": "cpu=4GiB"}
    seen.clear()
    Explorer(device="cpu", text_file=str(text_file), loader=loader).model("tiny")
    assert seen == {}  # unsharded by default


@pytest.mark.parametrize("change, message", [
    (dict(max_length=512), "is longer than the 256 positions"),  # the tiny model has 256 positions
    (dict(prompt="word " * 300), "beyond the 256 positions"),
])
def test_a_setting_beyond_the_models_context_is_refused_before_it_runs(explorer, change, message):
    with pytest.raises(NoisyNNError, match=message):
        explorer.compare(setting(**change))


def test_tokens_are_escaped_for_the_chart():
    from noisynn.ui.figures import MAX_LABEL, probability_figure, token_label

    assert token_label("\n") == "\\n" and token_label(" the") == "␣the" and token_label("  ") == "␣␣"
    assert token_label("\t$x$") == "\\t\\$x\\$" and token_label("") == "''" and token_label("\x00") == "\\x00"
    assert len(token_label(" " * 40)) == MAX_LABEL
    fig = probability_figure([(token_label(t), 0.5, 0.4) for t in ("\n\n", " " * 30, "a\rb")], 0.1)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert all("\n" not in t and "\r" not in t and t.strip() and len(t) <= MAX_LABEL for t in labels), labels


def test_every_noisy_computation_gives_the_heap_back_and_caches_are_sized(explorer, monkeypatch):
    """Memory of a day of use (issue 25): the heap is released after each noisy pass (noisynn.heap), and the
    clean results kept per prompt or window are at most explore.CACHED, the most recent."""
    released = []
    monkeypatch.setattr(explore, "release_heap", lambda: released.append(1))
    monkeypatch.setattr(explore, "CACHED", 3)
    ex = Explorer(device="cpu", text_file=explorer.text_file, loader=explorer.loader)
    ex.compare(setting())
    ex.perplexity(setting())
    assert len(released) == 2
    list(ex.drift(setting(max_new_tokens=3), 0.0, 0.5))
    assert len(released) == 3
    for i in range(5):
        ex.compare(setting(prompt=f"prompt {i}", sigma=0.0))
    assert list(ex._clean_text) == [("tiny", f"prompt {i}", 12) for i in (2, 3, 4)]


def test_recent_keeps_the_most_recently_used():
    cache = explore.Recent(2)
    cache["a"], cache["b"] = 1, 2
    assert cache["a"] == 1  # a read makes "a" recent: "b" goes first
    cache["c"] = 3
    assert list(cache) == ["a", "c"]


def test_analog_attention_flags_act_on_the_noisy_pass_only(explorer):
    """The page's attention controls install the command line's analog attention on the noisy model (the sweep's
    store and read noise), off for the clean one; removed when the setting drops them."""
    plain = explorer.compare(setting(sigma=0.0))
    leaky = explorer.compare(setting(sigma=0.0, flags=(("kv_tau", "2"), ("kv_write_noise", "0.3"))))
    assert leaky.clean.text == plain.clean.text and torch.equal(leaky.clean.first_probs, plain.clean.first_probs)
    assert not torch.allclose(leaky.noisy.first_probs, leaky.clean.first_probs)
    again = explorer.compare(setting(sigma=0.0, flags=(("kv_tau", "2"), ("kv_write_noise", "0.3"))))
    assert torch.equal(again.noisy.first_probs, leaky.noisy.first_probs)  # the same seeds
    assert torch.equal(explorer.compare(setting(sigma=0.0)).noisy.first_probs, plain.noisy.first_probs)
    assert explorer.model("tiny").model.config._attn_implementation == "sdpa"
    assert "--kv_tau 2" in setting(flags=(("kv_tau", "2"),)).describe()

