"""Benchmark: peak memory above the process's base, over the weights' bytes, per experiment path.

    python benchmarks/bench_memory.py --models embedded,1b      # = make bench (embedded only there)
    python benchmarks/bench_memory.py --models embedded --paths sweep,floor --out /tmp/m.json

Each path runs in a fresh subprocess (this file with ``--child``): it imports torch, transformers,
noisynn and the experiment's module (lm_eval too for the task paths), reads its RSS (VmRSS, the
"base"), then runs the experiment's own entry point in-process (``run(argv)`` of the registry's
module, or the explorer's session API) and reports its peak RSS (VmHWM), the RSS right after the
model load, the wall time, the sweep loop's time and the number of points (rows of results.csv).

    ratio       = (peak RSS - base) / weights' bytes     (target: <= 1.3), split into
    load_ratio  = the same with the peak reached during ``load_model`` (VmHWM right after it), and
    run_ratio   = the same with the peak after the load (VmHWM reset through /proc/self/clear_refs)
    floor       = the clean evaluation a sweep point runs (``quality_metrics`` on the sweep's eval ids,
                  prompt and settings, one call per point), no injector: what the plain forward costs
    time ratio  = seconds per point / the floor's seconds per point   (target for the sweep: <= 1.1)

Only the sweep rows' time ratio is like for like (same evaluation per point); the other paths run
the same evaluation settings where they have them, plus their own work (converters, probes, tasks).
The 1b model is a random Llama of Llama-3.2-1B's shape (benchmarks/random_model.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The evaluation of one point (as the sweep runs it), small enough for 2 cores and a 1B model.
EVAL = ["--eval_tokens", "256", "--max_length", "256", "--n_samples", "1", "--max_new_tokens", "16",
        "--entropy_tokens", "4", "--prompt", "The history of science shows that"]
RUN = ["--n_trials", "1", "--seed", "0", "--quiet"]
# path -> (entry, argv without --model/--out); entry is a registry experiment, "explorer" or "floor"
PATHS: dict[str, tuple[str, list[str]]] = {
    "floor": ("floor", [*EVAL, "--noise_type", "gaussian", "--max_noise", "0.02", "--n_levels", "3", *RUN]),
    "sweep": ("sweep", [*EVAL, "--noise_type", "gaussian", "--max_noise", "0.02", "--n_levels", "3", *RUN]),
    "sweep_converters": ("sweep", [*EVAL, "--noise_type", "gaussian", "--max_noise", "0.02", "--n_levels", "2",
                                   "--analog_preset", "aihwkit_default", *RUN]),
    "drift_over_time": ("drift_over_time", [*EVAL, "--presets", "aihwkit_default", "--times", "1h,1d",
                                            "--compensation", "on", "--digital_bits", "", *RUN]),
    "task_accuracy": ("task_accuracy", ["--tasks", "noisynn_cloze", "--limit", "8", "--batch_size", "8",
                                        "--n_levels", "2", "--max_noise", "0.02", *RUN]),
    "placement": ("placement", ["--eval_tokens", "128", "--max_length", "128", "--granularity", "projection",
                                "--mean_draws", "2", "--unit_trials", "1", "--max_verifications", "1", *RUN]),
    "temporal_drift": ("temporal_drift", ["--total_tokens", "16", "--schedule", "linear", "--end_sigma", "0.02",
                                          *RUN]),
    "explorer": ("explorer", []),
}
PRE_IMPORTS = {"task_accuracy": ["lm_eval", "noisynn.harness"], "placement": ["lm_eval", "noisynn.harness"]}
MODELS = {"embedded": "smollm2-135m"}  # others: a preset of benchmarks/random_model.py
EXPLORER_CHANGES = 30
EXPLORER_PPL_EVERY = 3  # one perplexity per noise type's block of settings (types change every 3)


# --- inside the child: measurements -----------------------------------------------------------------
def proc_status() -> dict:
    """Fields of /proc/self/status in bytes (VmRSS, VmHWM, RssAnon, RssFile)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def weights_bytes(model) -> int:
    """Bytes of the model's parameters, each storage counted once (a tied head is not counted twice)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: ``5`` into /proc/self/clear_refs); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class LoadProbe:
    """Wraps ``load_model``: the weights' bytes, the RSS and its peak right after the (first) load.

    Then the peak is reset, so that VmHWM at the end is the peak of the run after the load (the
    process's overall peak stays in ru_maxrss).
    """

    def __init__(self, load):
        self.load, self.after_load, self.weights_bytes, self.n_params = load, None, None, None
        self.peak_reset = False

    def __call__(self, *args, **kwargs):
        lm = self.load(*args, **kwargs)
        if self.after_load is None:
            self.after_load = proc_status()
            self.weights_bytes = weights_bytes(lm.model)
            self.n_params = sum(p.numel() for p in lm.model.parameters())
            self.peak_reset = reset_peak()
        return lm


def install_load_probe() -> LoadProbe:
    """Replace ``load_model`` where the experiments look it up (noisynn.models and noisynn.runs.context)."""
    import noisynn.runs.context
    import noisynn.models.loading

    probe = LoadProbe(noisynn.models.loading.load_model)
    noisynn.models.loading.load_model = noisynn.runs.context.load_model = probe
    return probe


def read_points(folder: Path) -> int:
    """Rows of the run folder's results.csv (one per point x trial)."""
    csv = folder / "results.csv"
    if not csv.is_file():
        return 0
    return max(0, len(csv.read_text().strip().splitlines()) - 1)


def loop_seconds(folder: Path) -> float | None:
    """The runner's time for the points of this session (run.json last_session), without load and plots."""
    try:
        return float(json.loads((folder / "run.json").read_text())["last_session"]["seconds"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def run_experiment(entry: str, argv: list[str], out: Path) -> dict:
    """An experiment's ``run(argv)`` in this process; its points and loop time from the run folder."""
    from noisynn.registry import run_module

    code = run_module(entry).run([*argv, "--out", str(out)])
    if code != 0:
        raise SystemExit(f"{entry} exited {code}")
    return {"points": read_points(out), "loop_seconds": loop_seconds(out)}


def run_floor(argv: list[str], out: Path) -> dict:
    """The sweep's clean evaluation, once per point of its grid, on the sweep's own eval ids: no injector."""
    import torch

    from noisynn.runs.context import start
    from noisynn.evaluation import quality_metrics
    from noisynn.experiments.sweep.run import METRICS, parse
    from noisynn.runs.runner import grid, levels

    args = parse([*argv, "--out", str(out)])
    ctx = start(args, "floor", METRICS)
    points = grid(levels(args.max_noise, args.n_levels, args.spacing), args.n_trials)
    torch.set_grad_enabled(False)
    begin = time.perf_counter()
    for point in points:
        quality_metrics(ctx.lm.model, ctx.lm.tokenizer, ctx.eval_ids, args.prompt, n_samples=args.n_samples,
                        max_new_tokens=args.max_new_tokens, entropy_tokens=args.entropy_tokens,
                        temperature=args.temperature, sample_seed=point.sample_seed(args.seed),
                        max_length=args.max_length)
    return {"points": len(points), "loop_seconds": time.perf_counter() - begin}


def explorer_settings(model: str, n: int) -> list:
    """``n`` explorer settings that change noise level and type in turn (gaussian, uniform, pcm)."""
    from noisynn.ui.setting import Setting

    base = Setting(model=model, max_new_tokens=8, eval_tokens=256, max_length=256, top_k=5)
    kinds = [dict(noise_type="gaussian", scale="absolute"), dict(noise_type="uniform", scale="absolute"),
             dict(noise_type="pcm", scale="relative_channel", flags=(("t_seconds", "3600"),))]
    sigmas = [0.005, 0.01, 0.02, 0.04, 0.5, 1.0]
    out = []
    for i in range(n):
        kind = kinds[(i // 3) % len(kinds)]
        sigma = sigmas[i % len(sigmas)] if kind["noise_type"] != "pcm" else (0.5, 1.0, 2.0)[i % 3]
        out.append(Setting(**{**base.__dict__, **kind, "sigma": sigma}))
    return out


def run_explorer(model: str, probe: LoadProbe) -> dict:
    """Drive the explorer's session (no browser): compare for each setting, perplexity for every
    EXPLORER_PPL_EVERY-th (a point's full evaluation takes ~40 s on the loaded 2-core machine); RSS after each."""
    from noisynn.ui.explore import Explorer

    explorer = Explorer(device="cpu", loader=probe)
    rss = []
    begin = time.perf_counter()
    for i, s in enumerate(explorer_settings(model, EXPLORER_CHANGES)):
        explorer.compare(s)
        if i % EXPLORER_PPL_EVERY == 0:
            explorer.perplexity(s)
        rss.append(proc_status()["VmRSS"])
    return {"points": len(rss), "loop_seconds": time.perf_counter() - begin, "rss_after_each": rss,
            "growth_10th_to_last_bytes": rss[-1] - rss[9] if len(rss) >= 10 else None}


def child(path: str, model: str, workdir: Path) -> dict:
    """Run one path on one model in this (fresh) process and measure it."""
    import importlib

    import torch  # (all counted in the base)
    import transformers  # noqa: F401

    import noisynn  # noqa: F401
    from noisynn.registry import EXPERIMENTS, run_module

    entry, argv = PATHS[path]
    # The model code transformers imports lazily at the first load (~140 MB here) belongs to the base.
    importlib.import_module("transformers.models.llama.modeling_llama")
    if entry in EXPERIMENTS:
        run_module(entry)
    for name in PRE_IMPORTS.get(path, ()):
        importlib.import_module(name)
    if entry == "explorer":
        importlib.import_module("noisynn.ui.explore")
    probe = install_load_probe()
    base = proc_status()
    begin = time.perf_counter()
    if entry == "explorer":
        got = run_explorer(model, probe)
    elif entry == "floor":
        got = run_floor(["--model", model, *argv], workdir / "floor")
    else:
        got = run_experiment(entry, ["--model", model, *argv], workdir / entry)
    wall = time.perf_counter() - begin
    end = proc_status()
    # ru_maxrss (KiB on Linux) is the same high-water mark as VmHWM: the reset after the load resets it too.
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, probe.after_load["VmHWM"])
    return {**got, "wall_seconds": wall, "base": base, "after_load": probe.after_load, "end": end,
            "peak_rss_bytes": peak, "load_peak_rss_bytes": probe.after_load["VmHWM"],
            "run_peak_rss_bytes": end["VmHWM"] if probe.peak_reset else None,
            "weights_bytes": probe.weights_bytes, "n_params": probe.n_params, "torch_threads": torch.get_num_threads()}


# --- in the parent: one subprocess per path, the JSON and the table ---------------------------------
def resolve_model(name: str) -> str:
    """``embedded`` -> its alias; a random_model preset -> its folder (built on first use); a folder as is."""
    if name in MODELS:
        return MODELS[name]
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    from benchmarks.random_model import PRESETS, build

    if name not in PRESETS:
        raise SystemExit(f"unknown model '{name}'; known: {', '.join([*MODELS, *PRESETS])}")
    return str(build(name))


def run_child(path: str, model: str) -> dict:
    """Run ``path`` in a fresh interpreter; its measurements (last stdout line, JSON)."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", path, "--model_path", model,
               "--workdir", tmp]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"path {path} on {model} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def derive(rec: dict, floor: dict | None) -> dict:
    """Ratios of one record: peak above base over weights; seconds per point and its ratio to the floor's."""
    base, weights = rec["base"]["VmRSS"], rec["weights_bytes"]
    peak_above = max(rec["peak_rss_bytes"], rec["load_peak_rss_bytes"]) - base
    run_peak = rec.get("run_peak_rss_bytes")
    out = {"peak_above_base_bytes": peak_above, "ratio": peak_above / weights,
           "load_ratio": (rec["load_peak_rss_bytes"] - base) / weights,
           "run_ratio": None if run_peak is None else (run_peak - base) / weights,
           "seconds_per_point": (rec["loop_seconds"] / rec["points"]) if rec.get("points") else None}
    if floor is not None:
        out["floor_ratio"] = floor["ratio"]
        if out["seconds_per_point"] and floor.get("seconds_per_point"):
            out["time_vs_floor"] = out["seconds_per_point"] / floor["seconds_per_point"]
    return out


def rederive(results: dict) -> None:
    """Recompute every record's derived fields from its raw ones (kept records follow fixes of ``derive``)."""
    for key, rec in sorted(results["runs"].items(), key=lambda kv: not kv[0].endswith("/floor")):
        model, path = key.rsplit("/", 1)
        floor = results["runs"].get(f"{model}/floor")
        rec.pop("floor_ratio", None), rec.pop("time_vs_floor", None)
        rec.update(derive(rec, floor if path != "floor" else None))


def machine_info() -> dict:
    """CPU model, cores, total RAM (bytes), kernel, torch version."""
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": mem, "kernel": platform.release(),
            "torch": torch.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT).stdout.strip()
        return head + ("-dirty" if dirty else "") if head else None
    except OSError:
        return None


def settings_of(path: str, model_name: str, model: str) -> dict:
    """What a resumed record must match to be reused: the model and the path's entry and argv."""
    entry, argv = PATHS[path]
    return {"model": model_name, "model_path": model, "entry": entry, "argv": argv,
            "explorer_changes": [EXPLORER_CHANGES, EXPLORER_PPL_EVERY] if entry == "explorer" else None}


def load_results(out: Path, resume: bool) -> dict:
    if resume and out.is_file():
        return json.loads(out.read_text())
    return {"runs": {}}


def save_results(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)


def mem_available() -> int:
    """MemAvailable of /proc/meminfo, in bytes."""
    return next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemAvailable"))


def model_bytes(model: str) -> int:
    """Bytes of a model folder's safetensors files (0 for an alias: not checked)."""
    folder = Path(model).expanduser()
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder.is_dir() else 0


def run_all(model_names: list[str], paths: list[str], out: Path, resume: bool, need: float = 0.0) -> dict:
    """Every path (floor first) on every model, one subprocess each; the JSON is saved after each."""
    results = load_results(out, resume)
    session = {"machine": machine_info(), "commit": git_commit(), "argv": sys.argv, "load_start": os.getloadavg(),
               "date_start": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    results.setdefault("sessions", []).append(session)
    rederive(results)
    order = ["floor"] + [p for p in paths if p != "floor"]
    for name in model_names:
        model = resolve_model(name)
        for path in order:
            key = f"{name}/{path}"
            settings = settings_of(path, name, model)
            old = results["runs"].get(key)
            if resume and old and old.get("settings") == settings:
                print(f"{key}: kept from {out}", file=sys.stderr)
                continue
            if need and mem_available() < need * model_bytes(model):  # a shared machine: do not start an OOM
                print(f"{key}: skipped, MemAvailable {mem_available() / 1e9:.1f} GB < {need} x the weights' "
                      f"{model_bytes(model) / 1e9:.1f} GB", file=sys.stderr)
                continue
            print(f"{key}: running ...", file=sys.stderr, flush=True)
            load_before = os.getloadavg()
            rec = run_child(path, model)
            print(f"{key}: {json.dumps({k: rec[k] for k in ('peak_rss_bytes', 'weights_bytes', 'points', 'loop_seconds')})}",
                  file=sys.stderr, flush=True)
            rec.update(settings=settings, commit=session["commit"], load_before=load_before, load_after=os.getloadavg(),
                       date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
            floor = results["runs"].get(f"{name}/floor")
            rec.update(derive(rec, floor if path != "floor" else None))
            results["runs"][key] = rec
            save_results(results, out)
    session.update(load_end=os.getloadavg(), date_end=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    save_results(results, out)
    return results


def gb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f}"


def num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def table(results: dict) -> str:
    """Markdown table of every record in ``results['runs']``."""
    head = ("| model / path | weights GB | base GB | peak above base GB | ratio | load's ratio | after-load ratio "
            "| floor ratio | points | s / point | vs floor | load avg (1 min) before, after |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key, r in results["runs"].items():
        extra = ""
        if r.get("growth_10th_to_last_bytes") is not None:
            extra = f" (RSS 10th->last setting {r['growth_10th_to_last_bytes'] / 1e6:+.0f} MB)"
        lines.append(f"| {key}{extra} | {gb(r['weights_bytes'])} | {gb(r['base']['VmRSS'])} "
                     f"| {gb(r['peak_above_base_bytes'])} | {num(r['ratio'])} | {num(r['load_ratio'])} "
                     f"| {num(r['run_ratio'])} | {num(r.get('floor_ratio'))} "
                     f"| {r['points']} | {num(r['seconds_per_point'], '.1f')} | {num(r.get('time_vs_floor'))} "
                     f"| {r['load_before'][0]:.2f}, {r['load_after'][0]:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--models", default="embedded", help="comma list: embedded, 1b, tiny (default: %(default)s)")
    p.add_argument("--paths", default=",".join(PATHS), help="comma list of %(default)s (the floor always runs)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"))
    p.add_argument("--resume", action="store_true", help="keep records of the JSON run with the same settings")
    p.add_argument("--min_free", type=float, default=3.5,
                   help="skip a path on a model folder when MemAvailable is below this many times its weights' "
                        "bytes (0: never; default: %(default)s)")
    p.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    p.add_argument("--model_path", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.model_path, Path(args.workdir))))
        return 0
    paths = [x for x in args.paths.split(",") if x]
    unknown = [x for x in paths if x not in PATHS]
    if unknown:
        raise SystemExit(f"unknown path(s) {', '.join(unknown)}; known: {', '.join(PATHS)}")
    results = run_all([m for m in args.models.split(",") if m], paths, Path(args.out), args.resume, args.min_free)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
