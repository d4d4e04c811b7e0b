"""benchmarks/gpu_check.py --smoke: every section of the GPU check runs on a tiny config on the CPU (all its code
paths but the CUDA calls), prints one JSON with finite, positive ratios, and writes it to $OUT/gpu_check.json."""

import json
import math
import os
import subprocess
import sys

from tests.helpers import ROOT, script_env

SECTIONS = {"build", "floor", "sweep_point", "noise_generation", "analog_forward", "afm"}


def test_gpu_check_smoke_prints_one_json_with_finite_positive_ratios(tmp_path):
    env = script_env(OUT=str(tmp_path), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--afm_steps", "2"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON, nothing else on stdout
    result = json.loads(lines[0])
    assert result == json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["smoke"] and set(result["sections"]) == SECTIONS and result["errors"] == {}
    assert all("skipped" not in s for s in result["sections"].values())
    assert set(result["ratios"]) >= {"floor.peak_over_weights", "sweep_point.forward_over_floor",
                                     "noise_generation.noise_over_copy_float32", "analog_forward.analog_over_plain",
                                     "afm.default.peak_over_weights", "afm.lean.peak_over_weights"}
    for name, value in result["ratios"].items():
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, name
    assert result["sections"]["sweep_point"]["restored_exactly"]
    afm = result["sections"]["afm"]
    assert afm["lean"]["teacher"] == "shared" and afm["lean"]["gradient_checkpointing"]
    assert all(math.isfinite(x) for x in afm["default"]["losses"] + afm["lean"]["losses"])


def test_gpu_check_without_a_device_says_so_in_its_json(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    env = script_env()
    env.pop("OUT", None)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 2 and "no CUDA device" in json.loads(done.stdout)["error"]
