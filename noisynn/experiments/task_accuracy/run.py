"""Downstream task accuracy under noise, through lm-evaluation-harness: accuracy against sigma per task.

    python task_accuracy.py                # = noisynn task_accuracy: the two offline tasks, embedded SmolLM2-135M
    python task_accuracy.py --tasks hellaswag,arc_easy --limit 500 --device cuda      # hub tasks need the network

lm-eval does the prompting, batching, scoring and metrics (``noisynn.harness.NoisyLM`` is its own
HF model class); this experiment sets the weights of each point (noise applied in place from the
clean snapshot, common random numbers across levels) and records one tidy row per (task, metric,
sigma, trial): lm-eval's value, its standard error over items, and the number of items.
"""

from __future__ import annotations

import argparse
import json
import os

from ...runs.context import end_run, start
from ...options.parser import ArgumentParser
from ...options.flags import (add_converter_args, add_level_args, add_model_args, add_noise_args, add_run_args,
                               block_list, level_grid, name_list)
from ...options.argtypes import nonneg_int, positive_float, positive_int
from ...options.script import script_main
from ...runs.runner import Point, TrialResult, grid, leading_columns, progress, run_sweep
from ...task_sets import (TaskSet, check_context, harness_context, lm_eval_call, metric_name, prepare_tasks,
                          tidy_rows)
from . import report

EXPERIMENT = "task_accuracy"
EXTRA = ("task", "metric")
METRICS = ("value", "stderr", "n_items")
KEY = ("sigma", "trial", "task", "metric")
DEFAULT_TASKS = ["noisynn_cloze", "noisynn_next_sentence"]
# lm-eval sorts requests by length, so a batch pads little; 8 keeps a 2-core CPU busy without the
# memory of lm-eval's "auto" probing (benchmarks/bench_task_accuracy.py --batch_sizes 1 8 16 measures it).
DEFAULT_BATCH = "8"
BATCH_LIMIT = 65_536


def batch_size(text: str) -> str:
    """A positive integer or lm-eval's ``auto`` / ``auto:N``, kept as text (as lm-eval takes it)."""
    number = text.split(":", 1)[1] if text.startswith("auto:") else text
    if text == "auto" or number.isdigit() and 0 < int(number) <= BATCH_LIMIT:
        return text
    if number.isdigit() and int(number) > BATCH_LIMIT:
        raise argparse.ArgumentTypeError(f"{int(number):,} is above {BATCH_LIMIT:,}, the most it takes (a batch that "
                                         "large does not fit in memory)")
    raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer or auto")


def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p, scale="relative")
    add_converter_args(p)
    t = p.add_argument_group("tasks (lm-evaluation-harness)")
    t.add_argument("--tasks", type=name_list, default=DEFAULT_TASKS,
                   help="comma list of lm-eval task names or task YAML files (default: the offline tasks "
                        f"{','.join(DEFAULT_TASKS)}; hub tasks such as hellaswag need the network)")
    t.add_argument("--include_path", action="append", default=[], metavar="DIR",
                   help="a folder of extra lm-eval task YAMLs; repeatable")
    t.add_argument("--num_fewshot", type=nonneg_int, default=None, help="few-shot examples (default: the task's)")
    t.add_argument("--limit", type=positive_int, default=40,
                   help="items per task, the first of each task's test split (default: %(default)s)")
    t.add_argument("--batch_size", type=batch_size, default=DEFAULT_BATCH,
                   help="lm-eval's request batch size, or auto (default: %(default)s)")
    t.add_argument("--bootstrap_iters", type=positive_int, default=1000,
                   help="lm-eval's bootstrap resamples for the stderr of non-mean metrics (perplexity; "
                        "default: %(default)s)")
    t.add_argument("--log_samples", action="store_true", help="write lm-eval's per-item outputs to samples.jsonl")
    g = p.add_argument_group("sweep")
    g.add_argument("--blocks", type=block_list, default=argparse.SUPPRESS,
                   help="restrict attention/mlp targets to these transformer blocks, e.g. 0-9,20 (default: all)")
    add_level_args(g, max_noise=0.3, n_levels=4, spacing="linear")
    g.add_argument("--acc_drop", type=positive_float, default=5.0,
                   help="report the sigma where accuracy falls this many points below clean (default: %(default)s)")
    add_run_args(p)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="task_accuracy.py", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def parse(argv=None):
    return build_parser().parse_args(argv)


def sample_records(result: dict, tasks: TaskSet) -> list[dict]:
    """lm-eval's per-item outputs, without the repeated document and prompt text (their hashes stay).
    Each is filed under its task's first metric row (the run folder keys samples by a row's key), and
    carries every metric's per-item value under the metric's own name."""
    from lm_eval.utils import handle_non_serializable

    first = {}
    for task, metric, filt in tasks.metrics:
        first.setdefault(task, metric_name(metric, filt))
    out = []
    for task, items in result.get("samples", {}).items():
        for item in items:
            keep = {k: v for k, v in item.items() if k not in ("doc", "arguments", "resps", "metrics")}
            keep = json.loads(json.dumps(keep, default=handle_non_serializable))
            out.append({"task": task, "metric": first[task], **{k: v for k, v in keep.items() if k != "metric"}})
    return out


def run(argv=None) -> int:
    args = parse(argv)
    # lm-eval bootstraps with a multiprocessing pool per metric unless told not to: slower than serial here
    os.environ.setdefault("DISABLE_MULTIPROC", "1")
    import lm_eval

    from ...harness import NoisyLM

    sigmas = level_grid(args)
    # before the model and the run folder
    tasks = prepare_tasks(args.tasks, args.include_path, args.limit, args.num_fewshot)
    # in the config, so a resume with changed task files is refused
    args.task_sha256 = {name: info["sha256"] for name, info in tasks.info.items()}
    ctx = start(args, EXPERIMENT, METRICS, key=KEY, extra_columns=EXTRA, meta={
        "levels": sigmas, "lm_eval_version": lm_eval.__version__, "tasks": tasks.info,
        "acc_drop_points": args.acc_drop,
        "noise_realizations": "common random numbers: one unit-scale draw per trial (seeded per layer from the "
                              "trial seed and the layer name), scaled to every level; every task of a point is "
                              "scored on the same weights",
        "head": "not noised unless --targets names head/all; a tied head is untied before it is noised"},
        check=lambda loaded, text: check_context(tasks, loaded.tokenizer, harness_context(loaded), args.limit))
    lm = NoisyLM(pretrained=ctx.lm, spec=ctx.spec, converters=ctx.converters, batch_size=args.batch_size)
    ctx.folder.update_meta(**lm.describe())
    leading = leading_columns(EXPERIMENT, args.model, args.noise_type, args.scale, args.seed)
    clean: list[TrialResult] = []  # sigma 0 is the same model in every trial (without converter noise)

    def trial(point: Point) -> TrialResult:
        if point.sigma == 0 and clean and lm.hooks is None and not args.log_samples:
            return clean[0]
        lm.set_noise(point.sigma, point.seed(args.seed), point.sample_seed(args.seed))
        with lm_eval_call():
            result = lm_eval.simple_evaluate(model=lm, tasks=list(tasks.tasks.values()), task_manager=tasks.manager,
                                             num_fewshot=args.num_fewshot, limit=args.limit,
                                             bootstrap_iters=args.bootstrap_iters, log_samples=args.log_samples,
                                             verbosity="ERROR")
        out = TrialResult({}, sample_records(result, tasks) if args.log_samples else [], tidy_rows(result, tasks))
        if point.sigma == 0:
            clean.append(out)
        return out

    try:
        rows = run_sweep(ctx.folder, grid(sigmas, args.n_trials), trial, leading, ctx.done_rows,
                         progress("task_accuracy", "point", args.quiet), parts=lambda p: tasks.parts())
    finally:
        lm.restore()
    if not ctx.folder.is_main:  # another process merged the shards and draws the figures
        return 0
    figures = report.plot(ctx.folder.path)
    return end_run(ctx, figures, report.format_table(rows, args.acc_drop),
                   ["results.csv", "summary.csv", "acc_drop.csv"])


def main(argv=None) -> int:
    return script_main(run, argv)
