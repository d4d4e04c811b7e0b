"""Analog attention and its gain-cell KV store on tiny random Llama and GPT-2 models: equality with the model
when every knob is off, full-sequence forward = cached decoding, seeds, the store's formulas, refusals."""

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tests.helpers import tiny_gpt2, tiny_llama
from noisynn.analog.attention import COVERED, check_covered, install_attention
from noisynn.analog.kv_store import AttentionSetting, KVStore, ages, quantize_unit, window_mask
from noisynn.analog.mvm import AnalogIO, Gains, analog_matmul
from noisynn.errors import NoisyNNError
from noisynn.evaluation import cache_names

def _tiny(kind: str):
    """A tiny random Mistral or Qwen2 (grouped-query attention, as Llama)."""
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cfg, model = {"mistral": (MistralConfig, MistralForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[kind]
    torch.manual_seed(0)
    return model(cfg(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=256)).eval()


MODELS = {"llama": tiny_llama, "gpt2": tiny_gpt2, "mistral": lambda: _tiny("mistral"), "qwen2": lambda: _tiny("qwen2")}
NOISY = {"kv_bits": 4, "kv_write_noise": 0.05, "kv_tau": 12.0, "kv_tau_spread": 0.5, "attn_window": 20}


def _ids(n=40, batch=2, seed=0):
    return torch.randint(0, 250, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", list(MODELS))
def test_every_knob_off_is_the_model_and_remove_restores_it(family):
    model, ids = MODELS[family](), _ids()
    with torch.no_grad():
        ref = model(ids).logits
        handle = install_attention(AttentionSetting(), model, seed=3)
        assert model.config._attn_implementation != "sdpa"
        analog = model(ids).logits
        handle.remove()
        after = model(ids).logits
    assert torch.allclose(analog, ref, atol=1e-5)
    assert model.config._attn_implementation == "sdpa" and torch.equal(after, ref)


@pytest.mark.parametrize("family", list(MODELS))
def test_full_forward_equals_cached_decoding_without_read_noise(family):
    """The store is a function of the position: both modes store the same values and leak them alike."""
    model, ids = MODELS[family](), _ids(36, batch=1)
    handle = install_attention(AttentionSetting.from_flags(NOISY), model, seed=1)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits[0]
        given, returned = cache_names(model)
        out = model(ids[:, :28], use_cache=True)
        steps = [out.logits[0, -1]]
        for t in range(28, 35):
            out = model(ids[:, t:t + 1], use_cache=True, **{given: getattr(out, returned)})
            steps.append(out.logits[0, -1])
    handle.remove()
    assert torch.allclose(torch.stack(steps), full[27:35], atol=1e-4)
    assert not torch.allclose(full, model(ids).logits[0], atol=1e-2)  # and the knobs did something


def test_same_seed_same_logits_other_seed_other_logits():
    model, ids = tiny_llama(), _ids()
    setting = AttentionSetting.from_flags({**NOISY, "kv_read_noise": 0.05})
    handle = install_attention(setting, model, seed=5)
    with torch.no_grad():
        a = model(ids).logits
        handle.reseed(5)
        b = model(ids).logits
        handle.reseed(6)
        c = model(ids).logits
        handle.reseed(5, noise_seed=7)  # same store, other read noise
        d = model(ids).logits
    handle.remove()
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, d)


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(2, 10), seed=st.integers(0, 10_000))
def test_written_values_lie_on_the_dac_grid_within_half_a_step(bits, seed):
    x = torch.randn(1, 2, 30, 8, generator=torch.Generator().manual_seed(seed))
    stored, r = KVStore(AttentionSetting(kv_bits=bits)).written(x, 0, "k")
    h = (2 ** bits - 2) / 2
    assert torch.allclose(stored * h, torch.round(stored * h), atol=1e-4)  # on a level
    assert (stored - x / r).abs().max() <= 0.5 / h + 1e-6  # the nearest level
    assert torch.allclose(r[..., 0], x.abs().amax(-1))  # row range: each stored vector's abs-max


def test_write_noise_std_and_determinism():
    x = torch.zeros(1, 3, 700, 64)
    store = KVStore(AttentionSetting(kv_write_noise=0.02), seed=4)
    r_fixed = AttentionSetting(kv_write_noise=0.02, kv_range=1.0)
    stored, _ = KVStore(r_fixed, seed=4).written(x, 2, "v")
    assert stored.std().item() == pytest.approx(0.02, rel=0.02)  # 134k draws: 2% is > 5 standard errors
    again, _ = KVStore(r_fixed, seed=4).written(x[:, :, :300], 2, "v")  # a shorter sequence: the same prefix
    assert torch.equal(again, stored[:, :, :300])
    other, _ = KVStore(r_fixed, seed=4).written(x, 3, "v")  # another layer: another table
    assert not torch.equal(other, stored)
    assert store.seed == 4


@settings(max_examples=20, deadline=None)
@given(tau=st.floats(1.0, 1e4), n_q=st.integers(1, 12), extra=st.integers(0, 20))
def test_leak_without_spread_is_exp_of_minus_age_over_tau(tau, n_q, extra):
    n_keys = n_q + extra
    leak = KVStore(AttentionSetting(kv_tau=tau)).leak(0, "k", 2, n_q, n_keys, "cpu", torch.float64)
    age = ages(n_q, n_keys).clamp(min=0).double()
    assert torch.allclose(leak[1], torch.exp(-age / tau), rtol=1e-12)


def test_tau_spread_is_lognormal_with_median_tau():
    tau, spread = 100.0, 0.7
    store = KVStore(AttentionSetting(kv_tau=tau, kv_tau_spread=spread), seed=2)
    leak = store.leak(1, "k", 4, 1, 2001, "cpu", torch.float64)  # one query, ages 2000 .. 0
    age = ages(1, 2001).double()[0]
    log_tau = torch.log(-age[:-1] / torch.log(leak[:, 0, :-1]))  # invert exp(-age / tau_row)
    assert log_tau.mean().item() == pytest.approx(math.log(tau), abs=0.05)
    assert log_tau.std().item() == pytest.approx(spread, rel=0.05)
    array = KVStore(AttentionSetting(kv_tau=tau, kv_tau_spread=spread, kv_tau_per="array"), seed=2)
    per_head = array.leak(1, "k", 4, 1, 50, "cpu", torch.float64)[:, 0, :-1]  # ages 49 .. 1
    taus = -ages(1, 50).double()[0, :-1] / torch.log(per_head)
    assert torch.allclose(taus, taus[:, :1].expand_as(taus), rtol=1e-9)  # one tau per kv head ...
    assert taus[:, 0].unique().numel() == 4  # ... drawn per head


def test_window_mask_and_a_window_of_one_reads_only_the_own_value():
    assert window_mask(3, 5, 0) is None
    # queries at positions 2, 3, 4 read keys of age 0 and 1 (future keys are the causal mask's)
    assert window_mask(3, 5, 2).tolist() == [[True, False, False, False, False], [True, True, False, False, False],
                                             [True, True, True, False, False]]
    model, ids = tiny_llama(), _ids(12, batch=1)
    handle = install_attention(AttentionSetting(attn_window=1), model)
    attn = model.model.layers[0].self_attn
    q, k, v = torch.randn(1, 4, 12, 8), torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    out = handle.attend(attn, q, k, v, None, None)  # (B, T, H, d)
    handle.remove()
    expected = v.repeat_interleave(2, dim=1).transpose(1, 2)
    assert torch.allclose(out, expected, atol=1e-5)


def test_gains_scale_the_ideal_product_and_absent_outputs_leave_bound_management_alone():
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(6, 16, generator=gen), torch.randn(10, 16, generator=gen)
    g_out, g_in = torch.rand(6, 10, generator=gen), torch.rand(6, 16, generator=gen)
    ideal = AnalogIO(dac_bits=None, adc_bits=None, out_noise=0.0, out_bound=None, bound_management="none")
    assert torch.allclose(analog_matmul(x, w, ideal, gains=Gains(outputs=g_out)), (x @ w.t()) * g_out, atol=1e-5)
    assert torch.allclose(analog_matmul(x, w, ideal, gains=Gains(inputs=g_in)), (x * g_in) @ w.t(), atol=1e-5)
    adc = AnalogIO(dac_bits=6, adc_bits=6, out_noise=0.0, out_bound=2.0, tile_size=(16, 5))
    loud = w.clone()
    loud[7:] *= 50  # outputs 7-9 saturate: absent, they must not make the others redo with a reduced input
    absent = torch.zeros(6, 10, dtype=torch.bool)
    absent[:, 7:] = True
    quiet = w.clone()
    quiet[7:] = 0
    y = analog_matmul(x, loud, adc, gains=Gains(absent=absent))
    assert torch.equal(y[:, 7:], torch.zeros(6, 3))
    assert torch.equal(y, analog_matmul(x, quiet, adc))


def test_bad_settings_are_refused_in_one_line():
    for flags, words in [({"kv_tau": 0}, "must be >"), ({"kv_tau_spread": 0.5}, "needs --kv_tau"),
                         ({"attn_adc_bits": 5}, "needs --attn_out_bound"), ({"kv_bits": 1}, ">= 2"),
                         ({"kv_range": "-1"}, "> 0"), ({"kv_tau_per": "cell"}, "invalid choice")]:
        with pytest.raises(NoisyNNError, match=words) as err:
            AttentionSetting.from_flags(flags)
        assert "\n" not in str(err.value)
    with pytest.raises(NoisyNNError, match="unknown"):
        AttentionSetting.from_flags({}, preset="nope")
    with pytest.raises(NoisyNNError, match="covers the llama"):
        check_covered(SimpleNamespace(config=SimpleNamespace(model_type="gemma3")))
    assert set(MODELS) == set(COVERED)  # every covered family is tested above


def test_gain_cell_preset_is_the_papers_hardware_model():
    s = AttentionSetting.from_flags({"kv_write_noise": 0.01}, preset="gain_cell")
    assert (s.kv_bits, s.attn_dac_bits, s.attn_adc_bits, s.kv_tau) == (3, 4, 5, 6250.0)  # 8, 16, 32 levels; 1.6e-4
    assert s.kv_write_noise == 0.01 and math.exp(-1023 / s.kv_tau) == pytest.approx(0.849, abs=1e-3)
    assert quantize_unit(torch.tensor([0.1, 0.4, -1.0]), 3).tolist() == pytest.approx([0.0, 1 / 3, -1.0])  # 7 levels
