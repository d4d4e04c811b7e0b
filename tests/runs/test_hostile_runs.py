"""Hostile run folders and hostile environments (issue 11): one reader, one boundary, one lock.

Each class is a table: damaged run-folder files, content that changed under the same flags,
filesystem failures, signals. Every case ends with exit code 2 (or 128 + signal), exactly one
line on stderr, and the run folder byte-identical where it existed (or, for a failure mid-run,
its finished rows kept and no temporary file left). Scripts run in-process on the tiny model
from conftest (a tiny sweep is ~1 s), apart from the cases that need a real process.

Simulated failures, since the tests run as root (chmod does not stop root): a full disk is
``os.fsync`` (every durable write of the run folder goes through it) raising ENOSPC part-way
through a run; a read-only filesystem is ``os.open`` raising EROFS for paths under the folder;
a folder nobody may write is ``/sys`` (sysfs refuses new files even to root, EACCES).
"""

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, exits_2_with_one_line, tiny_llama, script_env
from noisynn.options import script as options
from noisynn.runs import folder as results
from noisynn import graphs as generate_graphs
from noisynn.experiments.sweep import run as sweep
from noisynn.runs.read import read_run
from noisynn.runs.runner import levels
from tests.options.test_bad_input import base_args, files, prepared, snapshot  # noqa: F401 (fixtures)


def sweep_copy(prepared, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(prepared("sweep"), run)
    return run


def sweep_argv(files, run: Path, *extra) -> list[str]:
    return base_args("sweep", files) + ["--out", str(run), *extra]


def no_temporary_files(run: Path) -> bool:
    return not [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".noisynn-write-test")]


# --- 1. damaged run-folder files: one line naming the file (and line), nothing rewritten ---------------

def _append(name, data: bytes):
    def damage(run: Path):
        with open(run / name, "ab") as fh:
            fh.write(data)
    return damage


def _replace_json(obj):
    def damage(run: Path):
        (run / "run.json").write_text(json.dumps(obj))
    return damage


def _string_config(run: Path):
    meta = json.loads((run / "run.json").read_text())
    meta["config"] = "n_trials=1"
    (run / "run.json").write_text(json.dumps(meta))


def _meta_field(key, value, inside=None):
    def damage(run: Path):
        meta = json.loads((run / "run.json").read_text())
        (meta[inside] if inside else meta)[key] = value
        (run / "run.json").write_text(json.dumps(meta))
    return damage


def _csv_is_a_folder(run: Path):
    (run / "results.csv").unlink()
    (run / "results.csv").mkdir()
    (run / "results.csv" / "x").write_text("x")


def _sigma_not_a_number(run: Path):
    lines = (run / "results.csv").read_text().splitlines(keepends=True)
    cells = lines[2].split(",")
    cells[4] = "abc"
    lines[2] = ",".join(cells)
    (run / "results.csv").write_text("".join(lines))


DAMAGE = [
    ("garbage line", _append("results.csv", b"this is not a row\n"), "results.csv line 4"),
    ("NUL line", _append("results.csv", b"\x00" * 40 + b"\n"), "results.csv line 4: NUL bytes"),
    ("not UTF-8", _append("results.csv", b"sweep,\xff\xfe\xfd,1\n"), "results.csv line 4: bytes that are not UTF-8"),
    ("csv is a folder", _csv_is_a_folder, "results.csv is a folder"),
    ("run.json []", _replace_json([]), "run.json holds list, not a JSON object"),
    ("run.json null", _replace_json(None), "run.json holds null, not a JSON object"),
    ("string config", _string_config, "'config' is str, not a JSON object"),
    ("bad samples line", _append("samples.jsonl", b"{not json\n"), "samples.jsonl line"),
    ("sigma not a number", _sigma_not_a_number, "results.csv line 3: sigma is 'abc', not a number"),
    # the writer's own run.json fields with another JSON type (a traceback at sessions + 1; a fingerprint of
    # another type passed the comparison and was overwritten; levels were rewritten)
    ("sessions a string", _meta_field("sessions", "x"), "'sessions' is str 'x', not an integer"),
    ("levels a string", _meta_field("levels", "abc"), "'levels' is str 'abc', not a list"),
    ("fingerprint a number", _meta_field("fingerprint", 5, inside="model"), "'model.fingerprint' is int 5, not a string"),
    ("text sha256 a list", _meta_field("sha256", [], inside="text"), "'text.sha256' is list [], not a string"),
]


@pytest.mark.parametrize("damage,message", [pytest.param(d, m, id=i) for i, d, m in DAMAGE])
def test_a_damaged_folder_is_refused_in_one_line_and_left_alone(damage, message, files, prepared, tmp_path, capsys):
    run = sweep_copy(prepared, tmp_path)
    damage(run)
    before = snapshot(run)
    err = exits_2_with_one_line(sweep.main, sweep_argv(files, run), capsys)
    assert message in err and "Traceback" not in err, err
    assert snapshot(run) == before, "the resume rewrote a damaged folder"
    with pytest.raises(results.NoisyNNError, match="damaged|folder"):
        read_run(run) if "samples" not in message else read_run(run).samples()


@pytest.mark.parametrize("damage,message", [pytest.param(d, m, id=i) for i, d, m in DAMAGE
                                            if "results.csv" in m and "folder" not in m])
def test_generate_graphs_reports_a_damaged_csv_in_one_line(damage, message, prepared, tmp_path, capsys):
    run = sweep_copy(prepared, tmp_path)
    damage(run)
    before = snapshot(run)
    err = exits_2_with_one_line(generate_graphs.main, ["--compare", str(run), "--output", str(tmp_path / "c.png")],
                                capsys)
    assert message in err, err
    assert snapshot(run) == before


# --- 2. resume checks content: same flags, other weights or text -> refused, run.json untouched ----------

def test_resume_refuses_replaced_model_weights_and_changed_text(files, tmp_path, tiny_model_dir, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    text = tmp_path / "text.txt"
    shutil.copyfile(files["@TEXT"], text)
    run = tmp_path / "run"
    argv = [a.replace(files["@MODEL"], str(model)).replace(files["@TEXT"], str(text))
            for a in sweep_argv(files, run)]
    assert sweep.main(argv) == 0
    before = snapshot(run)
    tiny_llama(seed=1).save_pretrained(model)  # other weights under the same --model path
    err = exits_2_with_one_line(sweep.main, argv, capsys)
    assert "the model weights (--model) changed" in err, err
    assert snapshot(run) == before
    shutil.rmtree(model)
    shutil.copytree(tiny_model_dir, model)
    assert sweep.main(argv) == 0  # the recorded weights again: resumes (nothing to do)
    before = snapshot(run)
    text.write_text(text.read_text() + " One more sentence.")
    err = exits_2_with_one_line(sweep.main, argv, capsys)
    assert "the text (--text_file) changed" in err, err
    assert snapshot(run) == before


def test_llama_scaling_refuses_to_resume_a_model_whose_weights_changed(files, tmp_path, tiny_model_dir, capsys):
    from noisynn.experiments.llama_scaling import run as llama_scaling

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    run = tmp_path / "run"
    argv = [a.replace(files["@MODEL"], str(model)) for a in base_args("llama_scaling", files)] + ["--out", str(run)]
    assert llama_scaling.main(argv) == 0
    rows = (run / "results.csv").read_bytes()
    lines = rows.splitlines(keepends=True)
    (run / "results.csv").write_bytes(b"".join(lines[:-1]))  # one point left to run
    tiny_llama(seed=2).save_pretrained(model)
    err = exits_2_with_one_line(llama_scaling.main, argv, capsys)
    assert f"the weights of {model} changed" in err, err
    assert (run / "results.csv").read_bytes() == b"".join(lines[:-1])  # no point of the other weights was added
    assert read_run(run).meta["status"] == "failed"


# --- 3. filesystem: full disk, read-only, --out below a file, unwritable --output -----------------------

def _fsync_fails_after(monkeypatch, n: int, err=errno.ENOSPC):
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > n:
            raise OSError(err, os.strerror(err))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def _open_fails_under(monkeypatch, folder: Path, err=errno.EROFS):
    real = os.open

    def fake_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(err, os.strerror(err), str(path))
        return real(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", fake_open)


FILESYSTEM = [
    ("out below a file", lambda t: ["--out", str(t / "afile" / "run")], "is a file, not a folder"),
    ("out unwritable", lambda t: ["--out", "/sys/noisynn-run"], "cannot write in /sys"),
    ("output unwritable", lambda t: ["--out", str(t / "new"), "--output", "/sys/sweep.png"], "cannot write in /sys"),
    ("out read-only", lambda t: ["--out", str(t / "ro" / "run")], "cannot write in"),
]


@pytest.mark.parametrize("extra,message", [pytest.param(e, m, id=i) for i, e, m in FILESYSTEM])
def test_an_unwritable_place_is_refused_before_anything_runs(extra, message, files, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("a file")
    (tmp_path / "ro").mkdir()
    _open_fails_under(monkeypatch, tmp_path / "ro")
    before = snapshot(tmp_path)
    err = exits_2_with_one_line(sweep.main, base_args("sweep", files) + extra(tmp_path), capsys)
    assert message in err and "Traceback" not in err, err
    assert snapshot(tmp_path) == before
    assert not Path("/sys/noisynn-run").exists()


@pytest.mark.parametrize("fails_after", [3, 6], ids=["new run", "mid-run"])
def test_a_full_disk_keeps_finished_rows_and_leaves_no_temporary_file(fails_after, files, tmp_path, capsys,
                                                                        monkeypatch):
    run = tmp_path / "run"
    argv = sweep_argv(files, run, "--n_levels", "3", "--n_trials", "2")
    _fsync_fails_after(monkeypatch, fails_after)
    err = exits_2_with_one_line(sweep.main, argv, capsys)
    assert "No space left on device" in err and "free some space" in err, err
    assert no_temporary_files(run)
    kept = results.read_rows(run / "results.csv")
    monkeypatch.undo()
    assert sweep.main(argv) == 0  # space again: the same command resumes and completes
    rows = results.read_rows(run / "results.csv")
    assert rows[:len(kept)] == kept and len(rows) == 6
    assert len({(r["sigma"], r["trial"]) for r in rows}) == 6
    assert read_run(run).meta["status"] == "finished" and no_temporary_files(run)


def test_a_full_disk_on_resume_is_one_line_and_the_folder_stays(files, prepared, tmp_path, capsys, monkeypatch):
    run = sweep_copy(prepared, tmp_path)
    before = snapshot(run)
    _fsync_fails_after(monkeypatch, 0)  # not even run.json can be written
    err = exits_2_with_one_line(sweep.main, sweep_argv(files, run), capsys)
    assert "No space left on device" in err, err
    assert snapshot(run) == before


def test_oserror_at_the_boundary_is_one_line_exit_2(capsys):
    def body(argv):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp/x")
    assert options.script_main(body, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Is a directory (/tmp/x)" in err


# --- 4. signals: SIGTERM / SIGHUP / Ctrl-C mark the run interrupted and say how to resume ----------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: signal.Signals(s).name)
def test_a_signal_marks_the_run_interrupted_and_says_how_to_resume(signum, files, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    argv = sweep_argv(files, run, "--n_levels", "3", "--n_trials", "2")
    real, rows_written = results._append_line, []

    def append_then_signal(path, line):
        real(path, line)
        if path.name == "results.csv":
            rows_written.append(line)
            if len(rows_written) == 3:  # header + 2 rows, then the signal arrives
                os.kill(os.getpid(), signum)
    monkeypatch.setattr(results, "_append_line", append_then_signal)
    capsys.readouterr()
    assert sweep.main(argv) == 128 + signum
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rerun the same command to resume" in err, err
    meta = read_run(run).meta
    assert meta["status"] == "interrupted" and meta["stop_reason"] == signal.Signals(signum).name
    assert not (run / ".lock").exists() and no_temporary_files(run)
    assert signal.getsignal(signal.SIGTERM) is not options._raise_interrupted  # handlers restored
    monkeypatch.undo()
    assert sweep.main(argv) == 0 and len(read_run(run).rows) == 6


def test_ctrl_c_reaches_the_run_even_when_something_replaced_the_sigint_handler(files, tmp_path, capsys, monkeypatch):
    """A library loaded earlier may replace Python's SIGINT handler (the full suite once swallowed Ctrl-C this
    way); the script boundary installs its own for the run and puts the previous one back afterwards."""
    run = tmp_path / "run"
    real, rows_written = results._append_line, []

    def append_then_signal(path, line):
        real(path, line)
        if path.name == "results.csv":
            rows_written.append(line)
            if len(rows_written) == 3:
                os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(results, "_append_line", append_then_signal)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert sweep.main(sweep_argv(files, run, "--n_levels", "3", "--n_trials", "2")) == 128 + signal.SIGINT
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert read_run(run).meta["status"] == "interrupted"


def test_ctrl_c_during_the_imports_is_one_line(tmp_path):
    env = script_env(HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "thermal_noise_simulation.py"), "--help"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until torch's library is mapped: the script is inside its imports (past the interpreter's
    # own start-up, where a signal would hit Python itself, not our code); a fixed sleep was flaky under load.
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text():
                break
        except OSError:
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # the machine was so fast that --help had finished: nothing to test
        pytest.skip("the imports finished before the signal")
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
