"""llama_scaling on two tiny local models of different size and vocabulary; model list and errors."""

import gc
import json
import logging
import math
import os
import subprocess
import sys
import weakref

import pytest
import torch

from tests.helpers import ROOT, byte_tokenizer, tiny_llama, exits_2_with_one_line, script_env
from noisynn.models import embedded as models
from noisynn.models import loading
from noisynn.errors import NoisyNNError
from noisynn.experiments.llama_scaling import run as llama_scaling
from noisynn.runs.read import read_rows

SCHEMA = ["experiment", "model", "noise_type", "scale", "sigma", "trial", "seed", "n_params", "noised_params",
          "perplexity", "nll", "bits_per_byte", "eval_tokens", "eval_bytes", "finite"]
TEXT = "The quick brown fox jumps over the lazy dog. " * 40


def bpe_tokenizer(vocab_size: int = 300, bos: bool = False):
    """A byte-level BPE tokenizer trained in code on TEXT (a different vocabulary from the byte one)."""
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>", "<pad>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", bos_token="<bos>")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """A 2-block LLaMA with a 258-symbol byte tokenizer, and a larger 3-block GPT-2 with a BPE one."""
    from transformers import GPT2Config, GPT2LMHeadModel

    small = tmp_path_factory.mktemp("llama-small")
    tiny_llama(layers=2).save_pretrained(small)
    byte_tokenizer().save_pretrained(small)
    big = tmp_path_factory.mktemp("gpt2-big")
    tok = bpe_tokenizer()
    torch.manual_seed(1)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=48, n_layer=3, n_head=4, n_positions=256, eos_token_id=0,
                               pad_token_id=1, bos_token_id=2)).save_pretrained(big)
    tok.save_pretrained(big)
    text = tmp_path_factory.mktemp("text") / "text.txt"
    text.write_text(TEXT.strip(), encoding="utf-8")
    return str(small), str(big), str(text)


def small_args(two_models, out, *extra):
    small, big, text = two_models
    # --targets all: a random model's logits only grow (and its perplexity rises) when the head is noised
    return ["--models", f"{small},{big}", "--text_file", text, "--eval_chars", "400", "--max_length", "64",
            "--max_noise", "40", "--n_levels", "5", "--n_trials", "3", "--targets", "all", "--quiet",
            "--out", str(out), *extra]


def test_two_models_run_folder_crossings_and_one_model_at_a_time(tmp_path, two_models, monkeypatch, capsys):
    small, big, _ = two_models
    live = []
    real_load = llama_scaling.load_model

    def tracking_load(name, *a, **k):
        gc.collect()
        assert all(ref() is None for ref in live), "the previous model is still in memory"
        lm = real_load(name, *a, **k)
        live.append(weakref.ref(lm.model))
        return lm

    monkeypatch.setattr(llama_scaling, "load_model", tracking_load)
    out = tmp_path / "run"
    assert llama_scaling.main(small_args(two_models, out, "--output", str(tmp_path / "copy.png"))) == 0
    assert len(live) == 2
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == SCHEMA and len(rows) == 2 * 5 * 3
    by_model = {m: [r for r in rows if r["model"] == m] for m in (small, big)}
    assert by_model[small][0]["n_params"] < by_model[big][0]["n_params"]
    assert all(r["noised_params"] <= r["n_params"] for r in rows)
    # Different vocabularies: different token counts for the same characters of text.
    assert by_model[small][0]["eval_tokens"] > 2 * by_model[big][0]["eval_tokens"]
    assert abs(by_model[small][0]["eval_bytes"] - by_model[big][0]["eval_bytes"]) <= 4
    for part in by_model.values():
        clean = {r["perplexity"] for r in part if r["sigma"] == 0}
        assert len(clean) == 1  # no noise at sigma 0, whatever the trial
        top = [r["perplexity"] for r in part if r["sigma"] == 40.0]
        assert min(top) > 2 * clean.pop()
    crossings = {r["model"]: r for r in read_rows(out / "crossings.csv")}
    assert set(crossings) == {small, big}
    for c in crossings.values():
        assert 0 < c["crossing_ci_low"] <= c["crossing_median"] <= c["crossing_ci_high"] <= 40
        per_trial = [float(v) for v in str(c["crossing_per_trial"]).split()]
        assert len(per_trial) == 3 and c["n_not_reached"] == 0
    assert (out / "llama_scaling.png").stat().st_size > 20_000 and (tmp_path / "copy.png").is_file()
    summary = read_rows(out / "summary.csv")
    assert {r["model"] for r in summary} == {small, big} and {r["metric"] for r in summary} == {"perplexity",
                                                                                              "bits_per_byte"}
    meta = json.loads((out / "run.json").read_text())
    assert set(meta["models"]) == {small, big} and meta["status"] == "finished"
    assert all(m["injection"]["head_untied"] for m in meta["models"].values())  # tied heads untied, then noised
    printed = capsys.readouterr().out
    assert "sigma at 2x ppl" in printed and small in printed and big in printed
    # Resume: everything is done, so no model is loaded again and the rows stay as they are.
    monkeypatch.setattr(llama_scaling, "load_model", lambda *a, **k: pytest.fail("loaded a finished model"))
    assert llama_scaling.main(small_args(two_models, out)) == 0
    assert read_rows(out / "results.csv") == rows
    assert set(json.loads((out / "run.json").read_text())["models"]) == {small, big}


def test_models_flag_parsing_and_defaults(monkeypatch, caplog):
    checked = []
    monkeypatch.setattr(llama_scaling, "check_model_name", lambda name, *flag: checked.append(name))
    args = llama_scaling.parse(["--models", "a/b,c/d", "e/f", "a/b"])
    assert args.models == ["a/b", "c/d", "e/f"] == checked and args.scale == "relative"
    assert llama_scaling.parse(["--models", "x/y", "--include_modern"]).models[1:] == list(llama_scaling.MODERN_MODELS)
    monkeypatch.setattr(llama_scaling, "embedded_available", lambda alias: alias != "gemma3-270m")
    with caplog.at_level(logging.INFO, logger="noisynn"):
        assert llama_scaling.parse([]).models == ["smollm2-135m"]
    assert "gemma3-270m left out" in caplog.text and "make gemma" in caplog.text
    monkeypatch.setattr(llama_scaling, "embedded_available", lambda alias: True)
    assert llama_scaling.parse([]).models == ["smollm2-135m", "gemma3-270m"]


BAD = [
    (["--models", "gemma3-270m"], "make gemma"),
    (["--models", "/no/such/model"], "does not exist"),
    (["--models", "a,,b"], "empty name"),
    (["--max_noise", "-1"], "must be >= 0"),
    (["--eval_chars", "100000"], "fewer than --eval_chars"),
    (["--noise_type", "pink"], "unknown noise type"),
    (["--ppl_threshold", "0"], "must be > 0"),
    (["--models", "nobody/no-such-model-xyz"], "cannot reach the Hugging Face hub"),
    (["--n_levels", "x"], "not an integer"),
    (["--targets", "qkv"], "match no weights"),  # GPT-2 has a fused c_attn, the LLaMA does not
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_flags_exit_2_with_one_line(tmp_path, two_models, monkeypatch, capsys, extra, message):
    monkeypatch.setattr(models, "embedded_available", lambda alias: alias == "smollm2-135m")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    assert message in exits_2_with_one_line(llama_scaling.main, small_args(two_models, out) + extra, capsys)
    assert not out.exists()


def test_bos_first_only_where_the_tokenizer_adds_it():
    with_bos, without = bpe_tokenizer(bos=True), bpe_tokenizer(bos=False)
    a, b = llama_scaling.eval_ids_for(with_bos, "the lazy dog"), llama_scaling.eval_ids_for(without, "the lazy dog")
    assert a[0].item() == with_bos.bos_token_id and torch.equal(a[1:], b)
    assert (b != with_bos.bos_token_id).all()


def test_split_gguf_is_assembled_once_and_checked(tmp_path, monkeypatch):
    import hashlib

    chunks = [b"GGUF" + bytes(range(200)), bytes(range(100, 250)), b"tail"]
    for i, chunk in enumerate(chunks):
        pkg = tmp_path / "site" / f"fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"m.gguf.part{i:02d}").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("NOISYNN_CACHE", str(tmp_path / "cache"))
    whole = b"".join(chunks)
    spec = models.EmbeddedModel("fake", "fake_main", "m.gguf", "a fake split model", "none",
                                parts=tuple((f"fake_part{i}", f"data/m.gguf.part{i:02d}") for i in range(3)),
                                sha256=hashlib.sha256(whole).hexdigest(), install="install it: `make fake`")
    monkeypatch.setitem(models.EMBEDDED_MODELS, "fake", spec)
    assert models.embedded_available("fake")
    path = models.embedded_gguf_path("fake")
    assert path.read_bytes() == whole and path.parent == tmp_path / "cache" / "gguf"
    assert models.embedded_gguf_path("fake") == path and len(list(path.parent.iterdir())) == 1
    # A wrong checksum is refused and leaves nothing behind.
    path.unlink()
    monkeypatch.setitem(models.EMBEDDED_MODELS, "fake", models.EmbeddedModel(
        **{**spec.__dict__, "sha256": "0" * 64}))
    with pytest.raises(NoisyNNError, match="sha256"):
        models.embedded_gguf_path("fake")
    assert not list(path.parent.iterdir())
    # Missing part packages: one line naming the install command.
    monkeypatch.setitem(models.EMBEDDED_MODELS, "fake", models.EmbeddedModel(
        **{**spec.__dict__, "parts": (("no_such_part_pkg", "data/x"),)}))
    assert not models.embedded_available("fake")
    with pytest.raises(NoisyNNError, match="make fake") as err:
        loading.load_model("fake")
    assert "no-such-part-pkg" in str(err.value) and "\n" not in str(err.value)


def test_noisynn_cli_knows_it():
    proc = subprocess.run([sys.executable, "-m", "noisynn.cli", "llama_scaling", "--help"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0 and "--models" in proc.stdout and "--include_modern" in proc.stdout


def test_offline_include_modern_is_one_line_on_stderr(tmp_path):
    """Through the real entry point (logging set up as for a user): the "gemma3-270m left out" warning
    used to precede the error line, two lines on stderr."""
    env = script_env(HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(ROOT / "llama_scaling.py"), "--include_modern", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--models" in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.integration
def test_embedded_model_reduced(tmp_path):
    out = tmp_path / "run"
    assert llama_scaling.main(["--models", "smollm2-135m", "--n_levels", "3", "--n_trials", "2", "--eval_chars", "400",
                               "--max_noise", "0.3", "--quiet", "--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 6 and {r["n_params"] for r in rows} == {134_515_008}
    clean = next(r for r in rows if r["sigma"] == 0)
    assert 5 < clean["perplexity"] < 30 and 0.5 < clean["bits_per_byte"] < 1.3 and clean["eval_bytes"] >= 390
    assert min(r["perplexity"] for r in rows if r["sigma"] == 0.3) > 2 * clean["perplexity"]
    (c,) = read_rows(out / "crossings.csv")
    assert 0.01 < c["crossing_median"] < 0.3 and c["n_not_reached"] == 0


@pytest.mark.integration
@pytest.mark.skipif(not models.embedded_available("gemma3-270m"), reason="optional gemma packages not installed")
def test_gemma_loads_from_its_parts_and_reads_sensibly(tmp_path):
    from noisynn.corpus import load_text
    from noisynn.evaluation import compute_perplexity

    lm = loading.load_model("gemma3-270m", device="cpu")
    assert lm.info["model_type"] == "gemma3_text" and lm.info["n_params"] == 268_098_176
    assert lm.info["fingerprint"] == models.EMBEDDED_MODELS["gemma3-270m"].sha256
    ids = llama_scaling.eval_ids_for(lm.tokenizer, load_text(max_chars=600).text)
    assert ids[0].item() == lm.tokenizer.bos_token_id
    r = compute_perplexity(lm.model, lm.tokenizer, ids)
    assert math.isfinite(r.perplexity) and r.perplexity < 60
