"""One prepared GPU check (at most 8 minutes on one H100): prints one JSON, and writes it to $OUT/gpu_check.json
when $OUT is set.

    python benchmarks/gpu_check.py                # on a CUDA device
    python benchmarks/gpu_check.py --smoke        # the same sections on a tiny config on the CPU (seconds)

Sections, each timed and in its own try/except (a failure is recorded as an error string, the rest runs),
each skipped when the time budget (``--budget_s``, default 420 s) has run out:

1. ``build``: an 8B-class random Llama (hidden 4096, intermediate 14336, 32 layers, 32 heads, 8 KV heads,
   vocabulary 128,256) in bfloat16, built directly on the device (weights over 64 MiB cannot travel there);
   no tokenizer: random token ids.
2. ``floor``: a plain forward of ``batch x seq`` tokens (4 x 512): seconds (median), tokens/s, and
   ``peak_over_weights`` = peak allocated bytes during the forward / the weights' bytes.
3. ``sweep_point``: noisynn's ``NoiseInjector(model, "gaussian", "relative_channel", "blocks")`` at sigma 0.05:
   seconds of ``realize`` and of the noisy forward, ``forward_over_floor``, ``peak_over_weights`` (the
   injector's own state included), ``restore`` bit-exact.
4. ``noise_generation``: ``normal_`` with a device generator into a preallocated buffer, GB/s = bytes written /
   s; the reference is the device's copy bandwidth, ``dst.copy_(src)``: GB/s = 2 x bytes / s (read + write);
   ``noise_over_copy`` = their ratio.
5. ``analog_forward``: noisynn's converters (``ConverterHooks`` with the ``aihwkit_default`` preset: 512 x 512
   tiles, 7-bit DAC, 9-bit ADC, output noise, iterative bound management) on every block's Linear layer;
   tokens/s against the plain forward of the same batch (``analog_over_plain``).
6. ``afm``: the 8B model is freed; a random 1B Llama (hidden 2048, intermediate 8192, 16 layers, 32 heads, 8
   KV heads, vocabulary 49,152) in bfloat16 trains ``--afm_steps`` AFM steps (analog training forward,
   distillation), default (copy teacher, AdamW) and lean (shared teacher, gradient checkpointing, paged 8-bit
   AdamW when bitsandbytes is installed, else AdamW): seconds per step (median after the first) and
   ``peak_over_weights``. In bfloat16 at lr 5e-7 most updates round away: this times the step, nothing more.

Peaks: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` on CUDA; on the CPU (``--smoke``)
the process's VmHWM after a reset (``/proc/self/clear_refs``) minus its RSS before the section.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256)
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=49152)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512)
FULL = dict(big=LLAMA_8B, small=LLAMA_1B, batch=4, seq=512, analog_batch=1, noise_elements=1 << 30,
            afm_batch=4, afm_seq=512, reps=3)
SMOKE = dict(big=TINY, small=TINY, batch=2, seq=32, analog_batch=1, noise_elements=1 << 20,
             afm_batch=2, afm_seq=32, reps=2)
# seconds a section needs at least to be started (full run); in --smoke every section starts
RESERVE = {"build": 60, "floor": 20, "sweep_point": 40, "noise_generation": 15, "analog_forward": 40, "afm": 90}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- device helpers

class Device:
    """Synchronisation and peak memory on CUDA or (``--smoke``) the CPU; peaks in bytes above the section's start."""

    def __init__(self, name: str):
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"
        self._base = 0

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        """Start a peak measurement: CUDA's peak counter, or the process's VmHWM reset to its RSS now."""
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = 0
            return
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
        self._base = _proc_status("VmRSS")

    def peak(self) -> int:
        """Peak bytes since ``reset_peak``: allocated on CUDA (all of it), VmHWM - RSS at the reset on the CPU."""
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        return max(_proc_status("VmHWM") - self._base, 1)

    def describe(self) -> dict:
        out = {"device": str(self.device), "torch": torch.__version__, "python": platform.python_version()}
        if self.cuda:
            props = torch.cuda.get_device_properties(self.device)
            out.update(name=props.name, memory_gb=round(props.total_memory / 1e9, 1),
                       capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
        else:
            out.update(name=platform.processor() or platform.machine(), cores=os.cpu_count())
        return out


def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def timed(fn, dev: Device, reps: int, warmup: int = 1) -> list[float]:
    """Seconds of ``fn()`` per call (device synchronised around each), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    dev.sync()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        dev.sync()
        out.append(time.perf_counter() - t0)
    return out


def sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (a small ratio stays positive, unlike a fixed number of decimals)."""
    return float(f"{x:.{digits}g}")


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- models

@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_llama(shape: dict, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A random Llama of ``shape`` created directly on ``device`` in ``dtype`` (transformers' init, eval mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=False)
    torch.manual_seed(seed)
    with default_dtype(dtype), torch.device(device):
        model = LlamaForCausalLM(config)
    return model.eval()


def random_ids(vocab: int, batch: int, seq: int, device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=gen).to(device)


def forward(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


# ---------------------------------------------------------------------------------------------- sections

def section_build(state: dict, cfg: dict, dev: Device) -> dict:
    dev.reset_peak()
    t0 = time.perf_counter()
    state["model"] = build_llama(cfg["big"], torch.bfloat16, dev.device)
    dev.sync()
    model = state["model"]
    return {"seconds": round(time.perf_counter() - t0, 2), "params": sum(p.numel() for p in model.parameters()),
            "weights_gb": round(weight_bytes(model) / 1e9, 3), "dtype": "bfloat16", "shape": cfg["big"],
            "peak_over_weights": sig(dev.peak() / weight_bytes(model))}


def section_floor(state: dict, cfg: dict, dev: Device) -> dict:
    model = state["model"]
    ids = random_ids(model.config.vocab_size, cfg["batch"], cfg["seq"], dev.device)
    forward(model, ids)  # warm-up outside the peak (kernels, workspaces)
    dev.reset_peak()
    times = timed(lambda: forward(model, ids), dev, cfg["reps"], warmup=0)
    seconds = statistics.median(times)
    state["floor_s"] = seconds
    return {"batch": cfg["batch"], "seq": cfg["seq"], "seconds": round(seconds, 4), "times": times,
            "tokens_per_s": round(ids.numel() / seconds, 1),
            "peak_over_weights": sig(dev.peak() / weight_bytes(model))}


def section_sweep_point(state: dict, cfg: dict, dev: Device) -> dict:
    from noisynn.inject import NoiseInjector

    model = state["model"]
    ids = random_ids(model.config.vocab_size, cfg["batch"], cfg["seq"], dev.device)
    before = {n: p.detach()[:2, :8].clone() for n, p in list(model.named_parameters())[1:4]}
    dev.reset_peak()
    t0 = time.perf_counter()
    injector = NoiseInjector(model, "gaussian", "relative_channel", "blocks")
    dev.sync()
    setup = time.perf_counter() - t0
    realize = timed(lambda: injector.realize(1, 0.05), dev, 1, warmup=0)[0]
    times = timed(lambda: forward(model, ids), dev, cfg["reps"], warmup=0)
    peak = dev.peak()
    t0 = time.perf_counter()
    injector.restore()
    dev.sync()
    restore = time.perf_counter() - t0
    exact = all(torch.equal(p.detach()[:2, :8], before[n]) for n, p in list(model.named_parameters())[1:4])
    del injector
    seconds = statistics.median(times)
    return {"noise": "gaussian relative_channel blocks, sigma 0.05", "setup_seconds": round(setup, 3),
            "realize_seconds": round(realize, 4), "forward_seconds": round(seconds, 4),
            "restore_seconds": round(restore, 4), "restored_exactly": exact,
            "forward_over_floor": sig(seconds / state["floor_s"]) if state.get("floor_s") else None,
            "point_over_floor": sig((realize + seconds) / state["floor_s"]) if state.get("floor_s") else None,
            "peak_over_weights": sig(peak / weight_bytes(model))}


def section_noise_generation(state: dict, cfg: dict, dev: Device) -> dict:
    """Noise GB/s (bytes written / s) per dtype against the copy bandwidth (2 x bytes / s: read and write)."""
    n = cfg["noise_elements"]
    rate = {}  # GB/s
    gen = torch.Generator(device=dev.device).manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        buf = torch.empty(n, dtype=dtype, device=dev.device)
        seconds = statistics.median(timed(lambda: buf.normal_(generator=gen), dev, cfg["reps"]))
        rate[str(dtype)[6:]] = buf.numel() * buf.element_size() / seconds / 1e9
        del buf
    src = torch.empty(n, dtype=torch.float32, device=dev.device).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = statistics.median(timed(lambda: dst.copy_(src), dev, cfg["reps"]))
    copy = 2 * src.numel() * src.element_size() / seconds / 1e9
    del src, dst
    out = {"elements": n, "copy_gb_per_s": sig(copy)}
    for name, value in rate.items():
        out[f"noise_gb_per_s_{name}"] = sig(value)
        out[f"noise_over_copy_{name}"] = sig(value / copy)
    return out


def section_analog_forward(state: dict, cfg: dict, dev: Device) -> dict:
    from noisynn.analog.hooks import ConverterHooks
    from noisynn.targets import select_targets
    from noisynn.analog.presets import get_preset

    model = state["model"]
    ids = random_ids(model.config.vocab_size, cfg["analog_batch"], cfg["seq"], dev.device)
    plain = statistics.median(timed(lambda: forward(model, ids), dev, cfg["reps"]))
    dev.reset_peak()
    with ConverterHooks(model, select_targets(model, "blocks"), get_preset("aihwkit_default"), seed=0) as hooks:
        first = timed(lambda: forward(model, ids), dev, 1, warmup=0)[0]  # also the warm-up
        # a slow analog forward (many tiles at 8B) gets one more timed pass only: the section stays within its share
        times = timed(lambda: forward(model, ids), dev, 1 if first > 20 else cfg["reps"], warmup=0)
        layers = len(hooks.tiles)
    analog = statistics.median(times)
    return {"preset": "aihwkit_default", "layers": layers, "batch": cfg["analog_batch"], "seq": cfg["seq"],
            "first_analog_seconds": round(first, 4), "plain_seconds": round(plain, 4), "analog_seconds": round(analog, 4),
            "plain_tokens_per_s": round(ids.numel() / plain, 1), "analog_tokens_per_s": round(ids.numel() / analog, 1),
            "analog_over_plain": sig(plain / analog),
            "peak_over_weights": sig(dev.peak() / weight_bytes(model))}


def afm_run(model, cfg: dict, dev: Device, steps: int, teacher: str, optimizer: str, ckpt: bool) -> dict:
    """``steps`` AFM steps on ``model``: seconds per step (median after the first) and the peak over the weights."""
    from noisynn.experiments.noise_aware_training import afm
    from noisynn.experiments.noise_aware_training.analog_train import AnalogTrainConfig

    chunks = random_ids(model.config.vocab_size, steps * cfg["afm_batch"], cfg["afm_seq"], "cpu")
    stamps = []
    acfg = afm.AFMConfig(steps=steps, lr=5e-7, warmup=0.016, batch_size=cfg["afm_batch"], seq_len=cfg["afm_seq"],
                         clip_sigma=0.0, analog=AnalogTrainConfig(init_batches=1), grad_checkpointing=ckpt,
                         teacher=teacher, optimizer=optimizer, save_every=10 ** 6)
    dev.reset_peak()
    t0 = time.perf_counter()
    _, _, history = afm.afm_finetune(model, chunks, acfg, on_step=lambda s, _: (dev.sync(), stamps.append(
        time.perf_counter())))
    per = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    return {"teacher": teacher, "optimizer": optimizer, "gradient_checkpointing": ckpt,
            "batch": cfg["afm_batch"], "seq": cfg["afm_seq"], "step_seconds": [round(s, 3) for s in per],
            "seconds_per_step": round(statistics.median(per[1:] or per), 4),
            "losses": [h["loss"] for h in history],
            "peak_over_weights": sig(dev.peak() / weight_bytes(model))}


def section_afm(state: dict, cfg: dict, dev: Device) -> dict:
    import importlib.util

    state.pop("model", None)  # the 8B model is freed first
    dev.reset_peak()
    model = build_llama(cfg["small"], torch.bfloat16, dev.device, seed=1)
    eight_bit = importlib.util.find_spec("bitsandbytes") is not None
    lean_opt = ("paged_adamw8bit" if dev.cuda else "adamw8bit") if eight_bit else "adamw"
    out = {"params": sum(p.numel() for p in model.parameters()), "weights_gb": round(weight_bytes(model) / 1e9, 3)}
    out["default"] = afm_run(model, cfg, dev, cfg["afm_steps"], "copy", "adamw", False)
    out["lean"] = afm_run(model, cfg, dev, cfg["afm_steps"], "shared", lean_opt, True)
    out["lean_over_default_peak"] = sig(out["lean"]["peak_over_weights"] / out["default"]["peak_over_weights"])
    del model
    return out


SECTIONS = {"build": section_build, "floor": section_floor, "sweep_point": section_sweep_point,
            "noise_generation": section_noise_generation, "analog_forward": section_analog_forward,
            "afm": section_afm}


# ---------------------------------------------------------------------------------------------- main

def run(args) -> dict:
    """Every section in order, each in its own try/except, within the time budget; the result as a dict."""
    t_start = time.perf_counter()
    cfg = dict(SMOKE if args.smoke else FULL, afm_steps=args.afm_steps)
    if not args.smoke and not torch.cuda.is_available():
        return {"error": "no CUDA device: run with --smoke on the CPU", "smoke": False}
    dev = Device("cpu" if args.smoke else "cuda")
    result = {"smoke": args.smoke, "device": dev.describe(), "budget_s": args.budget_s, "sections": {}}
    state: dict = {}
    for name, fn in SECTIONS.items():
        left = args.budget_s - (time.perf_counter() - t_start)
        if not args.smoke and left < RESERVE[name]:
            result["sections"][name] = {"skipped": f"time budget: {left:.0f} s left, the section needs ~{RESERVE[name]} s"}
            continue
        if name != "build" and name != "noise_generation" and name != "afm" and "model" not in state:
            result["sections"][name] = {"skipped": "no model (the build section failed)"}
            continue
        t0 = time.perf_counter()
        log(f"gpu_check: {name} ...")
        try:
            out = fn(state, cfg, dev)
        except Exception as exc:  # noqa: BLE001 - recorded, and the next section runs
            out = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
        out["section_seconds"] = round(time.perf_counter() - t0, 2)
        result["sections"][name] = out
        log(f"gpu_check: {name} {json.dumps(out)[:300]}")
        gc.collect()
        if dev.cuda:
            torch.cuda.empty_cache()
    state.clear()
    result["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    result["errors"] = {k: v["error"] for k, v in result["sections"].items() if "error" in v}
    return result


def ratios(result: dict) -> dict:
    """The check's ratios by name (for the reader and the smoke test): each should be finite and positive."""
    s = result.get("sections", {})
    pick = lambda sec, *keys: (lambda d: [d.get(k) for k in keys])(s.get(sec, {}))  # noqa: E731
    names = {"floor.peak_over_weights": pick("floor", "peak_over_weights")[0],
             "sweep_point.forward_over_floor": pick("sweep_point", "forward_over_floor")[0],
             "sweep_point.peak_over_weights": pick("sweep_point", "peak_over_weights")[0],
             "noise_generation.noise_over_copy_float32": pick("noise_generation", "noise_over_copy_float32")[0],
             "analog_forward.analog_over_plain": pick("analog_forward", "analog_over_plain")[0],
             "afm.default.peak_over_weights": s.get("afm", {}).get("default", {}).get("peak_over_weights"),
             "afm.lean.peak_over_weights": s.get("afm", {}).get("lean", {}).get("peak_over_weights")}
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny config on the CPU (a few seconds): the code paths only")
    p.add_argument("--budget_s", type=float, default=420.0, help="start no section after this many seconds")
    p.add_argument("--afm_steps", type=int, default=4)
    args = p.parse_args(argv)
    result = run(args)
    result["ratios"] = ratios(result)
    text = json.dumps(result)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    return 2 if "sections" not in result else 0  # no device: nothing was checked


if __name__ == "__main__":
    sys.exit(main())
