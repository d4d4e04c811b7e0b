"""The AFM recipe's second evaluation, in Analog Foundation Models' own setting (``pcm_afm`` rows).

Today's columns read the models under aihwkit-style PCM (``pcm``, drift) through the ``afm`` preset's
converters on 512-input tiles, head digital, float32. AFM evaluates otherwise (Buechel et al., NeurIPS 2025;
IBM/analog-foundation-models): every nn.Linear is analog, ``lm_head`` included; a layer is one tile
(``config.yaml`` ``mapping_max_input_size: -1``); inference in float16; the weights carry the noise measured
on its PCM chip (``apply_noise_model.py``, here ``--noise_type pcm_afm``, noisynn/noise/calibrated_pcm.py,
with that script's 512-input rows for the conductance mapping, afm:184). The rows of condition
``afm_converters`` (clean weights) and ``pcm_afm`` (one programming draw per trial) use:

  converters  the ``afm`` preset with tiles of ``--eval_tile_size`` inputs (default 0: one tile per layer)
  head        ``--eval_head analog`` (default): the output head gets converters and PCM noise too, untied
              from the embeddings first (noisynn.targets.untie_head, as ``--targets head`` everywhere); its
              input range is the recipe's data initialisation (18 std, running mean over the init batches)
              measured through the analog forward of the other layers at their own ranges (the head is not
              trained by the recipe unless --targets names it) | digital
  dtype       ``--eval_dtype float16`` (default) | float32: the model (weights, converters, noise) in that dtype
              for these rows; the model's dtype is restored bit-exactly afterwards (a copy of its state dict and
              buffers). On a CPU float16 matmuls work but run about 4x slower than float32 (torch 2.13, AVX2,
              measured here), so these rows cost more than the float32 ones.
No drift and no drift compensation: ``pcm_afm`` is the chip as measured, without time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from ...analog.hooks import ConverterHooks
from ...errors import NoisyNNError
from ...inject import NoiseInjector
from ...targets import select
from ...analog.presets import get_preset
from ...spec import make_noise_spec
from .analog_train import AnalogTrainConfig, AnalogTraining
from .weights import set_weights

EVAL_FLAGS = ("eval_tile_size", "eval_head", "eval_dtype", "no_pcm_afm")
HEAD = "lm_head"
DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class AFMEval:
    """The settings of the ``pcm_afm`` rows (module doc); ``on = False``: no such rows."""

    on: bool = True
    tile_size: int = 0
    head: str = "analog"
    dtype: str = "float16"

    def io(self):
        return get_preset("afm", tile_size=(self.tile_size, 0))

    def describe(self, targets: str) -> dict:
        return {**asdict(self), "noise_type": "pcm_afm", "noise_tile_size": [512, 0], "scale": "relative_channel",
                "targets": targets + (",head (untied)" if self.head == "analog" else ""),
                "converters": self.io().describe(), "drift": "none (pcm_afm has no time)",
                "source": "Analog Foundation Models: every Linear analog incl. lm_head, one tile per layer in "
                          "training (mapping_max_input_size -1), float16 inference, apply_noise_model.py"}


def add_eval_args(g) -> None:
    """The flags of the ``pcm_afm`` evaluation (default None: resolved by ``settings``)."""
    from ...options.argtypes import nonneg_int

    g.add_argument("--eval_tile_size", type=nonneg_int, default=None,
                   help="pcm_afm rows: inputs per converter tile (default 0: one tile per layer, AFM's training)")
    g.add_argument("--eval_head", choices=("analog", "digital"), default=None,
                   help="pcm_afm rows: the output head analog (default, AFM's; untied first) or digital")
    g.add_argument("--eval_dtype", choices=tuple(DTYPES), default=None,
                   help="pcm_afm rows: evaluate in float16 (default, AFM's; ~4x slower on a CPU) or float32")
    g.add_argument("--no_pcm_afm", action="store_true", default=None,
                   help="skip the evaluation under AFM's own hardware model (the pcm_afm rows)")


def set_ranges(hooks: ConverterHooks, ranges: dict) -> None:
    """Give every converter layer its static input range (the same for each of its input tiles)."""
    missing = [t.name for t in hooks.tiles if t.name not in ranges]
    if missing:
        raise NoisyNNError(f"no input range for layers {missing[:3]}")
    for layer in hooks.tiles:
        r = float(ranges[layer.name])
        layer.input_range = torch.full((layer.layout.n_in,), r, dtype=torch.float32)
        layer.fixed = r


def settings(args) -> AFMEval:
    def pick(name, default):
        value = getattr(args, name, None)
        return default if value is None else value
    return AFMEval(on=not pick("no_pcm_afm", False), tile_size=int(pick("eval_tile_size", 0)),
                   head=pick("eval_head", "analog"), dtype=pick("eval_dtype", "float16"))


def noise_spec(args, ev: AFMEval):
    return make_noise_spec("pcm_afm", {}, "relative_channel",
                           args.targets + (",head" if ev.head == "analog" else ""), None, args.include_bias)


def head_ranges(lm, weights: dict, ranges: dict, targets, head_targets, cfg, batches) -> None:
    """Give every variant's ranges an input range for the head (``HEAD``), where it has none: the recipe's data
    initialisation, through the analog forward with the other layers at their ranges (fixed)."""
    init_cfg = replace(cfg.analog or AnalogTrainConfig(), weight_noise=0.0, input_ranges=True)
    for variant, own in ranges.items():
        if HEAD in own:
            continue
        set_weights(lm.model, weights[variant])
        with AnalogTraining(lm.model, list(targets) + list(head_targets), init_cfg, cfg.seed) as probe:
            for i, name in enumerate(probe.names()):
                if name in own:  # fixed: no data init for the layers that have their range
                    probe.ranges.data[i] = float(own[name])
                    probe.init_count[i] = init_cfg.init_batches
            own[HEAD] = probe.calibrate(lm.model, batches)[HEAD]


class AFMSetting:
    """The model switched into the pcm_afm setting for one variant (dtype, converters, injector) and back."""

    def __init__(self, lm, ev: AFMEval, spec, ranges: dict, seed: int):
        self.lm, self.ev = lm, ev
        model = lm.model
        self.saved, self.dtype = None, next(model.parameters()).dtype
        if DTYPES[ev.dtype] != self.dtype:
            # non-persistent buffers (rotary inv_freq) are not in the state dict but are converted too
            self.saved = ({k: v.detach().clone() for k, v in model.state_dict().items()},
                          {k: v.detach().clone() for k, v in model.named_buffers()})
            model.to(DTYPES[ev.dtype])
        targets = select(model, spec)
        self.injector = NoiseInjector(model, spec, selected=targets)
        self.hooks = ConverterHooks(model, targets, ev.io(), seed=seed)
        set_ranges(self.hooks, ranges)

    def close(self) -> None:
        self.injector.restore()
        self.hooks.remove()
        if self.saved is not None:
            model, (state, buffers) = self.lm.model, self.saved
            model.to(self.dtype)
            model.load_state_dict(state)
            now = dict(model.named_buffers())
            with torch.no_grad():
                for name, value in buffers.items():
                    now[name].copy_(value)
            self.saved = None


def check(ev: AFMEval, model) -> None:
    if ev.on and ev.head == "analog" and not hasattr(model, HEAD):
        raise NoisyNNError(f"--eval_head analog needs an output head named {HEAD}; use --eval_head digital")
