"""Temporal drift: generation while the noise level changes token by token. Gradual or a cliff?

    python temporal_drift.py                # = noisynn temporal_drift, embedded SmolLM2-135M

Before the forward pass that produces token t the targeted weights are set by a schedule
sigma_t (``--schedule``: linear, exponential, step, sine, from ``--start_sigma`` to
``--end_sigma`` over ``--total_tokens``, as in the original toolkit). Two semantics:

* **redraw** (default): ``W_t = W_clean + sigma_t * u * Z_t``, a fresh draw Z_t at every step
  around the clean weights (the noise of step t forgets step t - 1);
* **accumulate** (``--accumulate``): a random walk, ``W_0 = W_clean + sigma_0 * u * Z_0`` and
  ``W_t = W_{t-1} + u * sqrt(s_t^2 - s_{t-1}^2) * Z_t`` with ``s_t = max(s_{t-1}, sigma_t)``:
  for Gaussian noise the total deviation from the clean weights has std ``s_t`` (exactly
  sigma_t on a non-decreasing schedule), and when the schedule falls the walk stands still;
  drift is never undone. ``effective_sigma`` in results.csv is ``s_t``.

Z_t is seeded from (seed, trial, step) and is the same for every schedule and both semantics
(common random numbers). Decoding is KV-cached: keys and values of earlier tokens stay as
they were computed under the earlier weights; only the current token sees W_t. Generation
does not stop at EOS, so every trace has ``--total_tokens`` steps.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch

from ...runs.context import end_run, start
from ...evaluation import DEFAULT_PROMPT, decode
from ...errors import NoisyNNError
from ...inject import NoiseInjector
from ...noise import is_additive
from ...options.parser import ArgumentParser
from ...options.flags import add_model_args, add_noise_args, add_run_args, prompt_text
from ...options.argtypes import nonneg_float, positive_int
from ...options.script import script_main
from ...runs.read import read_run
from ...runs.runner import Point, TrialResult, grid, leading_columns, progress, run_sweep
from ...seeding import derive_seed
from ...spec import spec_from_args
from . import report

EXPERIMENT = "temporal_drift"
METRICS = ("entropy_bits", "logprob", "repetition", "finite")
EXTRA = ("schedule", "semantics", "step", "effective_sigma", "token_id", "token")
# Trial k starts from PROMPTS[k % 5] unless --prompt is given: with one shared prompt the greedy
# texts of all trials coincide while sigma is small, so their per-token entropies rise and fall
# together with the content and the median over trials cannot average that out.
PROMPTS = (DEFAULT_PROMPT, "The river flows through the old town, and", "A good recipe for bread begins with",
           "The first thing the engineers noticed was", "In the winter of that year, the village")


# ---------------------------------------------------------------------------------------------- schedules
# name -> f(step, total_steps, start_sigma, end_sigma) -> sigma at that step. Add an entry to add a schedule.

def _progress(step: int, total: int) -> float:
    return step / max(total - 1, 1)


def linear(step: int, total: int, start: float, end: float) -> float:
    """Straight line from ``start`` (step 0) to ``end`` (last step)."""
    return start + (end - start) * _progress(step, total)


def exponential(step: int, total: int, start: float, end: float) -> float:
    """Geometric from ``start`` to ``end`` when both are > 0; else ``start + (end - start)(e^{3p} - 1)/(e^3 - 1)``."""
    p = _progress(step, total)
    if start > 0 and end > 0:
        return start * (end / start) ** p
    return start + (end - start) * math.expm1(3 * p) / math.expm1(3)


def step_schedule(step: int, total: int, start: float, end: float) -> float:
    """Three plateaus: ``start`` for the first third of the steps, then the midpoint, then ``end``."""
    p = _progress(step, total)
    if p < 1 / 3:
        return start
    if p < 2 / 3:
        return (start + end) / 2
    return end


def sine(step: int, total: int, start: float, end: float) -> float:
    """Thermal cycling: the linear ramp plus ``0.3 (end - start) sin(4 pi p)`` (two cycles), never below 0."""
    p = _progress(step, total)
    wobble = 0.0 if p in (0.0, 1.0) else 0.3 * (end - start) * math.sin(4 * math.pi * p)
    return max(0.0, linear(step, total, start, end) + wobble)


SCHEDULES: dict[str, Callable[[int, int, float, float], float]] = {
    "linear": linear, "exponential": exponential, "step": step_schedule, "sine": sine,
}


def sigma_schedule(name: str, total: int, start: float, end: float) -> list[float]:
    return [float(SCHEDULES[name](t, total, start, end)) for t in range(total)]


def parse_schedules(text: str) -> list[str]:
    """``linear``, a comma list, or ``all``; unknown names list the known ones."""
    names = list(SCHEDULES) if text.strip() == "all" else [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in SCHEDULES]
    if bad or not names:
        raise NoisyNNError(f"unknown schedule '{','.join(bad) or text}'; known: {', '.join(SCHEDULES)}, all")
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------- one trace

def rolling_repetition(tokens, window: int = 16, n: int = 3) -> list[float]:
    """Per step: the share of the last ``window`` tokens whose ``n``-gram (ending there) already occurred earlier.

    0 while the text is new, 1 when it is stuck in a loop. Steps before the first full
    n-gram count as new. Computed on generated token ids only (not the prompt).
    """
    seen, flags, out = set(), [], []
    tokens = [int(t) for t in tokens]
    for i in range(len(tokens)):
        repeat = False
        if i >= n - 1:
            gram = tuple(tokens[i - n + 1: i + 1])
            repeat = gram in seen
            seen.add(gram)
        flags.append(repeat)
        recent = flags[max(0, i - window + 1): i + 1]
        out.append(sum(recent) / len(recent))
    return out


class Drift:
    """Sets the model's weights for step t of one trial: ``redraw`` or ``accumulate`` semantics (module doc)."""

    def __init__(self, injector: NoiseInjector, sigmas: list[float], trial_seed: int, accumulate: bool):
        self.injector, self.sigmas, self.trial_seed, self.accumulate = injector, sigmas, trial_seed, accumulate
        self.effective: list[float] = []
        self._level = 0.0  # accumulate: std of the walk so far

    def step_seed(self, t: int) -> int:
        return derive_seed(self.trial_seed, "step", t)

    def __call__(self, t: int) -> None:
        sigma = self.sigmas[t]
        inj = self.injector
        if t == 0:
            inj.restore()
            self._level = 0.0
        if self.accumulate:
            level = max(self._level, sigma)
            increment = math.sqrt(max(level ** 2 - self._level ** 2, 0.0))
            if increment > 0:
                inj.draw(self.step_seed(t))
                inj.accumulate(increment)
            self._level = level
            self.effective.append(level)
        else:
            if sigma == 0:
                inj.restore()
            else:
                inj.realize(self.step_seed(t), sigma)
            self.effective.append(sigma)


def run_trace(model, tokenizer, injector: NoiseInjector, sigmas: list[float], trial_seed: int, *, accumulate: bool,
              prompt: str, temperature: float = 0.0, sample_seed: int = 0, rep_window: int = 16) -> dict:
    """Generate ``len(sigmas)`` tokens with drifting weights; returns per-step lists and the text.

    The model is restored to its clean weights afterwards (also on error).
    """
    drift = Drift(injector, sigmas, trial_seed, accumulate)
    gen_rng = torch.Generator(device="cpu").manual_seed(int(sample_seed))
    try:
        gen = decode(model, tokenizer, [prompt], len(sigmas), greedy=temperature == 0, temperature=temperature or 1.0,
                     top_k=50 if temperature else None, generator=gen_rng, before_step=drift, stop_at_eos=False)
    finally:
        injector.restore()
    ids = gen.token_ids[0].tolist()
    return {"sigma": list(sigmas), "effective_sigma": drift.effective, "token_id": ids,
            "token": [tokenizer.decode([i]) for i in ids], "entropy_bits": gen.entropy_bits[0].tolist(),
            "logprob": gen.logprob[0].tolist(), "repetition": rolling_repetition(ids, rep_window),
            "text": gen.texts[0]}


# ---------------------------------------------------------------------------------------------- command line

def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p)
    g = p.add_argument_group("drift")
    g.add_argument("--schedule", default="linear",
                   help=f"{', '.join(SCHEDULES)}, a comma list, or all (default: %(default)s)")
    g.add_argument("--start_sigma", type=nonneg_float, default=0.0, help="sigma at the first token (default: %(default)s)")
    g.add_argument("--end_sigma", type=nonneg_float, default=0.05, help="sigma at the last token (default: %(default)s)")
    g.add_argument("--total_tokens", type=positive_int, default=100, help="tokens generated (default: %(default)s)")
    g.add_argument("--accumulate", action="store_true",
                   help="random-walk semantics: each step adds an increment to the previous weights (default: redraw "
                        "around the clean weights at every step)")
    g.add_argument("--prompt", type=prompt_text, default=None,
                   help="prompt of every trial (default: trial k uses the k-th of 5 built-in prompts, cycled)")
    g.add_argument("--temperature", type=nonneg_float, default=0.0,
                   help="0 = greedy (default); > 0 samples with top-k 50 (seeded per trial)")
    g.add_argument("--window", type=positive_int, default=15,
                   help="tokens of the rolling median and of the jump in the verdict (default: %(default)s)")
    g.add_argument("--rep_window", type=positive_int, default=16,
                   help="tokens of the rolling repetition measure (default: %(default)s)")
    add_run_args(p)


def prompt_of(args, trial: int) -> str:
    return args.prompt if args.prompt is not None else PROMPTS[trial % len(PROMPTS)]


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="temporal_drift.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    return build_parser().parse_args(argv)


def check_accumulate(args) -> None:
    """``--accumulate`` needs an additive noise (a device model programs its conductances once)."""
    if args.accumulate and not is_additive(spec_from_args(args).noise):
        raise NoisyNNError(f"--accumulate needs an additive noise; '{args.noise_type}' is a device model")


def run(argv=None) -> int:
    args = parse(argv)
    schedules = parse_schedules(args.schedule)
    semantics = "accumulate" if args.accumulate else "redraw"
    t_start = time.perf_counter()
    args._prompts = sorted({prompt_of(args, t) for t in range(args.n_trials)})  # checked against the context
    ctx = start(args, EXPERIMENT, METRICS, key=("schedule", "trial", "step"), extra_columns=EXTRA, meta={
        "semantics": semantics,
        "semantics_definition": {
            "redraw": "W_t = W_clean + sigma_t * u * Z_t, a fresh Z_t each step",
            "accumulate": "W_0 = W_clean + sigma_0 u Z_0; W_t = W_{t-1} + u sqrt(s_t^2 - s_{t-1}^2) Z_t, "
                          "s_t = max(s_{t-1}, sigma_t) (effective_sigma); never undone"}[semantics],
        "schedules": {name: (SCHEDULES[name].__doc__ or "").strip() for name in schedules},
        "noise_seeds": "Z_t seeded from derive_seed(derive_seed(seed, 'drift', trial), 'step', t): the same for "
                       "every schedule and both semantics",
        "kv_cache": "keys/values of earlier tokens stay as computed under the earlier weights",
        "eos": "generation does not stop at EOS (fixed-length traces)",
        "decoding": "greedy" if args.temperature == 0 else f"sampled, temperature {args.temperature}, top-k 50",
        "prompts": [prompt_of(args, t) for t in range(args.n_trials)],
        "verdict_rule": report.DRIFT_VERDICT_RULE}, check=lambda lm, text: check_accumulate(args))
    lm, folder = ctx.lm, ctx.folder
    injector = NoiseInjector(lm.model, ctx.spec, selected=ctx.targets)
    folder.update_meta(injection=injector.describe())
    trial_seed = lambda trial: derive_seed(args.seed, "drift", trial)  # noqa: E731

    def trace_rows(point: Point) -> TrialResult:
        """One trace (a point: schedule = target, trial): one row per generated token."""
        name, trial = point.target, point.trial
        sigmas = sigma_schedule(name, args.total_tokens, args.start_sigma, args.end_sigma)
        trace = run_trace(lm.model, lm.tokenizer, injector, sigmas, trial_seed(trial), accumulate=args.accumulate,
                          prompt=prompt_of(args, trial), temperature=args.temperature,
                          sample_seed=derive_seed(args.seed, "sampling", trial), rep_window=args.rep_window)
        rows = []
        for t in range(args.total_tokens):
            h, lp = trace["entropy_bits"][t], trace["logprob"][t]
            rows.append({"sigma": trace["sigma"][t], "step": t, "effective_sigma": trace["effective_sigma"][t],
                         "token_id": trace["token_id"][t], "token": trace["token"][t], "entropy_bits": h,
                         "logprob": lp, "repetition": trace["repetition"][t],
                         "finite": bool(np.isfinite([h, lp]).all())})
        return TrialResult({}, [{"semantics": semantics, "prompt": prompt_of(args, trial), "text": trace["text"]}],
                           rows)

    leading = leading_columns(EXPERIMENT, args.model, args.noise_type, args.scale, args.seed, lambda p: {
        "seed": trial_seed(p.trial), "schedule": p.target, "semantics": semantics})
    steps = [{"step": t} for t in range(args.total_tokens)]
    t0 = time.perf_counter()
    try:  # a trace is a point (schedule x trial): resumed, split across processes and merged like any other
        run_sweep(folder, grid([args.start_sigma], args.n_trials, schedules), trace_rows, leading, ctx.done_rows,
                  progress("traces", "trace", args.quiet), parts=lambda p: steps)
    finally:
        injector.restore()
    gen_seconds = round(time.perf_counter() - t0, 1)
    if not folder.is_main:  # another process merged the shards and draws the figures
        return 0
    verdicts = report.drift_verdicts(folder.path)
    figures = report.plot(folder.path)
    table = report.format_drift_verdicts(verdicts) + "".join(
        f"\n\n[{record['schedule']}, trial 0] {(record['prompt'] + record['text'])[:400]!r}"
        for record in read_run(folder.path).samples() if record.get("trial") == 0)
    return end_run(ctx, figures, table, ["results.csv: one row per trial x step", "samples.jsonl"],
                   verdicts=verdicts, generation_seconds=gen_seconds,
                   wall_seconds=round(time.perf_counter() - t_start, 1))


def main(argv=None) -> int:
    return script_main(run, argv)
