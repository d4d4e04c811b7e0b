"""``--max_acc_drop``: the placement's tolerance in accuracy points on one lm-eval task.

The clean model, every verification and every baseline realization is also scored on the first
``--task_limit`` items of ``--task`` (lm-evaluation-harness, on the weights and converters as they are
at that moment); a set meets the tolerance when

    drop = 100 (acc_clean - acc_set) <= max_acc_drop        (points; acc_set: the median over realizations,
                                                             or the low end of its CI with --verify_stat ci_high)

The units are still ranked by their damage in NLL alone (``plan``): one tensor moves a task's accuracy
by far less than one item in a hundred, so a single-unit accuracy cannot rank 210 tensors.
"""

from __future__ import annotations

import logging
import os

from ...errors import NoisyNNError

DEFAULT_TASK = "noisynn_cloze"
DEFAULT_LIMIT = 100


def prepare(task: str = DEFAULT_TASK, limit: int = DEFAULT_LIMIT):
    """Load ``task`` (before the model and the run folder: a wrong name or an unreachable hub dataset is one
    NoisyNNError line) and pick its accuracy metric; returns (lm-eval TaskSet, "metric,filter")."""
    from ...task_sets import is_accuracy, prepare_tasks

    tasks = prepare_tasks([task], [], limit)
    names = [(m, f) for t, m, f in tasks.metrics if is_accuracy(m)]
    if not names:
        raise NoisyNNError(f"task {task} reports no accuracy metric; --max_acc_drop needs one (e.g. {DEFAULT_TASK})")
    return tasks, f"{names[0][0]},{names[0][1]}"


class TaskScorer:
    """``scorer()``: the accuracy (fraction of items) of ``lm.model`` as it is now on the first ``limit`` items of
    the task ``prepared`` (from ``prepare``); ``n_items`` the items it rests on. Build it before noise or
    converters touch the model (lm-eval's HF wrapper ties the weights when it is made)."""

    def __init__(self, lm, prepared, limit: int = DEFAULT_LIMIT, batch_size: str = "8"):
        from lm_eval.models.huggingface import HFLM

        self.tasks, self.metric = prepared
        self.task, self.limit = next(iter(self.tasks.tasks)), limit
        os.environ.setdefault("DISABLE_MULTIPROC", "1")  # lm-eval's bootstrap pool is slower than serial here
        hf_log = logging.getLogger("lm_eval.models.huggingface")
        level = hf_log.level
        hf_log.setLevel(logging.ERROR)  # it warns that a model object (not a name) was passed: that is the point
        try:
            self.hflm = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size)
        finally:
            hf_log.setLevel(level)
        self.n_items = 0

    def __call__(self) -> float:
        import lm_eval

        from ...task_sets import lm_eval_call

        with lm_eval_call():
            result = lm_eval.simple_evaluate(model=self.hflm, tasks=list(self.tasks.tasks.values()),
                                             task_manager=self.tasks.manager, limit=self.limit, bootstrap_iters=0,
                                             verbosity="ERROR")
        self.n_items = int(result["n-samples"][self.task]["effective"])
        return float(result["results"][self.task][self.metric])

    def describe(self) -> dict:
        return {"task": self.task, "metric": self.metric, "limit": self.limit,
                "sha256": self.tasks.info[self.task]["sha256"]}
