"""Converters on a model: the analog forward (noisynn.analog.mvm) of the targeted layers, as forward hooks.

``ConverterHooks(model, targets, io)`` replaces each targeted Linear / Conv1D layer's product by
``analog_matmul`` (tiles, noise and bound management, DAC, weight read noise, output noise, ADC: see
noisynn.analog.mvm for the formulas and their aihwkit sources) plus the digital bias; ``install_converters``
builds them from a checked ``ConverterSpec``. The names of noisynn.analog.mvm and noisynn.analog.tiles are re-exported
here (``noisynn.analog.mvm.analog_matmul``, ``AnalogIO``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .mvm import AnalogIO, analog_matmul
from ..errors import NoisyNNError
from ..seeding import derive_seed, make_generator
from .tiles import tile_layout, weight_scales

from .setting import ConverterSpec


class _Generators:
    """One noise stream per device, reseeded together (``derive_seed(seed, 'converter-noise', device)``)."""

    def __init__(self, seed: int = 0):
        self.seed, self._by_device = seed, {}

    def reseed(self, seed: int) -> None:
        self.seed, self._by_device = int(seed), {}

    def on(self, device) -> torch.Generator:
        key = str(torch.device(device))
        if key not in self._by_device:
            self._by_device[key] = make_generator(derive_seed(self.seed, "converter-noise", key), device)
        return self._by_device[key]


class AnalogLayer:
    """One targeted layer: its tile layout, the programmed weights' scales, static ranges, compensation factors.

    ``scales``: c_w per tile output (from the weights when the hooks were installed or at ``refresh_scales``,
    i.e. programming time). ``input_range``: static range per input tile (calibrated). ``alpha``: (n_in, n_out)
    drift compensation after the ADC (set by noisynn.analog.compensation), None = 1.
    """

    def __init__(self, name: str, module: nn.Module, out_axis: int, io: AnalogIO, generators: _Generators):
        self.name, self.module, self.out_axis, self.io = name, module, out_axis, io
        self.generators = generators
        self.bias = getattr(module, "bias", None)
        w = self.weight()
        self.layout = tile_layout(w.shape[0], w.shape[1], io.tile_size)
        self.scales = None
        self.refresh_scales()
        self.fixed = None if isinstance(io.input_range, str) else float(io.input_range)
        self.input_range: torch.Tensor | None = None
        self.alpha: torch.Tensor | None = None
        self.enabled = True
        self.record: dict | None = None  # calibration statistics while calibrating
        self._out: torch.Tensor | None = None

    def weight(self) -> torch.Tensor:
        """The current weight as (out, in)."""
        w = self.module.weight
        return w if self.out_axis == 0 else w.t()

    def refresh_scales(self) -> None:
        """Fix c_w from the weights as they are now (the programmed weights)."""
        with torch.no_grad():
            self.scales = weight_scales(self.weight().detach(), self.io, self.layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight()
        if x.device != w.device:  # pre-hooks run before accelerate's device_map hooks move the input
            x = x.to(w.device)
        return analog_matmul(x, w, self.io, input_range=self.input_range, generator=self.generators.on(x.device),
                             scales=None if self.scales is None else self.scales.to(x.device), alpha=self.alpha)

    def pre(self, module, args):
        self._out = None
        if not self.enabled:
            return None
        x = args[0]
        if self.record is not None:  # calibration pass: observe; "digital" calibration does not convert
            self._observe(x)
            if not self.record["analog"]:
                return None
        self._out = self.forward(x)
        # The layer's own product is not needed: hand it an empty batch (the post hook returns the analog output).
        return (x.new_empty((0, x.shape[-1])),) + tuple(args[1:])

    def post(self, module, args, y):
        out, self._out = self._out, None
        if out is None:
            return None
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out

    def _observe(self, x: torch.Tensor) -> None:
        """Fold one window into the running range of each input tile (see ``ConverterHooks.calibrate``)."""
        x = x.detach()
        xt = self.layout.split_inputs(x.reshape(-1, x.shape[-1]).to(torch.float64 if x.dtype == torch.float64
                                                                     else torch.float32))
        rec, n = self.record, int(xt.shape[1])  # n: the window's tokens (vectors)
        if self.io.range_std > 0:  # token-weighted mean over windows of range_std x std(x)
            value = xt.std(dim=(1, 2)) * self.io.range_std
            total = rec["tokens"] + n
            rec["value"] = value if rec["value"] is None else (rec["value"] * rec["tokens"] + value * n) / total
        else:
            value = xt.abs().amax(dim=(1, 2))
            rec["value"] = value if rec["value"] is None else torch.maximum(rec["value"], value)
        rec["tokens"] += n
        if rec["analog"]:  # this window converts with the range so far, itself included (lightning's order)
            self.input_range = _usable(rec["value"])


def _usable(value: torch.Tensor) -> torch.Tensor:
    """A measured range with zeros (a tile that saw only zeros) replaced by 1."""
    return torch.where(value > 0, value, torch.ones_like(value))


class ConverterHooks:
    """The analog forward (``analog_matmul``) on the targeted Linear / Conv1D layers, through forward hooks.

    Each targeted layer's output is replaced by its analog product plus the (digital) bias; the weights are read
    at every call, so noise applied to them by a NoiseInjector is seen. ``reseed(seed)`` makes the noise
    reproducible; ``remove()`` detaches every hook (or use ``with``). ``calibrate`` measures static input ranges.
    """

    def __init__(self, model: nn.Module, targets: Sequence, io: AnalogIO, seed: int = 0):
        self.model, self.io = model, io
        self.generators = _Generators(seed)
        self.tiles: list[AnalogLayer] = []
        self._handles = []
        self.calibration: dict | None = None
        for t in targets:
            if not t.name.endswith(".weight") or t.param.dim() != 2:
                continue
            module = model.get_submodule(t.name[: -len(".weight")])
            if isinstance(module, nn.Embedding):
                continue
            layer = AnalogLayer(t.name[: -len(".weight")], module, t.out_axis, io, self.generators)
            self.tiles.append(layer)
            self._handles.append(module.register_forward_pre_hook(layer.pre))
            self._handles.append(module.register_forward_hook(layer.post))
        if not self.tiles:
            raise NoisyNNError("no Linear layers among the targets to put converters on")
        self.by_name = {layer.name: layer for layer in self.tiles}
        self.reseed(seed)

    @property
    def layers(self) -> list[AnalogLayer]:
        return self.tiles

    def set_enabled(self, enabled: bool) -> None:
        """Switch the converters off (digital layers) or back on without removing the hooks."""
        for tile in self.tiles:
            tile.enabled = bool(enabled)

    def reseed(self, seed: int) -> None:
        self.generators.reseed(seed)

    def refresh_scales(self) -> None:
        for tile in self.tiles:
            tile.refresh_scales()

    @torch.no_grad()
    def calibrate(self, model: nn.Module, input_ids: torch.Tensor, max_length: int = 512) -> dict:
        """Static input ranges per input tile over ``input_ids``, in windows of ``max_length`` tokens.

        Per input tile, from window w of n_w tokens (x: its inputs to the tile, all tokens):
            max|x| rule (``io.range_std`` 0):  range = max_w max|x_w|
            std rule (``io.range_std`` K):     range = sum_w n_w K std(x_w) / sum_w n_w
        (a window counts by its tokens: a one-token tail window weighs 1/512 of a full one, not as much).
        aihwkit-lightning 2.1.0's init_from_data (``nn/modules/torch_utils/torch_linear.py``) is the std rule over
        equal batches: per input slice, std over the whole batch (l.334), a plain running mean over the first
        init_from_data batches, r = (r idx + alpha std) / (idx + 1) (l.336-343; decay enters only the range's
        gradient, l.98-104), abs'd (l.344); the same pass then clips the slice at the updated range (l.346-349)
        and quantizes it (l.174-182). It runs in the training forward (``nn/modules/linear.py`` l.131-144 pass
        ``self.training`` as update_from_data, torch_linear.py l.145, l.161), so every earlier layer is already
        analog with its own running range. ``io.range_calibration``: "analog" follows that: each layer converts
        every window (clip, DAC, ADC, the converters' noise from a calibration stream of its own) with its
        running range, this window included; "digital": every layer digital while measured (the former way).
        Not followed: lightning's training-time weight noise during the init (the weights here are as given).
        Records ``self.calibration`` (tokens, windows, rule); returns {layer: [range per input tile]}.
        """
        analog = self.io.range_calibration == "analog"
        for tile in self.tiles:
            tile.record = {"tokens": 0, "value": None, "analog": analog}
        ids = input_ids.flatten()
        windows = [int(ids[s:s + max_length].numel()) for s in range(0, ids.numel(), max_length)]
        seed = self.generators.seed
        self.reseed(derive_seed(seed, "calibration"))  # the analog forward's noise: a stream of its own
        try:
            device = next(model.parameters()).device
            for start in range(0, ids.numel(), max_length):
                model(input_ids=ids[start:start + max_length][None].to(device), use_cache=False)
        finally:
            ranges = {}
            for tile in self.tiles:
                value = tile.record["value"]
                value = _usable(torch.ones(tile.layout.n_in) if value is None else value)
                tile.input_range, tile.record = value, None
                tile.fixed = float(value.max())
                ranges[tile.name] = [float(v) for v in value]
            self.reseed(seed)
        self.calibration = {"tokens": int(ids.numel()), "windows": windows,
                            "rule": f"{self.io.range_std:g} x std" if self.io.range_std else "max|x|",
                            "over_windows": "mean weighted by tokens" if self.io.range_std else "max",
                            "range_calibration": self.io.range_calibration}
        return ranges

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def describe(self) -> dict:
        out = {**self.io.describe(), "n_layers": len(self.tiles),
               "n_tiles": sum(t.layout.n_in * t.layout.n_out for t in self.tiles)}
        if self.calibration:
            ranges = [float(v) for t in self.tiles if t.input_range is not None for v in t.input_range]
            out["calibration"] = {**self.calibration, "range_min": min(ranges), "range_max": max(ranges)}
        return out


def install_converters(spec: "ConverterSpec | None", lm, targets, seed: int = 0) -> ConverterHooks | None:
    """Converter hooks on ``lm.model``'s ``targets`` from a checked ``noisynn.analog.setting.ConverterSpec`` (None: none).

    A calibrated input range is measured here, on ``spec.calibration_tokens`` tokens of the embedded
    training split (or of the head of ``spec.text_file`` / ``spec.dataset``, which is also the evaluation text).
    """
    if spec is None:
        return None
    hooks = ConverterHooks(lm.model, targets, spec.io, seed=seed)
    if spec.io.input_range == "calibrated":
        from ..corpus import load_text
        from ..evaluation import tokenize

        text = load_text(spec.text_file, spec.dataset, split="train")
        # exactly calibration_tokens ids (tokenize keeps one more, for perplexity's shifted labels)
        ids = tokenize(lm.tokenizer, text.text, spec.calibration_tokens)[: spec.calibration_tokens]
        hooks.calibrate(lm.model, ids, spec.max_length)
        hooks.calibration = {"text": text.info.get("split", text.info.get("source")), **hooks.calibration}
    return hooks
