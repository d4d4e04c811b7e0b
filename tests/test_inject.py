import pytest
import torch
from hypothesis import given, settings, strategies as st

from tests.helpers import tiny_gpt2, tiny_llama
from noisynn.errors import NoisyNNError
from noisynn.inject import NoiseInjector, inject_thermal_noise, noisy_weights, unit_scale
from noisynn.targets import classify_weight, select_targets


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, model):
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("name,kind,block,proj", [
    ("model.layers.3.self_attn.q_proj", "attention", 3, "q"),
    ("model.layers.3.self_attn.o_proj", "attention", 3, "o"),
    ("model.layers.0.mlp.gate_proj", "mlp", 0, "gate"),
    ("model.layers.0.mlp.down_proj", "mlp", 0, "down"),
    ("transformer.h.5.attn.c_attn", "attention", 5, "qkv"),
    ("transformer.h.5.attn.c_proj", "attention", 5, "o"),
    ("transformer.h.5.mlp.c_fc", "mlp", 5, "up"),
    ("transformer.h.5.mlp.c_proj", "mlp", 5, "down"),
    ("model.decoder.layers.2.self_attn.out_proj", "attention", 2, "o"),
    ("model.decoder.layers.2.fc1", "mlp", 2, "up"),
    ("model.decoder.layers.2.fc2", "mlp", 2, "down"),
    ("gpt_neox.layers.1.attention.query_key_value", "attention", 1, "qkv"),
    ("gpt_neox.layers.1.attention.dense", "attention", 1, "o"),
    ("gpt_neox.layers.1.mlp.dense_4h_to_h", "mlp", 1, "down"),
    ("lm_head", "head", None, None),
    ("embed_out", "head", None, None),
    ("model.embed_tokens", "embedding", None, None),
])
def test_classify_weight_names(name, kind, block, proj):
    c = classify_weight(name)
    assert (c.kind, c.block, c.proj) == (kind, block, proj)


def test_default_targets_are_block_projections(llama):
    targets = select_targets(llama)
    assert {t.cls.kind for t in targets} == {"attention", "mlp"}
    assert len(targets) == 2 * 7  # q k v o gate up down in each of 2 blocks


def test_only_targeted_weights_change(llama):
    before = state(llama)
    with noisy_weights(llama, 0.1, targets="attention", seed=0):
        diff = changed(before, llama)
        assert diff and all("self_attn" in k for k in diff)
        assert len(diff) == 8
    assert not changed(before, llama)


@pytest.mark.parametrize("spec,expect", [("q", {"q_proj"}), ("gate,up", {"gate_proj", "up_proj"}), ("down", {"down_proj"})])
def test_projection_targets(llama, spec, expect):
    before = state(llama)
    with noisy_weights(llama, 0.1, targets=spec, seed=0):
        assert {k.split(".")[-2] for k in changed(before, llama)} == expect


def test_block_restriction(llama):
    before = state(llama)
    with noisy_weights(llama, 0.1, blocks=[1], seed=0):
        assert all(".layers.1." in k for k in changed(before, llama))


def test_restore_is_bit_exact_after_exception(llama):
    before = state(llama)
    with pytest.raises(RuntimeError):
        with noisy_weights(llama, 0.5, "cauchy", seed=1):
            raise RuntimeError("boom")
    for k, v in llama.state_dict().items():
        assert torch.equal(v, before[k])


def test_tied_embeddings_stay_clean_unless_asked(llama):
    emb = llama.get_input_embeddings().weight.detach().clone()
    with noisy_weights(llama, 0.1, targets="all", seed=0):
        pass
    assert torch.equal(llama.get_input_embeddings().weight, emb)
    # targets=all includes the head: it was untied first, so embeddings stay clean while the head is noised
    model = tiny_llama()
    emb = model.get_input_embeddings().weight.detach().clone()
    with noisy_weights(model, 0.1, targets="head", seed=0):
        assert torch.equal(model.get_input_embeddings().weight, emb)
        assert not torch.equal(model.get_output_embeddings().weight, emb)
    assert torch.equal(model.get_output_embeddings().weight, emb)
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight


def test_default_leaves_tied_pair_tied(llama):
    with noisy_weights(llama, 0.1, seed=0):
        assert llama.get_output_embeddings().weight is llama.get_input_embeddings().weight


def test_same_seed_same_weights_and_other_seed_differs():
    a, b = tiny_llama(), tiny_llama()
    with noisy_weights(a, 0.1, seed=5), noisy_weights(b, 0.1, seed=5):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with noisy_weights(a, 0.1, seed=5), noisy_weights(b, 0.1, seed=6):
        assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_noise_does_not_depend_on_which_other_layers_are_noised():
    a, b = tiny_llama(), tiny_llama()
    name = "model.layers.1.self_attn.q_proj.weight"
    with noisy_weights(a, 0.1, targets="blocks", seed=9), noisy_weights(b, 0.1, targets="q", blocks=[1], seed=9):
        assert torch.equal(a.state_dict()[name], b.state_dict()[name])


def test_reversed_target_order_gives_same_noise(llama):
    inj = NoiseInjector(llama, selected=list(reversed(select_targets(llama, "blocks"))))
    inj.draw(3)
    inj.apply(0.1)
    reversed_state = state(llama)
    inj.restore()
    with noisy_weights(llama, 0.1, seed=3):
        assert all(torch.equal(reversed_state[k], v) for k, v in llama.state_dict().items())


def test_levels_do_not_stack_and_zero_is_clean(llama):
    before = state(llama)
    inj = NoiseInjector(llama)
    inj.draw(0)
    inj.apply(0.2)
    inj.apply(0.05)
    once = state(llama)
    inj.apply(0.0)
    assert not changed(before, llama)
    with noisy_weights(llama, 0.05, seed=0):
        assert all(torch.equal(once[k], v) for k, v in llama.state_dict().items())


def test_absolute_noise_std_matches_sigma():
    model = tiny_llama(layers=2)
    before = state(model)
    with noisy_weights(model, 0.02, seed=0):
        diffs = torch.cat([(v - before[k]).flatten() for k, v in model.state_dict().items() if "proj" in k])
    assert abs(float(diffs.std()) - 0.02) < 0.001


@pytest.mark.parametrize("scale", ["relative", "relative_max", "relative_channel"])
def test_relative_scales(scale):
    model = tiny_llama()
    w = model.model.layers[0].mlp.up_proj.weight
    w.data[:5] *= 10  # channels with larger weights
    clean = w.detach().clone()
    with noisy_weights(model, 0.1, scale=scale, targets="up", seed=0):
        d = (w - clean).detach()
    if scale == "relative":
        assert abs(float(d.std()) / float(clean.std()) - 0.1) < 0.02
    elif scale == "relative_max":
        assert abs(float(d.std()) / float(clean.abs().max()) - 0.1) < 0.02
    else:
        ratio = d.std(dim=1) / clean.abs().amax(dim=1)
        assert torch.allclose(ratio, torch.full_like(ratio, 0.1), rtol=0.35)
        assert float(d[:5].std()) > 5 * float(d[5:].std())


def test_conv1d_channel_axis_is_output():
    model = tiny_gpt2()
    targets = select_targets(model)
    assert {t.out_axis for t in targets} == {1}
    c_fc = next(t for t in targets if t.cls.proj == "up")
    u = unit_scale(c_fc.param, "relative_channel", c_fc.out_axis)
    assert u.shape == (1, c_fc.param.shape[1])


def test_gpt2_attention_only_leaves_mlp(gpt2):
    before = state(gpt2)
    with noisy_weights(gpt2, 0.1, targets="attention", seed=0):
        diff = changed(before, gpt2)
        assert diff and all(".attn." in k for k in diff)


def test_biases_opt_in(gpt2):
    before = state(gpt2)
    with noisy_weights(gpt2, 0.1, seed=0):
        assert not any(k.endswith("bias") for k in changed(before, gpt2))
    with noisy_weights(gpt2, 0.1, include_bias=True, seed=0):
        assert any(k.endswith("bias") for k in changed(before, gpt2))


def test_inject_thermal_noise_original_signature(llama):
    before = state(llama)
    copy_ = inject_thermal_noise(llama, 0.05, "gaussian", in_place=False, seed=1)
    assert not changed(before, llama) and changed(before, copy_)
    same = inject_thermal_noise(llama, 0.05, seed=1)
    assert same is llama
    assert all(torch.equal(copy_.state_dict()[k], v) for k, v in llama.state_dict().items())


def test_inject_matches_noisy_weights_for_same_seed():
    a, b = tiny_llama(), tiny_llama()
    inject_thermal_noise(a, 0.03, "laplacian", seed=11, targets="blocks")  # the sweep's default targets
    with noisy_weights(b, 0.03, "laplacian", seed=11):
        assert all(torch.allclose(a.state_dict()[k], v, atol=1e-7) for k, v in b.state_dict().items())


def test_bad_inputs_raise_clear_errors(llama):
    with pytest.raises(NoisyNNError, match="finite number"):
        inject_thermal_noise(llama, -1.0)
    with pytest.raises(NoisyNNError, match="finite number"):
        inject_thermal_noise(llama, float("nan"))
    with pytest.raises(NoisyNNError, match="unknown target"):
        select_targets(llama, "attn")
    with pytest.raises(NoisyNNError, match="unknown scale"):
        inject_thermal_noise(llama, 0.1, scale="percent")


@settings(max_examples=20, deadline=None)
@given(targets=st.sampled_from(["blocks", "attention", "mlp", "all", "head", "q,down", "embedding"]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]),
       sigma=st.floats(0, 10, allow_nan=False), seed=st.integers(0, 2**31),
       noise=st.sampled_from(["gaussian", "cauchy", "student_t", "uniform"]))
def test_restore_bit_exact_property(targets, dtype, sigma, seed, noise):
    model = tiny_llama(seed=seed % 7).to(dtype)
    before = state(model)
    with noisy_weights(model, sigma, noise, targets=targets, seed=seed):
        pass
    for k, v in model.state_dict().items():
        assert v.dtype == dtype and torch.equal(v, before[k]), k


@settings(max_examples=15, deadline=None)
@given(heads=st.sampled_from([1, 2, 4]), head_dim=st.sampled_from([2, 4, 8]), ffn=st.integers(3, 48),
       layers=st.integers(1, 3), vocab=st.integers(8, 64), tie=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
       scale=st.sampled_from(["absolute", "relative", "relative_max", "relative_channel"]),
       targets=st.sampled_from(["blocks", "all", "head", "v,gate", "embedding"]),
       sigma=st.floats(0, 5, allow_nan=False), seed=st.integers(0, 2**31), fail=st.booleans())
def test_restore_bit_exact_for_random_shapes(heads, head_dim, ffn, layers, vocab, tie, dtype, scale, targets, sigma,
                                             seed, fail):
    """Any model shape, dtype, scale and target set: the weights come back bit for bit, also after an exception."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed % 1000)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=heads * head_dim, intermediate_size=ffn, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=32,
                      tie_word_embeddings=tie, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(cfg).eval().to(dtype)
    before = state(model)
    try:
        with noisy_weights(model, sigma, "gaussian", scale=scale, targets=targets, seed=seed):
            if fail:
                raise RuntimeError("inside the context")
    except RuntimeError:
        assert fail
    for k, v in model.state_dict().items():
        assert v.dtype == dtype and torch.equal(v, before[k]), k
