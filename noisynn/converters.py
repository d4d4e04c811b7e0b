"""Activation converters of an analog tile, as forward hooks: DAC, output noise, ADC (not weight noise).

Converters (``ConverterHooks``, forward hooks on the targeted layers; aihwkit ``IOParameters`` conventions,
  defaults DAC 7 bits, ADC 9 bits, out_noise 0.06, out_bound 12). For each input vector x (a token):
    DAC   r = max|x| (dynamic, per token; or a fixed / calibrated per-layer range, inputs clipped to +-r),
          x_q = round(x / d) d, d = 2 r / (2^dac_bits - 2)   (resolution as a number of steps over [-r, r])
    MVM   y = x_q W^T, normalized y_n = y / (r w_max)   (w_max per tensor, or per channel with relative_channel)
    noise y_n += out_noise N(0, 1)
    ADC   y_n = clip(y_n, -out_bound, out_bound), quantized with step 2 out_bound / (2^adc_bits - 2)
    out   y = y_n r w_max + b   (rescaled to weight units; the bias is added digitally)
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from .errors import NoisyNNError
from .seeding import derive_seed, make_generator

if TYPE_CHECKING:  # the spec imports AnalogIO from here; no import back at run time
    from .spec import ConverterSpec


@dataclass
class AnalogIO:
    """DAC / output noise / ADC of an analog tile (aihwkit IOParameters conventions; None or 0 = off).

    ``input_range``: "dynamic" (per-token abs-max, aihwkit's ABS_MAX noise management), "calibrated"
    (a fixed per-layer range: max|x| seen by ``ConverterHooks.calibrate``) or a number (fixed range).
    ``per_channel``: normalize outputs by max|W| per output channel (else per tensor).
    ``noise_pool``: size of the pool the output noise is sliced from (0: fresh draws at every call;
    torch's CPU generator makes those cost about as much as the matmul of a 576 x 1536 layer).
    """

    dac_bits: int | None = 7
    adc_bits: int | None = 9
    out_noise: float = 0.06
    out_bound: float | None = 12.0
    input_range: str | float = "dynamic"
    per_channel: bool = False
    noise_pool: int = 2 ** 23

    def __post_init__(self):
        for name in ("dac_bits", "adc_bits"):
            bits = getattr(self, name)
            if bits is not None and bits < 2:
                raise NoisyNNError(f"{name} must be >= 2 (2^bits - 2 steps), got {bits}")
        if self.out_noise < 0:
            raise NoisyNNError(f"out_noise must be >= 0, got {self.out_noise}")
        if self.adc_bits and not self.out_bound:
            raise NoisyNNError("an ADC needs an output bound (out_bound > 0)")
        if isinstance(self.input_range, str) and self.input_range not in ("dynamic", "calibrated"):
            try:
                self.input_range = float(self.input_range)
            except ValueError:
                raise NoisyNNError(f"input_range is dynamic, calibrated or a number, got '{self.input_range}'") from None
        if not isinstance(self.input_range, str) and not self.input_range > 0:
            raise NoisyNNError(f"a fixed input_range must be > 0, got {self.input_range}")

    def describe(self) -> dict:
        d = asdict(self)
        d["dac_steps"] = 2 ** self.dac_bits - 2 if self.dac_bits else None
        d["adc_steps"] = 2 ** self.adc_bits - 2 if self.adc_bits else None
        d["convention"] = ("aihwkit IOParameters: resolution = 1 / (2^bits - 2) of the full range [-r, r]; "
                           "outputs normalized by (input range x w_max), rescaled to weight units")
        return d


class _Shared:
    """State shared by one model's tiles: the output-noise pool and offsets, and the last converted input."""

    def __init__(self, io: AnalogIO, device):
        self.io, self.device = io, device
        self.pool: torch.Tensor | None = None
        self.rng = random.Random(0)
        self.generator = make_generator(0, device)
        self.last: tuple | None = None  # (input tensor, fixed range, converted input, range)

    def reseed(self, seed: int) -> None:
        self.rng = random.Random(derive_seed(seed, "converter-offsets"))
        self.generator = make_generator(derive_seed(seed, "converter-noise"), self.device)
        if self.io.out_noise and self.io.noise_pool:
            self.pool = torch.randn(self.io.noise_pool, generator=self.generator, device=self.device)
        self.last = None

    def noise(self, y: torch.Tensor) -> torch.Tensor:
        """N(0, 1) shaped like y: a slice of the pool at a random offset, or fresh draws when it is larger."""
        n = y.numel()
        if self.pool is not None and n <= self.pool.numel():
            start = self.rng.randrange(self.pool.numel() - n + 1)
            return self.pool[start:start + n].view(y.shape)
        return torch.randn(y.shape, generator=self.generator, device=y.device, dtype=y.dtype)


class _TileIO:
    """Pre- and post-hook of one layer: its w_max and fixed range, and the range of the input in flight."""

    def __init__(self, name: str, module: nn.Module, weight: torch.Tensor, out_axis: int, io: AnalogIO,
                 shared: _Shared):
        self.name, self.io, self.shared = name, io, shared
        w = weight.detach().float()
        if io.per_channel:
            dims = [d for d in range(w.dim()) if d != out_axis]
            self.w_max = w.abs().amax(dim=dims).clamp_(min=torch.finfo(torch.float32).tiny).to(weight.dtype)
            self.w_scalar = 1.0
        else:
            self.w_max = None
            self.w_scalar = max(float(w.abs().max()), torch.finfo(torch.float32).tiny)
        self.bias = getattr(module, "bias", None)
        self.fixed = None if isinstance(io.input_range, str) else float(io.input_range)
        self.enabled = True
        self.scale = None
        self.record: float | None = None  # calibration: running max|x|
        self.dac_half = (2 ** io.dac_bits - 2) / 2 if io.dac_bits else None
        self.adc_half = (2 ** io.adc_bits - 2) / 2 if io.adc_bits else None
        self.analog_out = bool(io.out_noise or io.out_bound or io.adc_bits)

    def pre(self, module, args):
        self.scale = None
        if not self.enabled:
            return None
        x = args[0]
        if self.record is not None:  # calibration pass: observe, do not convert
            self.record = max(self.record, float(x.amax()), -float(x.amin()))
            return None
        last = self.shared.last
        if last is not None and last[0] is x and last[1] == self.fixed:  # q, k, v (gate, up) share their input
            _, _, converted, self.scale = last
        else:
            converted, self.scale = self._convert(x)
            self.shared.last = (x, self.fixed, converted, self.scale)
        return None if converted is None else (converted,) + tuple(args[1:])

    def _convert(self, x: torch.Tensor):
        """(input for the layer or None if unchanged, range r). With a DAC the layer receives the integer
        levels round(x / d), d = r / half: its output is rescaled by d in ``post``."""
        if self.fixed is None:  # per-token abs-max (aihwkit ABS_MAX noise management)
            r = torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg_())
            r.clamp_(min=torch.finfo(x.dtype).tiny)
        else:
            r = self.fixed
        if not self.dac_half:
            return (None if self.fixed is None else x.clamp(-r, r)), r
        levels = x / (r / self.dac_half)
        levels.round_()
        if self.fixed is not None:
            levels.clamp_(-self.dac_half, self.dac_half)
        return levels, r

    def post(self, module, args, y):
        r = self.scale
        if r is None:
            return None
        io = self.io
        if self.bias is not None:
            y.sub_(self.bias)
        if self.analog_out:
            # Work in ADC steps k of the normalized output y / (r w_max): one factor in, one factor out.
            k = io.out_bound / self.adc_half if self.adc_half else 1.0
            if self.dac_half:  # y = levels W^T: the normalized output is y / (half w_max)
                y.mul_(1.0 / (self.dac_half * self.w_scalar * k))
            else:
                y.mul_(1.0 / (r * (self.w_scalar * k)))
            if self.w_max is not None:
                y.div_(self.w_max)
            if io.out_noise:
                y.add_(self.shared.noise(y), alpha=io.out_noise / k)
            if io.out_bound:
                y.clamp_(-io.out_bound / k, io.out_bound / k)
            if self.adc_half:
                y.round_()
            y.mul_(r * (self.w_scalar * k))
            if self.w_max is not None:
                y.mul_(self.w_max)
        elif self.dac_half:
            y.mul_(r / self.dac_half)
        if self.bias is not None:
            y.add_(self.bias)
        return y


class ConverterHooks:
    """DAC, output noise and ADC on the targeted layers through forward hooks (see the module doc).

    Vectorised over tokens, in place on the layer output. An input fed to several targeted layers
    (q, k, v; gate, up) is converted once. Output noise: slices of a pool of ``io.noise_pool`` N(0, 1)
    values drawn at ``reseed`` (exact i.i.d. normals within a layer call; different calls take random
    offsets into the pool, so two calls may reuse shifted values); ``noise_pool = 0`` draws afresh.
    ``reseed(seed)`` makes the noise reproducible; ``remove()`` detaches every hook (or use ``with``).
    """

    def __init__(self, model: nn.Module, targets: Sequence, io: AnalogIO, seed: int = 0):
        self.model, self.io = model, io
        self.tiles: list[_TileIO] = []
        self._handles = []
        self.calibration: dict | None = None
        self.shared = _Shared(io, next((t.param.device for t in targets), "cpu"))
        for t in targets:
            if not t.name.endswith(".weight") or t.param.dim() != 2:
                continue
            module = model.get_submodule(t.name[: -len(".weight")])
            if isinstance(module, nn.Embedding):
                continue
            tile = _TileIO(t.name[: -len(".weight")], module, t.param, t.out_axis, io, self.shared)
            self.tiles.append(tile)
            self._handles.append(module.register_forward_pre_hook(tile.pre))
            self._handles.append(module.register_forward_hook(tile.post))
        if not self.tiles:
            raise NoisyNNError("no Linear layers among the targets to put converters on")
        self.reseed(seed)

    def set_enabled(self, enabled: bool) -> None:
        """Switch the converters off (digital layers) or back on without removing the hooks."""
        for tile in self.tiles:
            tile.enabled = bool(enabled)

    def reseed(self, seed: int) -> None:
        self.shared.reseed(seed)

    @torch.no_grad()
    def calibrate(self, model: nn.Module, input_ids: torch.Tensor, max_length: int = 512) -> dict:
        """Fixed per-layer input ranges: max|x| of each layer's input over ``input_ids`` (in windows)."""
        for tile in self.tiles:
            tile.record = 0.0
        self.shared.last = None
        try:
            ids = input_ids.flatten()
            device = next(model.parameters()).device
            for start in range(0, ids.numel(), max_length):
                model(input_ids=ids[start:start + max_length][None].to(device), use_cache=False)
        finally:
            ranges = {}
            for tile in self.tiles:
                tile.fixed, tile.record = tile.record or 1.0, None
                ranges[tile.name] = tile.fixed
        return ranges

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.shared.last = self.shared.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def describe(self) -> dict:
        out = {**self.io.describe(), "n_layers": len(self.tiles)}
        if self.calibration:
            ranges = [t.fixed for t in self.tiles]
            out["calibration"] = {**self.calibration, "range_min": min(ranges), "range_max": max(ranges)}
        return out


def install_converters(spec: "ConverterSpec | None", lm, targets, seed: int = 0) -> ConverterHooks | None:
    """Converter hooks on ``lm.model``'s ``targets`` from a checked ``noisynn.spec.ConverterSpec`` (None: none).

    A calibrated input range is measured here, on ``spec.calibration_tokens`` tokens of the embedded
    training split (or of the head of ``spec.text_file`` / ``spec.dataset``, which is also the evaluation text).
    """
    if spec is None:
        return None
    hooks = ConverterHooks(lm.model, targets, spec.io, seed=seed)
    if spec.io.input_range == "calibrated":
        from .corpus import load_text
        from .evaluation import tokenize

        text = load_text(spec.text_file, spec.dataset, split="train")
        ids = tokenize(lm.tokenizer, text.text, spec.calibration_tokens)
        hooks.calibrate(lm.model, ids, spec.max_length)
        hooks.calibration = {"text": text.info.get("split", text.info.get("source")), "tokens": int(ids.numel())}
    return hooks
