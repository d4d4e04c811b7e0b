"""lm-eval tasks for the experiments: loading by name or YAML, fingerprints, chance levels, metric names.

For the experiments that score them (task_accuracy, placement's --max_acc_drop): loading by name or YAML file
with one-line errors, each task's fingerprint (sha256 of its config and local data files) and chance level,
the names of its metrics, and a single-process view of a launcher's environment. What would fail inside lm-eval
mid-run is checked when the tasks are loaded (a metric lm-eval does not score, more few-shot examples than the
task has) or once the model is (``check_context``: a continuation longer than the model's context). lm-eval itself is imported
only when tasks are loaded (this module imports no torch)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NoisyNNError

# lm-eval's accuracy metrics (higher is better, fractions of items); other metrics (perplexity) are
# summarized but not drawn or thresholded.
ACCURACY = ("acc", "acc_norm", "exact_match")
# the metrics lm-eval's ConfigurableTask.process_results computes per output type (a generation task scores any
# metric it can find a function for, in its registry or HF evaluate's)
SCORED = {"loglikelihood": ("perplexity", "acc"),
          "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
          "multiple_choice": ("acc", "acc_norm", "acc_bytes", "acc_mutual_info", "exact_match", "f1", "mcc",
                              "brier_score", "likelihood")}


def is_accuracy(metric: str) -> bool:
    return metric.split("/")[0] in ACCURACY


@dataclass
class TaskSet:
    """The loaded lm-eval tasks and what the rows and run.json need to know about them."""

    manager: object
    tasks: dict  # name -> lm-eval Task
    metrics: list[tuple[str, str, str]] = field(default_factory=list)  # (task, metric, lm-eval filter)
    info: dict = field(default_factory=dict)  # name -> config, sha256, chance, n_items

    def parts(self) -> list[dict]:
        return [{"task": t, "metric": metric_name(m, f)} for t, m, f in self.metrics]


def metric_name(metric: str, filter_name: str) -> str:
    """``acc`` for lm-eval's ``acc,none``; ``exact_match/strict-match`` for a named filter."""
    return metric if filter_name == "none" else f"{metric}/{filter_name}"


def _yaml_task_name(path: Path) -> str:
    import yaml

    class Loader(yaml.SafeLoader):  # task YAMLs use !function tags; only the name is needed here
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise NoisyNNError(f"task file {path} cannot be read ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise NoisyNNError(f"task file {path} has no 'task:' name")
    return config["task"]


def _sha256_file(path: str) -> str | None:
    p = Path(path).expanduser()
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def _hashed_paths(data_files):
    """``data_files`` (a path, a list of them, or a dict of either by split) with every local file's path
    replaced by its content's sha256; anything else (a hub pattern, a URL) as it is."""
    if isinstance(data_files, str):
        return _sha256_file(data_files) or data_files
    if isinstance(data_files, (list, tuple)):
        return [_hashed_paths(d) for d in data_files]
    if isinstance(data_files, dict):
        return {k: _hashed_paths(v) for k, v in data_files.items()}
    return data_files


def _stable(obj):
    """``obj`` as JSON values that are the same in every process: a function (a ``!function`` helper, at any
    depth) as its module-qualified name and the sha256 of its source (the name alone when there is no source);
    memory addresses (" at 0x7f...", as in lm-eval's fallback repr of a function) cut out of strings."""
    import inspect
    import re

    if isinstance(obj, dict):
        return {str(k): _stable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_stable(v) for v in obj]
    if isinstance(obj, (bool, int, float)) or obj is None:
        return obj
    if callable(obj) and hasattr(obj, "__qualname__"):
        name = f"{getattr(obj, '__module__', None)}.{obj.__qualname__}"
        try:
            source = inspect.getsource(obj)
        except (OSError, TypeError):
            return f"function {name}"
        return f"function {name} source sha256 {hashlib.sha256(source.encode('utf-8')).hexdigest()}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(obj))


def _fingerprint(config: dict) -> tuple[str, dict]:
    """sha256 of a task's config with local data file paths replaced by their contents' sha256 (so the
    hash is the same wherever the cache lives, and changes with the data), and those file hashes; functions
    by name and source (``_stable``), never by memory address."""
    kwargs = config.get("dataset_kwargs") or {}
    hashed = _hashed_paths(kwargs.get("data_files"))
    files = {} if hashed == kwargs.get("data_files") else (hashed if isinstance(hashed, dict) else {"": hashed})
    payload = {**config, "dataset_kwargs": {**kwargs, "data_files": hashed}} if files else config
    text = json.dumps(_stable(payload), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), files


def _chance(task, limit: int) -> float | None:
    """Chance accuracy: the offline tasks' own; a multiple-choice task's mean 1/n_choices over the scored
    items; 0 for loglikelihood / generation tasks (greedy or exact match); None when unknown."""
    from .tasks import CHANCE

    if task.task_name in CHANCE:
        return CHANCE[task.task_name]
    if task.OUTPUT_TYPE == "multiple_choice":
        docs = list(task.eval_docs)[:limit]
        counts = [len(task.doc_to_choice(d)) for d in docs]
        return float(sum(1 / c for c in counts) / len(counts)) if counts else None
    return 0.0 if task.OUTPUT_TYPE in ("loglikelihood", "generate_until") else None


def _check_metrics(name: str, task) -> None:
    """Every metric of the task is one lm-eval computes for its output type (else lm-eval reports no value for it)."""
    config = getattr(task, "config", None)
    if config is None or config.process_results is not None:  # a task that scores itself
        return
    scored = SCORED.get(task.OUTPUT_TYPE)
    for metric, fn in task._metric_fn_list.items():
        unknown = metric not in scored if scored is not None else fn is None
        if unknown:
            known = f" (for {task.OUTPUT_TYPE} tasks: {', '.join(scored)})" if scored else ""
            raise NoisyNNError(f"task {name}: metric '{metric}' is not one lm-eval scores{known}")


def _check_fewshot(name: str, task, num_fewshot: int | None) -> None:
    """The task's few-shot pool holds the examples lm-eval will draw: ``num_fewshot`` (or the task's own number;
    lm-eval keeps a task's 0), one more when they come from the split the items do (lm-eval leaves the item out)."""
    own = task.get_config("num_fewshot")
    shots = (num_fewshot if num_fewshot is not None and own != 0 else own) or 0
    if shots <= 0:
        return
    sampler = getattr(task, "sampler", None)
    pool = len(sampler.fewshot_docs()) if sampler is not None else 0
    fewshot_cfg = getattr(task, "fewshot_cfg", None)
    same = fewshot_cfg is not None and fewshot_cfg.split == task.config.test_split
    need = shots + 1 if same else shots
    if pool < need:
        why = " (the item being scored is left out of its own examples)" if same else ""
        raise NoisyNNError(f"task {name}: {shots}-shot needs {need} few-shot documents{why} but the task has {pool}; "
                           "lower --num_fewshot")


def check_context(tasks: TaskSet, tokenizer, max_length: int, limit: int) -> None:
    """Every continuation lm-eval will score on the first ``limit`` items (loglikelihood and multiple-choice tasks)
    fits the model's context of ``max_length`` tokens (lm-eval's HF model asserts it mid-run); tokenized as lm-eval
    splits a (context, continuation) pair."""
    for name, task in tasks.tasks.items():
        if task.OUTPUT_TYPE not in ("loglikelihood", "multiple_choice") or getattr(task, "multiple_input", False):
            continue
        for i, doc in enumerate(list(task.eval_docs)[:limit]):
            requests = task.construct_requests(doc=doc, ctx=task.doc_to_text(doc), metadata=(name, i, 1))
            for request in requests if isinstance(requests, list) else [requests]:
                n = _continuation_tokens(tokenizer, *request.arguments[:2])
                if n > max_length:
                    raise NoisyNNError(f"task {name}: item {i}'s continuation is {n} tokens, longer than the model's "
                                       f"context of {max_length}; lm-eval cannot score it (use a model with a "
                                       "longer context or shorter targets)")


def _continuation_tokens(tokenizer, context, continuation) -> int:
    if not isinstance(context, str) or not context:
        return len(tokenizer.encode(str(continuation), add_special_tokens=False))
    spaces = len(context) - len(context.rstrip())  # lm-eval moves a context's trailing spaces to the continuation
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    return len(tokenizer.encode(context + continuation)) - len(tokenizer.encode(context))


@contextlib.contextmanager
def _quiet_loading():
    """While tasks load: lm-eval's registry logs each metric it cannot find (and its HF evaluate lookup), which
    _check_metrics says once; datasets draws a progress bar the first time it builds a task's data files."""
    import datasets

    log = logging.getLogger("lm_eval.api.registry")
    level, bars = log.level, datasets.is_progress_bar_enabled()
    log.setLevel(logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        log.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def prepare_tasks(names: list[str], include: list[str], limit: int, num_fewshot: int | None = None) -> TaskSet:
    """Resolve task names and YAML paths, load the tasks and their datasets, check their metrics and few-shot pools
    (``num_fewshot``: lm-eval's override, None for each task's own); one NoisyNNError line on failure."""
    from .harness import load_tasks, task_manager

    folders, resolved = [str(Path(d).expanduser()) for d in include], []
    for folder in folders:
        if not Path(folder).is_dir():
            raise NoisyNNError(f"--include_path {folder} is not a folder")
    for name in names:
        if name.endswith((".yaml", ".yml")):
            path = Path(name).expanduser()
            if not path.is_file():
                raise NoisyNNError(f"task file {name} does not exist")
            folders.append(str(path.resolve().parent))
            resolved.append(_yaml_task_name(path))
        else:
            resolved.append(name)
    manager = task_manager(folders)
    with _quiet_loading():
        loaded = load_tasks(resolved, manager)
    tasks = dict(sorted(loaded["tasks"].items()))
    out = TaskSet(manager, tasks)
    for name, task in tasks.items():
        _check_metrics(name, task)
        _check_fewshot(name, task, num_fewshot)
        # the (metric, filter) pairs lm-eval will report: every metric of the task under every filter
        for filt in [f.name for f in task._filters]:
            out.metrics += [(name, m, filt) for m in task._metric_fn_list]
        config = task.dump_config()
        digest, files = _fingerprint(config)
        out.info[name] = {"sha256": digest, "data_sha256": files, "chance": _chance(task, limit),
                          "output_type": task.OUTPUT_TYPE, "n_docs": len(task.eval_docs),
                          "config": _stable(config)}
    return out


@contextlib.contextmanager
def single_process_view():
    """The runner splits points across processes and each process scores all items of its points, so
    each lm-eval call is a single-process evaluation (NoisyLM: rank 0 of 1). lm-eval also reads the
    launcher's LOCAL_RANK to decide which process returns results: show it 0 for the call."""
    saved = os.environ.get("LOCAL_RANK")
    os.environ["LOCAL_RANK"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LOCAL_RANK", None)
        else:
            os.environ["LOCAL_RANK"] = saved


@contextlib.contextmanager
def lm_eval_call():
    """Around one lm-eval evaluation of an experiment's point: a single-process view, lm-eval's prints dropped
    (its "bootstrapping for stddev"), and its git lookup quiet."""
    from .harness import quiet_git

    with contextlib.redirect_stdout(io.StringIO()), single_process_view(), quiet_git():
        yield


def tidy_rows(result: dict, tasks: TaskSet) -> list[dict]:
    """One row per (task, metric): lm-eval's value, its stderr (nan where lm-eval gives none), items."""
    rows = []
    for task, metric, filt in tasks.metrics:
        values = result["results"][task]
        stderr = values.get(f"{metric}_stderr,{filt}")
        rows.append({"task": task, "metric": metric_name(metric, filt), "value": float(values[f"{metric},{filt}"]),
                     "stderr": float(stderr) if isinstance(stderr, (int, float)) else float("nan"),
                     "n_items": int(result["n-samples"][task]["effective"])})
    return rows


def harness_context(loaded) -> int:
    """The context lm-eval's HF model (NoisyLM, no max_length given) scores in, from the model's config."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.utils import resolve_max_length

    return resolve_max_length(loaded.model.config, loaded.tokenizer, default=HFLM._DEFAULT_MAX_LENGTH)
