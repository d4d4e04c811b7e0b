"""The start of every experiment (checks, then model, text and run folder, in that order) and its end.

Everything that can be wrong with the user's input is checked before the run folder is
touched, so a bad invocation never damages an existing run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..corpus import Text, load_text
from ..errors import NoisyNNError
from ..evaluation import tokenize
from ..targets import Target, select
from ..inject import resolve_schedule, schedule_record
from ..models.loaded import LoadedModel
from ..models.checks import fit_context
from ..models.loading import load_model
from ..models.devices import parse_max_memory, resolve_device, resolve_dtype
from ..options.flags import config_of, context_needs, default_out
from ..options.plugins import load_plugins
from ..placements import check_planned_on
from .schema import LEADING_COLUMNS, SCHEDULE_COLUMN
from . import inputs
from .folder import RunFolder
from ..analog.setting import AnalogSetting
from ..analog.attention import check_covered
from ..spec import NoiseSpec, attention_from_args, resolve_preset, spec_from_args
from ..analog.kv_store import AttentionSetting
from ..analog.setting import ConverterSpec


@dataclass
class Context:
    args: object
    experiment: str
    lm: LoadedModel | None
    text: Text
    eval_ids: torch.Tensor | None
    folder: RunFolder
    done_rows: list = field(default_factory=list)
    spec: NoiseSpec | None = None  # the checked noise flags (None when the experiment takes no noise)
    converters: ConverterSpec | None = None  # the checked converter flags (None when none is given)
    targets: list[Target] | None = None  # spec's targets on the loaded model (``NoiseInjector(..., selected=)``)
    attention: AttentionSetting | None = None  # the checked analog attention flags (None when none is given)


def check_model_flags(args) -> None:
    """Device, dtype and --max_memory flags, checked before the slow model load."""
    resolve_dtype(args.dtype, resolve_device(args.device))
    if getattr(args, "max_memory", None):
        if not args.device_map:
            raise NoisyNNError("--max_memory needs --device_map auto")
        parse_max_memory(args.max_memory)


def start(args, experiment: str, metric_columns: Sequence[str], key: Sequence[str] = ("sigma", "trial"),
          extra_columns: Sequence[str] = (), meta: dict | None = None, noise: bool = True,
          load: bool = True, check: Callable[[LoadedModel, Text], None] | None = None) -> Context:
    """Check flags, load plugins, model and text, then open (or resume) the run folder.

    The noise and converter flags are checked once, here, into ``ctx.spec`` (a ``NoiseSpec``) and
    ``ctx.converters`` (a ``ConverterSpec`` or None); ``ctx.targets`` are the spec's weights of the
    loaded model. The files the flags name (``noisynn.runs.inputs``) are fingerprinted into meta ``inputs``
    and compared on resume. Plugin files are recorded with their sha256 (``run.json``: meta ``plugins`` and config
    ``plugin_sha256``, only when plugins are given, so runs without plugins resume as before).

    A per-layer schedule (``--layer_schedule``) is resolved on ``ctx.targets`` into ``ctx.spec.multipliers``,
    recorded in run.json (meta ``layer_schedule``) and named in every row (column ``layer_schedule``).

    ``load=False`` (experiments that compare several models, one at a time) skips the model:
    ``lm`` and ``eval_ids`` are None, and the text is cut to ``args.eval_chars`` characters.
    ``check(lm, text)``, if given, validates flags that depend on the loaded model or text
    (e.g. block indices); it runs before the run folder is touched and raises ``NoisyNNError``.
    """
    plugins = load_plugins(args.plugin) if getattr(args, "plugin", None) else []
    spec = converters = None
    if noise:  # the one check of the noise and converter flags, built once and kept on the context
        spec = spec_from_args(args)  # first: it applies an analog preset's device fields to the flags
        analog = AnalogSetting.from_args(args)  # the converter and device flags, one checked setting
        converters = analog.converter_spec(getattr(args, "text_file", None), getattr(args, "dataset", None),
                                           getattr(args, "max_length", 512))
    attention = attention_from_args(args)  # the analog attention flags, if the experiment takes them
    if getattr(args, "text_file", None) and getattr(args, "dataset", None):
        raise NoisyNNError("give either --text_file or --dataset, not both")
    check_model_flags(args)
    args.out = args.out or default_out(experiment)
    # A scheduled run's rows name the schedule (a column after the leading ones); without one the columns are as
    # before, so older folders resume.
    scheduled = [SCHEDULE_COLUMN] if spec is not None and spec.schedule is not None and load else []
    columns = list(LEADING_COLUMNS) + scheduled + list(extra_columns) + list(metric_columns)
    folder = RunFolder(args.out, columns, key)
    config = {"experiment": experiment, **config_of(args)}
    if converters is not None:  # the resolved analog settings (presets, defaults): a run resumes only under the same
        config["analog"] = analog.record()
    meta = dict(meta or {})
    if attention is not None:
        meta["attention"] = attention.describe()
    if noise and resolve_preset(args):  # which preset fields came from the preset, which from flags
        meta.setdefault("preset_resolution", resolve_preset(args))
    files = inputs.of_args(args)  # --digital, --tokenizer, --train_file ...: their content, compared on resume
    if files:
        meta[inputs.KEY] = files
    if plugins:  # the content, not only the path: a changed plugin file is a different run
        config["plugin_sha256"] = [p["sha256"] for p in plugins]
        meta["plugins"] = plugins
    if not load:
        text = load_text(args.text_file, args.dataset, max_chars=args.eval_chars)
        if text.info["n_chars"] < args.eval_chars:
            raise NoisyNNError(f"the text has only {text.info['n_chars']} characters, fewer than --eval_chars "
                               f"{args.eval_chars}; lower it or give a longer text")
        run_meta = {"experiment": experiment, "text": text.info, **meta}
        folder.check(config, run_meta)
        done = folder.open(config, run_meta)
        return Context(args, experiment, None, text, None, folder, done, spec, converters, attention=attention)
    text = load_text(args.text_file, args.dataset)
    lm = load_model(args.model, args.device, args.dtype, args.device_map, args.max_memory,
                    getattr(args, "tokenizer", None))
    # The perplexity window (min(512, context) by default) and every prompt + generation fit the model.
    args.max_length = config["max_length"] = fit_context(lm, args.max_length, **context_needs(args))
    if converters is not None and converters.max_length != args.max_length:  # calibration windows: the resolved one
        converters = replace(converters, max_length=args.max_length)
    if getattr(args, "digital", None):  # a placement planned on other weights is not this model's
        check_planned_on(args.digital, lm.info)
    if attention is not None:
        check_covered(lm.model)
    if check is not None:
        check(lm, text)
    # targets (and --blocks) that select no weight of this model fail here, not mid-run
    targets = select(lm.model, spec) if spec is not None else None
    if spec is not None and spec.schedule is not None:  # per-block multipliers fixed on these targets (a table of
        spec = resolve_schedule(spec, lm.model, targets)  # the wrong length fails here, before the folder)
        meta["layer_schedule"] = schedule_record(spec)
        folder.constants[SCHEDULE_COLUMN] = spec.schedule.label()
    run_meta = {"experiment": experiment, "model": lm.info, "text": text.info, **meta}
    folder.check(config, run_meta)  # flags, fingerprints of the weights and text, damaged files
    eval_ids = tokenize(lm.tokenizer, text.text, args.eval_tokens)
    if eval_ids.numel() - 1 < args.eval_tokens:
        raise NoisyNNError(f"the text has only {eval_ids.numel() - 1} scorable tokens, fewer than "
                           f"--eval_tokens {args.eval_tokens}; lower it or give a longer text")
    done = folder.open(config, run_meta)
    return Context(args, experiment, lm, text, eval_ids, folder, done, spec, converters, targets, attention)


def finish(ctx: Context, figures: Sequence[Path], **fields) -> None:
    """End of a run: copy the first figure to ``--output`` (if given) and mark run.json finished."""
    output = getattr(ctx.args, "output", None)  # its folder exists: checked by options.output_file
    if output and figures:
        shutil.copyfile(figures[0], output)
    ctx.folder.finish(figures=[f.name for f in figures], **fields)


def end_run(ctx: Context, figures: Sequence[Path], table: str, files: Sequence[str], **fields) -> int:
    """The end of every experiment's run (the script's side: it prints), returning the exit code 0.

    ``finish`` (``--output``, run.json marked finished with ``fields``), then the console table, then
    one line naming the run folder with ``files`` (its other files, e.g. ``results.csv``) and the figures.
    """
    finish(ctx, figures, **fields)
    print(table)
    print(f"\nrun folder: {ctx.folder.path} ({', '.join([*files, *(f.name for f in figures)])})")
    return 0
