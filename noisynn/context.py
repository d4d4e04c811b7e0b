"""Start of every experiment: parse-time checks, then model, text and run folder, in that order.

Everything that can be wrong with the user's input is checked before the run folder is
touched, so a bad invocation never damages an existing run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from .corpus import Text, load_text
from .errors import NoisyNNError
from .evaluation import tokenize
from .inject import select_targets
from .models import LoadedModel, load_model, parse_max_memory, resolve_device, resolve_dtype
from .options import check_noise_args, config_of, default_out, load_plugins
from .results import LEADING_COLUMNS, RunFolder


@dataclass
class Context:
    args: object
    experiment: str
    lm: LoadedModel | None
    text: Text
    eval_ids: torch.Tensor | None
    folder: RunFolder
    done_rows: list = field(default_factory=list)


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

    ``load=False`` (experiments that compare several models, one at a time) skips the model:
    ``lm`` and ``eval_ids`` are None, and the text is cut to ``args.eval_chars`` characters.
    ``check(lm, text)``, if given, validates flags that depend on the loaded model or text
    (e.g. block indices); it runs before the run folder is touched and raises ``NoisyNNError``.
    """
    if getattr(args, "plugin", None):
        load_plugins(args.plugin)
    if noise:
        check_noise_args(args)
    check_model_flags(args)
    args.out = args.out or default_out(experiment)
    columns = list(LEADING_COLUMNS) + list(extra_columns) + list(metric_columns)
    folder = RunFolder(args.out, columns, key)
    config = {"experiment": experiment, **config_of(args)}
    if not load:
        text = load_text(args.text_file, args.dataset, max_chars=args.eval_chars)
        if text.info["n_chars"] < args.eval_chars:
            raise NoisyNNError(f"the text has only {text.info['n_chars']} characters, fewer than --eval_chars "
                               f"{args.eval_chars}; lower it or give a longer text")
        run_meta = {"experiment": experiment, "text": text.info, **(meta or {})}
        folder.check(config, run_meta)
        done = folder.open(config, run_meta)
        return Context(args, experiment, None, text, None, folder, done)
    text = load_text(args.text_file, args.dataset)
    lm = load_model(args.model, args.device, args.dtype, args.device_map, args.max_memory)
    if check is not None:
        check(lm, text)
    if noise:  # targets (and --blocks) that select no weight of this model fail here, not mid-run
        select_targets(lm.model, args.targets, getattr(args, "blocks", None), args.include_bias)
    run_meta = {"experiment": experiment, "model": lm.info, "text": text.info, **(meta or {})}
    folder.check(config, run_meta)  # flags, fingerprints of the weights and text, damaged files
    eval_ids = tokenize(lm.tokenizer, text.text, args.eval_tokens)
    if eval_ids.numel() - 1 < args.eval_tokens:
        raise NoisyNNError(f"the text has only {eval_ids.numel() - 1} scorable tokens, fewer than "
                           f"--eval_tokens {args.eval_tokens}; lower it or give a longer text")
    done = folder.open(config, run_meta)
    return Context(args, experiment, lm, text, eval_ids, folder, done)


def finish(ctx: Context, figures: Sequence[Path], **fields) -> None:
    """End of a run: copy the first figure to ``--output`` (if given) and mark run.json finished."""
    output = getattr(ctx.args, "output", None)  # its folder exists: checked by options.output_file
    if output and figures:
        shutil.copyfile(figures[0], output)
    ctx.folder.finish(figures=[f.name for f in figures], **fields)
