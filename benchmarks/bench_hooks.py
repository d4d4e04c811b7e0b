"""Cost of the converter hooks: hooked / plain forward pass of the embedded model, 512 tokens, in one run.

    python benchmarks/bench_hooks.py [--reps 7] [--tokens 512] [--threads N ...] [--out FILE.json]

Plain and hooked passes alternate (so a change in machine load hits both), each is timed once per
repetition after one warm-up, and the ratio of the medians is reported for two settings: aihwkit's
IOParameters defaults (DAC 7 bits per-token dynamic, output noise 0.06, ADC 9 bits, bound 12) and an
8-bit dynamic DAC alone (the setting aihwkit-lightning's analog layers were timed with), at torch's
default thread count and at one thread. The hooks add ~1,500 elementwise kernels per pass; on a machine
with more runnable processes than cores each multi-threaded kernel can stall on a descheduled thread,
so compare the load average printed with the numbers.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from noisynn.corpus import load_text
from noisynn.analog.mvm import AnalogIO
from noisynn.analog.hooks import ConverterHooks
from noisynn.evaluation import tokenize
from noisynn.targets import select_targets
from noisynn.models.loading import load_model

SETTINGS = {
    "aihwkit defaults: DAC 7b dynamic, out_noise 0.06, ADC 9b, bound 12": AnalogIO(),
    "DAC 8b dynamic only": AnalogIO(dac_bits=8, adc_bits=None, out_noise=0.0, out_bound=None),
}


def timed(model, ids) -> float:
    start = time.perf_counter()
    model(input_ids=ids, use_cache=False)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch thread counts to time (default: torch's default, then 1)")
    p.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args()
    default_threads = torch.get_num_threads()
    thread_counts = args.threads or sorted({default_threads, 1}, reverse=True)
    lm = load_model("smollm2-135m", device="cpu")
    ids = tokenize(lm.tokenizer, load_text().text, args.tokens)[: args.tokens][None]
    targets = select_targets(lm.model, "blocks")
    report = {"tokens": int(ids.shape[1]), "reps": args.reps, "cpu": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(), "runs": []}
    with torch.inference_mode():
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for name, io in SETTINGS.items():
                plain, hooked = [], []
                for rep in range(args.reps + 1):  # the first pair warms up
                    t_plain = timed(lm.model, ids)
                    hooks = ConverterHooks(lm.model, targets, io, seed=rep)
                    t_hooked = timed(lm.model, ids)
                    hooks.remove()
                    if rep:
                        plain.append(t_plain)
                        hooked.append(t_hooked)
                ratio = statistics.median(hooked) / statistics.median(plain)
                report["runs"].append({"threads": threads, "setting": name, "layers_hooked": len(hooks.tiles),
                                       "plain_s": statistics.median(plain), "hooked_s": statistics.median(hooked),
                                       "ratio": ratio, "pair_ratios": [h / q for h, q in zip(hooked, plain)],
                                       "load_average": os.getloadavg()})
                print(f"threads {threads} | {name}: plain {statistics.median(plain):.3f} s, hooked "
                      f"{statistics.median(hooked):.3f} s, ratio {ratio:.3f} (median of {args.reps}, {ids.shape[1]} "
                      f"tokens, {len(hooks.tiles)} layers; load average {os.getloadavg()[0]:.1f} on "
                      f"{os.cpu_count()} cores)", flush=True)
    torch.set_num_threads(default_threads)
    report["load_average_after"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
