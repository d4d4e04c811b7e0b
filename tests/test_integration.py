"""Integration: the embedded SmolLM2-135M and Wikipedia text, end to end, in a reduced size."""

import json
import math

import pytest

from noisynn.corpus import embedded_split, load_text
from noisynn.evaluation import compute_perplexity, tokenize
from noisynn.experiments.sweep import run as sweep
from noisynn.inject import noisy_weights
from noisynn.runs.read import read_rows

pytestmark = pytest.mark.integration


def test_embedded_text_splits_are_fixed_and_disjoint():
    ev, tr = embedded_split("eval"), embedded_split("train")
    assert not {t for t, _ in ev} & {t for t, _ in tr}
    assert len(ev) + len(tr) > 9_000
    text = load_text()
    assert text.info["sha256"] == load_text().info["sha256"] and text.info["n_chars"] >= 16_000


def test_baseline_perplexity_and_noise_raise_it(embedded):
    text = load_text()
    ids = tokenize(embedded.tokenizer, text.text, 1024)
    clean = compute_perplexity(embedded.model, embedded.tokenizer, ids)
    assert clean.n_tokens == 1024 and 5 < clean.perplexity < 25 and 0.5 < clean.bits_per_byte < 1.2
    with noisy_weights(embedded.model, 0.03, seed=0):
        noisy = compute_perplexity(embedded.model, embedded.tokenizer, ids)
    assert noisy.perplexity > 2 * clean.perplexity
    again = compute_perplexity(embedded.model, embedded.tokenizer, ids)
    assert again.perplexity == clean.perplexity


def test_sweep_cli_on_embedded_model(tmp_path):
    out = tmp_path / "run"
    args = ["--n_levels", "3", "--n_trials", "2", "--eval_tokens", "128", "--max_new_tokens", "8", "--n_samples", "2",
            "--quiet", "--out", str(out)]
    assert sweep.main(args) == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 6 and all(r["model"] == "smollm2-135m" for r in rows)
    by_sigma = {}
    for r in rows:
        by_sigma.setdefault(r["sigma"], []).append(r["perplexity"])
    sigmas = sorted(by_sigma)
    assert min(by_sigma[sigmas[-1]]) > 10 * max(by_sigma[0.0])  # sigma 0.08 collapses the model
    meta = json.loads((out / "run.json").read_text())
    assert meta["model"]["fingerprint"] and meta["text"]["sha256"] and meta["model"]["tied_embeddings"]
    assert all(math.isfinite(r["bits_per_byte"]) for r in rows)
