"""Analog attention: perplexity and far-back recall against KV-cache noise, leakage and window, next to weight noise.

    python analog_attention.py          # = noisynn analog_attention, embedded SmolLM2-135M

The attention products run as analog MVMs on a gain-cell KV store (noisynn.analog.attention, .kv_store; Leroux et
al., Nat. Comput. Sci. 2025). Each condition changes one knob of the base setting (the attention flags given,
e.g. ``--kv_bits 8``; none = every knob off) and sweeps it:

  float     the model as loaded (digital attention, clean weights): the reference
  base      analog attention with the base setting only (with every knob off: equal to float, a check)
  weight    digital attention, Gaussian weight noise of sigma on the targeted projections (--scale units;
            default relative: sigma x max|W| per tensor, the same fraction of full scale as the cache noise)
  write     write noise std of every stored K/V cell (units of its range r), drawn once per trial
  read      read noise std at every use (aihwkit additive_constant on both MVMs)
  output    output noise std of both attention MVMs
  leak      retention tau in tokens (lognormal spread --leak_spread across stored rows)
  window    sliding window of stored keys
  bits      write DAC bits of K and V

Per point: perplexity on the evaluation text, the recall probe (noisynn.recall) at each distance, and with
``--tasks`` lm-evaluation-harness tasks (value, stderr, items per task and metric, as task_accuracy). Noise tables
(write noise, retention times, weight noise) are drawn once per trial and scaled across levels (common random
numbers); deterministic conditions (window, bits, leak without spread) run one trial.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import torch

from ...analog.attention import install_attention
from ...analog.kv_store import AttentionSetting
from ...errors import NoisyNNError
from ...evaluation import cache_names, compute_perplexity, tokenize
from ...inject import NoiseInjector
from ...options.argtypes import nonneg_float, positive_int
from ...options.flags import add_attention_args, add_model_args, add_noise_args, add_run_args, name_list
from ...options.parser import ArgumentParser
from ...options.script import script_main
from ...recall import recall_items, recall_scores
from ...runs.context import end_run, start
from ...runs.runner import Point, TrialResult, leading_columns, progress, run_sweep
from ...task_sets import check_context, harness_context, lm_eval_call, prepare_tasks, tidy_rows
from . import report

EXPERIMENT = "analog_attention"
CONDITIONS = ("float", "base", "weight", "write", "read", "output", "leak", "window", "bits")
SWEPT = {"weight": "sigma", "write": "kv_write_noise", "read": "kv_read_noise", "output": "attn_out_noise",
         "leak": "kv_tau", "window": "attn_window", "bits": "kv_bits"}
SETTING_COLUMNS = ("kv_bits", "kv_tau", "kv_tau_spread", "attn_window", "kv_write_noise", "kv_read_noise",
                   "attn_out_noise")
EXTRA = ("condition", "probe", "distance", "task", "metric") + SETTING_COLUMNS
KEY = ("condition", "sigma", "trial", "probe", "distance", "task", "metric")
METRICS = ("perplexity", "nll", "bits_per_byte", "eval_tokens", "recall_acc", "recall_nll", "n_scored", "value",
           "stderr", "n_items", "finite")
BLANK = {m: math.nan for m in METRICS if m not in ("eval_tokens", "n_scored", "n_items", "finite")}
DEFAULTS = {"weight": "0.01,0.03,0.1,0.3", "write": "0.003,0.01,0.03,0.1", "read": "0.003,0.01,0.03,0.1",
            "output": "0.01,0.03,0.1,0.3", "leak": "4096,1024,256,64,16", "window": "256,64,16", "bits": "8,6,4,3"}


@dataclass(frozen=True)
class AttentionPoint(Point):
    """One knob of ``condition`` at ``sigma`` (the swept value, in that knob's units), one realization."""

    condition: str = "float"


def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p, scale="relative")
    add_attention_args(p)
    g = p.add_argument_group("analog attention experiment")
    g.add_argument("--conditions", type=name_list, default=["float", "base", "weight", "write", "read", "leak",
                                                            "window"],
                   help=f"conditions to run, comma list of {', '.join(CONDITIONS)} (default: %(default)s)")
    for cond, levels in DEFAULTS.items():
        g.add_argument(f"--{cond}_levels", default=levels,
                       help=f"the {cond} condition's levels of {SWEPT[cond]}, comma list (default: %(default)s)")
    g.add_argument("--leak_spread", type=nonneg_float, default=0.5,
                   help="kv_tau_spread of the leak condition (lognormal sigma of ln tau; default: %(default)s)")
    g.add_argument("--recall_distances", default="0,256,1024",
                   help="recall probe distances in tokens, comma list; '' for none (default: %(default)s)")
    g.add_argument("--recall_items", type=positive_int, default=8, help="recall probe items (default: %(default)s)")
    g.add_argument("--recall_on", type=name_list, default=["float", "base", "leak", "window"],
                   help="conditions that also run the recall probe (default: %(default)s)")
    g.add_argument("--tasks", type=name_list, default=[],
                   help="lm-eval tasks scored at every point, comma list (e.g. the offline noisynn_cloze,"
                        "noisynn_next_sentence; default: none)")
    g.add_argument("--limit", type=positive_int, default=40, help="items per task (default: %(default)s)")
    g.add_argument("--task_batch_size", type=positive_int, default=8,
                   help="lm-eval's request batch size (default: %(default)s)")
    add_run_args(p)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="analog_attention.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    return build_parser().parse_args(argv)


def number_list(text: str, flag: str, integer: bool = False) -> list:
    """A comma list of numbers > 0 (integers where asked), one line on error."""
    try:
        values = [int(v) if integer else float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise NoisyNNError(f"--{flag} takes a comma list of {'integers' if integer else 'numbers'}, got '{text}'") \
            from None
    if any(not (math.isfinite(v) and v > 0) for v in values):
        raise NoisyNNError(f"--{flag}: every value must be a finite number > 0, got '{text}'")
    return values


def check_args(args) -> dict:
    """{condition: levels} of the run, every level checked by its field's declaration, before the folder."""
    unknown = [c for c in args.conditions + args.recall_on if c not in CONDITIONS]
    if unknown:
        raise NoisyNNError(f"--conditions / --recall_on: unknown '{unknown[0]}' (known: {', '.join(CONDITIONS)})")
    grid = {"float": [0.0]} if "float" in args.conditions else {}
    if "base" in args.conditions:
        grid["base"] = [0.0]
    for cond in SWEPT:
        if cond in args.conditions:
            integer = cond in ("window", "bits")
            grid[cond] = number_list(getattr(args, f"{cond}_levels"), f"{cond}_levels", integer)
            if cond != "weight":
                for level in grid[cond]:
                    AttentionSetting.from_flags({SWEPT[cond]: level})
    args._distances = distance_list(args.recall_distances)
    return grid


def distance_list(text: str) -> list[int]:
    """--recall_distances: a comma list of integers >= 0 ('' = no recall probe)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise NoisyNNError(f"--recall_distances takes a comma list of integers, got '{text}'") from None
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise NoisyNNError(f"--recall_distances: distinct integers >= 0, got '{text}'")
    return values


def setting_of(base: AttentionSetting, point: AttentionPoint, spread: float) -> AttentionSetting | None:
    """The attention setting of a point; None for the digital conditions."""
    if point.condition in ("float", "weight"):
        return None
    if point.condition == "base":
        return base
    value = int(point.sigma) if point.condition in ("window", "bits") else point.sigma
    extra = {"kv_tau_spread": spread} if point.condition == "leak" else {}
    return replace(base, **{SWEPT[point.condition]: value, **extra})


def is_random(setting: AttentionSetting | None, condition: str) -> bool:
    """Whether the point's realizations differ (noise drawn), so that several trials mean something."""
    if condition == "weight":
        return True
    if setting is None:
        return False
    return bool(setting.kv_write_noise or setting.kv_read_noise or setting.attn_out_noise
                or (setting.kv_tau is not None and setting.kv_tau_spread))


def points(grid: dict, base: AttentionSetting, spread: float, n_trials: int) -> list[AttentionPoint]:
    out = []
    for cond, levels in grid.items():
        for i, level in enumerate(levels):
            probe = AttentionPoint(i, float(level), 0, condition=cond)
            trials = n_trials if is_random(setting_of(base, probe, spread), cond) else 1
            out += [replace(probe, trial=t) for t in range(trials)]
    return out


@torch.no_grad()
def decode_check(model, ids: torch.Tensor, attention) -> float:
    """max |logits| difference between one full-sequence forward and cached decoding of the same tokens, with the
    store's write noise and leak (read noise draws differ by design, so this runs without read or output noise)."""
    full = model(ids, use_cache=False).logits[0, -9:-1]  # positions T-9 .. T-2, as the steps below
    given, returned = cache_names(model)
    out = model(ids[:, :-8], use_cache=True)
    steps = [out.logits[0, -1]]
    for t in range(ids.shape[1] - 8, ids.shape[1] - 1):
        out = model(ids[:, t:t + 1], use_cache=True, **{given: getattr(out, returned)})
        steps.append(out.logits[0, -1])
    return float((torch.stack(steps) - full).abs().max())


def run(argv=None) -> int:
    args = parse(argv)
    grid = check_args(args)
    tasks = None
    if args.tasks:  # before the model and the run folder; the task files' content goes into the config
        os.environ.setdefault("DISABLE_MULTIPROC", "1")
        tasks = prepare_tasks(args.tasks, [], args.limit)
        args.task_sha256 = {name: info["sha256"] for name, info in tasks.info.items()}
    ctx = start(args, EXPERIMENT, METRICS, key=KEY, extra_columns=EXTRA, meta={
        "condition_levels": grid, "leak_spread": args.leak_spread, "recall_distances": args._distances,
        "recall_items": args.recall_items,
        "conditions": "see the module doc of noisynn.experiments.analog_attention.run",
        "realizations": "per trial one draw of the write-noise table, the retention times and the weight noise, "
                        "scaled to every level (common random numbers); read and output noise fresh per point",
        "recall": "noisynn.recall: needle of 24 tokens, D tokens of filler, the needle's first 8 again; accuracy "
                  "of the argmax on the other 16 (teacher-forced)", **({"tasks": tasks.info} if tasks else {})},
        check=(lambda loaded, text: check_context(tasks, loaded.tokenizer, harness_context(loaded), args.limit))
        if tasks else None)
    lm = ctx.lm
    base = ctx.attention or AttentionSetting()
    if tasks:  # lm-eval's model class over the same loaded model; its injector sets the weights of every point
        from ...harness import NoisyLM

        harness = NoisyLM(pretrained=lm, spec=ctx.spec, batch_size=args.task_batch_size)
        injector = harness.injector
    else:
        injector = NoiseInjector(lm.model, ctx.spec, selected=ctx.targets)
    attention = install_attention(base, lm.model, seed=args.seed)
    attention.set_enabled(False)
    distances = args._distances
    items = None
    if distances:
        items = recall_items(tokenize(lm.tokenizer, ctx.text.text), args.recall_items, max(distances))
    check_setting = replace(base, kv_write_noise=0.05, kv_tau=64.0, kv_tau_spread=0.5, kv_read_noise=0.0,
                            attn_out_noise=0.0)
    attention.configure(check_setting)
    attention.set_enabled(True)
    diff = decode_check(lm.model, ctx.eval_ids[None, :48], attention)
    attention.set_enabled(False)
    ctx.folder.update_meta(attention=attention.describe(), injection=injector.describe(), decode_check={
        "max_abs_logit_difference": diff, "tokens": 48, "setting": "write noise 0.05, tau 64, spread 0.5, no read "
        "noise: full-sequence forward vs cached decoding of the last 8 tokens"})
    leading = leading_columns(EXPERIMENT, args.model, args.noise_type, args.scale, args.seed, lambda p: {
        "noise_type": {"weight": args.noise_type, "float": "none"}.get(p.condition, "gain_cell"),
        "scale": {"weight": args.scale, "leak": "tokens", "window": "tokens", "bits": "bits"}.get(
            p.condition, "full_scale"),
        "condition": p.condition, **_setting_columns(setting_of(base, p, args.leak_spread))})

    def parts(p: AttentionPoint) -> list[dict]:
        recall = [{"probe": "recall", "distance": d} for d in distances] if p.condition in args.recall_on else []
        scored = [{"probe": "task", "distance": 0, **t} for t in tasks.parts()] if tasks else []
        return [{"probe": "perplexity", "distance": 0, "task": "", "metric": ""}] + [
            {"task": "", "metric": "", **r} for r in recall] + scored

    def trial(point: AttentionPoint) -> TrialResult:
        setting = setting_of(base, point, args.leak_spread)
        if point.condition == "weight":
            injector.realize(point.seed(args.seed), point.sigma)
        else:
            injector.restore()
        if setting is not None:
            attention.configure(setting)
            attention.reseed(point.seed(args.seed), point.sample_seed(args.seed))
        attention.set_enabled(setting is not None)
        ppl = compute_perplexity(lm.model, lm.tokenizer, ctx.eval_ids, max_length=args.max_length)
        blank = {**BLANK, "eval_tokens": 0, "n_scored": 0, "n_items": 0, "task": "", "metric": "", "distance": 0}
        rows = [{**blank, "probe": "perplexity", "perplexity": float(ppl), "nll": ppl.nll,
                 "bits_per_byte": ppl.bits_per_byte, "eval_tokens": ppl.n_tokens, "finite": bool(ppl.finite)}]
        if point.condition in args.recall_on:
            for d in distances:
                r = recall_scores(lm.model, items, d)
                rows.append({**blank, "probe": "recall", "distance": d, **r, "finite": math.isfinite(r["recall_nll"])})
        if tasks:
            import lm_eval

            with lm_eval_call():
                result = lm_eval.simple_evaluate(model=harness, tasks=list(tasks.tasks.values()),
                                                 task_manager=tasks.manager, limit=args.limit, verbosity="ERROR")
            rows += [{**blank, "probe": "task", **r, "finite": math.isfinite(r["value"])}
                     for r in tidy_rows(result, tasks)]
        return TrialResult({}, [], rows)

    try:
        rows = run_sweep(ctx.folder, points(grid, base, args.leak_spread, args.n_trials), trial, leading,
                         ctx.done_rows, progress("analog_attention", "point", args.quiet), parts=parts)
    finally:
        injector.restore()
        attention.remove()
    if not ctx.folder.is_main:
        return 0
    figures = report.plot(ctx.folder.path)
    return end_run(ctx, figures, report.format_table(rows), ["results.csv", "summary.csv"])


def _setting_columns(setting: AttentionSetting | None) -> dict:
    if setting is None:
        return {c: math.nan if c != "attn_window" else 0 for c in SETTING_COLUMNS}
    return {c: (math.inf if c == "kv_tau" and setting.kv_tau is None else
                (0 if c == "kv_bits" and setting.kv_bits is None else getattr(setting, c)))
            for c in SETTING_COLUMNS}


def main(argv=None) -> int:
    return script_main(run, argv)
