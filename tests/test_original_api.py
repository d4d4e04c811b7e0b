"""The original toolkit's Python API, as its README and modules documented it, still works.

The README's snippets run verbatim (copied below as text and exec'd). They use the names
``model``, ``tokenizer``, ``device``, ``prompt`` and ``validation_text`` without defining them:
the namespace supplies a tiny random LLaMA and the byte-level tokenizer from conftest.py (no
snippet loads a model by hub id, so no loader needs patching; hub downloads fail here). The
custom-noise recipe (``NOISE_REGISTRY["laplacian"] = LaplacianNoise``) runs verbatim in the
plugin tests (tests/test_plugins.py, from Python and with ``--plugin``).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import pickle
import typing

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_gpt2, tiny_llama

# The original README, section "Module Details", verbatim.
README_NOISE_SNIPPET = '''\
from noise_distributions import inject_thermal_noise, GaussianNoise

# Inject 5% Gaussian noise into model weights
inject_thermal_noise(model, noise_level=0.05, noise_type="gaussian")
'''

README_EVALUATION_SNIPPET = '''\
from evaluation import compute_perplexity, generate_text_samples, compute_output_entropy

# Compute perplexity on validation text
ppl = compute_perplexity(model, tokenizer, validation_text, device)

# Generate text samples
samples = generate_text_samples(model, tokenizer, prompt, device, n_samples=3)

# Measure output entropy
entropy = compute_output_entropy(model, tokenizer, prompt, device)
'''

PROMPT = "The future of artificial intelligence is"
TEXT = "Noise in analog hardware perturbs every weight of the network a little. " * 5  # 360 byte tokens


def namespace(model, tokenizer) -> dict:
    return {"model": model, "tokenizer": tokenizer, "device": torch.device("cpu"), "prompt": PROMPT,
            "validation_text": TEXT}


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters(remove_duplicate=False)}


def changed(before: dict, model) -> set[str]:
    now = dict(model.named_parameters(remove_duplicate=False))
    return {k for k, v in before.items() if not torch.equal(v, now[k])}


# --- the README's snippets ------------------------------------------------------------------

def test_readme_noise_snippet_runs_verbatim_and_noises_the_original_targets(llama, tokenizer):
    before = weights(llama)
    ns = namespace(llama, tokenizer)
    exec(README_NOISE_SNIPPET, ns)
    hit = changed(before, llama)
    linear = {f"{n}.weight" for n, m in llama.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linear <= hit and "lm_head.weight" in hit
    assert "model.embed_tokens.weight" not in hit  # the tied head was untied first
    assert not any("norm" in k for k in hit)
    assert llama.lm_head.weight is not llama.model.embed_tokens.weight
    assert ns["GaussianNoise"]().sample((1000,), 1.0, "cpu").std() == pytest.approx(1.0, rel=0.15)


def test_readme_evaluation_snippet_runs_verbatim(llama, tokenizer):
    ns = namespace(llama, tokenizer)
    torch.manual_seed(0)
    exec(README_EVALUATION_SNIPPET, ns)
    ppl, samples, entropy = ns["ppl"], ns["samples"], ns["entropy"]
    # How the original's scripts and a notebook used the numbers.
    assert isinstance(ppl, float) and math.isfinite(ppl) and ppl > 1
    assert f"{ppl:.2f}" == f"{math.exp(ppl.nll):.2f}"
    assert (ppl < 1e6) is True and round(ppl) == round(math.exp(ppl.nll))
    assert len(samples) == 3 and all(isinstance(s, str) and s.startswith(PROMPT) for s in samples)
    assert isinstance(entropy, float) and 0 < entropy <= math.log2(258) + 1e-6


# --- signatures -----------------------------------------------------------------------------

_REQUIRED = inspect.Parameter.empty
ORIGINAL_SIGNATURES = {
    ("evaluation", "compute_perplexity"): [("model", _REQUIRED), ("tokenizer", _REQUIRED), ("text", _REQUIRED),
                                           ("device", _REQUIRED), ("stride", 512), ("max_length", None)],
    ("evaluation", "generate_text_samples"): [("model", _REQUIRED), ("tokenizer", _REQUIRED), ("prompt", _REQUIRED),
                                              ("device", _REQUIRED), ("n_samples", 3), ("max_new_tokens", 50),
                                              ("temperature", 0.8), ("top_p", 0.95), ("do_sample", True)],
    ("evaluation", "compute_output_entropy"): [("model", _REQUIRED), ("tokenizer", _REQUIRED), ("prompt", _REQUIRED),
                                               ("device", _REQUIRED), ("n_next_tokens", 10)],
    ("evaluation", "get_ngrams"): [("text", _REQUIRED), ("n", _REQUIRED)],
    ("evaluation", "compute_distinct_n"): [("texts", _REQUIRED), ("n", 2)],
    ("evaluation", "compute_repetition_ratio"): [("texts", _REQUIRED), ("n", 3)],
    ("evaluation", "compute_vocabulary_richness"): [("texts", _REQUIRED)],
    ("noise_distributions", "inject_thermal_noise"): [("model", _REQUIRED), ("noise_level", _REQUIRED),
                                                      ("noise_type", "gaussian"), ("in_place", True)],
    ("noise_distributions", "get_noise_distribution"): [("noise_type", _REQUIRED)],
    ("noise_distributions", "get_model_weight_stats"): [("model", _REQUIRED)],
}


@pytest.mark.parametrize("module, name", list(ORIGINAL_SIGNATURES))
def test_root_modules_keep_the_original_signatures(module, name):
    func = getattr(__import__(module), name)
    params = list(inspect.signature(func).parameters.values())
    expected = ORIGINAL_SIGNATURES[(module, name)]
    assert [p.name for p in params[:len(expected)]] == [n for n, _ in expected]
    for p, (_, default) in zip(params, expected):
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, p
        if default is not _REQUIRED:  # an original default is kept (device, once required, may default to None)
            assert p.default == default, p
    # anything added after the original's parameters is keyword-only or optional
    assert all(p.default is not _REQUIRED for p in params[len(expected):])


def test_root_modules_export_the_original_names():
    import evaluation
    import noise_distributions as nd

    for name in ("NoiseDistribution", "GaussianNoise", "UniformNoise", "CauchyNoise", "NOISE_REGISTRY", "NoiseType",
                 "get_noise_distribution", "inject_thermal_noise", "get_model_weight_stats"):
        assert hasattr(nd, name), name
    for name in ("compute_perplexity", "generate_text_samples", "compute_output_entropy", "get_ngrams",
                 "compute_distinct_n", "compute_repetition_ratio", "compute_vocabulary_richness"):
        assert hasattr(evaluation, name), name


# --- compute_perplexity ---------------------------------------------------------------------

def window_reference(model, ids: torch.Tensor, window: int, stride: int) -> float:
    """exp(mean NLL) scoring each token after the first once, windows of ``window`` moved by ``stride``,
    from the model's own loss (labels) on each window's new targets."""
    total, count, done, start = 0.0, 0, 1, 0
    while done < ids.numel():
        chunk = ids[start:min(start + window + 1, ids.numel())]
        labels = chunk.clone()
        new_from = done - start  # chunk index of the first target not scored yet
        labels[:new_from] = -100
        with torch.no_grad():
            loss = model(input_ids=chunk[None], labels=labels[None]).loss
        n_new = chunk.numel() - new_from
        total += float(loss) * n_new
        count += n_new
        done, start = start + chunk.numel(), start + stride
    return math.exp(total / count)


def test_perplexity_takes_stride_by_position_and_max_length_after_it(llama, tokenizer):
    from evaluation import compute_perplexity
    from noisynn.evaluation import tokenize

    ids = tokenize(tokenizer, TEXT)
    by_position = compute_perplexity(llama, tokenizer, TEXT, "cpu", 32, 64)
    assert by_position == compute_perplexity(llama, tokenizer, TEXT, "cpu", stride=32, max_length=64)
    assert by_position == pytest.approx(window_reference(llama, ids, 64, 32), rel=1e-5)
    assert by_position.n_tokens == ids.numel() - 1
    assert by_position != compute_perplexity(llama, tokenizer, TEXT, "cpu", 64, 64)  # the overlap matters


def test_perplexity_default_window_follows_the_original_rule(tokenizer):
    from evaluation import compute_perplexity
    from noisynn.evaluation import default_window

    gpt2 = tiny_gpt2()  # n_positions = 256
    assert default_window(gpt2) == 256
    llama = tiny_llama()  # no n_positions: 1024, cut to max_position_embeddings = 256
    assert default_window(llama) == 256
    llama.config.max_position_embeddings = 4096
    assert default_window(llama) == 1024
    # stride 512 (the default) is longer than the 256-token window: cut to it, no token skipped
    text = TEXT * 2  # 720 tokens: three windows
    r = compute_perplexity(gpt2, tokenizer, text, "cpu")
    assert r.n_tokens == len(text) - 1 and r == compute_perplexity(gpt2, tokenizer, text, "cpu", 256, 256)


def test_perplexity_result_behaves_as_the_float_it_was(llama, tokenizer):
    from evaluation import compute_perplexity

    ppl = compute_perplexity(llama, tokenizer, TEXT, "cpu")
    value = math.exp(ppl.nll)
    assert isinstance(ppl, float) and float(ppl) == pytest.approx(value, rel=1e-12) and ppl.perplexity == float(ppl)
    assert f"{ppl:.2f}" == f"{value:.2f}" and f"{ppl}" == str(float(ppl)) == str(ppl)
    assert (ppl < value * 2) and (ppl > 1) and (ppl <= value * (1 + 1e-9)) and ppl == float(ppl)
    assert round(ppl) == round(value) and int(ppl) == int(value) and round(ppl, 1) == round(value, 1)
    assert ppl * 2 == pytest.approx(2 * value) and ppl - 1 == pytest.approx(value - 1) and 1 / ppl > 0
    assert type(ppl + 0) is float  # arithmetic gives plain numbers
    assert max([ppl, 0.5]) is ppl and sorted([ppl, 0.5])[-1] is ppl
    assert json.loads(json.dumps({"ppl": ppl})) == {"ppl": float(ppl)}
    assert ppl.n_tokens == len(TEXT) - 1 and ppl.bits_per_byte == pytest.approx(ppl.nll / math.log(2)) and ppl.finite
    for again in (pickle.loads(pickle.dumps(ppl)), copy.deepcopy(ppl)):
        assert again == ppl and (again.nll, again.bits_per_byte, again.n_tokens, again.n_bytes, again.finite) == (
            ppl.nll, ppl.bits_per_byte, ppl.n_tokens, ppl.n_bytes, ppl.finite)
    assert "nll=" in repr(ppl) and "n_tokens=" in repr(ppl)


# --- generate_text_samples ------------------------------------------------------------------

def test_generate_text_samples_original_order_returns_prompt_plus_continuation(llama, tokenizer):
    from evaluation import generate_text_samples

    # positional, as the original documented them: n_samples, max_new_tokens, temperature, top_p, do_sample
    texts = generate_text_samples(llama, tokenizer, PROMPT, "cpu", 2, 12, 0.8, 0.95, False)
    enc = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        ref = llama.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    # what the original returned: the whole generated sequence, decoded
    assert texts == [tokenizer.decode(ref[0], skip_special_tokens=True)] * 2
    alone = generate_text_samples(llama, tokenizer, PROMPT, "cpu", 2, 12, 0.8, 0.95, False, include_prompt=False)
    assert [PROMPT + a for a in alone] == texts and not alone[0].startswith(PROMPT)


def test_generate_text_samples_samples_n_samples_texts(llama, tokenizer):
    from evaluation import generate_text_samples

    torch.manual_seed(3)
    a = generate_text_samples(llama, tokenizer, PROMPT, "cpu", n_samples=4, max_new_tokens=10)
    torch.manual_seed(3)  # the global RNG drives sampling when no seed is given, as in the original
    b = generate_text_samples(llama, tokenizer, PROMPT, "cpu", n_samples=4, max_new_tokens=10)
    assert a == b and len(a) == 4 and len(set(a)) > 1 and all(t.startswith(PROMPT) for t in a)
    assert generate_text_samples(llama, tokenizer, PROMPT, "cpu", n_samples=0) == []
    # the package's older keyword still works
    assert len(generate_text_samples(llama, tokenizer, PROMPT, num_samples=2, max_new_tokens=3, seed=1)) == 2


def hub_like_gpt2_tokenizer():
    """A byte-level tokenizer as ``AutoTokenizer.from_pretrained("gpt2")`` comes: no pad token, right padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"] = 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    assert fast.pad_token is None and fast.padding_side == "right"
    return fast


def test_generation_works_with_a_tokenizer_that_has_no_pad_token(gpt2, tokenizer):
    from evaluation import compute_output_entropy, generate_text_samples
    from noisynn.evaluation import decode

    plain = hub_like_gpt2_tokenizer()
    texts = generate_text_samples(gpt2, plain, PROMPT, "cpu", 2, 8, 0.8, 0.95, False)
    assert texts == generate_text_samples(gpt2, tokenizer, PROMPT, "cpu", 2, 8, 0.8, 0.95, False)
    assert compute_output_entropy(gpt2, plain, PROMPT, "cpu", 4) == compute_output_entropy(gpt2, tokenizer, PROMPT,
                                                                                            "cpu", 4)
    prompts = ["a", "a longer prompt"]  # rows of different lengths: left-padded whatever the tokenizer says
    assert torch.equal(decode(gpt2, plain, prompts, 6).token_ids, decode(gpt2, tokenizer, prompts, 6).token_ids)


# --- compute_output_entropy -----------------------------------------------------------------

def greedy_entropy_reference(model, tokenizer, prompt: str, steps: int) -> float:
    """Mean next-token entropy in bits along ``steps`` greedy steps, full forward pass each step."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    found = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids).logits[0, -1].double()
            p = F.softmax(logits, -1)
            found.append(float(-(p * p.log2()).nan_to_num().sum()))
            ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    return sum(found) / len(found)


def test_output_entropy_takes_n_next_tokens(llama, tokenizer):
    from evaluation import compute_output_entropy

    for steps in (1, 7):
        expected = greedy_entropy_reference(llama, tokenizer, PROMPT, steps)
        by_keyword = compute_output_entropy(llama, tokenizer, PROMPT, "cpu", n_next_tokens=steps)
        assert by_keyword == pytest.approx(expected, rel=1e-4)
        assert compute_output_entropy(llama, tokenizer, PROMPT, "cpu", steps) == by_keyword
    assert compute_output_entropy(llama, tokenizer, PROMPT, "cpu") == pytest.approx(
        greedy_entropy_reference(llama, tokenizer, PROMPT, 10), rel=1e-4)


def test_output_entropy_runs_through_eos_as_the_original(tokenizer):
    from evaluation import compute_output_entropy

    model = tiny_llama()
    head = torch.nn.Linear(32, 258, bias=True)  # a bias on EOS makes it the argmax at every step
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 1.0
    model.lm_head = head
    first = model(input_ids=tokenizer("ab", return_tensors="pt").input_ids).logits[0, -1].argmax()
    assert int(first) == tokenizer.eos_token_id
    expected = greedy_entropy_reference(model, tokenizer, "ab", 6)  # six steps, all after EOS but the first
    assert compute_output_entropy(model, tokenizer, "ab", "cpu", 6) == pytest.approx(expected, rel=1e-4)


# --- inject_thermal_noise -------------------------------------------------------------------

def test_inject_thermal_noise_noises_every_conv1d_weight_and_bias_on_gpt2(gpt2):
    from noise_distributions import inject_thermal_noise

    before = weights(gpt2)
    inject_thermal_noise(gpt2, 0.01)
    hit = changed(before, gpt2)
    layers = [(n, m) for n, m in gpt2.named_modules() if type(m).__name__ in ("Conv1D", "Linear")]
    expected = {f"{n}.{p}" for n, m in layers for p in ("weight", "bias") if getattr(m, p, None) is not None}
    assert hit == expected and "lm_head.weight" in hit and any(k.endswith(".bias") for k in hit)
    assert "transformer.wte.weight" not in hit and "transformer.wpe.weight" not in hit  # embeddings stay clean
    again = tiny_gpt2()
    before = weights(again)
    inject_thermal_noise(again, 0.01, include_bias=False)
    assert changed(before, again) == {k for k in expected if k.endswith(".weight")}


def test_inject_thermal_noise_differs_from_the_sweep_default_only_by_choice(llama):
    from noise_distributions import inject_thermal_noise

    sweep_like = inject_thermal_noise(llama, 0.05, "gaussian", False, targets="blocks", seed=2)
    original = inject_thermal_noise(llama, 0.05, "gaussian", False, seed=2)
    clean = weights(llama)
    assert "lm_head.weight" in changed(clean, original) and "lm_head.weight" not in changed(clean, sweep_like)
    assert not changed(clean, llama)  # in_place=False leaves the model alone
    untouched = inject_thermal_noise(llama, 0.0)
    assert untouched is llama and not changed(clean, llama) and llama.lm_head.weight is llama.model.embed_tokens.weight
    with pytest.raises(ValueError, match="gaussian"):  # as the original's get_noise_distribution
        inject_thermal_noise(llama, 0.05, "pink")


# --- noise_distributions' other names ---------------------------------------------------------

def test_noise_type_is_a_literal_of_the_builtin_names():
    from noise_distributions import NOISE_REGISTRY, NoiseType

    assert typing.get_origin(NoiseType) is typing.Literal
    names = typing.get_args(NoiseType)
    assert {"gaussian", "uniform", "cauchy"} <= set(names) <= set(NOISE_REGISTRY)


def test_get_noise_distribution_returns_an_instance_or_a_value_error():
    from noise_distributions import CauchyNoise, GaussianNoise, NoiseDistribution, UniformNoise, get_noise_distribution
    from noisynn.errors import NoisyNNError

    for name, cls in (("gaussian", GaussianNoise), ("uniform", UniformNoise), ("cauchy", CauchyNoise)):
        noise = get_noise_distribution(name)
        assert isinstance(noise, cls) and isinstance(noise, NoiseDistribution)
    with pytest.raises(ValueError, match="gaussian.*uniform|cauchy.*gaussian") as info:
        get_noise_distribution("pink")
    assert isinstance(info.value, NoisyNNError) and "pink" in str(info.value)  # and one line for the scripts


def test_get_model_weight_stats_keys_and_values(llama, gpt2):
    from noise_distributions import get_model_weight_stats

    stats = get_model_weight_stats(llama)
    assert set(stats) == {"mean", "std", "min", "max", "total_params"}
    pooled = torch.cat([m.weight.detach().flatten() for m in llama.modules() if isinstance(m, torch.nn.Linear)])
    assert stats["total_params"] == pooled.numel()
    assert stats["mean"] == pytest.approx(float(pooled.mean()), abs=1e-7)
    assert stats["std"] == pytest.approx(float(pooled.std()), rel=1e-5)
    assert (stats["min"], stats["max"]) == (float(pooled.min()), float(pooled.max()))
    conv = sum(m.weight.numel() + m.bias.numel() for m in gpt2.modules() if type(m).__name__ == "Conv1D")
    assert get_model_weight_stats(gpt2)["total_params"] == conv + gpt2.lm_head.weight.numel()
    assert get_model_weight_stats(torch.nn.Sequential(torch.nn.ReLU())) == {}


# --- evaluation's other names ---------------------------------------------------------------

def test_get_ngrams_and_vocabulary_richness_known_values():
    from evaluation import compute_distinct_n, compute_vocabulary_richness, get_ngrams

    assert get_ngrams("The cat The cat", 2) == [("the", "cat"), ("cat", "the"), ("the", "cat")]
    assert get_ngrams("one two", 3) == [] and get_ngrams("a b c", 1) == [("a",), ("b",), ("c",)]
    rich = compute_vocabulary_richness(["a b a", "c a"])
    assert rich == {"type_token_ratio": 3 / 5, "unique_words": 3, "total_words": 5,
                    "distinct_1": 3 / 5, "distinct_2": 1.0, "distinct_3": 1.0}
    assert compute_vocabulary_richness([""])["total_words"] == 0
    assert compute_distinct_n(["a b", "a b"], 2) == 0.5


# --- the embedded model ---------------------------------------------------------------------

@pytest.mark.integration
def test_readme_snippets_on_the_embedded_model(embedded):
    from noisynn.corpus import load_text

    text = load_text(max_chars=1200).text
    clean_ns = {"model": embedded.model, "tokenizer": embedded.tokenizer, "device": torch.device("cpu"),
                "prompt": PROMPT, "validation_text": text}
    torch.manual_seed(0)
    exec(README_EVALUATION_SNIPPET, clean_ns)
    assert 3 < clean_ns["ppl"] < 40 and f"{clean_ns['ppl']:.2f}" and clean_ns["ppl"].n_tokens > 200
    assert all(s.startswith(PROMPT) and len(s) > len(PROMPT) for s in clean_ns["samples"])
    assert 0 < clean_ns["entropy"] < math.log2(embedded.tokenizer.vocab_size + 1)
    # The noise snippet mutates the model in place: run it on a copy (the fixture is shared).
    noisy_model = copy.deepcopy(embedded.model)
    embeddings = noisy_model.get_input_embeddings().weight.detach().clone()
    noisy_ns = dict(clean_ns, model=noisy_model)
    exec(README_NOISE_SNIPPET, noisy_ns)
    assert torch.equal(noisy_model.get_input_embeddings().weight, embeddings)
    exec(README_EVALUATION_SNIPPET, noisy_ns)
    assert noisy_ns["ppl"] > 10 * clean_ns["ppl"]
