import math

import pytest
import torch

from tests.helpers import tiny_gpt2, tiny_llama
from noisynn.evaluation import (compute_distinct_n, compute_output_entropy, compute_perplexity,
                                compute_repetition_ratio, decode, entropy_bits, generate_text_samples, quality_metrics,
                                tokenize)

TEXT = "Noise in analog hardware perturbs every weight of the network a little. " * 6


def model_loss_ppl(model, ids):
    with torch.no_grad():
        return math.exp(float(model(input_ids=ids[None], labels=ids[None]).loss))


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_perplexity_equals_model_loss_single_window(make, tokenizer):
    model = make()
    ids = tokenize(tokenizer, TEXT, 100)
    r = compute_perplexity(model, tokenizer, TEXT, max_length=128, max_tokens=100)
    assert r.n_tokens == 100 and r.finite
    assert r.perplexity == pytest.approx(model_loss_ppl(model, ids), rel=1e-5)
    assert float(r) == r.perplexity


def test_windows_score_every_token_once_and_batching_is_invisible(llama, tokenizer):
    ids = tokenize(tokenizer, TEXT, 300)
    # Independent computation: per-window HF losses weighted by their number of targets.
    total, count = 0.0, 0
    for s in range(0, 300, 64):
        x = ids[s:min(s + 64, 300) + 1]
        with torch.no_grad():
            loss = llama(input_ids=x[None], labels=x[None]).loss
        total += float(loss) * (x.numel() - 1)
        count += x.numel() - 1
    expected = math.exp(total / count)
    for batch_size in (1, 3, 8):
        r = compute_perplexity(llama, tokenizer, ids, max_length=64, batch_size=batch_size)
        assert r.n_tokens == 300 == count
        assert r.perplexity == pytest.approx(expected, rel=1e-5)


def test_stride_gives_more_context_and_same_token_count(llama, tokenizer):
    a = compute_perplexity(llama, tokenizer, TEXT, max_length=64, max_tokens=200)
    b = compute_perplexity(llama, tokenizer, TEXT, max_length=64, stride=16, max_tokens=200)
    assert a.n_tokens == b.n_tokens == 200
    assert a.perplexity != b.perplexity


def test_bits_per_byte_consistent_with_nll(llama, tokenizer):
    r = compute_perplexity(llama, tokenizer, TEXT, max_length=64, max_tokens=150)
    # byte-level tokenizer: one token per byte, so bits/byte = nll / ln 2
    assert r.n_bytes == 150
    assert r.bits_per_byte == pytest.approx(r.nll / math.log(2), rel=1e-9)


def test_entropy_of_uniform_logits_is_log2_vocab(llama, tokenizer):
    assert float(entropy_bits(torch.zeros(3, 1000))[0]) == pytest.approx(math.log2(1000), rel=1e-6)
    with torch.no_grad():
        llama.lm_head.weight.zero_()  # tied: embeddings zeroed too, logits all 0
    assert compute_output_entropy(llama, tokenizer, "hello", num_tokens=5) == pytest.approx(math.log2(258), rel=1e-5)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_greedy_decode_matches_hf_generate_with_left_padding(make, tokenizer):
    model = make()
    prompts = ["a", "the longer prompt here"]
    ours = decode(model, tokenizer, prompts, 12, greedy=True)
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=None)
    new = ref[:, enc["input_ids"].shape[1]:]
    assert torch.equal(ours.token_ids[:, :new.shape[1]], new)


def test_sampling_is_seeded(llama, tokenizer):
    a = generate_text_samples(llama, tokenizer, "x", num_samples=3, max_new_tokens=8, seed=1)
    b = generate_text_samples(llama, tokenizer, "x", num_samples=3, max_new_tokens=8, seed=1)
    c = generate_text_samples(llama, tokenizer, "x", num_samples=3, max_new_tokens=8, seed=2)
    assert a == b and a != c and len(a) == 3


def test_nonfinite_weights_give_flags_not_crashes(llama, tokenizer):
    with torch.no_grad():
        llama.model.layers[0].mlp.down_proj.weight[0, 0] = float("inf")
        llama.model.layers[0].mlp.down_proj.weight[1, 0] = float("-inf")
    r = compute_perplexity(llama, tokenizer, TEXT, max_length=64, max_tokens=100)
    assert not r.finite and not math.isfinite(r.perplexity)
    gen = decode(llama, tokenizer, ["abc"] * 2, 5, greedy=[True, False])
    assert not gen.finite
    metrics, samples, greedy = quality_metrics(llama, tokenizer, tokenize(tokenizer, TEXT, 80), "abc",
                                               n_samples=2, max_new_tokens=5, entropy_tokens=3)
    assert metrics["finite"] is False and len(samples) == 2


def test_distinct_n_and_repetition_known_values():
    assert compute_distinct_n(["a b c d"], 1) == 1.0
    assert compute_distinct_n(["a a a a"], 1) == 0.25
    assert compute_distinct_n(["a b", "a b"], 2) == 0.5
    assert compute_distinct_n([""], 2) == 0.0
    assert compute_repetition_ratio("a b c a b c a b c", 3) == pytest.approx(4 / 7)
    assert compute_repetition_ratio("one two three four", 3) == 0.0
