"""generate_graphs redraws figures from saved run folders alone, without importing torch."""

import json
import math
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from noisynn import graphs as generate_graphs
from noisynn import registry
from noisynn.errors import NoisyNNError
from noisynn.experiments.llama_scaling import report as llama_report
from noisynn.experiments.sweep import report as sweep_report
from noisynn.experiments.sweep import run as sweep
from noisynn.runs.read import read_rows
from noisynn.stats import summarize_levels


@pytest.fixture(scope="module")
def results_tree(tmp_path_factory, tiny_model_dir, text_file):
    """results/ as the repository keeps it: sweep, noise_types/<type> (3 types), llama_scaling, and
    one run of an experiment that has no plot function."""
    from noisynn.experiments.llama_scaling import run as llama_scaling

    root = tmp_path_factory.mktemp("repo") / "results"
    base = ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64", "--max_length", "32",
            "--n_levels", "3", "--n_trials", "2", "--max_new_tokens", "4", "--n_samples", "1", "--quiet",
            "--scale", "relative", "--targets", "all", "--max_noise", "40"]
    assert sweep.main(base + ["--out", str(root / "sweep")]) == 0
    for noise in ("gaussian", "cauchy", "uniform"):
        assert sweep.main(base + ["--noise_type", noise, "--out", str(root / "noise_types" / noise)]) == 0
    assert llama_scaling.main(["--models", str(tiny_model_dir), "--text_file", str(text_file), "--eval_chars", "300",
                               "--max_length", "64", "--n_levels", "3", "--n_trials", "2", "--targets", "all",
                               "--max_noise", "40", "--quiet", "--out", str(root / "llama_scaling")]) == 0
    alien = root / "from_the_future"
    alien.mkdir()
    (alien / "run.json").write_text(json.dumps({"experiment": "time_travel", "config": {}}))
    originals = {}
    for run in (root / "sweep", root / "llama_scaling"):  # committed folders hold no PNGs
        for png in run.glob("*.png"):
            originals[png.name] = png.read_bytes()
            png.unlink()
    for png in (root / "noise_types").rglob("*.png"):
        png.unlink()
    for name in ("a", "b"):  # nested runs that are not sweeps: redrawn one by one, not compared
        shutil.copytree(root / "llama_scaling", root / "nested" / name)
    return root, originals


def run_without_torch(args):
    """generate_graphs in a fresh interpreter; reports whether torch got imported."""
    code = ("import sys\nfrom noisynn import graphs as g\nrc = g.main(sys.argv[1:])\n"
            "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'NO-TORCH')\nsys.exit(rc)\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})


def test_redraws_every_figure_from_folders_alone_without_torch(results_tree, tmp_path):
    root, originals = results_tree
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.suffix != ".csv"}
    images = tmp_path / "images"
    proc = run_without_torch(["--results_dir", str(root), "--output_dir", str(images)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NO-TORCH" in proc.stdout
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.png",
                                                         "llama_scaling.png", "noise_types.png", "sweep.png"]
    # The same data give the same picture as the experiment drew at the end of its run.
    for name, data in originals.items():
        assert (images / name).read_bytes() == data, name
    assert (images / "noise_types.png").stat().st_size > 20_000
    out = proc.stdout
    for missing in ("layer_sensitivity", "optimal_jitter", "noise_aware_training", "temporal_drift", "drift_over_time"):
        assert f"{root / missing} not found, skipped" in out
    assert "no plot function for experiment 'time_travel'" in out
    assert "noise_types (3 runs: cauchy, gaussian, uniform)" in out
    # Run folders are left as they were (no PNGs left behind; only summary tables are rewritten).
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.suffix != ".csv"}
    assert after == before


def test_heavy_tails_are_kept_as_nonfinite_not_dropped(results_tree):
    root, _ = results_tree
    cauchy = read_rows(root / "noise_types" / "cauchy" / "results.csv")
    broken = [r for r in cauchy if not math.isfinite(r["perplexity"])]
    assert broken, "cauchy noise at sigma 40 x std should overflow this tiny model"
    summary = {s["sigma"]: s for s in summarize_levels(cauchy, "perplexity")}
    assert sum(s["n_nonfinite"] for s in summary.values()) == len(broken)
    assert all(s["n_trials"] == 2 for s in summary.values())


def test_compare_mode_and_registry(results_tree, tmp_path):
    root, _ = results_tree
    runs = sorted(str(p) for p in (root / "noise_types").iterdir())
    out = tmp_path / "cmp.png"
    assert generate_graphs.main(["--compare", *runs, "--output", str(out)]) == 0
    assert out.stat().st_size > 20_000
    assert registry.report_module("sweep").plot is sweep_report.plot
    assert registry.report_module("llama_scaling").plot is llama_report.plot
    with pytest.raises(NoisyNNError, match="unknown experiment 'nonexistent'; known: sweep, "):
        registry.report_module("nonexistent")
    with pytest.raises(NoisyNNError, match="unknown experiment 'generate_graphs'"):  # a tool, not an experiment
        registry.report_module("generate_graphs")


@pytest.mark.parametrize("args,message", [
    (["--output", "x.png"], "--output goes with --compare"),
    (["--results_dir", "/no/such/results"], "is not a folder"),
    (["--compare", "/no/such/run"], "not a run folder"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_flags_exit_2_with_one_line(args, message, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "generate_graphs.py"), "--output_dir", str(tmp_path / "img"),
                           *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_repository_results_redraw_without_a_model(tmp_path):
    """The committed results/ folders redraw as they are (no model needed)."""
    if not (ROOT / "results" / "sweep" / "run.json").is_file():
        pytest.skip("no committed results/")
    root = tmp_path / "results"
    shutil.copytree(ROOT / "results", root)
    proc = run_without_torch(["--results_dir", str(root), "--output_dir", str(tmp_path / "images")])
    assert proc.returncode == 0 and "NO-TORCH" in proc.stdout, proc.stdout + proc.stderr
    assert (tmp_path / "images" / "sweep.png").stat().st_size > 20_000


def test_committed_runs_come_from_committed_code():
    """Every committed run folder records the commit that made it, and none was made by uncommitted code
    (``-dirty``): a figure in the docs must be reproducible from the code that ships (issue 22: a drift run made
    before a change to the order of the noise draws could not be reproduced at HEAD)."""
    import json
    import re

    metas = sorted((ROOT / "results").rglob("run.json"))
    if not metas:
        pytest.skip("no committed results/")
    bad = {}
    for path in metas:
        commit = json.loads(path.read_text()).get("git")
        if commit is not None and not re.fullmatch(r"[0-9a-f]{40}", commit):
            bad[str(path.relative_to(ROOT))] = commit
    assert not bad, f"run folders made by uncommitted code (rerun them from a clean checkout): {bad}"
