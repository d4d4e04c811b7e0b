"""layer_sensitivity: run folder on a tiny model, what each trial noises, crossings, bad flags, and the embedded model."""

import json
import math

import pytest
import torch

from tests.helpers import byte_tokenizer, tiny_gpt2, tiny_llama, exits_2_with_one_line
from noisynn.evaluation import tokenize
from noisynn.experiments.layer_sensitivity import run as ls
from noisynn.targets import classify_weight
from noisynn.experiments.layer_sensitivity.report import layer_sensitivity_crossings
from noisynn.runs.schema import LEADING_COLUMNS
from noisynn.runs.read import read_rows
from noisynn.runs.runner import Point

TEXT = "The quick brown fox jumps over the lazy dog. " * 20


@pytest.fixture
def small(tiny_model_dir, text_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64", "--max_length", "32",
            "--heatmap_tokens", "32", "--n_levels", "3", "--n_trials", "2", "--max_noise", "2", "--quiet"]


def test_run_folder_schema_figures_and_resume(tmp_path, small, capsys):
    out = tmp_path / "run"
    assert ls.main(small + ["--out", str(out), "--output", str(tmp_path / "copy.png")]) == 0
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == list(LEADING_COLUMNS) + list(ls.EXTRA) + list(ls.METRICS)
    groups = [r for r in rows if r["mode"] == "groups"]
    cells = [r for r in rows if r["mode"] == "heatmap" and r["target"] != "clean"]
    assert len(groups) == 3 * 3 * 2 and {r["target"] for r in groups} == {"attention", "mlp", "blocks"}
    assert len(cells) == 2 * 7 * 2  # 2 blocks x q,k,v,o,gate,up,down x 2 trials
    assert {(r["block"], r["projection"]) for r in cells} == {(b, p) for b in (0, 1)
                                                               for p in ("q", "k", "v", "o", "gate", "up", "down")}
    assert len({(r["target"], r["sigma"], r["trial"]) for r in rows}) == len(rows)
    # Noised parameter counts of the tiny LLaMA (hidden 32, 4 heads of 8, 2 kv heads, mlp 64, 2 blocks).
    n = {r["target"]: r["n_params"] for r in rows}
    attn, mlp = 2 * (32 * 32 + 2 * 16 * 32 + 32 * 32), 2 * 3 * 32 * 64
    assert (n["attention"], n["mlp"], n["blocks"], n["b1.k"], n["b0.down"]) == (attn, mlp, attn + mlp, 16 * 32, 32 * 64)
    assert all(r["eval_tokens"] == 64 for r in groups) and all(r["eval_tokens"] == 32 for r in cells)
    clean_ppl = {r["perplexity"] for r in groups if r["sigma"] == 0}
    assert len(clean_ppl) == 1 and all(r["delta_nll"] == 0 for r in rows if r["sigma"] == 0)
    for name in ("layer_sensitivity_groups.png", "layer_sensitivity_heatmap.png"):
        assert (out / name).stat().st_size > 10_000
    assert (tmp_path / "copy.png").is_file() and (out / "crossings.csv").is_file() and (out / "heatmap.csv").is_file()
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and [c["target"] for c in meta["crossings"]] == ["attention", "mlp", "blocks"]
    assert meta["heatmap"]["n_cells"] == 14 and "sigma^2 x n_params" in meta["normalisation"]
    assert "sigma at threshold" in capsys.readouterr().out
    # Resuming a finished run recomputes nothing and changes nothing.
    assert ls.main(small + ["--out", str(out)]) == 0
    assert read_rows(out / "results.csv") == rows


def _changed(model, clean):
    return {n for n, p in model.named_parameters() if not torch.equal(p, clean[n])}


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_each_trial_noises_only_its_target(make):
    """Attention-only noise leaves every MLP weight bit-exact (and vice versa), also after another target ran."""
    model, tok = make(), byte_tokenizer()
    projections = [p for b, p in ls.heatmap_cells(model, [1], None)]
    assert projections == (["qkv", "o", "up", "down"] if make is tiny_gpt2 else ["q", "k", "v", "o", "gate", "up", "down"])
    args = ls.parse(["--max_length", "32", "--scale", "relative"])
    specs = {"attention": ("groups", "attention", None), "mlp": ("groups", "mlp", None),
             "b1.o": ("heatmap", "o", [1]), "b0.down": ("heatmap", "down", [0])}
    ids = tokenize(tok, TEXT, 32)
    trials = ls.SensitivityTrials(model, tok, args, specs, {"groups": ids, "heatmap": ids})
    clean = {n: p.detach().clone() for n, p in model.named_parameters()}
    kind = {n: classify_weight(n[: -len(".weight")], model.get_submodule(n[: -len(".weight")]), model)
            for n, _ in model.named_parameters() if n.endswith(".weight")}
    attention_weights = {n for n, c in kind.items() if c.kind == "attention"}
    mlp_weights = {n for n, c in kind.items() if c.kind == "mlp"}
    assert attention_weights and mlp_weights and not attention_weights & mlp_weights
    assert all(".attn." in n or ".self_attn." in n for n in attention_weights)
    assert all(".mlp." in n for n in mlp_weights)

    res = trials(Point(1, 0.5, 0, "attention"))
    assert _changed(model, clean) == attention_weights and res.metrics["delta_nll"] != 0
    trials(Point(1, 0.5, 0, "mlp"))
    assert _changed(model, clean) == mlp_weights  # the attention weights are back, bit-exact
    trials(Point(0, 0.5, 0, "b1.o"))
    (changed,) = _changed(model, clean)
    assert kind[changed].block == 1 and kind[changed].proj == "o"
    trials(Point(0, 0.5, 0, "b0.down"))
    (changed,) = _changed(model, clean)
    assert kind[changed].block == 0 and kind[changed].proj == "down"
    res = trials(Point(0, 0.0, 1, "attention"))
    assert not _changed(model, clean) and res.metrics["delta_nll"] == 0
    trials(Point(1, 0.5, 0, "attention"))
    trials.release()
    assert not _changed(model, clean)


def test_crossing_per_trial_then_median_and_energy():
    def rows(target, n, curves):
        return [{"mode": "groups", "target": target, "sigma": s, "trial": t, "perplexity": p, "n_params": n,
                 "eval_tokens": 64} for t, curve in enumerate(curves) for s, p in zip((0.0, 0.1, 0.2), curve)]

    data = rows("a", 100, [(10, 15, 40), (10, 12, 30), (10, 11, 19)])  # the third never reaches 20
    (c,) = layer_sensitivity_crossings(data, 2.0)
    first = 0.1 + 0.1 * (math.log(20) - math.log(15)) / (math.log(40) - math.log(15))
    second = 0.1 + 0.1 * (math.log(20) - math.log(12)) / (math.log(30) - math.log(12))
    assert c["threshold"] == 20 and c["n_not_crossed"] == 1 and c["n_trials"] == 3
    assert c["sigma_cross"] == pytest.approx(second) and c["ci_low"] == pytest.approx(first)
    assert c["ci_high"] == math.inf and c["energy_high"] == math.inf
    assert c["energy_cross"] == pytest.approx(second ** 2 * 100)


BAD = [
    (["--ppl_threshold", "1"], "must be > 1"),
    (["--ppl_threshold", "-2"], "must be > 0"),
    (["--blocks", "7"], "the model has blocks 0-1"),
    (["--blocks", "a-b"], "blocks take indices and ranges like 0-3,7; got 'a-b'"),
    (["--projections", "qq"], "unknown projection 'qq'"),
    (["--targets", "attention,attn"], "unknown target 'attn'"),
    (["--mode", "cells"], "invalid choice"),
    (["--heatmap_tokens", "100000"], "--heatmap_tokens 100000"),
    (["--noise_level", "0", "--mode", "heatmap"], "--noise_level must be > 0"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_flags_exit_2_with_one_line(tmp_path, small, capsys, extra, message):
    out = tmp_path / "run"
    assert message in exits_2_with_one_line(ls.main, small + ["--out", str(out)] + extra, capsys)
    assert not out.exists()



@pytest.mark.integration
def test_embedded_model_reduced(tmp_path):
    out = tmp_path / "run"
    assert ls.main(["--eval_tokens", "128", "--heatmap_tokens", "64", "--n_levels", "4", "--n_trials", "2",
                    "--blocks", "0,29", "--projections", "v,down", "--quiet", "--out", str(out)]) == 0
    meta = json.loads((out / "run.json").read_text())
    cross = {c["target"]: c for c in meta["crossings"]}
    assert all(math.isfinite(c["sigma_cross"]) and 0.04 < c["sigma_cross"] < 0.4 for c in cross.values())
    # All blocks = attention + MLP noise: it reaches 2x clean perplexity at a smaller sigma than either part.
    assert cross["blocks"]["ci_high"] < min(cross["attention"]["ci_low"], cross["mlp"]["ci_low"])
    assert meta["model"]["n_params"] > 1e8 and cross["blocks"]["n_params"] == meta["n_params"]["blocks"] > 1e8
    cells = {r["target"]: r for r in read_rows(out / "heatmap.csv")}
    assert set(cells) == {"b0.v", "b0.down", "b29.v", "b29.down"}
    assert cells["b29.down"]["delta_nll"] > 0.5 > cells["b29.v"]["delta_nll"]
