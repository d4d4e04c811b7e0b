"""The analog forward of the AFM recipe during training, with straight-through gradients.

Per targeted Linear layer (one tile per layer: AFM's ``mapping_max_input_size: -1``), for input x,
weight W (out x in), learned input range r (a scalar per layer) and w_i = max_j |W_ij| (detached):

    DAC    x_c = clamp(x, -r, r);  x_q = round(x_c / d) d,  d = 2 r / (2^dac_bits - 2)
    noise  W_n = W + std f w_i N(0, 1)         (fresh draw every forward; the gradient goes to W unchanged;
                                               f = noise_scale, the --anneal factor of the step, 1 by default)
    MVM    y = x_q W_n^T
    ADC    b_i = out_bound r w_i;  y_q = clamp(round(y / s_i) s_i, -b_i, b_i),  s_i = 2 b_i / (2^adc_bits - 2)
    out    y_q + bias (digital)

Facts from aihwkit-lightning 2.1.0 (IBM/aihwkit-lightning at 576d98e), file
``src/aihwkit_lightning/nn/modules/torch_utils/torch_linear.py`` (code not copied):
- ``StraightThroughClamp`` (l. 29-54): the input gradient is 0 where x was clipped;
- ``InputRangeForward`` (l. 57-108): dL/dr = r (sum_{x >= r} min(g, 0) - sum_{x <= -r} max(g, 0))
  + decay r [fraction of unclipped inputs > input_min_percentage];
- ``apply_input_range`` (l. 317-358): over the first ``init_from_data`` training batches r is the
  running mean of ``init_std_alpha`` x std(x);
- out bound = r out_bound w_i per channel under per-channel clipping (l. 288-304);
- weight noise ``ADD_NORMAL_PER_CHANNEL`` = std_dev x per-channel max|W| x N(0, 1), no_grad (l. 451-458);
- ``quant_utils.py`` ``UniformQuantize`` (l. 29-156): step = 2 bound / res, round, pure
  straight-through (no gradient to the bound).
AFM's Llama-3.2-1B config (IBM/analog-foundation-models at 4f4c505,
``data/training_files/meta-llama/Llama-3.2-1B-Instruct/config.yaml``): inp_res 254, out_res 254,
out_bound 14, out_noise 0, modifier add_gauss_channel 0.03, init_from_data 500, init_std_alpha 18,
decay 0.01, input_min_percentage 0.95, mapping_max_input_size -1 (no tiles in training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import NoisyNNError
from ...seeding import derive_seed, make_generator


@dataclass
class AnalogTrainConfig:
    """Which parts of the training-time analog forward are on (each one flag for ablations)."""

    dac_bits: int | None = 8  # None: no input quantization (the input range still clips if learned)
    adc_bits: int | None = 8  # None: no output quantization
    out_bound: float | None = 14.0  # ADC bound in units of r w_i; None: no bound (and no ADC)
    weight_noise: float = 0.03  # std in units of the per-channel max|W|; 0: off
    input_ranges: bool = True  # False: no input range (no DAC either: it needs a range)
    learn_ranges: bool = True  # False: ranges stay at their data initialisation
    init_batches: int = 500
    std_alpha: float = 18.0
    decay: float = 0.01
    input_min_percentage: float = 0.95

    def __post_init__(self):
        if self.dac_bits and not self.input_ranges:
            raise NoisyNNError("an 8-bit DAC needs input ranges; turn the DAC off with the ranges")
        if self.adc_bits and not self.out_bound:
            raise NoisyNNError("an ADC needs an output bound")


# ---------------------------------------------------------------------------------------------- autograd pieces

def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) in the forward pass, the identity in the backward pass (straight-through)."""
    return x + (torch.round(x) - x).detach()


class RangeClamp(torch.autograd.Function):
    """clamp(x, -r, r); gradient 0 to x where clipped, lightning's input-range gradient to r (module doc)."""

    @staticmethod
    def forward(ctx, x, r, decay: float, min_percentage: float):
        upper, lower = x >= r, x <= -r
        ctx.save_for_backward(upper, lower, r)
        ctx.decay, ctx.min_percentage = decay, min_percentage
        return torch.minimum(torch.maximum(x, -r), r)

    @staticmethod
    def backward(ctx, g):
        upper, lower, r = ctx.saved_tensors
        clipped = upper | lower
        grad_x = g.masked_fill(clipped, 0.0)
        grad_r = (g[upper].clamp(max=0.0).sum() - g[lower].clamp(min=0.0).sum()) * r
        if ctx.decay > 0:
            # shrink the range while fewer than (1 - min_percentage) of the inputs clip
            unclipped = 1.0 - clipped.sum() / clipped.numel()
            grad_r = grad_r + ctx.decay * r * (unclipped > ctx.min_percentage)
        return grad_x, grad_r.reshape(r.shape).to(r.dtype), None, None


def dac(x: torch.Tensor, r: torch.Tensor, bits: int | None, decay: float = 0.0,
        min_percentage: float = 0.95) -> torch.Tensor:
    """Clip to the learned range r and quantize to 2^bits - 2 steps over [-r, r] (straight-through)."""
    x = RangeClamp.apply(x, r, decay, min_percentage)
    if not bits:
        return x
    step = (2 * r.detach()) / (2 ** bits - 2)
    return round_ste(x / step) * step


def adc(y: torch.Tensor, bound: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Quantize to 2^bits - 2 steps over [-bound, bound] (straight-through), then clip (gradient 0 outside)."""
    if bits:
        step = (2 * bound) / (2 ** bits - 2)
        y = round_ste(y / step) * step
    return torch.clamp(y, -bound, bound)


# ---------------------------------------------------------------------------------------------- the layers

def linear_layers(model: nn.Module, targets) -> list[tuple[str, nn.Linear]]:
    """(module name, nn.Linear) of the targeted weights that the analog training forward can run; raises
    NoisyNNError when there are none (GPT-2's Conv1D projections: the forward is written for x @ W.T)."""
    layers = []
    for t in targets:
        name = t.name[: -len(".weight")] if t.name.endswith(".weight") else t.name
        module = model.get_submodule(name) if t.name.endswith(".weight") else None
        if isinstance(module, nn.Linear):
            layers.append((name, module))
    if not layers:
        kinds = sorted({type(model.get_submodule(t.name.rpartition(".")[0])).__name__ for t in targets
                        if "." in t.name}) or ["none"]
        raise NoisyNNError(f"no Linear layers among the targets for the analog training forward (the targets are "
                           f"{', '.join(kinds)}); the AFM recipe trains nn.Linear models such as Llama")
    return layers


class AnalogTraining:
    """The analog forward on the targeted Linear layers of ``model`` (patched ``forward``, undone by ``remove``).

    ``ranges``: one learned input range per layer (an ``nn.Parameter`` of shape (n_layers,), outside
    the model so the model's state dict stays that of a plain HF model). ``init_count`` counts the
    batches each range was initialised from. ``step`` keys the weight-noise draws: layer l at step s
    draws from a generator seeded by (seed, s, layer name), so a recomputed forward (gradient
    checkpointing) sees the same noise and a resumed run the same noise as an uninterrupted one.
    ``enabled = False`` gives the plain digital forward (the teacher pass, the control). ``noise_scale``
    multiplies the weight-noise std (the --anneal factor of ``step``, set by the training loop; 1: the
    configured std exactly).
    """

    def __init__(self, model: nn.Module, targets, cfg: AnalogTrainConfig, seed: int = 0):
        self.cfg, self.seed = cfg, seed
        self.layers = linear_layers(model, targets)
        device = self.layers[0][1].weight.device
        self.ranges = nn.Parameter(torch.ones(len(self.layers), device=device))
        self.init_count = torch.zeros(len(self.layers), dtype=torch.long)
        self.enabled, self.step, self.calibrating = True, 0, False
        self.noise_scale = 1.0
        self._seen: dict[int, int] = {}  # layer index -> step its range was last initialised at
        for i, (name, module) in enumerate(self.layers):
            module.forward = self._forward_of(i, name, module)

    def names(self) -> list[str]:
        return [n for n, _ in self.layers]

    def range_dict(self) -> dict[str, float]:
        return {n: float(r) for n, r in zip(self.names(), self.ranges.detach().cpu())}

    def _forward_of(self, i: int, name: str, module: nn.Linear):
        plain = nn.Linear.forward.__get__(module)

        def forward(x):
            if not self.enabled:
                return plain(x)
            return self.analog(i, name, module, x)
        return forward

    @torch.no_grad()
    def _init_range(self, i: int, x: torch.Tensor) -> None:
        """lightning's data init: r = running mean of std_alpha x std(x) over the first init_batches batches.

        Under DDP std(x) is that of the whole batch (count, sum and sum of squares summed over the
        processes), so every process sets the same range, the one a single process would set."""
        n = int(self.init_count[i])
        if n >= self.cfg.init_batches or self._seen.get(i) == self.step:
            return
        v = x.detach().double()
        stats = torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64, device=v.device), v.sum(),
                             (v * v).sum()])
        from ...runs import distributed

        if distributed.world_size() > 1:
            stats = distributed.accelerator().reduce(stats, "sum")
        count, total, squares = (float(s) for s in stats)
        std = math.sqrt(max(squares - total * total / count, 0.0) / max(count - 1, 1))
        if std > 0:
            value = (float(self.ranges.data[i]) * n + self.cfg.std_alpha * std) / (n + 1)
            self.ranges.data[i] = abs(value)
            self.init_count[i] += 1
        self._seen[i] = self.step

    def analog(self, i: int, name: str, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        cfg, w = self.cfg, module.weight
        w_max = w.detach().abs().amax(dim=1)  # per output channel
        r = None
        if cfg.input_ranges:
            if self.calibrating or (module.training and torch.is_grad_enabled()):
                self._init_range(i, x)
            r = self.ranges[i] if (cfg.learn_ranges and module.training) else self.ranges[i].detach()
            x = dac(x, r.to(x.dtype), cfg.dac_bits, cfg.decay if cfg.learn_ranges else 0.0, cfg.input_min_percentage)
        std = cfg.weight_noise * self.noise_scale  # = cfg.weight_noise exactly when the scale is 1
        if std > 0 and module.training:
            g = make_generator(derive_seed(self.seed, "afm-weight-noise", self.step, name), w.device)
            noise = torch.randn(w.shape, generator=g, device=w.device, dtype=w.dtype)
            w = w + (std * w_max[:, None]) * noise  # the noise carries no gradient
        y = x @ w.t()
        if cfg.out_bound:
            scale = r.detach() if r is not None else x.detach().abs().amax()
            y = adc(y, (cfg.out_bound * scale) * w_max.to(y.dtype), cfg.adc_bits)
        return y if module.bias is None else y + module.bias

    @torch.no_grad()
    def calibrate(self, model: nn.Module, batches) -> dict[str, float]:
        """The ranges the data initialisation gives (no training), from ``batches`` of token ids, in eval
        mode (no weight noise): the static ranges of a model that never learned any."""
        was_training, self.calibrating = model.training, True
        model.eval()
        try:
            for step, batch in enumerate(batches):
                self.step = step
                model(input_ids=batch.to(self.ranges.device), use_cache=False)
        finally:
            self.calibrating = False
            model.train(was_training)
        return self.range_dict()

    def remove(self) -> None:
        """Give every layer its plain forward back."""
        for _, module in self.layers:
            module.__dict__.pop("forward", None)
        self.layers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def state_dict(self) -> dict:
        return {"names": self.names(), "ranges": self.ranges.detach().cpu().clone(),
                "init_count": self.init_count.clone()}

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names():
            raise NoisyNNError("the saved input ranges belong to other layers")
        self.ranges.data.copy_(state["ranges"].to(self.ranges.device))
        self.init_count.copy_(state["init_count"])
