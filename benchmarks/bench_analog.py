"""Cost of the analog forward: noisynn's analog_matmul and aihwkit-lightning 2.1.0 against the plain matmul, one run.

    python benchmarks/bench_analog.py [--reps 5] [--tokens 512] [--threads 1] [--tiles 0 1024 512 256 128]
                                      [--model_reps 2 | --no_model] [--profile] [--out benchmarks/results/analog.json]

Layers and tokens: block 0's mlp.up_proj (576 -> 1536) and mlp.down_proj (1536 -> 576) of the embedded
SmolLM2-135M, fed the inputs they see on the first --tokens tokens of the embedded text (captured once).
Converters: aihwkit's IOParameters defaults (DAC 7 bits per-token dynamic, ADC 9 bits, out_bound 12,
out_noise 0.06 in normalized units, i.e. r x max|W_tile|), per-tensor w_max per tile; per-MVM weight noise
w_noise = 0.02 (additive, relative to max|W_tile|) on or off. For each tile size T (0 = the whole layer):

- noisynn ``analog_matmul``: tiles T x all outputs (lightning's mapping: it splits inputs only) with bound
  management none, and T x T (aihwkit's) with bound management none and iterative; w_noise off and on;
- aihwkit-lightning ``AnalogLinear`` with ``max_input_size`` T, in training mode under no_grad (the only
  mode in which it adds output and weight noise), the settings both support: tiles T x all, bound
  management none (lightning only clips), w_noise off and on (its ADD_NORMAL modifier, one draw per call).

Then the whole model's 512-token forward with converters on every block's Linear layer (plain,
noisynn's hooks, lightning's AnalogLinear swapped in), unless --no_model. Every setting is timed
once per round, all in turn (a change in machine load hits them all), after one warm-up round; the
medians are reported with their ratio to the plain forward's median. Times are CPU times of this process
(``time.process_time``; wall times are recorded too): on a machine shared with other jobs the wall clock
also counts the time spent waiting for a core, which has nothing to do with the code. ``--profile`` also
prints torch.profiler's top operators of noisynn and lightning on each layer at the smallest tile size
(bound management none, w_noise off). The machine is stated (CPU, cores, load average before and after,
``uptime``).
"""

from __future__ import annotations

import argparse
import itertools
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
sys.path.insert(0, str(ROOT / "tests"))  # lightning_map: the one mapping of settings, shared with the cross-check
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from lightning_map import analog_io, lightning_available, lightning_linear, rpu_config, split_sizes  # noqa: E402

IO = dict(dac_bits=7, adc_bits=9, out_bound=12.0, out_noise=0.06)
W_NOISE = 0.02
LAYERS = ("model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj")


def round_robin(cases: list[tuple[dict, object]], reps: int) -> list[dict]:
    """Time every (row, fn) once per rep, all cases in turn (so a change in machine load hits them all),
    after one warm-up round. row["seconds"]: the median wall time; row["cpu_seconds"]: the median CPU time of
    this process (all its threads), which on a shared machine leaves out the time it waited for a core;
    ratios are of CPU times (ratio_to_plain) and of wall times (wall_ratio_to_plain)."""
    wall = [[] for _ in cases]
    cpu = [[] for _ in cases]
    for rep in range(reps + 1):
        for i, (_, fn) in enumerate(cases):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            if rep:
                wall[i].append(time.perf_counter() - start)
                cpu[i].append(time.process_time() - start_cpu)
    rows = [{**row, "seconds": statistics.median(w), "cpu_seconds": statistics.median(c), "times": w, "cpu_times": c}
            for (row, _), w, c in zip(cases, wall, cpu)]
    plain = next(r for r in rows if r["impl"] == "plain")
    for r in rows:
        r["ratio_to_plain"] = r["cpu_seconds"] / plain["cpu_seconds"]
        r["wall_ratio_to_plain"] = r["seconds"] / plain["seconds"]
    return rows


def machine() -> dict:
    model_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = None
    import aihwkit_lightning

    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = None
    return {"cpu": model_name, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "aihwkit_lightning": aihwkit_lightning.__version__, "python": platform.python_version(),
            "git": git, "uptime_before": uptime, "load_average_before": os.getloadavg()}


def capture_inputs(lm, ids) -> dict[str, torch.Tensor]:
    """The inputs each benchmarked layer receives on ``ids`` (one plain forward)."""
    seen, handles = {}, []
    for name in LAYERS:
        module = lm.model.get_submodule(name)
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: seen.__setitem__(name, a[0][0])))
    lm.model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    return seen


def layer_cases(x, weight, tiles, reps):
    """Every setting on one layer: rows of {impl, tiles, n_tiles, bound_management, w_noise, seconds, ratio}."""
    from noisynn.analog.mvm import analog_matmul

    out_f, in_f = weight.shape
    cases = [({"impl": "plain", "tiles": "-", "n_tiles": 1, "bound_management": "-", "w_noise": 0.0},
              lambda: F.linear(x, weight))]
    gen = torch.Generator().manual_seed(0)
    for t in tiles:
        # T x all outputs (lightning's mapping) with bound management none; T x T (aihwkit's) with both
        shapes = [(0, "none")] + ([(t, "none")] if t else []) + [(t, "iterative")]
        for (tile_out, bm), wn in itertools.product(shapes, (0.0, W_NOISE)):
            io = analog_io(**IO, tile_in=t, tile_out=tile_out, bound_management=bm, w_noise=wn)
            n_tiles = len(split_sizes(in_f, t)) * len(split_sizes(out_f, tile_out))
            cases.append(({"impl": "noisynn", "tiles": f"{t or 'all'}x{tile_out or 'all'}", "n_tiles": n_tiles,
                           "bound_management": bm, "w_noise": wn},
                          lambda io=io: analog_matmul(x, weight, io, generator=gen)))
        for wn in (0.0, W_NOISE):
            lit = lightning_linear(weight, train=True, tile_in=t, w_noise=wn, **IO)
            cases.append(({"impl": "lightning", "tiles": f"{t or 'all'}xall", "n_tiles": len(lit.in_sizes),
                           "bound_management": "none", "w_noise": wn}, lambda lit=lit: lit(x)))
    return round_robin(cases, reps)


def profile(x, weight, tile, reps=5):
    """torch.profiler's operators by self CPU time, noisynn against lightning, one setting both support."""
    from noisynn.analog.mvm import analog_matmul

    io = analog_io(**IO, tile_in=tile, bound_management="none")
    lit = lightning_linear(weight, train=True, tile_in=tile, **IO)
    gen = torch.Generator().manual_seed(0)
    for name, fn in (("noisynn", lambda: analog_matmul(x, weight, io, generator=gen)), ("lightning", lambda: lit(x))):
        fn()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(reps):
                fn()
        print(f"--- {name}, {tuple(weight.shape)}, tiles of {tile} inputs, {reps} calls")
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=12,
                                                                 max_name_column_width=24,
                                                                 max_shapes_column_width=50))


def model_cases(lm, ids, reps, tile=512):
    """The whole forward: plain, noisynn's converter hooks on every block's Linear, lightning's AnalogLinear
    swapped in for them (built once; each timed call installs its setting, runs, and takes it off again)."""
    from aihwkit_lightning.nn import AnalogLinear

    from noisynn.analog.hooks import ConverterHooks
    from noisynn.targets import select_targets

    model = lm.model
    targets = select_targets(model, "blocks")

    def forward():
        model(input_ids=ids, use_cache=False)

    def with_hooks(io):
        hooks = ConverterHooks(model, targets, io, seed=0)
        try:
            forward()
        finally:
            hooks.remove()

    digital, analog = {}, {}
    for t in targets:
        name = t.name[: -len(".weight")]
        module = model.get_submodule(name)
        if isinstance(module, torch.nn.Linear):
            digital[name] = module
            layer = AnalogLinear.from_digital(module, rpu_config(in_features=module.in_features, tile_in=tile, **IO))
            analog[name] = layer.requires_grad_(False).train()

    def swap(modules):
        for name, module in modules.items():
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module)

    def with_lightning():
        swap(analog)
        try:
            forward()
        finally:
            swap(digital)

    cases = [({"impl": "plain", "tiles": "-", "bound_management": "-"}, forward)]
    for bm in ("none", "iterative"):
        for tile_out in (0, tile):
            io = analog_io(**IO, tile_in=tile, tile_out=tile_out, bound_management=bm)
            cases.append(({"impl": "noisynn", "tiles": f"{tile}x{tile_out or 'all'}", "bound_management": bm,
                           "layers": len(digital)}, lambda io=io: with_hooks(io)))
    cases.append(({"impl": "lightning", "tiles": f"{tile}xall", "bound_management": "none", "layers": len(analog)},
                  with_lightning))
    return round_robin(cases, reps)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--reps", type=int, default=5, help="timed calls per layer setting (after one warm-up)")
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    p.add_argument("--tiles", type=int, nargs="+", default=[0, 1024, 512, 256, 128],
                   help="tile sizes T (inputs; 0 = the whole layer)")
    p.add_argument("--model_reps", type=int, default=2, help="timed whole-model forwards per setting")
    p.add_argument("--no_model", action="store_true", help="skip the whole-model forward")
    p.add_argument("--profile", action="store_true", help="print the top operators at the smallest tile size")
    p.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args()
    if not lightning_available():
        print("aihwkit-lightning is not installed: pip install --no-deps -r requirements-test-nodeps.txt",
              file=sys.stderr)
        return 2
    from noisynn.corpus import load_text
    from noisynn.evaluation import tokenize
    from noisynn.models.loading import load_model

    torch.set_num_threads(args.threads)
    report = {"machine": machine(), "threads": args.threads, "tokens": args.tokens, "reps": args.reps,
              "converters": {**IO, "input_range": "dynamic", "out_noise_units": "normalized", "w_noise": W_NOISE,
                             "w_noise_type": "additive_constant"}, "layers": {}, "model": None}
    started = time.perf_counter()
    lm = load_model("smollm2-135m", device="cpu")
    ids = tokenize(lm.tokenizer, load_text().text, args.tokens)[: args.tokens][None]
    with torch.no_grad():
        inputs = capture_inputs(lm, ids)
        for name in LAYERS:
            weight = lm.model.get_submodule(name).weight.detach()
            rows = layer_cases(inputs[name], weight, args.tiles, args.reps)
            report["layers"][name] = {"shape_out_in": list(weight.shape), "rows": rows}
            for r in rows:
                print(f"{name} {tuple(weight.shape)} {r['impl']:9s} tiles {r['tiles']:9s} ({r['n_tiles']:3d}) "
                      f"bm {r['bound_management']:9s} w_noise {r['w_noise']:.2f}: {1e3 * r['cpu_seconds']:7.2f} ms "
                      f"CPU x{r['ratio_to_plain']:.2f} (wall {1e3 * r['seconds']:7.2f} ms)", flush=True)
            if args.profile:
                profile(inputs[name], weight, min(t for t in args.tiles if t) if any(args.tiles) else 0)
        if not args.no_model:
            report["model"] = {"tokens": int(ids.shape[1]), "reps": args.model_reps,
                               "rows": model_cases(lm, ids, args.model_reps)}
            for r in report["model"]["rows"]:
                print(f"model {r['impl']:9s} tiles {r['tiles']:9s} bm {r['bound_management']:9s}: "
                      f"{r['cpu_seconds']:.3f} s CPU x{r['ratio_to_plain']:.2f} (wall {r['seconds']:.3f} s)", flush=True)
    report["wall_s"] = time.perf_counter() - started
    report["machine"]["load_average_after"] = os.getloadavg()
    try:
        report["machine"]["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True,
                                                           timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
