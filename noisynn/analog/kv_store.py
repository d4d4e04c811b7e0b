"""The gain-cell KV store of analog attention: its setting, and what a stored key or value is when it is read.

Leroux et al., "Analog in-memory computing attention mechanism for fast and energy-efficient large language
models", Nat. Comput. Sci. 5, 813-824 (2025); code github.com/NathanLeroux-git/GainCellAttention (commit 59c1700):
K and V are written as voltages into gain cells during generation and read by the two attention products; the
stored charge leaks.

  write   K_st = clip(round(K / r h) / h + kv_write_noise xi_w, -1, 1), h = (2^kv_bits - 2) / 2 (aihwkit's
          convention for b bits; the paper's K/V: 8 levels over [0, 0.9] V, ``ft_dram_gpt2.py`` l.10-12,
          ``model_gpt.py`` ``quantization_custom`` l.723-736), r = the write range: per stored vector (``row``:
          its abs-max, kept digitally) or one number. xi_w ~ N(0, 1) is drawn once per (layer, K/V, kv head,
          position, dim): a deterministic function of the position, so a full-sequence forward and cached decoding
          store the same values (noise tables seeded ``derive_seed(seed, 'kv-write', layer, kind, chunk)``).
  leak    v(age) = v_0 exp(-age / tau), age = i - j decode steps between the write of key j and its read by query
          i (the paper: ``decay_mask`` ``model_gpt.py`` l.530-539, exp(-1.6e-4 (i - j)), i.e. tau = 6,250 steps,
          one constant for every cell). Here tau can vary: tau_cell = tau exp(kv_tau_spread xi_t) (lognormal,
          median tau), one draw per stored vector of one kv head (``row``) or per layer's kv head (``array``),
          drawn once per trial (``derive_seed(seed, 'kv-tau', layer, kind, chunk)``). A per-row tau makes the
          leak a factor per (query, key): it multiplies the product of the QK MVM at output j and the input
          of the AV MVM at key j (``mvm.Gains``), exactly as if the stored row had leaked.
  read    kv_read_noise: aihwkit's additive_constant weight noise on both MVMs, y_i += sigma ||x_n|| xi, fresh at
          every read (noisynn.analog.mvm ``_noise_std``).
  window  a query reads the last ``attn_window`` stored keys only (gain-cell arrays of that many rows).

Not modelled (the paper's full pipeline, which needs its fine-tuning): the HardSigmoid that replaces the
softmax, unsigned queries, the cells' nonlinear I(V) and the 0.45 V offset. The softmax stays digital between
the two analog products (an ADC after QK, a DAC before AV).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..errors import NoisyNNError
from ..seeding import derive_seed, make_generator
from .fields import ATTENTION_FIELDS
from .mvm import AnalogIO

CHUNK = 256  # positions per seeded noise table: tables are drawn as far as a sequence reaches
# the paper's hardware model (Leroux et al. 2025; GainCellAttention ft_dram_gpt2.py l.10-14): K/V 8 levels
# (~3 bits), queries 16 levels (~4 bits), the AV output 32 levels (~5 bits), decay 1.6e-4 per step
# the attention flags: one per declared field, and the preset
ATTENTION_FLAGS = tuple(ATTENTION_FIELDS) + ("attn_preset",)
PRESETS = {"gain_cell": {"kv_bits": 3, "attn_dac_bits": 4, "attn_adc_bits": 5, "attn_out_bound": 12.0,
                         "kv_tau": 6250.0}}


@dataclass(frozen=True)
class AttentionSetting:
    """Analog attention's setting: each field declared in noisynn.analog.fields ``ATTENTION_FIELDS``."""

    kv_bits: int | None = None
    kv_range: str | float = "row"
    kv_write_noise: float = 0.0
    kv_read_noise: float = 0.0
    kv_tau: float | None = None
    kv_tau_spread: float = 0.0
    kv_tau_per: str = "row"
    attn_window: int = 0
    attn_dac_bits: int | None = None
    attn_adc_bits: int | None = None
    attn_out_noise: float = 0.0
    attn_out_bound: float | None = None
    attn_tile: tuple = (64, 64)
    preset: str | None = None

    @classmethod
    def from_flags(cls, flags: dict, preset: str | None = None) -> "AttentionSetting":
        """The checked setting from flag values (typed or text; None = not given), over ``preset``'s values."""
        if preset is not None and preset not in PRESETS:
            raise NoisyNNError(f"--attn_preset: unknown '{preset}' (known: {', '.join(PRESETS)})")
        values = dict(PRESETS.get(preset, {}))
        for name, value in flags.items():
            if name not in ATTENTION_FIELDS:
                raise NoisyNNError(f"unknown attention setting '{name}'")
            if value is not None:
                values[name] = ATTENTION_FIELDS[name].check(value)
        if values.get("attn_adc_bits") and not values.get("attn_out_bound"):
            raise NoisyNNError("--attn_adc_bits needs --attn_out_bound (an ADC needs a bound)")
        if values.get("kv_tau_spread") and values.get("kv_tau") is None:
            raise NoisyNNError("--kv_tau_spread needs --kv_tau (without a retention time nothing leaks)")
        if "kv_tau_per" in values and values.get("kv_tau") is None:
            raise NoisyNNError("--kv_tau_per needs --kv_tau (without a retention time nothing leaks)")
        return cls(**{k: tuple(v) if k == "attn_tile" else v for k, v in values.items()}, preset=preset)

    def io(self) -> AnalogIO:
        """The periphery of both attention MVMs (aihwkit conventions, noisynn.analog.mvm): weights = the stored
        values in units of their range, inputs with dynamic noise management per tile."""
        return AnalogIO(dac_bits=self.attn_dac_bits, adc_bits=self.attn_adc_bits, out_noise=self.attn_out_noise,
                        out_bound=self.attn_out_bound, input_range="dynamic", tile_size=tuple(self.attn_tile),
                        bound_management="iterative" if self.attn_out_bound else "none",
                        w_noise=self.kv_read_noise,
                        w_noise_type="additive_constant" if self.kv_read_noise else "none")

    def describe(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["attn_tile"] = list(self.attn_tile)
        d["io"] = self.io().describe()
        d["model"] = ("Leroux et al. 2025 gain-cell KV store: write DAC + write noise, leak exp(-age/tau), read "
                      "noise per use; softmax digital between the two analog MVMs (noisynn.analog.kv_store)")
        return d


def quantize_unit(x: torch.Tensor, bits: int | None) -> torch.Tensor:
    """x (in [-1, 1]) on the 2^bits - 1 levels of ``bits`` bits: round(x h) / h, h = (2^bits - 2) / 2."""
    if not bits:
        return x
    h = (2 ** bits - 2) / 2
    return torch.round(x * h).div_(h)


class KVStore:
    """The seeded tables of one trial (write noise, retention times), drawn chunk by chunk as far as sequences
    reach, and the stored values and leak factors computed from them."""

    def __init__(self, setting: AttentionSetting, seed: int = 0):
        self.setting, self.seed = setting, int(seed)
        self._tables: dict = {}

    def reseed(self, seed: int) -> None:
        self.seed, self._tables = int(seed), {}

    def _table(self, what: str, layer: int, kind: str, n_heads: int, length: int, width: int,
               device) -> torch.Tensor:
        """N(0, 1) draws (n_heads, >= length, width): chunks of CHUNK positions, each from its own seed."""
        key = (what, layer, kind, n_heads, width, str(device))
        have = self._tables.get(key)
        while have is None or have.shape[1] < length:
            chunk = 0 if have is None else have.shape[1] // CHUNK
            gen = make_generator(derive_seed(self.seed, what, layer, kind, chunk))
            new = torch.randn(n_heads, CHUNK, width, generator=gen).to(device)
            have = new if have is None else torch.cat([have, new], dim=1)
            self._tables[key] = have
        return have[:, :length]

    def written(self, x: torch.Tensor, layer: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_st, r): the stored values of keys or values x (B, H_kv, T, d) in units of their write range r
        ((B, H_kv, T, 1) for ``row``, a number else): quantized by the write DAC, plus write noise, in [-1, 1]."""
        s = self.setting
        if s.kv_range == "row":
            r = x.abs().amax(dim=-1, keepdim=True)
            r = torch.where(r > 0, r, torch.ones_like(r))
        else:
            r = torch.full_like(x[..., :1], float(s.kv_range))
        st = quantize_unit((x / r).clamp(-1.0, 1.0), s.kv_bits)
        if s.kv_write_noise:
            _, n_heads, length, width = x.shape
            xi = self._table("kv-write", layer, kind, n_heads, length, width, x.device).to(x.dtype)
            st = (st + s.kv_write_noise * xi).clamp_(-1.0, 1.0)
        return st, r

    def leak(self, layer: int, kind: str, n_heads: int, n_queries: int, n_keys: int, device,
             dtype) -> torch.Tensor | None:
        """exp(-age / tau) (H_kv, n_queries, n_keys), age = (n_keys - n_queries + i) - j (0 for future keys,
        which are never read); None without a retention time."""
        s = self.setting
        if s.kv_tau is None:
            return None
        if s.kv_tau_spread:
            width = 1
            length = 1 if s.kv_tau_per == "array" else n_keys
            xi = self._table("kv-tau", layer, kind, n_heads, length, width, device)[..., 0]  # (H, n_keys or 1)
            rate = torch.exp(-s.kv_tau_spread * xi.to(torch.float64)) / s.kv_tau
        else:
            rate = torch.full((n_heads, 1), 1.0 / s.kv_tau, dtype=torch.float64, device=device)
        age = ages(n_queries, n_keys, device).clamp(min=0).to(torch.float64)
        return torch.exp(-age[None] * rate[:, None, :]).to(dtype)


def ages(n_queries: int, n_keys: int, device=None) -> torch.Tensor:
    """age[i, j] = (n_keys - n_queries + i) - j: decode steps between the write of key j and the read by query i
    (the queries are the last n_queries positions); negative = a future key."""
    q = torch.arange(n_keys - n_queries, n_keys, device=device)
    return q[:, None] - torch.arange(n_keys, device=device)[None, :]


def window_mask(n_queries: int, n_keys: int, window: int, device=None) -> torch.Tensor | None:
    """(n_queries, n_keys) True where key j lies outside query i's window (age >= window); None for 0."""
    if not window:
        return None
    return ages(n_queries, n_keys, device) >= window
