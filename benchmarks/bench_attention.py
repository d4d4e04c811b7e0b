"""Cost of analog attention: decode tokens/s and a 512-token forward, analog / plain, on the embedded model, in one run.

    python benchmarks/bench_attention.py [--reps 5] [--new_tokens 32] [--tokens 512] [--threads 1] [--out FILE.json]

Plain and analog passes alternate (a change in machine load hits both); each is timed once per repetition after one
warm-up pair, and the ratio of the medians is reported for two settings: every knob off (the cost of the path:
two analog MVMs per kv head and layer, the softmax between them) and the paper's hardware model with noise and
leak (``--attn_preset gain_cell`` + write and read noise 0.02, tau spread 0.5). Decoding is greedy from a
64-token prompt with the KV cache (noisynn.evaluation.decode), batch 1, at ``--threads`` torch threads (default 1:
analog attention is many small kernels, and on a machine with more runnable processes than cores each
multi-threaded kernel can stall on a descheduled thread). Compare the load average printed with the numbers.
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

from noisynn.analog.attention import install_attention
from noisynn.analog.kv_store import AttentionSetting
from noisynn.corpus import load_text
from noisynn.evaluation import decode, tokenize
from noisynn.models.loading import load_model

SETTINGS = {
    "every knob off": AttentionSetting(),
    "gain_cell preset, write and read noise 0.02, tau 6250 spread 0.5":
        AttentionSetting.from_flags({"kv_write_noise": 0.02, "kv_read_noise": 0.02, "kv_tau_spread": 0.5},
                                    preset="gain_cell"),
}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--tokens", type=int, default=512, help="tokens of the forward pass")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model("smollm2-135m", device="cpu")
    ids = tokenize(lm.tokenizer, load_text().text, args.tokens)[: args.tokens][None]
    prompt = lm.tokenizer.decode(ids[0, :64])
    report = {"tokens": int(ids.shape[1]), "new_tokens": args.new_tokens, "reps": args.reps,
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg(), "runs": []}
    work = {"decode": lambda: decode(lm.model, lm.tokenizer, [prompt], args.new_tokens, greedy=True),
            "forward": lambda: lm.model(input_ids=ids, use_cache=False)}
    with torch.inference_mode():
        for name, setting in SETTINGS.items():
            for what, fn in work.items():
                plain, analog = [], []
                for rep in range(args.reps + 1):  # the first pair warms up
                    t_plain = timed(fn)
                    handle = install_attention(setting, lm.model, seed=rep)
                    t_analog = timed(fn)
                    handle.remove()
                    if rep:
                        plain.append(t_plain)
                        analog.append(t_analog)
                ratio = statistics.median(analog) / statistics.median(plain)
                row = {"setting": name, "work": what, "plain_s": statistics.median(plain),
                       "analog_s": statistics.median(analog), "ratio": ratio,
                       "pair_ratios": [a / b for a, b in zip(analog, plain)], "load_average": os.getloadavg()}
                if what == "decode":
                    row["plain_tokens_per_s"] = args.new_tokens / row["plain_s"]
                    row["analog_tokens_per_s"] = args.new_tokens / row["analog_s"]
                report["runs"].append(row)
                rate = (f", {row['plain_tokens_per_s']:.1f} -> {row['analog_tokens_per_s']:.1f} tokens/s"
                        if what == "decode" else "")
                print(f"{name} | {what}: plain {row['plain_s']:.3f} s, analog {row['analog_s']:.3f} s, "
                      f"ratio {ratio:.2f}{rate} (load {os.getloadavg()[0]:.1f})", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
