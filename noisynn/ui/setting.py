"""The explorer's Setting: what is computed, its checks, the command that reproduces it, Requests (cancel).

What is computed (noise, flags, sigma, text), its checks, the command that reproduces it, and which request is
still wanted (``Requests``; a superseded computation is ``Cancelled``)."""

from __future__ import annotations

import math
import shlex
import threading
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable

from ..errors import NoisyNNError
from ..evaluation import DEFAULT_PROMPT
from .controls import constructor_params, flag_argv
from ..analog.fields import default
from ..analog.kv_store import ATTENTION_FLAGS, AttentionSetting
from ..analog.setting import AnalogSetting
from ..models.embedded import DEFAULT_MODEL
from ..noise import NOISE_REGISTRY
from ..runs.runner import Point
from ..spec import NoiseSpec, attention_from_args, make_noise_spec, parse_blocks

TARGET_CHOICES = ("attention", "mlp", "head")
MAX_NEW_TOKENS = 256
MAX_EVAL_TOKENS = 4096
MAX_TOP_K = 50
PREVIEW_EVAL_TOKENS, PREVIEW_NEW_TOKENS = 256, 20  # the page's preview: a point in a few seconds on a CPU
SIGMA_DIGITS = 4  # the UI's sigma is rounded to this many significant digits, so the CLI command is exact
SIGMA_LOG_MIN, SIGMA_LOG_MAX = -4.0, 0.0
DEVICE_SIGMA_LOG_MAX = 1.0  # a device model's sigma multiplies the device as measured: up to 10x it


def sigma_log_max(noise_type: str) -> float:
    """The sigma slider's top (log10): 1 (10x the device as measured) for a device model (a noise with its own
    ``scales``), else 0 (sigma 1 in the scale's units)."""
    return DEVICE_SIGMA_LOG_MAX if getattr(NOISE_REGISTRY.get(noise_type), "scales", None) else SIGMA_LOG_MAX


@dataclass(frozen=True)
class Setting:
    """Everything that determines what the explorer shows.

    ``flags``: the device and converter flags given, ``(dest, text)`` pairs as typed (``explore_flags``).
    """

    model: str = DEFAULT_MODEL
    noise_type: str = "gaussian"
    sigma: float = 0.02
    scale: str = "absolute"
    targets: tuple[str, ...] = ("attention", "mlp")
    blocks: str = "all"  # "0-9,20": attention/mlp weights of these blocks only
    seed: int = 0
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 30
    top_k: int = 8
    eval_tokens: int = 1024
    max_length: int = 512
    include_bias: bool = False
    flags: tuple[tuple[str, str], ...] = ()

    @property
    def target_spec(self) -> str:
        return ",".join(self.targets)

    @property
    def block_list(self) -> list[int] | None:
        return parse_blocks(self.blocks)

    @property
    def analog(self) -> AnalogSetting:
        """The device and converter flags as one checked setting, as the command line builds it
        (``AnalogSetting.from_flags``: the declared types, bounds and the CLI's one-line messages)."""
        flags = {k: v for k, v in self.flags if k not in ATTENTION_FLAGS}
        return AnalogSetting.from_flags({**flags, "scale": self.scale, "noise_type": self.noise_type})

    @property
    def attention(self) -> AttentionSetting | None:
        """The analog attention flags as the command line checks them (``spec.attention_from_args``), None when
        none is given."""
        return attention_from_args(SimpleNamespace(**{k: v for k, v in self.flags if k in ATTENTION_FLAGS}))

    @property
    def spec(self) -> NoiseSpec:
        """The checked noise spec, by the same function as the command line's (``noisynn.spec``)."""
        return make_noise_spec(self.noise_type, self.analog.device_params(), self.scale, self.target_spec,
                               self.blocks, self.include_bias)

    def converter_spec(self, text_file: str | None = None, dataset: str | None = None):
        """The converters the flags ask for (None: none), by the command line's own ``AnalogSetting``."""
        return self.analog.converter_spec(text_file, dataset, self.max_length)

    @property
    def curve_key(self) -> tuple:
        """What makes points lie on one curve: everything but sigma, the prompt and the chart."""
        return (self.model, self.noise_type, self.scale, self.target_spec, self.blocks, self.include_bias,
                self.flags, self.seed, self.eval_tokens, self.max_length)

    @property
    def label(self) -> str:
        """The whole setting in words (``describe``): headings, curve lines and table rows name it."""
        return self.describe()

    def describe(self, without: tuple[str, ...] = ()) -> str:
        """Noise, scale, targets, blocks, the device's read time and drift compensation in effect (given or
        the declared defaults), the converters (a preset, or the converter flags given), the other flags
        given, the seed and evaluation tokens. ``without``: flags left out (the time view's lines)."""
        given = {k: v for k, v in self.flags if k not in without}
        params = constructor_params(self.noise_type)
        head = [self.noise_type, self.scale, self.target_spec] + ([f"blocks {self.blocks}"] if self.blocks != "all"
                                                                  else [])
        words = [" ".join(head)]
        if "t_seconds" in params and "t_seconds" not in without:
            t = float(given.get("t_seconds", default("t_seconds")))
            words.append(f"read at t = {t:g} s" + (f" ({human_time(t)})" if t >= 60 else ""))
        if "drift_compensation" in params:
            on = str(given.get("drift_compensation", default("drift_compensation"))).strip().lower() == "true"
            method = given.get("compensation_method", default("compensation_method"))
            words.append(f"drift compensation {method}" if on else "no drift compensation")
        if given.get("attn_preset"):
            words.append(f"attention: preset {given['attn_preset']}")
        if given.get("analog_preset"):
            words.append(f"converters: preset {given['analog_preset']}")
        elif str(given.get("analog_io", "")).strip().lower() == "true":
            words.append("converters: aihwkit defaults")
        shown = ("t_seconds", "drift_compensation", "compensation_method", "analog_preset", "analog_io", "attn_preset")
        argv = flag_argv((k, v) for k, v in given.items() if k not in shown)
        words += ([" ".join(argv)] if argv else []) + ([f"seed {self.seed}"] if self.seed else [])
        return ", ".join(words) + f" ({self.eval_tokens} tok)"


def sigma_from_slider(log10_sigma: float) -> float:
    """The log-scale slider's value (log10 sigma) as sigma, rounded to SIGMA_DIGITS significant digits."""
    return float(f"{10 ** float(log10_sigma):.{SIGMA_DIGITS}g}")


def read_log_sigma(value, lo: float = SIGMA_LOG_MIN, hi: float = SIGMA_LOG_MAX) -> tuple[float | None, str]:
    """The slider's typed value -> (log10 sigma clamped to [lo, hi], note); (None, note) for an empty box."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "the log10 sigma box is empty: nothing changed"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, f"log10 sigma must be a number, got {value!r}: nothing changed"
    if not math.isfinite(number):
        return None, f"log10 sigma must be a finite number, got {value!r}: nothing changed"
    if number < lo or number > hi:
        clamped = min(max(number, lo), hi)
        return clamped, f"log10 sigma {number:g} is outside [{lo:g}, {hi:g}]: clamped to {clamped:g}"
    return number, ""


def whole_number_in(name: str, value, lo: int, hi: int) -> int:
    """``value`` (typed or text) as an int in [lo, hi]; else NoisyNNError in one line, saying an empty box is empty
    and writing a huge number as 1e+30, not as its float's 31 digits."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise NoisyNNError(f"the {name} box is empty: type a whole number between {lo} and {hi}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NoisyNNError(f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise NoisyNNError(f"{name} must be a whole number, got {value!r}")
    if not lo <= number <= hi:
        raise NoisyNNError(f"{name} must be between {lo} and {hi}, got {number:.6g}")
    return int(number)


def check_setting(s: Setting, n_blocks: int | None = None) -> Setting:
    """The setting with numbers normalised; raises NoisyNNError with a one-line reason if it is bad."""
    if not (s.prompt or "").strip():
        raise NoisyNNError("the prompt is empty: type a few words for the model to continue")
    sigma = float(s.sigma) if s.sigma is not None else float("nan")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise NoisyNNError(f"sigma must be a finite number >= 0, got {s.sigma}")
    if not s.targets:
        raise NoisyNNError("choose at least one target (attention, mlp or head)")
    blocks = s.spec.blocks  # noise, its flags, scale, targets, blocks: the command line's checks
    s.converter_spec()  # the converter flags: AnalogIO's checks
    _ = s.attention  # the analog attention flags: their declarations' checks
    if blocks is not None and n_blocks is not None and blocks[-1] >= n_blocks:
        raise NoisyNNError(f"block {blocks[-1]} does not exist: this model has blocks 0-{n_blocks - 1}")
    return replace(
        s, sigma=sigma, prompt=s.prompt, blocks=_format_blocks(None if blocks is None else list(blocks)),
        seed=whole_number_in("seed", s.seed, 0, 2**31 - 1),
        max_new_tokens=whole_number_in("max new tokens", s.max_new_tokens, 1, MAX_NEW_TOKENS),
        top_k=whole_number_in("top-k", s.top_k, 1, MAX_TOP_K),
        eval_tokens=whole_number_in("evaluation tokens", s.eval_tokens, 16, MAX_EVAL_TOKENS),
        max_length=whole_number_in("perplexity window", s.max_length, 16, 8192))


def _format_blocks(blocks: list[int] | None) -> str:
    """[0, 1, 2, 3, 7] -> "0-3,7"; None -> "all"."""
    if blocks is None:
        return "all"
    parts, start = [], blocks[0]
    for prev, cur in zip(blocks, blocks[1:] + [None]):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(parts)


def noise_seed(seed: int) -> int:
    """Seed of the noise realization: the sweep's trial 0 at base seed ``seed`` (so its CLI reproduces it).

    It is derived (``derive_seed(seed, "noise", target, trial)``, a 64-bit value): the ``seed`` column of
    results.csv holds this, run.json's config holds the base seed typed in the page.
    """
    return Point(0, 0.0, 0).seed(int(seed))


def cli_command(s: Setting, out: str = "runs/ui-export", text_file: str | None = None,
                dataset: str | None = None) -> str:
    """The ``thermal_noise_simulation.py`` command that reproduces this setting's noisy model and numbers.

    One level (``--max_noise sigma --n_levels 1``), one trial (trial 0 of ``--seed``, the same noise
    realization), the device and converter flags given, perplexity on the same tokens; its greedy sample
    in samples.jsonl is the noisy continuation shown here.
    """
    argv = ["python", "thermal_noise_simulation.py", "--model", s.model]
    argv += ["--text_file", str(text_file)] if text_file else ["--dataset", dataset] if dataset else []
    argv += ["--noise_type", s.noise_type] + flag_argv(s.flags)
    argv += ["--scale", s.scale, "--targets", s.target_spec]
    if s.blocks != "all":
        argv += ["--blocks", s.blocks]
    if s.include_bias:
        argv += ["--include_bias"]
    argv += ["--max_noise", repr(float(s.sigma)), "--n_levels", "1", "--n_trials", "1", "--seed", str(s.seed),
             "--prompt", s.prompt, "--max_new_tokens", str(s.max_new_tokens),
             "--entropy_tokens", str(s.max_new_tokens), "--eval_tokens", str(s.eval_tokens),
             "--max_length", str(s.max_length), "--out", out]
    return shlex.join(argv)


class Cancelled(Exception):
    """A computation stopped because a newer request or the Stop button superseded it."""


class Requests:
    """Which computation is still wanted: the latest released sigma, and a stop counter.

    A ticket (``ticket(sigma)``) is cancelled when Stop was pressed after it was taken, or when a
    newer sigma was asked for (``want``) than the ticket's; ``sigma=None`` tickets (sweeps) only stop.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.wanted: float | None = None
        self.stops = 0

    def want(self, sigma: float) -> None:
        with self._lock:
            self.wanted = float(sigma)

    def stop(self) -> None:
        with self._lock:
            self.stops += 1
            self.wanted = None

    def ticket(self, sigma: float | None = None) -> Callable[[], bool]:
        stops = self.stops

        def cancelled() -> bool:
            return self.stops != stops or (sigma is not None and self.wanted is not None and self.wanted != sigma)
        return cancelled


TIME_UNITS = (("y", 365.25 * 86400), ("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0))


def human_time(seconds: float) -> str:
    """``seconds`` in the largest unit it reaches (y = 365.25 d): 3600 -> '1 h', 1e8 -> '3.17 y', 0.5 -> '0.5 s'."""
    for unit, size in TIME_UNITS:
        if seconds >= size or unit == "s":
            return f"{seconds / size:.3g} {unit}"
    raise AssertionError("unreachable")
