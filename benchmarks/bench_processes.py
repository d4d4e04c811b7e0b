"""Benchmark: one process against N processes (``accelerate launch``) on the same sweep.

    python benchmarks/bench_processes.py          # prints a table, writes benchmarks/results/processes.json

Runs the main sweep on the embedded model twice with the same flags and seeds: once as one
process (torch's default threads: all cores) and once under ``accelerate launch --multi_gpu
--num_processes N`` (one thread per process, as torchrun sets it; gloo on loopback; on a
CPU-only node this launcher is the one that starts N processes). Reports each run's wall
time (launch, model loading, the sweep, merging, figures: what a user waits for) and its
sweep-loop time from run.json, their ratios, and compares the two results.csv (same points; perplexities equal up to float summation order,
since the single process runs BLAS on all cores and each launched process on one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["--n_levels", "8", "--n_trials", "3", "--quiet"]


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"bench_processes: {' '.join(cmd[:4])} ... failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "processes.json"))
    args, sweep_flags = p.parse_known_args(argv)
    sweep_flags = sweep_flags or SWEEP
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "thermal_noise_simulation.py")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
              str(args.processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        wall_one = timed([sys.executable, script, *sweep_flags, "--out", str(one)], env)
        wall_many = timed([*launch, script, *sweep_flags, "--out", str(many)], env)
        loop = {k: json.loads((d / "run.json").read_text())["last_session"]["seconds"]
                for k, d in (("one", one), ("many", many))}
        sys.path.insert(0, str(ROOT))
        from noisynn.runs.read import read_rows

        a, b = read_rows(one / "results.csv"), read_rows(many / "results.csv")
        rows = len(a)
        same_points = [(r["sigma"], r["trial"]) for r in a] == [(r["sigma"], r["trial"]) for r in b]
        equal = (one / "results.csv").read_text() == (many / "results.csv").read_text()
        rel = max(abs(x["perplexity"] / y["perplexity"] - 1) for x, y in zip(a, b))
        differing = sorted({k for x, y in zip(a, b) for k in x if x[k] != y[k]})
    result = {"processes": args.processes, "cores": os.cpu_count(), "sweep_flags": sweep_flags, "points": rows,
              "wall_seconds": {"one": round(wall_one, 1), "many": round(wall_many, 1)},
              "sweep_loop_seconds": loop, "speedup_wall": round(wall_one / wall_many, 3),
              "speedup_sweep_loop": round(loop["one"] / loop["many"], 3), "same_points": same_points,
              "results_bit_identical": equal, "max_rel_perplexity_difference": rel,
              "differing_columns": differing}
    print(f"{rows} sweep points on the embedded model, {os.cpu_count()} cores; flags: {' '.join(sweep_flags)}")
    print(f"{'':24}{'1 process':>12}{f'{args.processes} processes':>14}{'speed-up':>10}")
    print(f"{'wall time (s)':24}{wall_one:>12.1f}{wall_many:>14.1f}{wall_one / wall_many:>9.2f}x")
    print(f"{'sweep loop (s)':24}{loop['one']:>12.1f}{loop['many']:>14.1f}{loop['one'] / loop['many']:>9.2f}x")
    print(f"same points: {same_points}; results.csv bit-identical: {equal} (columns that differ: "
          f"{', '.join(differing) or 'none'}); largest relative perplexity difference {rel:.1e} (one process uses {os.cpu_count()} threads, each of the others 1: BLAS sums "
          "in another order; with equal thread counts the files are identical, see tests/runs/test_distributed.py)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if same_points and rel < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
