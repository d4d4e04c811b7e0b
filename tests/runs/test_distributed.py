"""Several processes (accelerate launch --multi_gpu on a CPU-only node: gloo on loopback) and sharded models give the same
numbers as one process; a multi-process run killed mid-way resumes without repeating points."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import ROOT, script_env, LAUNCH
from noisynn.experiments.sweep import run as sweep
from noisynn.runs.read import read_rows


def env():
    return script_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def args(tiny_model_dir, text_file, out, extra=()):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64", "--max_length", "32",
            "--n_levels", "4", "--n_trials", "3", "--max_new_tokens", "4", "--n_samples", "2", "--max_noise", "0.5",
            "--quiet", "--out", str(out), *extra]


def test_two_processes_equal_one(tmp_path, tiny_model_dir, text_file):
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, str(ROOT / "thermal_noise_simulation.py"),
                             *args(tiny_model_dir, text_file, one)], env=env(), cwd=ROOT, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([*LAUNCH, str(ROOT / "thermal_noise_simulation.py"), *args(tiny_model_dir, text_file, two)],
                           env=env(), cwd=ROOT, capture_output=True, text=True)
    assert multi.returncode == 0, multi.stderr[-2000:]
    assert (one / "results.csv").read_text() == (two / "results.csv").read_text()
    assert (one / "samples.jsonl").read_text() == (two / "samples.jsonl").read_text()
    assert not list(two.glob("*.rank*"))  # shards merged and removed
    assert (two / "sweep.png").is_file()
    import json
    meta = json.loads((two / "run.json").read_text())
    assert meta["processes"] == 2 and meta["last_session"]["processes"] == 2


def test_temporal_drift_two_processes_equal_one(tmp_path, tiny_model_dir, text_file):
    """temporal_drift runs on the runner: its traces (schedule x trial) split across two processes
    and the shards merge into the single-process folder, rows and samples in the same order."""
    one, two = tmp_path / "one", tmp_path / "two"
    flags = ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32", "--total_tokens", "8",
             "--n_trials", "2", "--schedule", "linear,step", "--end_sigma", "0.5", "--quiet"]
    script = str(ROOT / "temporal_drift.py")
    single = subprocess.run([sys.executable, script, *flags, "--out", str(one)], env=env(), cwd=ROOT,
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run([*LAUNCH, script, *flags, "--out", str(two)], env=env(), cwd=ROOT, capture_output=True,
                           text=True)
    assert multi.returncode == 0, multi.stderr[-2000:]
    rows = read_rows(two / "results.csv")
    assert len(rows) == 2 * 2 * 8 and (one / "results.csv").read_text() == (two / "results.csv").read_text()
    assert (one / "samples.jsonl").read_text() == (two / "samples.jsonl").read_text()
    assert not list(two.glob("*.rank*")) and (two / "temporal_drift.png").is_file()
    import json
    meta = json.loads((two / "run.json").read_text())
    assert meta["processes"] == 2 and meta["last_session"]["processes"] == 2 and meta["status"] == "finished"
    assert set(meta["verdicts"]) == {"linear", "step"}


SLOW_PLUGIN = """
import time, torch
from noisynn import NoiseDistribution, register_noise

@register_noise("slow_gaussian")
class SlowGaussian(NoiseDistribution):
    location_scale = False
    def sample(self, shape, scale, device=None, generator=None):
        time.sleep(0.2)
        return torch.randn(shape, generator=generator) * scale
"""


def test_killed_multiprocess_run_resumes(tmp_path, tiny_model_dir, text_file):
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_PLUGIN)
    extra = ("--plugin", str(plugin), "--noise_type", "slow_gaussian", "--n_trials", "6")  # 24 points, slow draws
    out = tmp_path / "killed"
    proc = subprocess.Popen([*LAUNCH, str(ROOT / "thermal_noise_simulation.py"), *args(tiny_model_dir, text_file, out, extra)],
                            env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        shards = list(out.glob("results.rank*.csv"))
        if sum(max(len(read_rows(s)), 0) for s in shards) >= 3:
            break
        time.sleep(0.05)
    import psutil

    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:  # the launcher's workers may sit in their own process groups
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    time.sleep(0.5)
    partial = sum(len(read_rows(s)) for s in out.glob("results.rank*.csv"))
    assert 3 <= partial < 24, "the run must be killed mid-way for this test to mean anything"
    resumed = subprocess.run([*LAUNCH, str(ROOT / "thermal_noise_simulation.py"), *args(tiny_model_dir, text_file, out, extra)],
                             env=env(), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    import json
    assert json.loads((out / "run.json").read_text())["last_session"]["points_run"] == 24 - partial
    ref = tmp_path / "ref"
    full = subprocess.run([sys.executable, str(ROOT / "thermal_noise_simulation.py"),
                           *args(tiny_model_dir, text_file, ref, extra)], env=env(), cwd=ROOT, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    assert (out / "results.csv").read_text() == (ref / "results.csv").read_text()


def test_device_map_auto_equals_unsharded(tmp_path, tiny_model_dir, text_file):
    a, b = tmp_path / "plain", tmp_path / "mapped"
    assert sweep.main(args(tiny_model_dir, text_file, a)) == 0
    assert sweep.main(args(tiny_model_dir, text_file, b, ("--device_map", "auto", "--max_memory", "cpu=4GiB"))) == 0
    assert read_rows(a / "results.csv") == read_rows(b / "results.csv")


def test_max_memory_without_device_map_is_an_error(tmp_path, tiny_model_dir, text_file, capsys):
    assert sweep.main(args(tiny_model_dir, text_file, tmp_path / "x", ("--max_memory", "cpu=4GiB"))) == 2
    assert "--max_memory needs --device_map" in capsys.readouterr().err
    assert sweep.main(args(tiny_model_dir, text_file, tmp_path / "x", ("--device_map", "auto", "--max_memory", "lots"))) == 2
    assert "DEVICE=SIZE" in capsys.readouterr().err


def nat_args(tiny_model_dir, text_file, train_file, out):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--train_file", str(train_file),
            "--eval_tokens", "64", "--max_length", "32", "--seq_len", "24", "--max_samples", "8", "--batch_size", "4",
            "--steps", "3", "--lr", "1e-3", "--noise_level", "0.3", "--max_noise", "0.6", "--n_levels", "3",
            "--n_trials", "2", "--quiet", "--save_weights", "--out", str(out)]


def test_noise_aware_training_two_processes_equal_one(tmp_path, tiny_model_dir, text_file):
    """DDP through Accelerate: each process runs half of every batch under the same noise draw; the
    averaged gradients equal the whole batch's, so the trained weights and the scores match one process
    up to float summation order."""
    from safetensors.torch import load_file

    train = tmp_path / "train.txt"
    train.write_text(("Pack my box with five dozen liquor jugs, said the sphinx of black quartz. " * 60).strip())
    one, two = tmp_path / "one", tmp_path / "two"
    script = str(ROOT / "noise_aware_training.py")
    single = subprocess.run([sys.executable, script, *nat_args(tiny_model_dir, text_file, train, one)],
                            env=env(), cwd=ROOT, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run([*LAUNCH, script, *nat_args(tiny_model_dir, text_file, train, two)],
                           env=env(), cwd=ROOT, capture_output=True, text=True)
    assert multi.returncode == 0, multi.stderr[-2000:]
    for variant in ("finetuned", "control"):
        a, b = load_file(one / f"{variant}.safetensors"), load_file(two / f"{variant}.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), (variant, k, (a[k] - b[k]).abs().max())
    base = {r["model_variant"]: r for r in read_rows(one / "results.csv")}
    rows_one, rows_two = read_rows(one / "results.csv"), read_rows(two / "results.csv")
    assert [(r["model_variant"], r["sigma"], r["trial"]) for r in rows_one] == \
           [(r["model_variant"], r["sigma"], r["trial"]) for r in rows_two]
    for r1, r2 in zip(rows_one, rows_two):
        assert r2["perplexity"] == pytest.approx(r1["perplexity"], rel=1e-4)
    assert base["finetuned"]["perplexity"] != base["original"]["perplexity"]  # training changed something
    loss_one, loss_two = read_rows(one / "training.csv"), read_rows(two / "training.csv")
    assert [r["loss"] for r in loss_two] == pytest.approx([r["loss"] for r in loss_one], rel=1e-4)
    assert [r["tokens"] for r in loss_two] == [r["tokens"] for r in loss_one]  # the whole batch, counted once
    assert not list(two.glob("*.rank*"))


def test_uneven_batch_split_is_refused(tmp_path, tiny_model_dir, text_file):
    train = tmp_path / "train.txt"
    train.write_text(("Pack my box with five dozen liquor jugs, said the sphinx of black quartz. " * 60).strip())
    out = tmp_path / "odd"
    proc = subprocess.run([*LAUNCH, str(ROOT / "noise_aware_training.py"),
                           *nat_args(tiny_model_dir, text_file, train, out), "--batch_size", "3"],
                          env=env(), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "does not split evenly across 2 processes" in proc.stderr
    assert not out.exists()


@pytest.mark.integration
def test_embedded_model_two_processes_equal_one(tmp_path):
    """The issue's check on the embedded SmolLM2-135M: a small sweep and a few noise-aware training steps
    under a 2-process launch (gloo on loopback) equal the single-process runs."""
    from safetensors.torch import load_file

    sweep_args = ["--eval_tokens", "128", "--n_levels", "2", "--n_trials", "2", "--max_noise", "0.02",
                  "--max_new_tokens", "4", "--n_samples", "1", "--quiet"]
    nat_args_ = ["--steps", "2", "--batch_size", "2", "--seq_len", "32", "--max_samples", "4", "--targets", "down",
                 "--n_levels", "2", "--n_trials", "1", "--eval_tokens", "64", "--no_control", "--quiet", "--save_weights"]
    for script, extra in (("thermal_noise_simulation.py", sweep_args), ("noise_aware_training.py", nat_args_)):
        for launcher, out in (([sys.executable], tmp_path / f"{script}-1"), (LAUNCH, tmp_path / f"{script}-2")):
            proc = subprocess.run([*launcher, str(ROOT / script), *extra, "--out", str(out)], env=env(), cwd=ROOT,
                                  capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = tmp_path / "thermal_noise_simulation.py-1", tmp_path / "thermal_noise_simulation.py-2"
    assert (one / "results.csv").read_text() == (two / "results.csv").read_text()
    one, two = tmp_path / "noise_aware_training.py-1", tmp_path / "noise_aware_training.py-2"
    a, b = load_file(one / "finetuned.safetensors"), load_file(two / "finetuned.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    for r1, r2 in zip(read_rows(one / "results.csv"), read_rows(two / "results.csv"), strict=True):
        assert r2["perplexity"] == pytest.approx(r1["perplexity"], rel=1e-4)
