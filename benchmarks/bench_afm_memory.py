"""Memory and time of the AFM recipe's training at 1B on the CPU, default against its lean options; and how far
the shared teacher drifts from the clean one at AFM's learning rate on the embedded model.

    python benchmarks/bench_afm_memory.py [--steps 3] [--seq_len 128] [--batch_size 1] [--limit_gb 18]
                                          [--options lean8_shared_ckpt ...] [--drift_steps 6] [--no_drift | --no_1b]
                                          [--out benchmarks/results/afm_memory.json]

The model: a random Llama of 1.07e9 parameters (hidden 2048, intermediate 8192, 16 layers, 32 heads, 8 KV
heads, the embedded SmolLM2-135M's vocabulary of 49,152, tied head, float32: 4.3 GB), in
``<noisynn cache>/random-models/1b`` (config.json, model.safetensors, the embedded tokenizer's files); an
existing complete folder there is reused, else it is built here. Trained: the blocks' Linear weights
(``--targets blocks``), through AFM's analog training forward (8-bit DAC with learned ranges, weight noise
0.03 x max|W| per channel, 8-bit ADC, bound 14), AFM's optimizer settings, lr 5e-7, random token ids.

Every option runs in its own process (so its peak is its own): after the imports its RSS is the base;
then the model is loaded; then the peak is reset (``/proc/self/clear_refs`` 5) and ``--steps`` AFM steps run.
Reported per option: ``peak_train_gb`` (VmHWM over the steps, minus the base), ``peak_finetune_gb`` (the
same up to the end of ``afm_finetune``, the model's restore included), ``peak_over_weights`` =
peak_train / weights' bytes, ``seconds_per_step`` (median of the steps after the first; the first one also
allocates the optimizer state and initialises the input ranges), the optimizer state's bytes.

An option runs only if its estimate is below ``--limit_gb`` and below the memory available minus 2 GB; else
its row holds the estimate and the reason (the machine has 24 GiB and is shared). Estimate (bytes), N the
trained parameters, P all parameters:

    base + 4 P + 4 N (gradients) + {8 N AdamW | 2.03 N 8-bit} + {4 N copy teacher | 0 shared} + 1 GB activations

The drift section (``--drift_steps``, ``--drift_batch``) trains the embedded model with the copy teacher at
lr 5e-7 (AFM's), no weight clipping (the CLI's default), and measures after each step max_t max|W_t - W0_t| / max|W0_t| and ||W - W0|| / ||W0|| over the trained
tensors, and at the last step the KL(clean teacher || shared teacher) of the next-token distributions on
a batch of held-out windows: how far a shared teacher (the current student, digital) is from the clean one;
then the same for one step with AFM's clipping at 2.5 per-channel stds (why ``--teacher shared`` refuses it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_model import build as build_random  # noqa: E402  (the one random-model builder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GB = 1e9
MODEL_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, head_dim=64, tie_word_embeddings=True)
# option -> (teacher, optimizer, gradient checkpointing); run in this order, leanest first
OPTIONS = {
    "lean8_shared_ckpt": ("shared", "adamw8bit", True),
    "shared_ckpt": ("shared", "adamw", True),
    "copy_8bit_ckpt": ("copy", "adamw8bit", True),
    "default_ckpt": ("copy", "adamw", True),
    "default": ("copy", "adamw", False),
}
MOMENT_BYTES = {"adamw": 8.0, "adamw8bit": 2.0 + 2 * 4 / 256, "paged_adamw8bit": 2.0 + 2 * 4 / 256}


# ---------------------------------------------------------------------------------------------- the machine

def proc_status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes (VmRSS: resident now, VmHWM: the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: writing 5 to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem / GB, 1), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version()}


def available_bytes() -> int:
    return next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemAvailable"))


# ---------------------------------------------------------------------------------------------- the model folder

def model_folder() -> Path:
    from noisynn.models.embedded import cache_root

    return cache_root() / "random-models" / "1b"


# ---------------------------------------------------------------------------------------------- one option

def estimate_bytes(n_all: int, n_trained: int, teacher: str, optimizer: str, base: float = 0.6 * GB) -> float:
    """The module doc's estimate of one option's peak RSS, bytes."""
    return (base + 4 * n_all + 4 * n_trained + MOMENT_BYTES[optimizer] * n_trained
            + (4 * n_trained if teacher == "copy" else 0) + 1 * GB)


def afm_config(args, teacher: str, optimizer: str, ckpt: bool):
    from noisynn.experiments.noise_aware_training.afm import AFMConfig
    from noisynn.experiments.noise_aware_training.analog_train import AnalogTrainConfig

    return AFMConfig(steps=args.steps, lr=5e-7, warmup=0.016, batch_size=args.batch_size, seq_len=args.seq_len,
                     seed=0, targets="blocks", analog=AnalogTrainConfig(init_batches=1), grad_checkpointing=ckpt,
                     clip_sigma=0.0,  # the CLI's default under --recipe afm (and the only one a shared teacher takes)
                     teacher=teacher, optimizer=optimizer, save_every=10 ** 6)


def worker(args) -> dict:
    """One option in this process: load, reset the peak, train ``--steps`` steps; the row as a dict."""
    import torch
    from transformers import AutoModelForCausalLM

    from noisynn.experiments.noise_aware_training import afm
    from noisynn.targets import select_targets

    teacher, optimizer, ckpt = OPTIONS[args.worker]
    base = proc_status("VmRSS")
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trained = sum(t.numel for t in select_targets(model, "blocks"))
    after_load, load_peak = proc_status("VmRSS"), proc_status("VmHWM")
    chunks = torch.randint(0, model.config.vocab_size, (args.steps * args.batch_size, args.seq_len),
                           generator=torch.Generator().manual_seed(0))
    stamps, peaks = [], []

    def on_step(step, saved):
        stamps.append(time.perf_counter())
        peaks.append(proc_status("VmHWM"))

    reset_peak()
    t0 = time.perf_counter()
    _, _, history = afm.afm_finetune(model, chunks, afm_config(args, teacher, optimizer, ckpt), on_step=on_step)
    total = time.perf_counter() - t0
    steps = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    gb = lambda b: round(b / GB, 3)  # noqa: E731
    return {"teacher": teacher, "optimizer": optimizer, "gradient_checkpointing": ckpt, "ran": True,
            "weights_gb": gb(weights), "trained_params": trained, "base_rss_gb": gb(base),
            "load_seconds": round(load_s, 1), "rss_after_load_gb": gb(after_load - base),
            "peak_load_gb": gb(load_peak - base), "peak_train_gb": gb(max(peaks) - base),
            "peak_finetune_gb": gb(proc_status("VmHWM") - base),
            "peak_over_weights": round((max(peaks) - base) / weights, 3),
            "estimate_gb": gb(estimate_bytes(sum(p.numel() for p in model.parameters()), trained, teacher,
                                             optimizer, base=0)),
            "step_seconds": [round(s, 2) for s in steps],
            "seconds_per_step": round(statistics.median(steps[1:] if len(steps) > 1 else steps), 2),
            "finetune_seconds": round(total, 1), "losses": [round(h["loss"], 6) for h in history]}


def run_option(args, name: str, n_all: int, n_trained: int) -> dict:
    """Run one option in a child process if its estimate fits; else its row with the estimate and the reason."""
    teacher, optimizer, ckpt = OPTIONS[name]
    est = estimate_bytes(n_all, n_trained, teacher, optimizer)
    limit = min(args.limit_gb * GB, available_bytes() - 2 * GB)
    row = {"teacher": teacher, "optimizer": optimizer, "gradient_checkpointing": ckpt,
           "estimate_gb": round(est / GB, 2)}
    if optimizer != "adamw" and not has_bitsandbytes():
        return {**row, "ran": False, "reason": "bitsandbytes is not installed (requirements-optional.txt)"}
    if est > limit:
        return {**row, "ran": False, "reason": f"estimate {est / GB:.1f} GB is above the limit {limit / GB:.1f} GB "
                                               f"(--limit_gb {args.limit_gb}, available memory minus 2 GB)"}
    lock = ["flock", str(args.lock)] if args.lock else []  # one ~1B model in memory at a time on a shared machine
    cmd = lock + [sys.executable, __file__, "--worker", name, "--model", str(args.model), "--steps", str(args.steps),
           "--seq_len", str(args.seq_len), "--batch_size", str(args.batch_size)]
    load = os.getloadavg()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {**row, "ran": False, "reason": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {**out, "estimate_gb": row["estimate_gb"], "load_average_before": [round(x, 2) for x in load],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def parameter_counts(folder: Path) -> tuple[int, int]:
    """(all parameters, the blocks' Linear weights) of the model in ``folder``, on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from noisynn.targets import select_targets

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    return sum(p.numel() for p in model.parameters()), sum(t.numel for t in select_targets(model, "blocks"))


# ---------------------------------------------------------------------------------------------- teacher drift

def teacher_drift(steps: int, seq_len: int = 128, batch_size: int = 2, clip_sigma: float = 0.0) -> dict:
    """The module doc's drift section on the embedded model (copy teacher, lr 5e-7, weight clipping at
    ``clip_sigma`` per-channel stds after every step, 0: off as the CLI's default)."""
    import torch

    from noisynn.corpus import load_text
    from noisynn.experiments.noise_aware_training import afm
    from noisynn.experiments.noise_aware_training.analog_train import AnalogTrainConfig
    from noisynn.targets import select_targets
    from noisynn.models.loading import load_model

    lm = load_model("smollm2-135m", device="cpu", dtype="float32")
    ids = lm.tokenizer(load_text(split="train").text[:200_000], return_tensors="pt").input_ids[0]
    windows = ids[: (ids.numel() // seq_len) * seq_len].reshape(-1, seq_len)
    train, held = windows[: steps * batch_size], windows[-batch_size:]
    targets = select_targets(lm.model, "blocks")
    clean = {t.name: t.param.detach().clone() for t in targets}
    rows, last = [], {}

    def on_step(step, saved):
        with torch.no_grad():
            rel_max = max(float((t.param - clean[t.name]).abs().max() / clean[t.name].abs().max()) for t in targets)
            num = sum(float((t.param - clean[t.name]).double().pow(2).sum()) for t in targets)
            den = sum(float(clean[t.name].double().pow(2).sum()) for t in targets)
        rows.append({"step": step, "max_rel": rel_max, "frobenius_rel": (num / den) ** 0.5})
        if step == steps - 1:
            last.update({t.name: t.param.detach().clone() for t in targets})

    cfg = afm.AFMConfig(steps=steps, lr=5e-7, warmup=0.016, batch_size=batch_size, seq_len=seq_len, seed=0,
                        analog=AnalogTrainConfig(init_batches=1), save_every=10 ** 6, clip_sigma=clip_sigma)
    t0 = time.perf_counter()
    afm.afm_finetune(lm.model, train, cfg, on_step=on_step)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        clean_logits = torch.func.functional_call(lm.model, clean, (), {"input_ids": held}).logits
        shared_logits = torch.func.functional_call(lm.model, last, (), {"input_ids": held}).logits
    kl = float(afm.distillation_loss(shared_logits.double(), clean_logits.double()))
    per_step = rows[-1]["max_rel"] / steps
    return {"model": "smollm2-135m (float32)", "lr": 5e-7, "clip_sigma": clip_sigma, "steps": steps,
            "batch_size": batch_size,
            "seq_len": seq_len, "trained_tensors": len(targets), "per_step": rows,
            "kl_clean_vs_shared_teacher_nats_per_token": kl,
            "max_rel_per_step": per_step, "max_rel_after_300_steps_linear": per_step * 300,
            "seconds": round(seconds, 1)}


# ---------------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--limit_gb", type=float, default=18.0, help="run no option estimated above this (GB)")
    p.add_argument("--options", nargs="+", choices=list(OPTIONS), default=list(OPTIONS))
    p.add_argument("--model", type=Path, default=None, help="the 1B folder (default: <cache>/random-models/1b)")
    p.add_argument("--lock", type=Path, default=Path("/tmp/noisynn-1b.lock"),
                   help="flock this file around every 1B process (shared machines); '' for none")
    p.add_argument("--drift_steps", type=int, default=6)
    p.add_argument("--drift_batch", type=int, default=2)
    p.add_argument("--no_drift", action="store_true")
    p.add_argument("--no_1b", action="store_true", help="only the drift section")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "afm_memory.json")
    p.add_argument("--worker", choices=list(OPTIONS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.lock = args.lock if args.lock and str(args.lock) else None
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    result = {"argv": sys.argv, "machine": machine(), "load_average_start": [round(x, 2) for x in os.getloadavg()],
              "memory_available_gb_start": round(available_bytes() / GB, 1),
              "estimate": "base + 4 P + 4 N + {8 N adamw | 2.03 N 8-bit} + {4 N copy | 0 shared} + 1 GB",
              "options": {}}
    if not args.no_1b:
        args.model = args.model or build_random("1b", model_folder())
        n_all, n_trained = parameter_counts(args.model)
        result.update(model=str(args.model), params=n_all, trained_params=n_trained)
        for name in args.options:
            result["options"][name] = run_option(args, name, n_all, n_trained)
            print(name, json.dumps(result["options"][name]), flush=True)
    if not args.no_drift:
        result["teacher_drift"] = teacher_drift(args.drift_steps, batch_size=args.drift_batch)
        # AFM's clipping (2.5 per-channel stds) moves the student at once: one step shows it
        result["teacher_drift_clip_2.5"] = teacher_drift(1, batch_size=args.drift_batch, clip_sigma=2.5)
        for key in ("teacher_drift", "teacher_drift_clip_2.5"):
            print(key, json.dumps({k: v for k, v in result[key].items() if k != "per_step"}))
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
