"""Items per second of the noisy lm-eval model (noisynn.harness.NoisyLM) against lm-eval's plain HF model, in one run.

    python benchmarks/bench_task_accuracy.py [--task noisynn_next_sentence] [--limit 40] [--reps 3]
                                             [--batch_sizes 1 8 16] [--out FILE.json]

Both wrap the same loaded embedded model; each repetition times one lm-eval evaluation of ``--limit``
items with the plain model (clean weights) and one with the noisy model, including its noise
application (``set_noise``: once per point, as task_accuracy does), alternating so that a change in
machine load hits both. Reported: the median items/s of each and their ratio (target: noisy within
1.1x of plain), per batch size. Compare the load average printed with the numbers.
"""

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DISABLE_MULTIPROC", "1")

import lm_eval  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from noisynn.harness import NoisyLM, load_tasks, task_manager
from noisynn.models.loading import load_model


def evaluate(lm, tasks, manager, limit) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, bootstrap_iters=0,
                                verbosity="ERROR")
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="noisynn_next_sentence")
    p.add_argument("--limit", type=int, default=40)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[8])
    p.add_argument("--sigma", type=float, default=0.1, help="relative gaussian noise of the noisy model")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    loaded = load_model(args.model, device="auto")
    manager = task_manager()
    tasks = list(load_tasks([args.task], manager)["tasks"].values())
    report = {"model": args.model, "task": args.task, "limit": args.limit, "reps": args.reps, "sigma": args.sigma,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": os.getloadavg(),
                          "threads": __import__("torch").get_num_threads()},
              "lm_eval": lm_eval.__version__, "batch_sizes": {}}
    for bs in args.batch_sizes:
        noisy = NoisyLM(pretrained=loaded, scale="relative", batch_size=bs)
        plain = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=bs)
        times = {"plain": [], "noisy": []}
        evaluate(plain, tasks, manager, args.limit)  # warm-up
        for rep in range(args.reps):
            noisy.set_noise(0.0, rep)  # the plain model scores clean weights (untimed)
            times["plain"].append(evaluate(plain, tasks, manager, args.limit))
            start = time.perf_counter()
            noisy.set_noise(args.sigma, rep + 1)  # a new realization: a draw and an apply, timed
            times["noisy"].append(time.perf_counter() - start + evaluate(noisy, tasks, manager, args.limit))
        noisy.restore()
        med = {k: statistics.median(v) for k, v in times.items()}
        report["batch_sizes"][bs] = {"seconds": times, "items_per_s": {k: args.limit / v for k, v in med.items()},
                                     "noisy_over_plain_time": med["noisy"] / med["plain"]}
        print(f"batch {bs:>3}: plain {args.limit / med['plain']:.2f} items/s, noisy {args.limit / med['noisy']:.2f} "
              f"items/s, noisy/plain time {med['noisy'] / med['plain']:.3f}", flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    print(f"load average before {report['machine']['load_before']}, after {report['machine']['load_after']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
