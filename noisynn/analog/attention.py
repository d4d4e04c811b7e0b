"""Analog attention on a Hugging Face causal LM: QK^T and A V as analog MVMs on a leaking gain-cell KV store.

Installed as an attention implementation of transformers' ``AttentionInterface`` (with the eager mask builder
registered under the same name in ``AttentionMaskInterface``, else the model would build no causal mask), so the
model's own projections, RoPE and KV cache run unchanged and only the attention product is replaced. For every
layer, batch row and kv head (the query heads that share it, stacked):

    S = AMVM(q, K_st; leak_k, absent) r_k scaling      the QK^T MVM: keys are the array's outputs
    A = softmax(S, masked)                             digital (between an ADC and a DAC)
    O = AMVM(A r_v, V_st^T; leak_v)                    the AV MVM: keys are its inputs, in tiles of attn_tile keys

AMVM = ``noisynn.analog.mvm.analog_matmul`` with the attention's ``AnalogIO`` (DAC, ADC, output noise, bound
management, additive_constant read noise), the stored values K_st, V_st and ranges r from
``noisynn.analog.kv_store`` (write DAC, write noise, leak, window). The age of a stored key is its distance in
positions from the query, the same in a full-sequence forward and in cached decoding (the cache holds the keys as
computed; the store recomputes their stored form from seeded tables): both modes store the same values and leak
them alike, only the read-noise draws differ.

Covered: the attention of the Llama, Mistral, Qwen2 (grouped-query) and GPT-2 families, which call the interface
with (module, q, k, v, mask, scaling); others are refused in one line. Eval only (no dropout, no gradient path
through the converters).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from ..errors import NoisyNNError
from ..seeding import derive_seed, make_generator
from .kv_store import AttentionSetting, KVStore, window_mask
from .mvm import Gains, analog_matmul

KEY = "noisynn_analog_attention"
COVERED = ("llama", "mistral", "qwen2", "gpt2")
_INSTALLED: "weakref.WeakKeyDictionary[nn.Module, AnalogAttention]" = weakref.WeakKeyDictionary()


def _register() -> None:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    if KEY not in ALL_ATTENTION_FUNCTIONS.valid_keys():
        AttentionInterface.register(KEY, gain_cell_attention)
    if KEY not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionMaskInterface.register(KEY, eager_mask)


def gain_cell_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention-interface signature: (B, H, Tq, d) queries, (B, H_kv, Tk, d) keys and values,
    an additive mask (B, 1, Tq, Tk) or None -> ((B, Tq, H, d), None)."""
    handle = _INSTALLED.get(module)
    if handle is None:
        raise NoisyNNError("analog attention runs only on a model it was installed on (noisynn.analog.attention)")
    return handle.attend(module, query, key, value, attention_mask, scaling), None


class AnalogAttention:
    """The install handle: ``reseed``, ``set_enabled``, ``remove``, ``describe``, like ConverterHooks.

    ``reseed(seed, noise_seed)``: the store's tables (write noise, retention times; once per trial) and the read
    and output noise stream (fresh at every read).
    """

    def __init__(self, model: nn.Module, setting: AttentionSetting, seed: int = 0):
        check_covered(model)
        kind = model.config.model_type
        _register()
        self.model, self.setting, self.io = model, setting, setting.io()
        self.store = KVStore(setting)
        self.layers: dict[nn.Module, int] = {}
        for module in model.modules():
            if type(module).__name__.endswith("Attention") and hasattr(module, "layer_idx"):
                self.layers[module] = int(module.layer_idx)
        if not self.layers:
            raise NoisyNNError(f"no attention modules with a layer index in this '{kind}' model")
        self.previous = model.config._attn_implementation
        self.enabled = False
        self.reseed(seed)
        for module in self.layers:
            _INSTALLED[module] = self
        self.set_enabled(True)

    def configure(self, setting: AttentionSetting) -> None:
        """Another setting on the same install (an experiment's conditions): a new store, drawn at ``reseed``."""
        self.setting, self.io = setting, setting.io()
        self.store = KVStore(setting, self.store.seed)

    def reseed(self, seed: int, noise_seed: int | None = None) -> None:
        """The store's tables from ``seed`` (a trial's programming: common to every level of the trial), the
        read and output noise from ``noise_seed`` (default: ``seed``)."""
        self.seed = int(seed)
        self.noise_seed = self.seed if noise_seed is None else int(noise_seed)
        self.store.reseed(derive_seed(self.seed, "kv-store"))
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, device) -> torch.Generator:
        key = str(torch.device(device))
        if key not in self._generators:
            self._generators[key] = make_generator(derive_seed(self.noise_seed, "attention-noise", key), device)
        return self._generators[key]

    def set_enabled(self, on: bool) -> None:
        if on != self.enabled:
            self.model.set_attn_implementation(KEY if on else self.previous)
            self.enabled = on

    def remove(self) -> None:
        self.set_enabled(False)
        for module in self.layers:
            _INSTALLED.pop(module, None)

    def describe(self) -> dict:
        return {**self.setting.describe(), "layers": len(self.layers), "seed": self.seed,
                "implementation": f"transformers AttentionInterface '{KEY}' over '{self.previous}'",
                "mode": "perplexity windows start an empty store each (the window's keys are written, then read); "
                        "the age of key j read by query i is i - j positions"}

    @torch.no_grad()
    def attend(self, module, query, key, value, attention_mask, scaling) -> torch.Tensor:
        b_size, n_heads, n_q, dim = query.shape
        n_kv, n_keys = key.shape[1], key.shape[2]
        rep = n_heads // n_kv
        layer = self.layers[module]
        scaling = dim ** -0.5 if scaling is None else scaling
        k_st, r_k = self.store.written(key, layer, "k")
        v_st, r_v = self.store.written(value, layer, "v")
        leak_k = self.store.leak(layer, "k", n_kv, n_q, n_keys, query.device, query.dtype)
        leak_v = self.store.leak(layer, "v", n_kv, n_q, n_keys, query.device, query.dtype)
        absent = _absent(attention_mask, b_size, n_q, n_keys, self.setting.attn_window, query.device)
        gen = self._generator(query.device)
        out = torch.empty_like(query)
        low = torch.finfo(query.dtype).min
        for b in range(b_size):
            gone = absent[b].repeat(rep, 1)  # (rep n_q, n_keys)
            for g in range(n_kv):
                heads = slice(g * rep, (g + 1) * rep)
                x = query[b, heads].reshape(rep * n_q, dim)
                lk = None if leak_k is None else leak_k[g].repeat(rep, 1)
                s = analog_matmul(x, k_st[b, g], self.io, generator=gen, gains=Gains(outputs=lk, absent=gone))
                s = (s * r_k[b, g, :, 0] * scaling).masked_fill_(gone, low)
                a = torch.softmax(s, dim=-1, dtype=torch.float32).to(query.dtype)
                lv = None if leak_v is None else leak_v[g].repeat(rep, 1)
                o = analog_matmul(a * r_v[b, g, :, 0], v_st[b, g].t(), self.io, generator=gen,
                                  gains=Gains(inputs=lv))
                out[b, heads] = o.reshape(rep, n_q, dim)
        return out.transpose(1, 2).contiguous()


def check_covered(model: nn.Module) -> None:
    """Refuse, in one line, a model whose attention this module does not cover."""
    kind = getattr(getattr(model, "config", None), "model_type", "?")
    if kind not in COVERED:
        raise NoisyNNError(f"analog attention covers the {', '.join(COVERED)} model families; this model is "
                           f"'{kind}'")


def _absent(mask, b_size: int, n_q: int, n_keys: int, window: int, device) -> torch.Tensor:
    """(B, n_q, n_keys) True where query i does not read key j: masked (causal, padding), beyond the window."""
    if mask is None:
        q = torch.arange(n_keys - n_q, n_keys, device=device)
        gone = (torch.arange(n_keys, device=device)[None, :] > q[:, None]).expand(b_size, n_q, n_keys)
    else:
        gone = ~mask if mask.dtype == torch.bool else mask < 0  # a boolean mask says where attention is allowed
        gone = gone[:, 0, :, -n_keys:].expand(b_size, n_q, n_keys)
    win = window_mask(n_q, n_keys, window, device)
    return gone | win[None] if win is not None else gone.clone()


def install_attention(setting: AttentionSetting | None, model: nn.Module, seed: int = 0) -> AnalogAttention | None:
    """Analog attention on ``model`` (None: nothing installed)."""
    return None if setting is None else AnalogAttention(model, setting, seed)
