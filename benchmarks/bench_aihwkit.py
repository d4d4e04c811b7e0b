"""Whole-model perplexity under aihwkit's inference defaults: real IBM aihwkit 1.2.0 against noisynn, one run.

    python benchmarks/bench_aihwkit.py [--programmings 5] [--times 1 3600 86400 31536000] [--tokens 1024]
                                       [--out benchmarks/results/aihwkit.json]

The embedded SmolLM2-135M scores the same tokens (the first --tokens of the embedded evaluation text, noisynn's
``load_text`` + ``tokenize``, windows of ``fit_context`` = 512 tokens, ``compute_perplexity``) on both sides:

- aihwkit: ``convert_to_analog(model, InferenceRPUConfig(), exclude_modules=["lm_head"])`` (a deep copy): every
  ``nn.Linear`` of the 30 blocks becomes an ``AnalogLinear`` (tiles of at most 512 x 512); the embeddings are no
  Linear and the (tied) head is excluded, so both stay digital, as noisynn's default ``--targets blocks``.
  ``InferenceRPUConfig()``: ``IOParameters()`` forward (DAC 7 bits, ADC 9 bits, out_bound 12, out_noise 0.06,
  ABS_MAX noise management, ITERATIVE bound management), ``PCMLikeNoiseModel`` (g_max 25, one abs-max per tile:
  ``SinglePairConductanceConverter``), ``GlobalDriftCompensation``. Per programming k: ``torch.manual_seed(k)``,
  ``model.eval()``, ``program_analog_weights()``, then at each time ``drift_analog_weights(t)`` (the same
  programmed weights and drift exponents at every time, read noise redrawn; the compensation factor measured
  through the tile) and one perplexity pass. Its forward noise is seeded from the clock: not reproducible.
- noisynn: ``NoiseInjector`` with ``pcm`` (``pair tile``, tiles 512 x 512, ``drift_compensation`` with the
  ``readout`` method), ``--scale relative_max`` (one abs-max per tile), on ``--targets blocks``, and
  ``ConverterHooks`` with ``AnalogIO()`` (= the ``aihwkit_default`` preset) attached, so the compensation factor
  is measured per tile through the analog forward and applied after the ADC: the drift_over_time experiment's
  machinery (``noisynn.experiments.drift_over_time.run.trial``). Programming k = ``realize(k, 1)``; the
  converters' noise is reseeded per programming and time.

Run it with ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` on a shared machine (as ``make bench`` does): aihwkit's
programming and drift are thousands of small torch operations and per-tile C++ readouts (30 tiles a block), which
slowed down about 5x with 2 threads each under load from other jobs.

Reported per time and side: every programming's perplexity, the median, [min, max], and whether noisynn's median
lies inside aihwkit's [min, max]; the clean (digital) perplexity; the machine, load averages and wall times.
aihwkit is a benchmark / test reference only (``make install`` puts the shared wheel in when it is there;
``make aihwkit`` builds it): the library never imports it.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = None
    import aihwkit

    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "aihwkit": aihwkit.__version__,
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(), "git": git}


def uptime() -> str | None:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def summary(values: list[float]) -> dict:
    return {"perplexities": values, "median": statistics.median(values), "min": min(values), "max": max(values)}


def compare(t: float, aihwkit: list[float], noisynn: list[float]) -> dict:
    a, b = summary(aihwkit), summary(noisynn)
    return {"t_seconds": t, "aihwkit": a, "noisynn": b,
            "noisynn_median_inside_aihwkit_range": a["min"] <= b["median"] <= a["max"],
            "median_ratio_noisynn_over_aihwkit": b["median"] / a["median"]}


class AihwkitSide:
    """aihwkit's converted deep copy of ``model``; ``programming(k)`` = seed, program, then each time: drift, score."""

    def __init__(self, model, log):
        from aihwkit.nn.conversion import convert_to_analog
        from aihwkit.simulator.configs import InferenceRPUConfig

        start = time.perf_counter()
        self.model = convert_to_analog(model, InferenceRPUConfig(), exclude_modules=["lm_head"])
        self.model.eval()
        n_analog = sum(1 for m in self.model.modules() if type(m).__name__ == "AnalogLinear")
        self.walls = {"convert": time.perf_counter() - start, "analog_linear_layers": n_analog, "program": [],
                      "drift": [], "perplexity": []}
        log(f"aihwkit: {n_analog} AnalogLinear layers ({self.walls['convert']:.0f} s to convert)")

    def programming(self, k: int, times, score, log) -> dict:
        out = {}
        torch.manual_seed(k)
        t0 = time.perf_counter()
        self.model.program_analog_weights()
        self.walls["program"].append(time.perf_counter() - t0)
        for t in times:
            t0 = time.perf_counter()
            self.model.drift_analog_weights(t)
            self.walls["drift"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out[t] = score(self.model)
            self.walls["perplexity"].append(time.perf_counter() - t0)
            log(f"aihwkit  programming {k} t={t:g}s: perplexity {out[t]:.3f} "
                f"(program {self.walls['program'][-1]:.0f} s, drift {self.walls['drift'][-1]:.0f} s, "
                f"score {self.walls['perplexity'][-1]:.0f} s)")
        return out


class NoisynnSide:
    """noisynn on ``model`` itself: pcm (pair tile, relative_max, readout compensation) + ConverterHooks(AnalogIO());
    ``programming(k)`` = realize(k, 1) at each time (one programming, read at each time), score."""

    def __init__(self, model, times):
        from noisynn.analog.mvm import AnalogIO
        from noisynn.analog.hooks import ConverterHooks
        from noisynn.inject import NoiseInjector
        from noisynn.spec import make_noise_spec

        spec = make_noise_spec("pcm", {"t_seconds": times[0], "drift_compensation": True, "pair": "tile",
                                       "compensation_method": "readout", "tile_size": (512, 512)},
                               "relative_max", "blocks")
        self.model = model
        self.injector = NoiseInjector(model, spec)
        self.hooks = ConverterHooks(model, self.injector.targets, AnalogIO())
        self.injector.attach(self.hooks)
        self.walls = {"converter_layers": len(self.hooks.layers), "noise": self.injector.describe()["noise"],
                      "converters": self.hooks.describe(), "program_and_read": [], "perplexity": []}

    def programming(self, k: int, times, score, log) -> dict:
        from noisynn.seeding import derive_seed

        out = {}
        for t in times:
            t0 = time.perf_counter()
            self.injector.noise.t_seconds = t
            self.hooks.reseed(derive_seed(k, "bench-aihwkit-converters", repr(t)))
            self.injector.realize(k, 1.0)
            self.walls["program_and_read"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out[t] = score(self.model)
            self.walls["perplexity"].append(time.perf_counter() - t0)
            log(f"noisynn  programming {k} t={t:g}s: perplexity {out[t]:.3f} (program+read "
                f"{self.walls['program_and_read'][-1]:.0f} s, score {self.walls['perplexity'][-1]:.0f} s)")
        return out

    def close(self) -> None:
        self.injector.restore()
        self.hooks.remove()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--programmings", type=int, default=5, help="programmings per side (default: %(default)s)")
    p.add_argument("--times", type=float, nargs="+", default=[1.0, 3600.0, 86400.0, 31536000.0],
                   help="read times after programming, seconds (default: 1 s, 1 h, 1 d, 1 y)")
    p.add_argument("--tokens", type=int, default=1024, help="evaluation tokens (default: %(default)s)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--resume", action="store_true",
                   help="continue the cut-short run in --out (same programmings and times): its programmings are "
                        "kept and the next ones run (programming k is seeded by k on both sides)")
    args = p.parse_args(argv)
    try:
        import aihwkit  # noqa: F401
    except ImportError:
        print("aihwkit is not installed: `make install` with ../shared/wheels holding the wheel, or `make aihwkit`",
              file=sys.stderr)
        return 2
    from noisynn.corpus import load_text
    from noisynn.evaluation import compute_perplexity, tokenize
    from noisynn.models.checks import fit_context
    from noisynn.models.loading import load_model

    def log(msg):
        print(msg, flush=True)

    began = time.perf_counter()
    info = {"command": "python benchmarks/bench_aihwkit.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine(), "uptime_before": uptime(), "load_average_before": os.getloadavg()}
    lm = load_model("smollm2-135m", device="cpu")
    window = fit_context(lm)
    text = load_text()
    ids = tokenize(lm.tokenizer, text.text, args.tokens)
    times = sorted(args.times)
    t0 = time.perf_counter()
    clean = float(compute_perplexity(lm.model, lm.tokenizer, ids, max_length=window))
    info["clean_perplexity"] = clean
    info["clean_seconds"] = time.perf_counter() - t0
    log(f"clean perplexity {clean:.3f} ({info['clean_seconds']:.0f} s); {ids.numel() - 1} tokens, window {window}")

    def score(model):
        return float(compute_perplexity(model, lm.tokenizer, ids, max_length=window))

    info.update({
        "model": "smollm2-135m (embedded SmolLM2-135M-Instruct, Q4_1 dequantized to float32)",
        "eval_text": {k: text.info[k] for k in ("source", "split", "sha256") if k in text.info},
        "eval_tokens": int(ids.numel() - 1), "window": window, "programmings": args.programmings,
        "aihwkit_setting": "convert_to_analog(model, InferenceRPUConfig(), exclude_modules=['lm_head']); eval(); "
                           "torch.manual_seed(k); program_analog_weights(); drift_analog_weights(t)",
        "noisynn_setting": "NoiseInjector pcm (pair tile, tile_size 512x512, drift_compensation readout), scale "
                           "relative_max, targets blocks; ConverterHooks(AnalogIO()) attached; realize(k, 1.0)"})
    ai = AihwkitSide(lm.model, log)  # a deep copy: converted before noisynn touches the model
    nn_ = NoisynnSide(lm.model, times)
    got = {"aihwkit": {t: [] for t in times}, "noisynn": {t: [] for t in times}}
    first = 0
    if args.resume and args.out and Path(args.out).is_file():
        old = json.loads(Path(args.out).read_text())
        if old.get("programmings") != args.programmings or sorted(float(k) for k in old["results"]) != times:
            print(f"--resume: {args.out} has other programmings or times", file=sys.stderr)
            return 2
        first = int(old["programmings_done"])
        for key, r in old["results"].items():
            for side in got:
                got[side][float(key)] = list(r[side]["perplexities"])
        info["resumed"] = {"programmings_kept": first, "from_command": old["command"],
                           "their_uptime_before": old["uptime_before"], "their_uptime_after": old["uptime_after"]}
        log(f"resuming after {first} programmings")
    try:
        for k in range(first, args.programmings):  # interleaved: a change in machine load hits both sides
            for side, runner in (("aihwkit", ai), ("noisynn", nn_)):
                for t, ppl in runner.programming(k, times, score, log).items():
                    got[side][t].append(ppl)
            info["programmings_done"] = k + 1
            results = {f"{t:g}": compare(t, got["aihwkit"][t], got["noisynn"][t]) for t in times}
            info.update({"results": results, "complete": k + 1 == args.programmings,
                         "wall_seconds": {"aihwkit": ai.walls, "noisynn": {k_: v for k_, v in nn_.walls.items()
                                                                           if k_ not in ("noise", "converters")},
                                          "total": time.perf_counter() - began},
                         "noisynn_noise": nn_.walls["noise"], "noisynn_converters": nn_.walls["converters"],
                         "uptime_after": uptime(), "load_average_after": os.getloadavg()})
            if args.out:  # after every programming: a cut-short run keeps what it has
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(info, indent=1) + "\n")
    finally:
        nn_.close()
    print()
    print(f"{'t (s)':>8} {'side':>8} {'median':>9} {'[min, max]':>22}  perplexities")
    for key, r in results.items():
        for side in ("aihwkit", "noisynn"):
            s = r[side]
            print(f"{key:>8} {side:>8} {s['median']:9.2f} {'[%.2f, %.2f]' % (s['min'], s['max']):>22}  "
                  + " ".join(f"{v:.2f}" for v in s["perplexities"]))
        print(f"{'':>8} noisynn median inside aihwkit's [min, max]: {r['noisynn_median_inside_aihwkit_range']}")
    print(f"clean perplexity {clean:.2f}; total {info['wall_seconds']['total']:.0f} s; "
          f"load {info['load_average_after']}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
