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

import argparse
import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from .errors import NoisyNNError
from .models.loaded import LoadedModel
from .models.loading import load_model
from .options.argtypes import nonneg_float, nonneg_int
from .options.script import script_main

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


# The keys ``--model_args`` takes: NoisyLM's own, the analog settings (the noise's device parameters and the
# converters, declared in noisynn.analog.fields) and those of lm-eval's HF model that apply to a model object.
OWN_KEYS = ("pretrained", "noise_type", "scale", "targets", "blocks", "include_bias", "sigma", "seed", "device",
            "dtype", "analog_io")
HFLM_KEYS = ("batch_size", "max_batch_size", "max_length", "truncation", "logits_cache", "add_bos_token",
             "prefix_token_id", "softmax_dtype", "mixed_precision_dtype", "trust_remote_code", "think_end_token",
             "enable_thinking", "chat_template_args")


def analog_keys() -> tuple[str, ...]:
    from .analog.setting import CONVERTER_FLAGS, SHARED_CONVERTER_FLAGS
    from .spec import NOISE_PARAMS

    return tuple(dict.fromkeys(NOISE_PARAMS + CONVERTER_FLAGS + SHARED_CONVERTER_FLAGS))


@dataclass(frozen=True)
class HarnessSetting:
    """NoisyLM's checked setting: the noise, the converters (None: none), the level and the realization."""

    spec: object  # noisynn.spec.NoiseSpec
    converters: object | None  # noisynn.analog.setting.ConverterSpec
    sigma: float
    seed: int


def _checked(key: str, value, kind):
    try:
        return kind(str(value))
    except argparse.ArgumentTypeError as err:
        raise NoisyNNError(f"model_args {key}: {err}") from None


def _switch(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise NoisyNNError(f"model_args {key}: '{value}' is not true or false")
    return value


def check_model_args(args: dict, spec=None, converters=None) -> HarnessSetting:
    """The one check of NoisyLM's settings (``--model_args`` as lm-eval parses them, or the keywords): every key
    known, ``sigma`` finite and >= 0, ``seed`` an integer >= 0, the noise through ``make_noise_spec`` and the
    analog settings through ``AnalogSetting.from_flags``; raises NoisyNNError in one line. ``spec`` /
    ``converters``: already checked specs, used instead of the keys that would build them."""
    from .analog.setting import AnalogSetting

    known = OWN_KEYS + analog_keys() + HFLM_KEYS
    unknown = [k for k in args if k not in known]
    if unknown:
        raise NoisyNNError(f"unknown model_args key '{unknown[0]}'; known: {', '.join(known)}")
    sigma = _checked("sigma", args.get("sigma", 0.0), nonneg_float)
    seed = _checked("seed", args.get("seed", 0), nonneg_int)
    include_bias = _switch("include_bias", args.get("include_bias", False))
    analog_io = _switch("analog_io", args.get("analog_io", False))
    scale = spec.scale if spec is not None else args.get("scale", "absolute")
    setting = AnalogSetting.from_flags({**{k: args[k] for k in analog_keys() if k in args},
                                        "analog_io": analog_io, "scale": scale})
    if spec is None:
        spec = noise_spec(args.get("noise_type", "gaussian"), scale, args.get("targets", "blocks"),
                          args.get("blocks"), include_bias, setting.device_params())
    return HarnessSetting(spec, setting.converter_spec() if converters is None else converters, sigma, seed)


def check_model(name: str, spec) -> None:
    """Before the load, from the model's config alone: the model exists, is causal, and the spec's targets and
    blocks select weights in it (the load itself reports what cannot be checked this way)."""
    from .models.checks import check_causal_config
    from .models.loading import check_model_name, model_skeleton
    from .targets import select_targets

    check_model_name(name, "pretrained")
    skeleton = model_skeleton(name)
    if skeleton is not None:
        check_causal_config(skeleton.config, name)
        select_targets(skeleton, spec.targets, spec.blocks, spec.include_bias)


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

        own = {"noise_type": noise_type, "scale": scale, "targets": targets, "blocks": blocks,
               "include_bias": include_bias, "sigma": sigma, "seed": seed, "analog_io": analog_io}
        own.update({k: kwargs.pop(k) for k in list(kwargs) if k in analog_keys()})
        # checked before the model is loaded: a wrong setting costs no load
        setting = check_model_args(own, spec, converters)
        spec, converters, sigma, seed = setting.spec, setting.converters, setting.sigma, setting.seed
        if not isinstance(pretrained, LoadedModel):
            check_model(str(pretrained), spec)
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
        self.set_noise(sigma, seed)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "NoisyLM":
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "NoisyLM":
        """``--model_args`` win over lm-eval's own ``--batch_size`` / ``--device``; that ``--device`` (which
        defaults to cuda:0) falls back to ``auto`` where it is absent, as lm-eval's HF model does."""
        import torch

        check_model_args(arg_dict)  # an unknown key (a typo) is refused, not ignored
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


def main(argv: Sequence[str] | None = None) -> int:
    """lm-eval's CLI with ``--model noisynn`` registered and the offline tasks on the include path, at the script
    boundary (``script_main``): a bad setting is one line and exit 2, as in the experiment scripts."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.argv = ["noisynn.harness", *argv]
    return script_main(_cli, argv)


def _cli(argv: list[str]) -> int:
    """Parse with lm-eval's own parser; check ``--model noisynn``'s settings, the model (from its config) and
    ``--limit`` before lm-eval indexes its tasks or loads anything; then lm-eval runs as usual."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    from .tasks import build

    if "--include_path" not in argv and any(a in ("run", "ls", "validate") or a.startswith("--") for a in argv):
        argv = [*argv, "--include_path", str(build())]
    sys.argv = ["lm-eval", *argv]
    parser = HarnessCLI()
    args = parser.parse_args()
    if getattr(args, "model", None) == "noisynn":
        setting = check_model_args(args.model_args or {})
        check_model(str((args.model_args or {}).get("pretrained", "smollm2-135m")), setting.spec)
    limit = getattr(args, "limit", None)
    if limit is not None and not limit > 0:
        raise NoisyNNError(f"--limit {limit:g}: must be > 0 (documents per task, or a fraction of them below 1)")
    setup_logging()
    try:
        with quiet_git():
            parser.execute(args)
    except ValueError as err:
        if _raised_in(err, "lm_eval/config"):  # lm-eval's check of its own arguments (e.g. an unknown task)
            raise NoisyNNError(_first_line(err)) from None
        raise
    return 0


@contextlib.contextmanager
def quiet_git():
    """lm-eval records ``git describe`` of the working directory and lets git's stderr through ("fatal: not a git
    repository" wherever that directory is no checkout); during the call it records noisynn's own commit instead
    (``runs.provenance.git_hash``, which captures git's output)."""
    import lm_eval.evaluator as evaluator

    from .runs.provenance import git_hash

    saved = evaluator.get_git_commit_hash
    evaluator.get_git_commit_hash = git_hash
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = saved


def _raised_in(err: BaseException, package: str) -> bool:
    """Whether ``err`` was raised by code under ``package`` (a path fragment such as ``lm_eval/config``)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and package in Path(tb.tb_frame.f_code.co_filename).as_posix()


if __name__ == "__main__":
    sys.exit(main())
