"""Benchmark: the original toolkit's default-sized sweep, like for like, three ways.

    python benchmarks/bench_sweep.py            # = make bench; prints a table, writes benchmarks/results/

The workload (the original toolkit's defaults): 10 levels, linspace(0, 0.1), absolute Gaussian
noise on all Linear layers including the output head, one realization per level; at each
level perplexity on the first 500 characters of the evaluation text, entropy over 10 greedy
next tokens, and 3 sampled generations of 50 new tokens (temperature 0.8, top-k 50).

  toolkit  the shipped CLI (thermal_noise_simulation.py) on that workload; the sweep loop's
           time comes from run.json (model loading and plotting excluded, as in the floor)
  naive    a reference written the obvious way: deep copy of the model per level, a fresh
           randn per layer, one generate() call per sample, entropy from 10 uncached passes
  floor    only the forward and decode passes the toolkit's sweep runs (same tokens, same
           batch shapes), on the clean model: no noise, no copies, no files

Each mode runs in its own process, so its peak RSS (ru_maxrss) is its own; "base" is the
process's RSS after importing torch and transformers, before loading the model.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LEVELS = [i * 0.1 / 9 for i in range(10)]
PROMPT = "The future of artificial intelligence is"
N_SAMPLES, NEW_TOKENS, ENTROPY_TOKENS, CHARS = 3, 50, 10, 500


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def eval_text() -> str:
    from noisynn.corpus import load_text

    return load_text().text[:CHARS]


def mode_toolkit(dtype: str) -> dict:
    import transformers  # noqa: F401  (counted in base, as in the other modes)
    import torch  # noqa: F401

    from transformers import AutoTokenizer

    from noisynn.evaluation import tokenize
    from noisynn.experiments.sweep import run as sweep
    from noisynn.models.embedded import DEFAULT_MODEL, _dequantized_cache, embedded_gguf_path

    base = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        text_path = Path(tmp) / "text.txt"
        text_path.write_text(eval_text(), encoding="utf-8")
        folder, _ = _dequantized_cache(embedded_gguf_path(DEFAULT_MODEL), DEFAULT_MODEL)
        n_tokens = tokenize(AutoTokenizer.from_pretrained(folder), text_path.read_text()).numel() - 1
        out = Path(tmp) / "run"
        start = time.perf_counter()
        code = sweep.main(["--targets", "all", "--spacing", "linear", "--max_noise", "0.1", "--n_levels", "10",
                           "--n_trials", "1", "--text_file", str(text_path), "--eval_tokens", str(n_tokens),
                           "--n_samples", str(N_SAMPLES), "--max_new_tokens", str(NEW_TOKENS),
                           "--entropy_tokens", str(ENTROPY_TOKENS), "--prompt", PROMPT, "--dtype", dtype,
                           "--quiet", "--out", str(out)])
        wall = time.perf_counter() - start
        assert code == 0, code
        meta = json.loads((out / "run.json").read_text())
    return {"seconds": meta["last_session"]["seconds"], "cli_seconds": wall, "base_mb": base, "peak_mb": peak_mb(),
            "eval_tokens": n_tokens, "targeted_params": meta["injection"]["n_params"],
            "model_params": meta["model"]["n_params"], "head_params": meta["injection"]["params_by_kind"].get("head", 0),
            "head_untied": meta["injection"]["head_untied"], "rounding": meta.get("low_precision_rounding")}


def mode_floor(dtype: str) -> dict:
    import torch

    from noisynn.evaluation import quality_metrics, tokenize
    from noisynn.models.loading import load_model

    base = rss_mb()
    lm = load_model(dtype=dtype)
    ids = tokenize(lm.tokenizer, eval_text())
    torch.set_grad_enabled(False)
    start = time.perf_counter()
    for level in range(len(LEVELS)):
        quality_metrics(lm.model, lm.tokenizer, ids, PROMPT, n_samples=N_SAMPLES, max_new_tokens=NEW_TOKENS,
                        entropy_tokens=ENTROPY_TOKENS, sample_seed=level)
    return {"seconds": time.perf_counter() - start, "base_mb": base, "peak_mb": peak_mb(), "end_mb": rss_mb(),
            "eval_tokens": ids.numel() - 1}


def mode_naive(dtype: str) -> dict:
    import math

    import torch

    from noisynn.models.loading import load_model

    base = rss_mb()
    lm = load_model(dtype=dtype)
    model, tok = lm.model, lm.tokenizer
    ids = tok(eval_text(), return_tensors="pt", add_special_tokens=False)["input_ids"]
    prompt = tok(PROMPT, return_tensors="pt")
    start = time.perf_counter()
    with torch.no_grad():
        for sigma in LEVELS:
            noisy = copy.deepcopy(model)
            for module in noisy.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.add_(torch.randn_like(module.weight) * sigma)
            math.exp(float(noisy(input_ids=ids, labels=ids).loss))
            seq = prompt["input_ids"]
            for _ in range(ENTROPY_TOKENS):  # uncached greedy steps
                logits = noisy(input_ids=seq).logits[0, -1].float()
                p = logits.softmax(-1)
                float(-(p * p.clamp_min(1e-30).log2()).sum())
                seq = torch.cat([seq, logits.argmax()[None, None]], 1)
            for _ in range(N_SAMPLES):
                noisy.generate(**prompt, do_sample=True, max_new_tokens=NEW_TOKENS, temperature=0.8, top_k=50,
                               pad_token_id=tok.pad_token_id)
            del noisy
    return {"seconds": time.perf_counter() - start, "base_mb": base, "peak_mb": peak_mb(), "eval_tokens": ids.numel() - 1}


MODES = {"toolkit": mode_toolkit, "naive": mode_naive, "floor": mode_floor}


def run_child(mode: str, dtype: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--dtype", dtype], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise SystemExit(f"benchmark mode {mode} ({dtype}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--skip_bf16", action="store_true", help="leave out the bfloat16 runs")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep.json"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(MODES[args.child](args.dtype)))
        return 0
    runs = [("naive", "float32"), ("floor", "float32"), ("toolkit", "float32")]
    if not args.skip_bf16:
        runs += [("floor", "bfloat16"), ("toolkit", "bfloat16")]
    results = {}
    for mode, dtype in runs:
        print(f"running {mode} ({dtype}) ...", file=sys.stderr, flush=True)
        results[f"{mode}/{dtype}"] = run_child(mode, dtype)
    import torch

    results["machine"] = {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                          "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "date": time.strftime("%Y-%m-%d %H:%M")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    return 0


def report(r: dict) -> str:
    naive = r["naive/float32"]["seconds"]
    floor = r["floor/float32"]["seconds"]
    tk = r["toolkit/float32"]
    model_mb = (tk["model_params"] + (tk["head_params"] if tk["head_untied"] else 0)) * 4 / 2**20
    targeted_mb = tk["targeted_params"] * 4 / 2**20
    lines = [f"workload: 10 levels x (perplexity on {tk['eval_tokens']} tokens + entropy over {ENTROPY_TOKENS} greedy "
             f"tokens + {N_SAMPLES} samples x {NEW_TOKENS} tokens), all Linear layers incl. head",
             f"{'run':<22}{'seconds':>9}{'vs naive':>10}{'vs fp32 floor':>15}{'peak RSS MB':>13}{'above base':>12}"]
    for key, v in r.items():
        if key == "machine":
            continue
        lines.append(f"{key:<22}{v['seconds']:>9.1f}{naive / v['seconds']:>9.2f}x{v['seconds'] / floor:>14.2f}x"
                     f"{v['peak_mb']:>13.0f}{v['peak_mb'] - v['base_mb']:>12.0f}")
    lines.append(f"memory budget, model + 2 copies of the targeted weights (fp32): {model_mb + 2 * targeted_mb:.0f} MB "
                 f"above base (model {model_mb:.0f} MB with its head untied, targeted weights {targeted_mb:.0f} MB)")
    fl = r["floor/float32"]
    working = fl["end_mb"] - fl["base_mb"]  # the plain sweep's model + activations + allocator, at the end of its loop
    head_mb = tk["head_params"] * 4 / 2**20 if tk["head_untied"] else 0.0
    machinery = tk["peak_mb"] - tk["base_mb"] - working - head_mb
    lines.append(f"toolkit fp32 peak above base {tk['peak_mb'] - tk['base_mb']:.0f} MB = the plain sweep's working set "
                 f"{working:.0f} MB (floor RSS at the end of its loop: model, activations, allocator) + untied head "
                 f"{head_mb:.0f} MB + noise machinery {machinery:.0f} MB (= {machinery / targeted_mb:.2f} copies of the "
                 f"targeted weights; budget 2)")
    lines.append(f"toolkit fp32 CLI wall time incl. model load, files and plot: {tk['cli_seconds']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
