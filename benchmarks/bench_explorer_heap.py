"""Benchmark: the explorer's resident memory over many PCM settings, computed from many server threads.

    python benchmarks/bench_explorer_heap.py                 # bounded heap (the explorer's default)
    python benchmarks/bench_explorer_heap.py --unbounded     # without noisynn.heap's bound, for comparison

The embedded model (SmolLM2-135M); for each of 12 settings (pcm at 8 read times, then 4 with drift compensation)
a comparison and a perplexity (64 tokens), each on the next of 16 worker threads, as the web server runs its
events. Prints RSS after each setting, the weights' bytes and the ratio; writes
benchmarks/results/explorer_heap[_unbounded].json. On the 2-core machine (load ~2): unbounded 1.28 -> 3.57 GB,
bounded 0.95 -> 1.01 GB (flat from the 8th setting, once every thread has run; 1.9x the weights' 0.54 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import threading
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"


class Workers:
    """``n`` long-lived threads; ``run(f)`` calls ``f`` on the next one in turn and waits, as a web server's pool
    spreads its events (tests/test_heap.py drives the same)."""

    def __init__(self, n: int):
        self.jobs = [queue.Queue() for _ in range(n)]
        self.calls = 0
        for q in self.jobs:
            threading.Thread(target=self._serve, args=(q,), daemon=True).start()

    @staticmethod
    def _serve(q: queue.Queue) -> None:
        while True:
            f, done = q.get()
            f()
            done.set()

    def run(self, f) -> None:
        done = threading.Event()
        self.jobs[self.calls % len(self.jobs)].put((f, done))
        self.calls += 1
        done.wait()


def rss() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--unbounded", action="store_true", help="leave glibc's heap as it is (the old behaviour)")
    p.add_argument("--threads", type=int, default=16)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from noisynn.ui.explore import Explorer
    from noisynn.ui.setting import Setting

    ex = Explorer(device="cpu", bound_heap_memory=not args.unbounded)
    workers = Workers(args.threads)

    flags = [(("t_seconds", t),) for t in ("1", "10", "100", "1000", "10000", "1e5", "1e6", "1e7")]
    flags += [(("t_seconds", t), ("drift_compensation", "True")) for t in ("1", "1000", "1e6", "1e8")]
    rows = []
    for f in flags:
        s = Setting(prompt="The history of science", max_new_tokens=4, eval_tokens=64, max_length=64, sigma=1.0,
                    noise_type="pcm", scale="relative_channel", flags=f)
        start = time.perf_counter()
        workers.run(lambda: ex.compare(s))
        workers.run(lambda: ex.perplexity(s))
        rows.append({"flags": dict(f), "rss_bytes": rss(), "seconds": time.perf_counter() - start})
        print(f"{dict(f)}: RSS {rows[-1]['rss_bytes'] / 2**30:.2f} GiB, {rows[-1]['seconds']:.1f} s", flush=True)
    weights = sum(t.numel() * t.element_size() for t in ex.model("").model.parameters())
    result = {"bounded": not args.unbounded, "threads": args.threads, "weights_bytes": weights, "settings": rows,
              "rss_ratio_last": rows[-1]["rss_bytes"] / weights, "load_after": os.getloadavg(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    OUT.mkdir(exist_ok=True)
    path = OUT / f"explorer_heap{'_unbounded' if args.unbounded else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"weights {weights / 2**30:.2f} GiB; last RSS / weights = {result['rss_ratio_last']:.2f}; wrote {path}")


if __name__ == "__main__":
    main()
