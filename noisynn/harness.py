"""lm-evaluation-harness with noise: the ``noisynn`` model class and checked task loading.

``NoisyLM`` is lm-eval's own HF model (``HFLM``) around a model loaded the way ``--model``
loads one (embedded alias, folder, ``.gguf``, hub id), with a ``NoiseInjector`` on it. lm-eval
does the prompting, batching, scoring and metrics; this class only sets the weights:

    lm = NoisyLM(pretrained="smollm2-135m", noise_type="gaussian", scale="relative", sigma=0.05, seed=1)
    lm_eval.simple_evaluate(model=lm, tasks=["noisynn_cloze"], task_manager=task_manager(), limit=100)
    lm.set_noise(0.1, seed=2)   # the next point: noise re-applied in place from the clean snapshot

From the shell, ``python -m noisynn.harness`` is lm-eval's own CLI with this class registered and
the offline tasks on the include path (lm-eval 0.4.13 has no plugin hook through which its plain
``lm_eval`` command could import an external model class):

    python -m noisynn.harness run --model noisynn --model_args pretrained=smollm2-135m,sigma=0.05,seed=1 \
        --tasks noisynn_cloze,noisynn_next_sentence --limit 100
"""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from .errors import NoisyNNError
from .models.loaded import LoadedModel
from .models.loading import load_model

log = logging.getLogger(__name__)


def noise_spec(noise_type: str = "gaussian", scale: str = "absolute", targets: str = "blocks",
               blocks: str | int | None = None, include_bias: bool = False, params: dict | None = None):
    """A checked ``NoiseSpec`` from NoisyLM's keyword arguments (lists joined by ``+``, see ``_listed``)."""
    from .spec import make_noise_spec

    return make_noise_spec(noise_type, params, scale, _listed(targets), _listed(blocks), include_bias)


def _listed(value):
    """lm-eval's ``--model_args`` split on commas, so lists there use ``+`` (``targets=attention+head``,
    ``blocks=0-3+7``); it also turns a lone ``blocks=2`` into an int."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.replace("+", ",") if isinstance(value, str) else value


def _pop(kwargs: dict, names) -> dict:
    return {k: kwargs.pop(k) for k in list(kwargs) if k in names}


@register_model("noisynn")
class NoisyLM(HFLM):
    """lm-eval's HF causal LM with noise in the weights; ``sigma=0`` is the clean model, bit for bit.

    ``pretrained``: a name ``load_model`` accepts, or an already ``LoadedModel`` (reused as it is).
    ``spec``: a checked ``noisynn.spec.NoiseSpec`` (else built from the keywords below);
    ``converters``: a ``ConverterSpec`` (else built from ``dac_bits``, ``adc_bits``, ``out_noise``,
    ``out_bound``, ``input_range``, ``analog_io`` when given).
    ``noise_type``, ``scale``, ``targets``, ``blocks`` (e.g. ``"0-3+7"``; ``+`` separates list items
    because lm-eval's ``--model_args`` splits on commas), ``include_bias`` and the noise's own
    parameters (``t_seconds``, ``df`` ...) mean what the CLI flags of the same name mean. Other keyword
    arguments (``batch_size``, ``max_length`` ...) go to ``HFLM``.
    """

    def __init__(self, pretrained: str | LoadedModel = "smollm2-135m", noise_type: str = "gaussian",
                 scale: str = "absolute", targets: str = "blocks", blocks: str | None = None,
                 include_bias: bool = False, sigma: float = 0.0, seed: int = 0, device: str = "auto",
                 dtype: str | None = None, spec=None, converters=None, analog_io: bool = False, **kwargs):
        from .analog.hooks import install_converters
        from .inject import NoiseInjector
        from .spec import NOISE_PARAMS, make_converter_spec
        from .analog.setting import CONVERTER_FLAGS

        params, flags = _pop(kwargs, NOISE_PARAMS), _pop(kwargs, CONVERTER_FLAGS)
        # checked before the model is loaded: a wrong setting costs no load
        spec = spec or noise_spec(noise_type, scale, targets, blocks, include_bias, params)
        if converters is None:
            converters = make_converter_spec(flags, analog_io, per_channel=spec.scale == "relative_channel")
        loaded = pretrained if isinstance(pretrained, LoadedModel) else load_model(str(pretrained), device=device,
                                                                                  dtype=dtype)
        kwargs.setdefault("batch_size", 1)
        hf_log = logging.getLogger("lm_eval.models.huggingface")
        level = hf_log.level
        hf_log.setLevel(logging.ERROR)  # it warns that a model object (not a name) was passed: that is the point
        try:
            super().__init__(pretrained=loaded.model, tokenizer=loaded.tokenizer, **kwargs)
        finally:
            hf_log.setLevel(level)
        self.loaded = loaded
        # after HFLM's own set-up (it calls tie_weights), so an untied head stays untied
        self.injector = NoiseInjector(loaded.model, spec)
        self.hooks = install_converters(converters, loaded, self.injector.targets, seed=int(seed))
        self.injector.attach(self.hooks)
        self.sigma: float | None = None
        self.set_noise(float(sigma), int(seed))

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "NoisyLM":
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "NoisyLM":
        """``--model_args`` win over lm-eval's own ``--batch_size`` / ``--device``; that ``--device`` (which
        defaults to cuda:0) falls back to ``auto`` where it is absent, as lm-eval's HF model does."""
        import torch

        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        device = extra.pop("device", None)
        if device and "device" not in arg_dict:
            absent = str(device).startswith("cuda") and not torch.cuda.is_available()
            extra["device"] = "auto" if absent else device
        return cls(**{**extra, **arg_dict})

    def set_noise(self, sigma: float, seed: int, converter_seed: int | None = None) -> None:
        """Weights at noise level ``sigma`` of realization ``seed`` (drawn only when the seed changes);
        converter output noise (if any) restarts from ``converter_seed`` (default ``seed``)."""
        self.injector.realize(seed, sigma)
        if self.hooks:
            self.hooks.reseed(seed if converter_seed is None else converter_seed)
        self.sigma = sigma

    def restore(self) -> None:
        """The clean weights, bit-exact, and no converter hooks."""
        self.injector.restore()
        if self.hooks:
            self.hooks.remove()
            self.hooks = None
        self.sigma = 0.0

    def describe(self) -> dict:
        """What run.json records about the noise on this model."""
        return {"injection": self.injector.describe(), **({"converters": self.hooks.describe()} if self.hooks else {})}


def task_manager(include: Sequence[str] = ()):
    """lm-eval's TaskManager with the offline tasks (built on first use) and ``include`` folders."""
    from lm_eval.tasks import TaskManager

    from .tasks import build

    return TaskManager(include_path=[str(build()), *map(str, include)])


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines() or [type(err).__name__])[0][:300]


def load_tasks(names: Sequence[str], manager=None) -> dict:
    """``TaskManager.load(names)`` (``{"tasks": {name: Task}, "groups": ..., "group_map": ...}``) with the
    datasets loaded; any failure is one NoisyNNError line (an unknown name, or a hub dataset that
    cannot be fetched offline)."""
    manager = manager or task_manager()
    known = set(manager.all_tasks)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise NoisyNNError(f"unknown lm-eval task '{unknown[0]}' (see `python -m noisynn.harness ls tasks`; "
                           "offline tasks: noisynn_cloze, noisynn_next_sentence)")
    try:
        return manager.load(list(names))
    except Exception as err:  # datasets / huggingface_hub raise many types offline
        raise NoisyNNError(f"the dataset of task {','.join(names)} could not be fetched ({_first_line(err)}); "
                           "offline, use the tasks noisynn_cloze and noisynn_next_sentence") from None


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's CLI with ``--model noisynn`` registered and the offline tasks on the include path."""
    from lm_eval.__main__ import cli_evaluate

    from .tasks import build

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--include_path" not in argv and any(a in ("run", "ls", "validate") or a.startswith("--") for a in argv):
        argv += ["--include_path", str(build())]
    sys.argv = ["lm-eval", *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
