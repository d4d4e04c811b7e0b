"""Sweeps survive SIGKILL (resume = uninterrupted run), repeat exactly, and survive inf/nan."""

import os
import signal
import subprocess
import sys
import time

import matplotlib

from tests.helpers import ROOT, script_env
from noisynn.experiments.sweep import run as sweep
from noisynn.runs.read import read_rows

matplotlib.use("Agg")

SLOW_PLUGIN = """
import time, torch
from noisynn import NoiseDistribution, register_noise

@register_noise("slow_gaussian")
class SlowGaussian(NoiseDistribution):
    location_scale = False  # drawn afresh at every level, so every point takes a while
    def sample(self, shape, scale, device=None, generator=None):
        time.sleep(0.05)
        return torch.randn(shape, generator=generator) * scale
"""


def sweep_cmd(tiny_model_dir, text_file, plugin, out):
    return [sys.executable, str(ROOT / "thermal_noise_simulation.py"), "--model", str(tiny_model_dir), "--text_file",
            str(text_file), "--eval_tokens", "64", "--max_length", "32", "--n_levels", "6", "--n_trials", "2",
            "--max_new_tokens", "4", "--n_samples", "2", "--max_noise", "0.5", "--plugin", str(plugin),
            "--noise_type", "slow_gaussian", "--quiet", "--out", str(out)]


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, tiny_model_dir, text_file):
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_PLUGIN)
    out = tmp_path / "killed"
    env = script_env()
    proc = subprocess.Popen(sweep_cmd(tiny_model_dir, text_file, plugin, out), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "results.csv").is_file() and len(read_rows(out / "results.csv")) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = read_rows(out / "results.csv")
    assert 3 <= len(partial) < 12, "the run must be killed mid-way for this test to mean anything"
    resumed = subprocess.run(sweep_cmd(tiny_model_dir, text_file, plugin, out), env=env, cwd=ROOT,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    ref = tmp_path / "reference"
    full = subprocess.run(sweep_cmd(tiny_model_dir, text_file, plugin, ref), env=env, cwd=ROOT,
                          capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    rows, ref_rows = read_rows(out / "results.csv"), read_rows(ref / "results.csv")
    keys = [(r["sigma"], r["trial"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12
    assert sorted(rows, key=lambda r: (r["trial"], r["sigma"])) == sorted(ref_rows, key=lambda r: (r["trial"], r["sigma"]))
    assert rows[:len(partial)] == partial  # rows written before the kill are untouched


def test_heavy_tailed_noise_never_crashes_sweep_or_plot(tmp_path, tiny_model_dir, text_file):
    out = tmp_path / "cauchy"
    args = ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64", "--max_length", "32",
            "--n_levels", "3", "--n_trials", "2", "--max_new_tokens", "4", "--n_samples", "2", "--quiet",
            "--noise_type", "cauchy", "--max_noise", "1e30", "--out", str(out)]
    assert sweep.main(args) == 0
    rows = read_rows(out / "results.csv")
    broken = [r for r in rows if not r["finite"]]
    assert broken, "sigma = 1e30 Cauchy noise must overflow"
    assert (out / "sweep.png").stat().st_size > 0
    summary = (out / "summary.csv").read_text()
    assert "inf" in summary or "nan" in summary


def test_plots_mark_nonfinite_points():
    import matplotlib.pyplot as plt

    from noisynn.plotting import band
    from noisynn.stats import summarize_levels

    rows = [{"sigma": s, "trial": t, "perplexity": (float("inf") if (s == 2 and t == 0) else 10.0 + s), "eval_tokens": 8}
            for s in (1, 2) for t in range(3)]
    fig, ax = plt.subplots()
    summary = summarize_levels(rows, "perplexity")
    band(ax, [1, 2], summary, "x", log_y=True)
    marks = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [2]
    assert any("1/3 inf/nan" in t.get_text() for t in ax.texts)
    plt.close(fig)
