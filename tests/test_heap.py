"""noisynn.heap: freed tensor memory of many worker threads goes back to the system (issue 25, defect 1).

A fresh interpreter plays the explorer's server: a stand-in model of 60 SmolLM2-sized MLP matrices (210 MB), and
for each of 12 requests, on the next of 16 worker threads, a snapshot, a noise draw per matrix and a restore. RSS
after the first and the last request: unbounded it keeps growing (each thread's arena keeps up to a model's
worth), bounded it stays within a fraction of the model.
"""

import json
import sys

import pytest

from tests.helpers import run_python

DRIVE = r"""
import json, os, sys, torch
from benchmarks.bench_explorer_heap import Workers, rss
from noisynn.heap import bound_heap, release_heap
bounded = sys.argv[1] == "bounded"
if bounded:
    bound_heap()
torch.set_num_threads(1)
weights = [torch.randn(576, 1536) for _ in range(60)]
workers = Workers(16)

def request(seed):
    g = torch.Generator().manual_seed(seed)
    snapshot = [w.clone() for w in weights]
    for w in weights:
        w.add_(torch.randn(w.shape, generator=g), alpha=0.01)
    for w, s in zip(weights, snapshot):
        w.copy_(s)
    del snapshot
    if bounded:
        release_heap()

after = []
for i in range(12):
    workers.run(lambda i=i: request(i))
    after.append(rss())
print(json.dumps({"model": sum(w.numel() * 4 for w in weights), "rss": after}))
"""


def drive(mode: str) -> dict:
    done = run_python(["-c", DRIVE, mode], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc; reads /proc")
def test_bounded_heap_stays_flat_where_threads_would_keep_a_model_each():
    bounded, unbounded = drive("bounded"), drive("unbounded")
    grown = {name: (run["rss"][-1] - run["rss"][0]) / run["model"] for name, run in
             (("bounded", bounded), ("unbounded", unbounded))}
    assert grown["bounded"] < 0.25, (grown, bounded)
    assert grown["unbounded"] > 2.0, (grown, unbounded)  # the drive reproduces the explorer's growth


def test_the_heap_calls_are_safe_to_repeat():
    from noisynn.heap import bound_heap, release_heap

    first = bound_heap()
    assert bound_heap() == first and (first or not sys.platform.startswith("linux"))  # glibc here: applied
    release_heap()
    release_heap()
