"""Hostile run folders, part 2 (issue 11): broken trials are inf in every file, the last level is --max_noise,
generate_graphs on incomplete runs, concurrent writers (one lock per folder). Part 1, with the damaged
files, changed content, filesystem failures and signals, is tests/runs/test_hostile_runs.py."""

import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, exits_2_with_one_line, script_env
from noisynn.errors import NoisyNNError
from noisynn.options.flags import default_out
from noisynn.runs import schema
from noisynn import graphs as generate_graphs
from noisynn.experiments.sweep import report as sweep_report
from noisynn.runs.folder import RunFolder
from noisynn.runs.read import read_rows, read_run
from noisynn.runs.runner import levels
from tests.options.test_bad_input import files, prepared, snapshot  # noqa: F401 (fixtures)
from tests.runs.test_hostile_runs import no_temporary_files, sweep_argv, sweep_copy


# --- 5. one convention for broken trials: inf in every file, pandas agrees --------------------------------

def test_broken_trials_are_inf_in_results_and_summary_and_medians_agree(tmp_path):
    from noisynn import plotting

    cols = list(schema.LEADING_COLUMNS) + ["perplexity", "nll", "bits_per_byte", "entropy_bits"]
    folder = RunFolder(tmp_path, cols)
    folder.open({}, {})
    values = {0.0: [10.0, 11.0, 12.0], 0.1: [20.0, float("nan"), float("nan")], 0.2: [float("nan"), 30.0, 40.0]}
    for sigma, ppls in values.items():
        for t, p in enumerate(ppls):
            folder.append({"experiment": "t", "model": "m", "noise_type": "gaussian", "scale": "absolute",
                           "sigma": sigma, "trial": t, "seed": t, "perplexity": p, "nll": math.log(p),
                           "bits_per_byte": p / 10, "entropy_bits": float("nan") if p != p else 1.0})
    folder.finish()
    with open(tmp_path / "results.csv", newline="") as fh:
        raw = list(csv.DictReader(fh))
    assert "nan" not in {r["perplexity"] for r in raw} and "inf" in {r["perplexity"] for r in raw}
    plotting.write_summary(tmp_path, read_rows(tmp_path / "results.csv"), ("perplexity", "entropy_bits"))
    summary = {(r["metric"], r["sigma"]): r for r in csv.DictReader(open(tmp_path / "summary.csv", newline=""))}
    for sigma in values:
        ppl = [float(r["perplexity"]) for r in raw if float(r["sigma"]) == sigma]
        assert float(summary[("perplexity", str(sigma))]["median"]) == statistics.median(ppl)
        ent = [float(r["entropy_bits"]) for r in raw if float(r["sigma"]) == sigma]
        ent = [e for e in ent if e == e]  # nan: left out, as pandas does
        assert float(summary[("entropy_bits", str(sigma))]["median"]) == statistics.median(ent)
    try:
        import pandas as pd
    except ImportError:
        return
    frame = pd.read_csv(tmp_path / "results.csv")
    medians = frame.groupby("sigma")["perplexity"].median()
    for sigma in values:
        assert medians[sigma] == float(summary[("perplexity", str(sigma))]["median"])


# --- 6. levels: the last one is --max_noise for every spacing and count ------------------------------------

def test_the_last_level_is_max_noise_and_committed_runs_keep_their_levels():
    from noisynn.experiments.layer_sensitivity.run import MIN_FRACTION

    for spacing in ("log", "linear"):
        for n in (2, 3, 4, 10, 17):
            got = levels(0.08, n, spacing)
            assert len(got) == n and got[0] == 0.0 and got[-1] == 0.08 and got == sorted(got), (spacing, n, got)
    checked = 0  # the fix must not move the levels of any run that exists (n_levels >= 3): they still resume
    for path in sorted((ROOT / "results").rglob("run.json")):
        meta = json.loads(path.read_text())
        cfg = meta.get("config", {})
        if "levels" not in meta or "max_noise" not in cfg or "n_levels" not in cfg:
            continue
        frac = MIN_FRACTION if cfg.get("experiment") == "layer_sensitivity" else 1 / 30
        # equal up to the last bit of numpy's geomspace, which differs by one ulp between CPUs (seen on this one)
        got = levels(cfg["max_noise"], cfg["n_levels"], cfg.get("spacing", "log"), frac)
        assert len(got) == len(meta["levels"]) and all(
            math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0) for a, b in zip(got, meta["levels"])), path
        checked += 1
    assert checked >= 5


# --- 7. generate_graphs on incomplete runs: says so, never overwrites good files with worse -----------------

def test_generate_graphs_says_a_run_is_incomplete_and_keeps_the_better_summary(prepared, tmp_path, capsys):
    from noisynn import plotting

    root = tmp_path / "results"
    run = root / "sweep"
    shutil.copytree(prepared("sweep"), run)
    assert (run / "summary.csv").is_file()
    good = (run / "summary.csv").read_bytes()
    lines = (run / "results.csv").read_text().splitlines(keepends=True)
    meta = json.loads((run / "run.json").read_text())
    meta["status"] = "running"
    (run / "run.json").write_text(json.dumps(meta))
    (run / "results.csv").write_text("".join(lines[:2]))  # 1 of 2 points
    assert generate_graphs.main(["--results_dir", str(root), "--output_dir", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    assert "incomplete: 1 of 2 points" in out, out
    assert (run / "summary.csv").read_bytes() == good, "a summary on 2 rows was replaced by one on 1"
    assert "incomplete: 1 of 2 points" in plotting.realizations_note(meta, read_run(run).rows)
    (run / "results.csv").write_text(lines[0])  # no rows at all
    assert generate_graphs.main(["--results_dir", str(root), "--output_dir", str(tmp_path / "img")]) == 0
    assert "no finished rows yet" in capsys.readouterr().out
    assert (run / "summary.csv").read_bytes() == good
    assert no_temporary_files(run)


def test_generate_graphs_compare_of_runs_without_points_is_one_line_and_a_garbage_summary_is_redrawn(
        prepared, tmp_path, capsys):
    run = sweep_copy(prepared, tmp_path)
    lines = (run / "results.csv").read_text().splitlines(keepends=True)
    good_summary = (run / "summary.csv").read_bytes()
    (run / "summary.csv").write_bytes(b"\xff\xfe not a table")  # used to end in UnicodeDecodeError, exit 1
    assert generate_graphs.main(["--results_dir", str(tmp_path), "--output_dir", str(tmp_path / "img")]) == 0
    assert (run / "summary.csv").read_bytes() == good_summary
    (run / "results.csv").write_text(lines[0])  # header only, while run.json says finished
    before = snapshot(run)
    err = exits_2_with_one_line(generate_graphs.main, ["--compare", str(run), "--output", str(tmp_path / "c.png")],
                                capsys)  # used to draw an empty figure (and a matplotlib warning) with exit 0
    assert "nothing to compare" in err, err
    assert snapshot(run) == before and not (tmp_path / "c.png").exists()


def test_a_plot_survives_huge_and_infinite_values(prepared, tmp_path):

    run = sweep_copy(prepared, tmp_path)
    rows = read_rows(run / "results.csv")
    folder_rows = []
    for sigma in levels(1e308, 4):  # what --max_noise 1e308 ran: its log axis used to overflow matplotlib
        r = dict(rows[-1], sigma=sigma, trial=0)
        if sigma > 0:
            r.update(perplexity=math.inf, nll=math.inf, bits_per_byte=math.inf, entropy_bits=math.nan,
                     distinct_2=math.nan, finite=False)
        folder_rows.append(r)
    cols = list(rows[0].keys())
    with open(run / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, cols, lineterminator="\n")
        w.writeheader()
        w.writerows({k: schema.format_value(v) for k, v in r.items()} for r in folder_rows)
    (run / "summary.csv").unlink()
    figures = sweep_report.plot(run)
    assert figures and figures[0].stat().st_size > 10_000
    sweep_report.format_sweep_table(read_rows(run / "results.csv"))


# --- 8. concurrent writers: one lock per folder; unique default folders ------------------------------------

def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    cols = ["experiment", "sigma", "trial", "value"]
    first = RunFolder(tmp_path / "run", cols)
    first.open({"x": 1}, {})
    first.append({"experiment": "t", "sigma": 0.0, "trial": 0, "value": 1.0})
    before = snapshot(tmp_path / "run")
    with pytest.raises(NoisyNNError, match=f"another process \\(pid {os.getpid()}\\)"):
        RunFolder(tmp_path / "run", cols).open({"x": 1}, {})
    assert snapshot(tmp_path / "run") == before
    first.finish()
    assert not (tmp_path / "run" / ".lock").exists()
    assert len(RunFolder(tmp_path / "run", cols).open({"x": 1}, {})) == 1  # free again: resumes


def test_two_real_processes_on_one_folder_write_every_point_once(files, tmp_path):
    run = tmp_path / "run"
    env = script_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "thermal_noise_simulation.py"),
           *sweep_argv(files, run, "--n_levels", "6", "--n_trials", "3")]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, err in outcomes:
        assert code == 0 or (code == 2 and "is being written by another process (pid" in err
                             and err.count("\n") == 1), (code, err)
    assert any(code == 0 for code, _ in outcomes)
    rows = read_rows(run / "results.csv")
    keys = [(r["sigma"], r["trial"]) for r in rows]
    assert len(keys) == len(set(keys)) == 18
    samples = read_run(run).samples()
    assert len({(s["sigma"], s["trial"], s["kind"]) for s in samples}) == len(samples)
    with open(run / "summary.csv", newline="") as fh:
        summary = [r for r in csv.DictReader(fh) if r["metric"] == "perplexity"]
    assert sum(int(r["n_trials"]) for r in summary) == len(rows)
    assert all(int(r["n_trials"]) == 3 for r in summary)


def test_default_out_never_collides_within_a_second(monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")
    names = {default_out("sweep") for _ in range(50)}
    assert len(names) == 50 and all(n.startswith(os.path.join("runs", "sweep-20260101-000000-")) for n in names)
