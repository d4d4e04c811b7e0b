"""Perplexity and text at times after programming the model onto PCM, with and without drift compensation.

    python drift_over_time.py            # = noisynn drift_over_time, embedded SmolLM2-135M

Each trial programs the targeted weights once (programming noise and drift exponents drawn per device,
see noisynn.noise.pcm) and reads the same programmed conductances at every time on the list; read noise is
drawn afresh at each time. Every time is evaluated without and with global drift compensation, which
share the read. Digital references (float, and symmetric per-channel int-b weights) are evaluated once.

``--presets none,aihwkit_default,aihwkit_hwa,afm`` reads the same programmed conductances through each analog
setting in one run (a ``preset`` column): ``none`` = no preset (the weights only, unless converter flags are given),
a name = ``--analog_preset NAME``; converter flags given override the fields of every entry.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ...runs.context import end_run, start
from ...analog.hooks import install_converters
from ...errors import NoisyNNError
from ...evaluation import DEFAULT_PROMPT, quality_metrics
from ...inject import NoiseInjector, noisy_weights
from ...noise import bits_to_step, drift_factor, time_label
from ...noise.units import parse_times
from ...options.parser import ArgumentParser
from ...options.flags import add_converter_args, add_model_args, add_noise_args, add_run_args, prompt_text
from ...options.argtypes import nonneg_float, positive_int
from ...options.script import script_main
from ...runs.runner import Point, TrialResult, leading_columns, progress, run_sweep
from ...analog.presets import DEVICE_FIELDS, PRESETS
from ...spec import converter_spec_from_args, make_converter_spec, preset_device_flags, spec_from_args
from ...analog.setting import CONVERTER_FLAGS, SHARED_CONVERTER_FLAGS
from . import report

EXPERIMENT = "drift_over_time"
METRICS = ("perplexity", "nll", "bits_per_byte", "eval_tokens", "entropy_bits", "distinct_1", "distinct_2",
           "repetition", "finite")
EXTRA = ("condition", "preset", "t_seconds", "t_label", "compensation", "drift_ratio", "alpha_mean")
KEY = ("condition", "preset", "t_seconds", "compensation", "trial")
DIGITAL = "digital"  # the preset column of the digital reference rows (no converters)
DEFAULT_TIMES = "1s,1min,1h,1d,1mo,1y"


@dataclass(frozen=True)
class DriftPoint(Point):
    """A read at ``t_seconds`` (level = index of the time) through analog setting ``preset``, with or without
    compensation, or a digital row.

    The noise seed depends on the trial only, so every preset, time and both compensation settings read the
    same programmed conductances.
    """

    condition: str = "pcm"
    preset: str = DIGITAL
    t_seconds: float = 0.0
    compensation: bool = False


def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p, noise_type="pcm", scale="relative_channel")
    add_converter_args(p)
    g = p.add_argument_group("drift over time")
    g.add_argument("--times", default=DEFAULT_TIMES,
                   help="read times after programming, comma list of seconds or NUMBER+unit (s, min, h, d, "
                        "mo = 30 d, y = 365 d) (default: %(default)s)")
    g.add_argument("--presets", default=None,
                   help="analog settings to read every programming through, comma list of 'none' (no preset: the "
                        f"weights only unless converter flags are given) and {', '.join(PRESETS)}; converter flags "
                        "given override each entry's fields; not with --analog_preset / --analog_io (default: one "
                        "setting, from the converter flags)")
    g.add_argument("--noise_scale", type=nonneg_float, default=1.0,
                   help="sigma: multiplier of the device noise and drift (1 = as measured) (default: %(default)s)")
    g.add_argument("--compensation", choices=("both", "off", "on"), default="both",
                   help="global drift compensation: evaluate both, or only off / on (default: %(default)s)")
    g.add_argument("--digital_bits", default="8,4",
                   help="digital references: symmetric per-channel weight bits, comma list, '' for none "
                        "(default: %(default)s); the float model is always evaluated")
    g.add_argument("--prompt", type=prompt_text, default=DEFAULT_PROMPT,
                   help="prompt for generated text (default: %(default)r)")
    g.add_argument("--n_samples", type=positive_int, default=2, help="sampled generations per point (default: %(default)s)")
    g.add_argument("--max_new_tokens", type=positive_int, default=40, help="tokens per generation (default: %(default)s)")
    g.add_argument("--entropy_tokens", type=positive_int, default=10,
                   help="greedy steps averaged for the entropy (default: %(default)s)")
    g.add_argument("--temperature", type=nonneg_float, default=0.8, help="sampling temperature (default: %(default)s)")
    add_run_args(p, n_trials=5)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="drift_over_time.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    return build_parser().parse_args(argv)


def parse_bits(text: str) -> list[int]:
    try:
        bits = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise NoisyNNError(f"--digital_bits takes a comma list of integers, got '{text}'") from None
    for b in bits:
        bits_to_step(b)
    return bits


def points(times: list[float], n_trials: int, compensation: str, bits: list[int],
           presets: list[str] = ("none",)) -> list[DriftPoint]:
    """Digital rows, then per trial (one programming), per preset, per time: off and / or on."""
    comps = {"both": (False, True), "off": (False,), "on": (True,)}[compensation]
    out = [DriftPoint(0, 0.0, 0, condition="float")]
    out += [DriftPoint(0, bits_to_step(b), 0, condition=f"int{b}") for b in bits]
    out += [DriftPoint(i, 0.0, trial, condition="pcm", preset=preset, t_seconds=t, compensation=c)
            for trial in range(n_trials) for preset in presets for i, t in enumerate(times) for c in comps]
    return out


def preset_specs(args) -> dict:
    """{preset label: ConverterSpec or None} of the run, in order.

    Without ``--presets``: one entry from the converter flags as every experiment reads them, labelled with
    ``--analog_preset`` (``aihwkit_default`` for ``--analog_io``) or ``none``. With ``--presets``: per entry,
    ``none`` = the converter flags alone (None when no flag is given: the weights only), a preset name = the
    preset with the given flags overriding its fields, as ``--analog_preset NAME`` would give.
    """
    if args.presets is None:
        label = getattr(args, "analog_preset", None) or ("aihwkit_default" if getattr(args, "analog_io", False)
                                                          else "none")
        return {label: converter_spec_from_args(args)}
    for flag in ("analog_preset", "analog_io"):
        if getattr(args, flag, None):
            raise NoisyNNError(f"give --presets or --{flag}, not both (name the preset in --presets)")
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    unknown = [n for n in names if n != "none" and n not in PRESETS]
    if not names or unknown:
        raise NoisyNNError(f"--presets takes a comma list of none, {', '.join(PRESETS)}; got '{args.presets}'")
    if len(set(names)) != len(names):
        raise NoisyNNError(f"--presets needs distinct names, got '{args.presets}'")
    flags = {k: getattr(args, k, None) for k in CONVERTER_FLAGS + SHARED_CONVERTER_FLAGS}
    return {n: make_converter_spec(flags, preset=None if n == "none" else n,
                                   per_channel=args.scale == "relative_channel", text_file=getattr(args, "text_file", None),
                                   dataset=getattr(args, "dataset", None), max_length=getattr(args, "max_length", 512))
            for n in names}


def preset_mappings(args) -> dict:
    """{preset label: (scale, device params, record)}: each entry's weight-to-conductance mapping.

    A preset is a whole setting (noisynn.analog.presets): its mapping, pair, compensation method and tiles, unless the
    flag was given (``noisynn.spec.preset_device_flags``); ``none`` keeps the flags (and the experiment's
    default ``--scale``) as they are.
    """
    defaulted = getattr(args, "_defaulted", set())
    given = {k: getattr(args, k) for k in DEVICE_FIELDS if hasattr(args, k) and k not in defaulted}
    out = {}
    for label in preset_specs(args):
        name = None if label == "none" else label
        values, record = preset_device_flags(name, args.noise_type, given) if name else (dict(given), {})
        scale = values.pop("scale", args.scale)
        out[label] = (scale, values, record)
    return out


def drift_reference(times: list[float], nu: float = 0.049, n: int = 60) -> dict:
    """The drift factor of a device at gT = 1 with nu fixed at its mean, on a log grid (for the figure)."""
    lo, hi = max(min(times), 1.0), max(max(times), 2.0)
    grid = [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
    return {"nu": nu, "t_seconds": grid, "factor": [drift_factor(t, nu) for t in grid]}


def check_args(args) -> tuple[list[float], list[int], dict]:
    for flag in ("t_seconds", "drift_compensation"):
        if hasattr(args, flag):
            raise NoisyNNError(f"--{flag} is set by this experiment; use --times and --compensation")
    times = parse_times(args.times)
    # set per point by this experiment, seen by the flags' combination rules (--compensation_method needs it)
    args._fixed = {"drift_compensation": args.compensation != "off"}
    noise = spec_from_args(args).noise
    if not (hasattr(noise, "t_seconds") and hasattr(noise, "drift_compensation")):
        raise NoisyNNError(f"--noise_type {args.noise_type} has no read time; use a device model such as pcm")
    converter_spec_from_args(args)
    specs = preset_specs(args)
    mappings = preset_mappings(args)
    for label, (scale, params, _) in mappings.items():  # every entry's mapping is checked before the folder exists
        spec_from_args(argparse.Namespace(**{**vars(args), **params, "scale": scale, "analog_preset": None,
                                             "analog_io": False}))
    return times, parse_bits(args.digital_bits), specs


def run(argv=None) -> int:
    args = parse(argv)
    times, bits, specs = check_args(args)
    ctx = start(args, EXPERIMENT, METRICS, key=KEY, extra_columns=EXTRA, meta={
        "times_s": times, "time_labels": [time_label(t) for t in times],
        "sigma": "pcm rows: multiplier of the device's programming-noise std, drift exponents and read-noise std "
                 "(1 = as measured); float row: 0 (clean); intB rows: quantization step in units of the "
                 "per-channel max|W| (1 / (2^(B-1) - 1))",
        "programming": "once per trial: every time and both compensation settings read the same programmed "
                       "conductances and drift exponents; read noise is drawn afresh at each time (seeded by "
                       "trial, layer and time) and shared by the two compensation settings",
        "compensation": {
            "method": getattr(args, "compensation_method", "readout"),
            "readout": "aihwkit's: per tile, alpha = mean|y_prog| / mean|y_t| of one-hot probes sent through the "
                       "tile's analog forward (converters and their noise included), multiplied into the tile output "
                       "after the ADC; on layers without converters the exact sum|W_prog| / sum|W_t| per tile, "
                       "folded into the weights (noisynn.analog.compensation)",
            "exact": "sum|W_prog| / sum|W_t| per tile folded into the weights (before output noise and ADC)"},
        "drift_ratio": "sum|W_t| / sum|W_prog| over all targeted tensors before compensation",
        "digital_bits": bits,
        "presets": {label: None if spec is None else spec.io.describe() for label, spec in specs.items()},
        "mappings": {label: {"scale": scale, **params, **({"resolution": record} if record else {})}
                     for label, (scale, params, record) in preset_mappings(args).items()},
        "drift_reference": drift_reference(times),
        "sampling": {"temperature": args.temperature, "top_k": 50, "n_samples": args.n_samples,
                     "max_new_tokens": args.max_new_tokens}})
    lm = ctx.lm
    specs = preset_specs(args)  # again: start() has fitted --max_length (the calibration passes' window)
    mappings = preset_mappings(args)
    injector = NoiseInjector(lm.model, ctx.spec, selected=ctx.targets)
    # One set of converter hooks per preset, all installed once (calibration included) and switched on one at a
    # time: each is built (and calibrated) while the others are off, so no preset sees another's forward.
    converters = {}
    for label, spec in specs.items():
        converters[label] = install_converters(spec, lm, injector.targets, seed=args.seed)
        if converters[label] is not None:
            converters[label].set_enabled(False)
    active = {"preset": None}

    def use(preset: str | None) -> None:
        """Switch on the converters of ``preset`` (None: none, the digital rows) and let drift compensation
        measure through them (noisynn.analog.compensation), as aihwkit's tiles do."""
        if active["preset"] == preset:
            return
        if preset is not None:  # the preset's mapping (a new draw of the same seed when it differs)
            scale, params, _ = mappings[preset]
            injector.set_mapping(scale, **params)
        for label, hooks in converters.items():
            if hooks is not None:
                hooks.set_enabled(label == preset)
        injector.attach(converters.get(preset))
        active["preset"] = preset

    described = {label: None if hooks is None else hooks.describe() for label, hooks in converters.items()}
    single = next(iter(converters.values())) if len(converters) == 1 else None
    ctx.folder.update_meta(injection=injector.describe(), converters_by_preset=described,
                           **({"converters": single.describe()} if single else {}))
    leading = leading_columns(EXPERIMENT, args.model, args.noise_type, args.scale, args.seed, lambda p: {
        "noise_type": {"pcm": args.noise_type, "float": "none"}.get(p.condition, "quantize"),
        "sigma": args.noise_scale if p.condition == "pcm" else p.sigma,
        "scale": mappings[p.preset][0] if p.condition == "pcm" else args.scale,
        "condition": p.condition, "preset": p.preset, "t_seconds": p.t_seconds,
        "t_label": time_label(p.t_seconds) if p.condition == "pcm" else "digital", "compensation": p.compensation})

    def evaluate(point: DriftPoint) -> tuple[dict, list[dict]]:
        metrics, samples, greedy = quality_metrics(
            lm.model, lm.tokenizer, ctx.eval_ids, args.prompt, n_samples=args.n_samples,
            max_new_tokens=args.max_new_tokens, entropy_tokens=args.entropy_tokens, temperature=args.temperature,
            sample_seed=point.sample_seed(args.seed), max_length=args.max_length)
        records = [{"kind": "greedy", "text": greedy}] + [{"kind": "sampled", "text": t} for t in samples]
        return metrics, [{"prompt": args.prompt, "t_label": leading(point)["t_label"], **r} for r in records]

    def trial(point: DriftPoint) -> TrialResult:
        if point.condition != "pcm":  # digital reference: clean weights, optionally quantized, no converters
            injector.restore()
            use(None)
            with noisy_weights(lm.model, point.sigma, "quantize", scale=args.scale, targets=args.targets,
                               include_bias=args.include_bias):
                metrics, samples = evaluate(point)
            return TrialResult({**metrics, "drift_ratio": 1.0, "alpha_mean": 1.0}, samples)
        use(point.preset)
        hooks = converters[point.preset]
        if hooks:
            hooks.reseed(point.sample_seed(args.seed))
        injector.noise.t_seconds = point.t_seconds
        injector.noise.drift_compensation = point.compensation
        injector.realize(point.seed(args.seed), args.noise_scale)
        states = [s for s in injector.states if hasattr(s, "l1_read")]
        ratio = sum(s.l1_read for s in states) / sum(s.l1_programmed for s in states) if states else float("nan")
        alpha = sum(s.alpha for s in states) / len(states) if states else float("nan")
        metrics, samples = evaluate(point)
        return TrialResult({**metrics, "drift_ratio": ratio, "alpha_mean": alpha}, samples)

    bar = progress("drift", "point", args.quiet)
    try:
        rows = run_sweep(ctx.folder, points(times, args.n_trials, args.compensation, bits, list(specs)), trial,
                         leading, ctx.done_rows, bar)
    finally:
        injector.restore()
        for hooks in converters.values():
            if hooks is not None:
                hooks.remove()
    if not ctx.folder.is_main:  # another process merged the shards and draws the figures
        return 0
    figures = report.plot(ctx.folder.path)
    return end_run(ctx, figures, report.format_drift_table(rows), ["results.csv", "summary.csv", "samples.jsonl"])


def main(argv=None) -> int:
    return script_main(run, argv)
