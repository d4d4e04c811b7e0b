import json
import math
import sys

import pytest
from hypothesis import given, settings, strategies as st

from noisynn.errors import NoisyNNError
from noisynn.runs.folder import RunFolder
from noisynn.runs.schema import format_value, parse_value
from noisynn.runs.read import read_rows
from noisynn.stats import log_crossing, median_ci, summarize_levels
from noisynn.runs.runner import Point, TrialResult, grid, levels, run_sweep

COLS = ["experiment", "sigma", "trial", "value"]


def leading(p: Point) -> dict:
    return {"experiment": "t", "sigma": p.sigma, "trial": p.trial}


def test_resume_skips_finished_points_and_matches_uninterrupted(tmp_path):
    pts = grid([0.0, 0.1, 0.2], 2)
    calls = []

    def trial(p):
        calls.append(p)
        return TrialResult({"value": p.sigma * 10 + p.trial}, [{"text": f"s{p.sigma}"}])

    f = RunFolder(tmp_path / "a", COLS)
    f.open({"x": 1}, {})
    run_sweep(f, pts[:4], trial, leading, [])
    f.release()  # the first process ends (killed): the kernel drops its lock
    f2 = RunFolder(tmp_path / "a", COLS)
    done = f2.open({"x": 1}, {})
    assert len(done) == 4
    calls.clear()
    rows = run_sweep(f2, pts, trial, leading, done)
    assert len(calls) == 2 and len(rows) == 6
    ref = RunFolder(tmp_path / "b", COLS)
    ref.open({"x": 1}, {})
    ref_rows = run_sweep(ref, pts, trial, leading, [])
    assert read_rows(f2.csv) == read_rows(ref.csv) == rows == ref_rows
    assert len(f2.samples.read_text().splitlines()) == 6


def test_torn_last_line_and_orphan_samples_are_dropped(tmp_path):
    f = RunFolder(tmp_path, COLS)
    f.open({}, {})
    f.append({"experiment": "t", "sigma": 0.0, "trial": 0, "value": 1.5})
    f.append_samples([{"sigma": 0.1, "trial": 0, "text": "orphan"}])
    with open(f.csv, "a") as fh:
        fh.write("t,0.1,0,2.")  # killed mid-row
    assert len(read_rows(f.csv)) == 1
    f.release()  # the writer was killed
    done = RunFolder(tmp_path, COLS).open({}, {})
    assert len(done) == 1 and f.csv.read_text().endswith("1.5\n")
    assert f.samples.read_text() == ""


def test_different_config_is_refused_without_writing(tmp_path):
    f = RunFolder(tmp_path, COLS)
    f.open({"max_noise": 0.1, "out": "x"}, {})
    before = (tmp_path / "run.json").read_text()
    assert RunFolder(tmp_path, COLS).check({"max_noise": 0.1, "out": "y"}) == []  # out is volatile
    with pytest.raises(NoisyNNError, match="max_noise"):
        RunFolder(tmp_path, COLS).open({"max_noise": 0.2}, {})
    assert (tmp_path / "run.json").read_text() == before


def test_run_json_records_provenance(tmp_path):
    f = RunFolder(tmp_path, COLS)
    f.open({"seed": 3}, {"model": {"name": "m"}})
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["config"] == {"seed": 3} and "torch" in meta["versions"] and "git" in meta


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.floats(allow_nan=True), st.integers(-10**12, 10**12), st.booleans()))
def test_csv_values_roundtrip(value):
    back = parse_value(format_value(value))
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(back)
    else:
        assert back == value and type(back) is type(value) or (isinstance(value, float) and back == value)


def test_median_ci_coverage_and_nonfinite():
    s = median_ci([3.0, 1.0, 2.0])
    assert (s.median, s.low, s.high) == (2.0, 1.0, 3.0) and s.coverage == pytest.approx(0.75)
    s = median_ci(range(1, 11))
    assert s.coverage >= 0.9 and s.low == 2 and s.high == 9  # j=2: 1 - 2 P(B(10,.5) <= 1) = 0.9785
    s = median_ci([1.0, float("inf"), float("nan")])
    assert s.median == math.inf and s.n_nonfinite == 2
    s = median_ci([1.0, float("nan"), 3.0], nonfinite_as_inf=False)
    assert s.median == 2.0 and s.n == 2


def test_summarize_levels_reports_tokens_and_counts():
    rows = [{"sigma": s, "trial": t, "perplexity": 10 + s + t, "eval_tokens": 64} for s in (0.0, 1.0) for t in range(3)]
    out = summarize_levels(rows, "perplexity")
    assert [o["median"] for o in out] == [11.0, 12.0] and out[0]["n_trials"] == 3 and out[0]["eval_tokens"] == 64


def test_log_crossing():
    assert log_crossing([0, 1, 2], [10, 10, 40], 20) == pytest.approx(1.5)
    assert math.isnan(log_crossing([0, 1], [10, 12], 20))
    assert log_crossing([0, 1, 2], [10, 10, float("inf")], 20) == 2


def test_levels():
    assert levels(0.1, 10, "linear")[-1] == pytest.approx(0.1) and levels(0.1, 10, "linear")[0] == 0
    lg = levels(0.09, 4, "log")
    assert lg[0] == 0 and lg[1] == pytest.approx(0.003) and lg[-1] == pytest.approx(0.09)


# Text cells as the experiments write them (names, labels): never a bare number, which reads back typed.
_cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12), st.booleans(),
                  st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12).map(lambda t: "x" + t))


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.tuples(_cell, _cell), min_size=1, max_size=12))
def test_results_writer_roundtrip(tmp_path_factory, rows):
    """Rows appended through RunFolder read back as written: same order, same values (nan as nan),
    whatever the text holds (commas, quotes, newlines), also after a resume."""
    folder = RunFolder(tmp_path_factory.mktemp("w") / "run", ["experiment", "sigma", "trial", "a", "b"])
    folder.open({"x": 1}, {})
    for i, (a, b) in enumerate(rows):
        folder.append({"experiment": "t", "sigma": 0.0, "trial": i, "a": a, "b": b})
    folder.release()  # the writer ended
    back = RunFolder(folder.path, folder.columns).open({"x": 1}, {})
    assert len(back) == len(rows)

    def same(x, y):
        if isinstance(x, float) and math.isnan(x):
            return isinstance(y, float) and math.isnan(y)
        return y == x and type(y) is type(x)

    for (a, b), r in zip(rows, back):
        assert same(a, r["a"]) and same(b, r["b"]), (a, b, r)


def test_git_hash_ignores_run_outputs_but_not_code(tmp_path):
    """A run whose folder replaces a committed one (results/ deleted first) is not '-dirty': only code counts."""
    import shutil
    import subprocess

    from noisynn.runs import provenance

    repo = tmp_path / "repo"
    (repo / "noisynn").mkdir(parents=True)
    shutil.copy(provenance.__file__, repo / "noisynn" / "provenance.py")
    (repo / "results" / "run").mkdir(parents=True)
    (repo / "results" / "run" / "results.csv").write_text("a\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q", str(repo)], check=True)
    subprocess.run(git + ["-C", str(repo), "add", "."], check=True)
    subprocess.run(git + ["-C", str(repo), "commit", "-qm", "x"], check=True)
    probe = [sys.executable, "-c", "import sys; sys.path.insert(0, 'noisynn'); import provenance; "
                                   "print(provenance.git_hash())"]
    clean = subprocess.run(probe, cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    assert len(clean) == 40
    shutil.rmtree(repo / "results")  # a rerun deletes the committed folder first
    assert subprocess.run(probe, cwd=repo, capture_output=True, text=True).stdout.strip() == clean
    (repo / "noisynn" / "provenance.py").write_text((repo / "noisynn" / "provenance.py").read_text() + "\n# edit\n")
    assert subprocess.run(probe, cwd=repo, capture_output=True, text=True).stdout.strip() == clean + "-dirty"


@pytest.mark.parametrize("status, n_points, n_rows, note", [
    ("finished", None, 2, ""),  # how many points is not recorded: finished is complete
    ("finished", 3, 3, ""),
    ("running", 3, 3, ""),  # every point written, not yet marked
    ("running", 3, 1, "incomplete: 1 of 3 points"),
    ("finished", 3, 2, "incomplete: 2 of 3 points (the run finished: results.csv has lost rows since"),
])
def test_a_finished_folder_that_lost_rows_is_noted_incomplete(tmp_path, status, n_points, n_rows, note):
    """Issue 25: a torn results.csv in a folder marked finished must not redraw the figure as if complete."""
    from noisynn.runs.read import Run

    meta = {"status": status, **({"n_points": n_points} if n_points else {})}
    run = Run(tmp_path, meta, [{"sigma": 0.1 * i, "trial": 0} for i in range(n_rows)])
    assert run.progress_note().startswith(note) and run.complete == (note == "")


def test_generate_graphs_notes_a_torn_csv_in_a_finished_folder(tmp_path, tiny_model_dir, text_file):
    """End to end: the sweep finishes, its results.csv loses its last row to a torn write, generate_graphs says so."""
    from tests.helpers import run_python

    out = tmp_path / "run"
    done = run_python(["-m", "noisynn.cli", "sweep", "--model", str(tiny_model_dir), "--text_file", str(text_file),
                       "--eval_tokens", "32", "--max_length", "32", "--n_levels", "3", "--n_trials", "1",
                       "--max_noise", "0.1", "--n_samples", "1", "--max_new_tokens", "4", "--quiet",
                       "--out", str(out)], timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    csv_text = (out / "results.csv").read_text()
    (out / "results.csv").write_text(csv_text[: csv_text.rstrip("\n").rfind("\n") + 20])  # the last row torn
    figures = tmp_path / "figures"
    graphs = run_python(["-m", "noisynn.cli", "generate_graphs", "--results_dir", str(out), "--output_dir",
                         str(figures)], timeout=600)
    assert graphs.returncode == 0, graphs.stderr[-2000:]
    assert "incomplete" in graphs.stdout + graphs.stderr and "lost rows" in graphs.stdout + graphs.stderr
