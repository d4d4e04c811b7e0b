"""Command-line plumbing shared by every experiment: common flags, checks, plugins, exit codes.

Flags keep the original toolkit's snake_case spelling. Every user error ends the same way:
one line ``<prog>: error: <message>`` on stderr and exit code 2, raised before the run
folder is touched.
"""

from __future__ import annotations

import argparse
import logging
import errno
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .argtypes import finite_float, nonneg_float, nonneg_int, positive_float, positive_int, unit_float  # noqa: F401
from .errors import NoisyNNError
from .paths import readable_file  # noqa: F401 - shared with plugins and library readers

EXIT_USAGE = 2


# The most each size or level flag takes, by destination name, and why: beyond these a run cannot
# finish (memory, the float range) or the value means nothing, and such values used to fail only
# after the run folder existed. Checked after parsing, so every script that has the flag gets it.
_GRID = "each point is a full evaluation: a larger grid would run for months and its list alone fills memory"
_TOKENS = "more tokens than any model's context or any text here"
_SIGMA = ("beyond 1e30 no float32 headroom is left (its largest value is 3.4e38): weights, figure axes and "
          "summaries overflow to inf, where every model was pure noise long before")
FLAG_BOUNDS: dict[str, tuple[float, str]] = {
    "n_trials": (10_000, _GRID), "n_levels": (10_000, _GRID), "n_points": (10_000, _GRID),
    "unit_trials": (10_000, _GRID), "max_verifications": (10_000, _GRID),
    "mean_draws": (100_000, "each draw programs a unit's devices once more"),
    "n_samples": (1_000, "the samples are decoded in one batch"),
    "eval_tokens": (10_000_000, _TOKENS), "heatmap_tokens": (10_000_000, _TOKENS),
    "eval_chars": (100_000_000, "more text than fits the evaluation"),
    "max_length": (1_048_576, _TOKENS), "seq_len": (1_048_576, _TOKENS),
    "max_new_tokens": (100_000, _TOKENS), "entropy_tokens": (100_000, _TOKENS),
    "total_tokens": (100_000, _TOKENS), "window": (100_000, _TOKENS), "rep_window": (100_000, _TOKENS),
    "top_k": (1_000_000, "no vocabulary is larger"),
    "steps": (10_000_000, "training that long is not a noise experiment"),
    "epochs": (100_000, "training that long is not a noise experiment"),
    "batch_size": (65_536, "a batch that large does not fit in memory"),
    "max_samples": (100_000_000, "more training windows than any text here"),
    "seed": (2**63 - 1, "seeds are 63-bit integers"),
    "limit": (10_000_000, "more items than any task here"), "num_fewshot": (10_000, _TOKENS),
    "bootstrap_iters": (1_000_000, "the confidence interval is resampled that often in memory"),
    "max_noise": (1e30, _SIGMA), "noise_level": (1e30, _SIGMA), "start_sigma": (1e30, _SIGMA),
    "end_sigma": (1e30, _SIGMA), "sigma": (1e30, _SIGMA), "search_range": (1e30, _SIGMA),
    "noise_scale": (1e30, _SIGMA), "out_noise": (1e30, _SIGMA), "clip_sigma": (1e30, _SIGMA),
    "out_bound": (1e30, _SIGMA), "weight_decay": (1e3, "AdamW multiplies the weights by (1 - lr x decay) each "
                                                        "step: a decay that large erases them in a few steps"),
    "inp_noise": (1e30, _SIGMA), "w_noise": (1e30, _SIGMA), "range_std": (1e6, "a range of a million standard "
                                                                            "deviations is no range"),
    "tile_size": (1_048_576, "no layer is that wide"),
    "max_bm_factor": (2.0 ** 60, "the input would be divided below any float's resolution"),
    "dac_bits": (32, "float32 resolves at most 2^24 steps; more bits change nothing"),
    "adc_bits": (32, "float32 resolves at most 2^24 steps; more bits change nothing"),
    "t_seconds": (1e12, "the drift model is calibrated for seconds to years (1e12 s is 30,000 years)"),
    "df": (1e6, "student_t beyond df 1e6 is a gaussian; use --noise_type gaussian"),
    "temperature": (1e6, "beyond that sampling is uniform"),
    "lr": (1e3, "a learning rate that large diverges at the first step"),
}


# String flags for which an empty value has a documented meaning ('' = none). Every other string flag
# refuses an empty value: "--text_file $TEXT" with TEXT unset must not fall back to the embedded text.
# Prompts say it in their own words ("the prompt is empty"), checked by each experiment.
MAY_BE_EMPTY = {"digital_bits", "prompt", "prompts"}


def empty_error(action: argparse.Action, value) -> str | None:
    """The message for an empty (or blank) string given to a flag that needs a value, else None."""
    if action.dest in MAY_BE_EMPTY or not action.option_strings:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, str) and not v.strip() for v in values) and value != action.default:
        return (f"argument {action.option_strings[0]}: an empty value (an unset shell variable?); "
                "give one, or leave the flag out for its default")
    return None


def bound_error(dest: str, value) -> str | None:
    """The message for a value of flag ``dest`` beyond its bound in ``FLAG_BOUNDS``, else None."""
    if dest not in FLAG_BOUNDS:
        return None
    bound, why = FLAG_BOUNDS[dest]
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > bound:
            show = (lambda x: f"{x:,}" if isinstance(x, int) else f"{x:g}")
            return f"argument --{dest}: {show(v)} is above {show(bound)}, the most it takes ({why})"
    return None


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump) and exit code 2, and whose size and
    level flags are bounded (``FLAG_BOUNDS``)."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102 - argparse API
        parsed, rest = super().parse_known_args(args, namespace)
        given = vars(parsed)
        for action in self._actions:
            if action.dest in given:
                message = empty_error(action, given[action.dest])
                if message:
                    self.error(message)
        for dest, value in given.items():
            message = bound_error(dest, value)
            if message:
                self.error(message)
        defaulted = set(getattr(parsed, "_defaulted", ()))
        for action in self._actions:  # flags whose default a preset may replace: filled in after parsing
            if hasattr(action, "deferred_default") and not hasattr(parsed, action.dest):
                setattr(parsed, action.dest, action.deferred_default)
                defaulted.add(action.dest)
        if defaulted:
            parsed._defaulted = defaulted  # not in run.json's config (config_of skips "_" names)
        return parsed, rest


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
    from .results import check_writable

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
    from .spec import parse_blocks

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
    from .models import DEFAULT_MODEL

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
                   targets: str = "blocks") -> None:
    g = p.add_argument_group("noise")
    g.add_argument("--noise_type", default=noise_type,
                   help="registered noise name: gaussian, uniform, cauchy, laplacian, student_t, pcm, pcm_afm, stuck_at, "
                        "quantize, or a plugin's (default: %(default)s)")
    g.add_argument("--df", type=positive_float, default=None, help="degrees of freedom for student_t (default 3)")
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
    # Device-model parameters (noisynn.noise.pcm, .faults); left out of the config unless given.
    d = p.add_argument_group("analog devices (--noise_type pcm, pcm_afm, stuck_at, quantize; need --scale relative_channel "
                             "or relative_max, the weight-to-conductance mapping)")
    d.add_argument("--t_seconds", type=nonneg_float, default=argparse.SUPPRESS,
                   help="pcm: read time after programming in seconds (default 86400, one day)")
    d.add_argument("--drift_compensation", action="store_true", default=argparse.SUPPRESS,
                   help="pcm: global drift compensation, one digital factor per layer")
    d.add_argument("--stuck_fraction", type=unit_float, default=argparse.SUPPRESS,
                   help="pcm: fraction of devices stuck (default 0); for stuck_at the fraction is sigma")
    d.add_argument("--stuck_on_ratio", type=unit_float, default=argparse.SUPPRESS,
                   help="pcm, stuck_at: share of stuck devices stuck at g_max rather than 0 (default 0.5)")
    d.add_argument("--clip_std", type=positive_float, default=argparse.SUPPRESS,
                   help="pcm, stuck_at: map min(max|W|, K std(W)) to g_max, clipping larger weights (default: no clip)")
    d.add_argument("--tile_size", type=tile_size, default=argparse.SUPPRESS, metavar="IN[xOUT]",
                   help="analog tiles of at most IN inputs x OUT outputs, for the PCM mapping and the converters "
                        "(aihwkit MappingParameter; default 512x512; 0 = the whole layer)")
    d.add_argument("--pair", choices=("tile", "independent"), default=argparse.SUPPRESS,
                   help="pcm: 'tile' (default, aihwkit): the programmed weight is turned back into a fresh pair "
                        "that drifts; 'independent': both devices drift and are read independently")
    d.add_argument("--compensation_method", choices=("readout", "exact"), default=argparse.SUPPRESS,
                   help="pcm --drift_compensation: 'readout' (default, aihwkit): per tile, one-hot probes through the "
                        "layer's analog forward, factor applied after the ADC; 'exact': sum|W_prog| / sum|W_t| "
                        "per layer, folded into the weights")


def add_run_args(p: argparse.ArgumentParser, n_trials: int = 3) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--n_trials", type=positive_int, default=n_trials,
                   help="seeded noise realizations per point (default: %(default)s)")
    g.add_argument("--seed", type=nonneg_int, default=0, help="base seed (default: %(default)s)")
    g.add_argument("--out", default=None, help="run folder (default: runs/<experiment>-<time>); rerun to resume")
    g.add_argument("--output", type=output_file, default=None, help="also save the main figure to this PNG path")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_converter_args(p: argparse.ArgumentParser) -> None:
    """The converter flags (noisynn.analog_flags: presets, DAC, ADC, noise and bound management, units)."""
    from .analog_flags import add_converter_args as add

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


def tile_size(text: str) -> list[int]:
    """argparse type of ``--tile_size`` (noisynn.analog_flags.tile_size)."""
    from .analog_flags import tile_size as parse

    return parse(text)


_PLUGINS: dict[tuple[str, str], object] = {}  # (resolved path, sha256) -> module: each file content runs once


def load_plugins(paths: Sequence[str]) -> list[dict]:
    """Import each plugin file so its noise classes are registered before names are looked up.

    Returns ``[{"path", "sha256"}]`` (recorded in run.json). The same file with the same content is
    imported once, however often it is given (twice on the command line, or again by the UI). A plugin
    gets ``torch`` in its namespace, as the original toolkit's module had it for its custom-noise recipe.
    Whatever the plugin does wrong at import (raises, ``sys.exit``) becomes one NoisyNNError line.
    """
    import hashlib
    import types

    loaded = []
    for path in paths:
        p = readable_file(path, "plugin file")  # a folder, a device, a missing file: each said as it is
        if p.suffix != ".py":
            raise NoisyNNError(f"plugin {path} is not a Python file (give a .py file)")
        try:
            data = p.read_bytes()
        except OSError as err:
            raise NoisyNNError(f"plugin {path} cannot be read: {err.strerror or err}") from None
        if not data.strip():
            raise NoisyNNError(f"plugin file {path} is empty (it would register nothing)")
        sha = hashlib.sha256(data).hexdigest()
        key = (str(p.resolve()), sha)
        loaded.append({"path": str(path), "sha256": sha})
        if key in _PLUGINS:
            continue
        name = f"noisynn_plugin_{''.join(c if c.isalnum() else '_' for c in p.stem)}_{sha[:12]}"
        module = types.ModuleType(name)
        module.__file__ = str(p.resolve())
        import torch

        module.torch = torch
        sys.modules[name] = module  # before exec: classes defined there name this module
        try:
            exec(compile(data, str(p), "exec"), module.__dict__)
        except SystemExit as err:  # a plugin must not end the run (with exit status 0)
            del sys.modules[name]
            raise NoisyNNError(f"plugin {path} called sys.exit({err.code!r}) while being imported") from None
        except Exception as err:  # a plugin can raise anything; report it in one line
            del sys.modules[name]
            raise NoisyNNError(f"plugin {path} failed to import: {type(err).__name__}: {err}") from None
        _PLUGINS[key] = module
    return loaded


def noise_params(args) -> dict:
    """The noise class's constructor parameters among the parsed flags (noisynn.spec.noise_params)."""
    from .spec import noise_params as params

    return params(args)


def default_out(experiment: str) -> str:
    """``runs/<experiment>-<time>-<pid><random>``: two jobs started in the same second (on one
    node or on several sharing a disk) never get the same folder."""
    return os.path.join("runs", f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}{secrets.token_hex(2)}")


def config_of(args) -> dict:
    """The config recorded in run.json and compared on resume."""
    return {k: v for k, v in sorted(vars(args).items()) if not k.startswith("_")}


class Interrupted(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGINT received: unwinds like Ctrl-C (``finally`` blocks restore the model)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


# errno -> what the user can do about it.
OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space",
    errno.EROFS: "the filesystem is read-only; use another --out",
    errno.EACCES: "no permission; use another --out",
    errno.EPERM: "no permission; use another --out",
    errno.ENOTDIR: "a path component is a file; use another --out",
    errno.EISDIR: "a folder stands where a file is expected",
}


def describe_os_error(err: OSError) -> str:
    """One line: what failed, on which file, and what to do."""
    where = f" ({err.filename})" if err.filename else ""
    hint = OS_ERROR_HINTS.get(err.errno, "check the disk and the paths")
    what = (err.strerror or str(err) or type(err).__name__).strip().splitlines()[0]
    return f"{what}{where}: {hint}"


def script_main(run: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run an experiment's body at the script boundary: every known failure becomes one line.

    User errors: one line, exit 2. Filesystem errors (disk full, read-only, no permission):
    one line, exit 2, finished rows kept. Ctrl-C, SIGTERM and SIGHUP: one line saying how to
    resume, run.json marked ``interrupted``, exit 128 + signal number (130 for Ctrl-C).
    """
    from . import results

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "huggingface_hub", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    prog = Path(sys.argv[0]).name
    previous = {}
    try:
        # SIGINT too: a native library loaded earlier in the process (seen in the full test suite) can replace
        # Python's C-level SIGINT handler, and Ctrl-C would then never reach the run; installing ours restores it.
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            previous[signum] = signal.signal(signum, _raise_interrupted)
    except ValueError:  # not the main thread: leave the handlers alone
        pass
    try:
        return int(run(argv) or 0)
    except NoisyNNError as err:
        results.mark_open_folders("failed", str(err))
        sys.stderr.write(f"{prog}: error: {err}\n")
        return EXIT_USAGE
    except OSError as err:
        message = describe_os_error(err)
        kept = results.mark_open_folders("failed", message)
        sys.stderr.write(f"{prog}: error: {message}" + ("; finished rows are saved, rerun the same command to resume"
                                                        if kept else "") + "\n")
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        results.mark_open_folders("interrupted", name)
        sys.stderr.write(f"{prog}: interrupted ({name}); finished rows are saved, rerun the same command to resume\n")
        return 128 + int(signum)
    except Exception as err:  # a bug: its traceback is wanted, but run.json must not stay "running"
        results.mark_open_folders("failed", f"{type(err).__name__}: {err}")
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
