"""The flag groups shared by the experiments (model, noise, levels, run, converters) and their checks.

Flags keep the original toolkit's snake_case spelling; the parser that checks them is noisynn.options.parser."""

from __future__ import annotations

import argparse
import os
import secrets
import time
from pathlib import Path

from ..analog.fields import DEVICE_PARAMS, FIELDS
from .argtypes import add_field_flag, finite_float, nonneg_float, nonneg_int, positive_int
from ..errors import NoisyNNError
from ..paths import readable_file


def prompt_text(text: str) -> str:
    """argparse type of ``--prompt``: any text but a blank one (nothing to continue)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the prompt is empty; give a few words for the model to continue")
    return text


def output_file(text: str) -> str:
    """argparse type of ``--output``: a file path in an existing folder, checked before any run starts."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' is a folder; give a file path such as {path / 'figure.png'}")
    if not path.parent.is_dir():
        problem = "is not a folder" if path.parent.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"'{path.parent}', the folder of '{text}', {problem}")
    from ..runs.files import check_writable

    try:  # found now, not after the whole run
        check_writable(path.parent)
    except NoisyNNError as err:
        raise argparse.ArgumentTypeError(f"--output '{text}': {err}") from None
    return text


def existing_folder(text: str) -> str:
    """argparse type of a folder the run reads (``noisynn ui --runs``): it must exist and be a folder."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"'{text}' {'is not a folder' if path.exists() else 'does not exist'}")
    return text


def block_list(text: str) -> list[int] | None:
    """argparse type of ``--blocks``: ``"0-3,7"`` -> [0, 1, 2, 3, 7]; ``"all"`` -> None."""
    from ..spec import parse_blocks

    try:
        return parse_blocks(text)
    except NoisyNNError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_model_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    """Model, device, dtype and text flags.

    ``many=True`` (experiments that compare models) gives ``--models`` (a list) instead of
    ``--model``, and ``--eval_chars`` (the same text span for every tokenizer) instead of
    ``--eval_tokens``.
    """
    from ..models.embedded import DEFAULT_MODEL

    g = p.add_argument_group("model and text")
    if many:
        g.add_argument("--models", nargs="+", type=name_list, default=None, metavar="NAME",
                       help="models to compare, space- or comma-separated: embedded aliases, hub ids, local folders "
                            "or .gguf files (default: see the experiment)")
    else:
        g.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"embedded alias ({DEFAULT_MODEL}), hub id, local folder or .gguf file (default: %(default)s)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default: %(default)s)")
    g.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default: %(default)s)")
    g.add_argument("--device_map", default=None, choices=("auto", "balanced", "balanced_low_0", "sequential"),
                   help="'auto' shards a big model across the node's GPUs and CPU (Accelerate); overrides --device")
    g.add_argument("--max_memory", default=None,
                   help="with --device_map: per-device limits, e.g. 0=20GiB,1=20GiB,cpu=60GiB")
    g.add_argument("--text_file", default=None, help="evaluate on this UTF-8 text file instead of the embedded text")
    g.add_argument("--dataset", default=None, help="evaluate on an HF dataset NAME[:CONFIG[:SPLIT]] (needs the hub)")
    if many:
        g.add_argument("--eval_chars", type=positive_int, default=3000,
                       help="characters of text scored by every model (the same text whatever the tokenizer; "
                            "default: %(default)s)")
    else:
        g.add_argument("--eval_tokens", type=positive_int, default=1024,
                       help="tokens scored by each perplexity (default: %(default)s)")
    if not many:
        g.add_argument("--tokenizer", default=None, metavar="PATH",
                       help="tokenizer folder (or tokenizer.json, or hub id) for a model that ships none "
                            "(default: the model's own)")
    # None: min(512, the model's positions), resolved once the model is known (models.fit_context).
    g.add_argument("--max_length", type=positive_int, default=None,
                   help="perplexity window in tokens (default: 512, or the model's context if shorter)")


def context_needs(args) -> dict:
    """What the flags ask of the model's context (``models.fit_context``): the prompts, the tokens
    generated after them, and other windows in tokens. Read by flag name, so every script with a
    prompt or a generation length is checked the same way."""
    # ``_prompts``: the prompts an experiment uses when none is given (not recorded in the config)
    prompts = list(getattr(args, "prompts", None) or []) + list(getattr(args, "_prompts", None) or [])
    if isinstance(getattr(args, "prompt", None), str):
        prompts.append(args.prompt)
    new = max([getattr(args, k, None) or 0 for k in ("max_new_tokens", "entropy_tokens", "total_tokens")])
    windows = {f"--{k}": getattr(args, k) for k in ("seq_len",) if getattr(args, k, None)}
    return {"prompts": [q for q in prompts if q.strip()], "new_tokens": new, "windows": windows}


def name_list(text: str) -> list[str]:
    """A comma-separated list of names (empty items are an error)."""
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"'{text}' has an empty name")
    return names


def add_noise_args(p: argparse.ArgumentParser, noise_type: str = "gaussian", scale: str = "absolute",
                   targets: str = "blocks", schedule: bool = True) -> None:
    """The noise flags; ``schedule``: with the per-layer schedule flags (``add_schedule_args``; every experiment,
    not the explorer, which has no schedule control)."""
    g = p.add_argument_group("noise")
    g.add_argument("--noise_type", default=noise_type,
                   help="registered noise name: gaussian, uniform, cauchy, laplacian, student_t, pcm, pcm_afm, stuck_at, "
                        "quantize, or a plugin's (default: %(default)s)")
    add_field_flag(g, FIELDS["df"])
    # SUPPRESS, then filled in after parsing (``deferred_default``): an analog preset's mapping replaces the
    # experiment's default but never a --scale that was given (noisynn.spec.resolve_preset).
    scale_flag = g.add_argument(
        "--scale", default=argparse.SUPPRESS,
        help="absolute (sigma in weight units) | relative (x weight std) | relative_max (x max|W|; per tile for "
             "device models) | relative_channel (x per-output-channel max|W|) (default: " + scale + "; with "
             "--analog_preset and a device model, the preset's mapping)")
    scale_flag.deferred_default = scale
    g.add_argument("--targets", default=targets,
                   help="comma list of attention, mlp, head, embedding, blocks, all, or q,k,v,o,qkv,gate,up,down "
                        "(default: %(default)s; the tied head is untied before it is noised)")
    g.add_argument("--include_bias", action="store_true", help="noise biases of the targeted layers too")
    g.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="import this Python file first (it may register noise classes); repeatable")
    # SUPPRESS: left out of the config unless given (older run folders resume unchanged).
    g.add_argument("--noise_draw", choices=("cpu", "device"), default=argparse.SUPPRESS,
                   help="where additive noise is drawn: cpu (default: one stream, the same noise on every device) "
                        "or device (the weight's device; on a GPU much faster, other random numbers)")
    if schedule:
        add_schedule_args(p)
    # Device-model parameters (noisynn.noise.pcm, .faults); left out of the config unless given.
    d = p.add_argument_group("analog devices (--noise_type pcm, pcm_afm, stuck_at, quantize; need --scale relative_channel "
                             "or relative_max, the weight-to-conductance mapping)")
    for name in DEVICE_PARAMS:  # declared in noisynn.analog.fields: type, choices, help, default
        if name != "df":
            add_field_flag(d, FIELDS[name])


def add_schedule_args(p: argparse.ArgumentParser) -> None:
    """Per-layer noise schedule flags (noisynn.noise.schedule), part of every noise flag set. All SUPPRESS: left out
    of the config unless given, so runs without a schedule (and older run folders) are unchanged."""
    from ..noise.schedule import KINDS, NORMALIZE

    g = p.add_argument_group("per-layer noise schedule (sigma x m_b on block b; head, embeddings: x 1)")
    g.add_argument("--layer_schedule", choices=KINDS, default=argparse.SUPPRESS,
                   help="how sigma varies with block depth x = b/(n-1): constant (default), linear start+(end-start)x, "
                        "exp start(end/start)^x, cosine end+(start-end)(1+cos(pi x))/2, table (--schedule_file)")
    g.add_argument("--schedule_start", type=finite_float, default=argparse.SUPPRESS, metavar="M",
                   help="multiplier at the first block (linear, exp, cosine; before normalization)")
    g.add_argument("--schedule_end", type=finite_float, default=argparse.SUPPRESS, metavar="M",
                   help="multiplier at the last block (linear, exp, cosine; before normalization)")
    g.add_argument("--schedule_file", type=readable_path, default=argparse.SUPPRESS, metavar="FILE",
                   help="--layer_schedule table: one multiplier per block, one a line or comma-separated (# comments)")
    g.add_argument("--schedule_normalize", choices=NORMALIZE, default=argparse.SUPPRESS,
                   help="energy (default): rescale the multipliers so the targeted weights get the noise energy "
                        "sum n_t (sigma m_b)^2 of the constant schedule; none: as given")


def add_run_args(p: argparse.ArgumentParser, n_trials: int = 3) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--n_trials", type=positive_int, default=n_trials,
                   help="seeded noise realizations per point (default: %(default)s)")
    g.add_argument("--seed", type=nonneg_int, default=0, help="base seed (default: %(default)s)")
    g.add_argument("--out", default=None, help="run folder (default: runs/<experiment>-<time>); rerun to resume")
    g.add_argument("--output", type=output_file, default=None, help="also save the main figure to this PNG path")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_level_args(p, max_noise: float, n_levels: int, spacing: str, min_fraction: float = 1 / 30,
                   sweep: str = "") -> None:
    """``--max_noise --n_levels --spacing``: the noise levels of a sweep, each experiment with its own defaults.

    ``min_fraction`` is where a log grid starts (``max_noise * min_fraction``): give the same one to
    ``level_grid``. ``sweep`` names the sweep in the help when an experiment has several (" of the group sweep").
    """
    p.add_argument("--max_noise", type=nonneg_float, default=max_noise,
                   help=f"largest sigma{sweep} (default: %(default)s)")
    p.add_argument("--n_levels", type=positive_int, default=n_levels,
                   help=f"number of levels{sweep} incl. 0 (default: %(default)s)")
    p.add_argument("--spacing", choices=("log", "linear"), default=spacing,
                   help=f"log: 0 then geometric from max/{round(1 / min_fraction)} to max; linear: linspace(0, max) "
                        "(default: %(default)s)")


def level_grid(args, min_fraction: float = 1 / 30) -> list[float]:
    """The levels the ``add_level_args`` flags ask for (``noisynn.runs.runner.levels``)."""
    from ..runs.runner import levels  # the runner imports torch; the flags do not

    return levels(args.max_noise, args.n_levels, args.spacing, min_fraction)


def add_attention_args(p: argparse.ArgumentParser) -> None:
    """The analog attention flags (noisynn.analog.flags: the gain-cell KV store and the attention MVMs)."""
    from ..analog.flags import add_attention_args as add

    add(p)


def add_converter_args(p: argparse.ArgumentParser) -> None:
    """The converter flags (noisynn.analog.flags: presets, DAC, ADC, noise and bound management, units)."""
    from ..analog.flags import add_converter_args as add

    add(p)


def add_digital_arg(p: argparse.ArgumentParser) -> None:
    """``--digital placement.json``: tensors a placement (noisynn placement) keeps digital stay clean."""
    # SUPPRESS: without the flag the config (and so resuming older run folders) is unchanged.
    p.add_argument("--digital", type=readable_path, default=argparse.SUPPRESS, metavar="PLACEMENT.json",
                   help="keep the tensors this placement file marks digital clean: no noise, no converters "
                        "(written by noisynn placement; default: none)")


def readable_path(text: str) -> str:
    """argparse type of a file the run reads: it must be a readable regular file (checked at parse time)."""
    try:
        readable_file(text, "file")
    except NoisyNNError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


_PLUGINS: dict[tuple[str, str], object] = {}  # (resolved path, sha256) -> module: each file content runs once


def default_out(experiment: str) -> str:
    """``runs/<experiment>-<time>-<pid><random>``: two jobs started in the same second (on one
    node or on several sharing a disk) never get the same folder (32 random bits: 50 names drawn in one second
    collide with probability ~3e-7; 16 bits made it ~2%)."""
    return os.path.join("runs", f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}{secrets.token_hex(4)}")


def config_of(args) -> dict:
    """The config recorded in run.json and compared on resume."""
    return {k: v for k, v in sorted(vars(args).items()) if not k.startswith("_")}
