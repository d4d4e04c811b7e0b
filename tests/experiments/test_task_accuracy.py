"""task_accuracy: tidy rows per (task, metric, sigma, trial) on the runner, equal to lm-eval's plain HF model at
sigma 0, resumable after SIGKILL, the same under two processes, and a hub task offline is one line, exit 2."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, exits_2_with_one_line, script_env, LAUNCH
from noisynn.experiments.task_accuracy import report
from noisynn.experiments.task_accuracy.run import main
from noisynn.runs.read import read_rows

SCRIPT = str(ROOT / "task_accuracy.py")
PARTS = [("noisynn_cloze", "perplexity"), ("noisynn_cloze", "acc"), ("noisynn_next_sentence", "acc"),
         ("noisynn_next_sentence", "acc_norm")]


def flags(model_dir, out, *extra):
    return ["--model", str(model_dir), "--device", "cpu", "--limit", "3", "--n_levels", "2", "--n_trials", "2",
            "--max_noise", "0.5", "--quiet", "--out", str(out), *extra]


def env():
    return script_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def test_rows_schema_report_and_sigma0_equals_lm_evals_plain_hf_model(tmp_path, tiny_model_dir):
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from noisynn.harness import task_manager
    from noisynn.models.loading import load_model

    out = tmp_path / "run"
    assert main(flags(tiny_model_dir, out, "--log_samples")) == 0
    rows = read_rows(out / "results.csv")
    assert list(rows[0])[:12] == ["experiment", "model", "noise_type", "scale", "sigma", "trial", "seed", "task",
                                  "metric", "value", "stderr", "n_items"]
    assert [(r["task"], r["metric"]) for r in rows] == PARTS * 4  # 2 trials x 2 levels, one row per task and metric
    assert {r["n_items"] for r in rows} == {3}
    meta = json.loads((out / "run.json").read_text())
    assert meta["lm_eval_version"] == lm_eval.__version__ and meta["status"] == "finished"
    assert set(meta["tasks"]) == {"noisynn_cloze", "noisynn_next_sentence"}
    assert meta["tasks"]["noisynn_next_sentence"]["chance"] == 0.25 and len(meta["config"]["task_sha256"]) == 2
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * 2 * 3 and {"doc_id", "task", "acc", "sigma", "trial"} <= set(samples[0])
    assert {p.name for p in out.iterdir()} >= {"summary.csv", "acc_drop.csv", "task_accuracy.png"}
    summary = read_rows(out / "summary.csv")
    assert len(summary) == len(PARTS) * 2 and {"median", "ci_low", "ci_high", "n_items"} <= set(summary[0])
    # sigma 0 through the experiment = lm-eval's own HF model on the same items: the same numbers
    plain = load_model(str(tiny_model_dir), device="cpu")
    ref = lm_eval.simple_evaluate(model=HFLM(pretrained=plain.model, tokenizer=plain.tokenizer, batch_size=8),
                                  tasks=["noisynn_cloze", "noisynn_next_sentence"], task_manager=task_manager(),
                                  limit=3, bootstrap_iters=1000, verbosity="ERROR")["results"]
    for r in rows:
        if r["sigma"] == 0:
            assert r["value"] == ref[r["task"]][f"{r['metric']},none"]
            if r["metric"] != "perplexity":  # perplexity's stderr is a bootstrap
                assert r["stderr"] == ref[r["task"]][f"{r['metric']}_stderr,none"]
    noisy = {(r["task"], r["metric"], r["trial"]): r["value"] for r in rows if r["sigma"] > 0}
    assert noisy[("noisynn_cloze", "perplexity", 0)] != noisy[("noisynn_cloze", "perplexity", 1)]


def test_drop_sigma_interpolates_per_realization():
    rows = [{"task": "t", "metric": "acc", "sigma": s, "trial": k, "value": v}
            for k, curve in enumerate([(0.6, 0.6, 0.4), (0.6, 0.5, 0.3), (0.6, 0.6, 0.6)])
            for s, v in zip((0.0, 0.1, 0.2), curve)]
    rows += [{"task": "t", "metric": "perplexity", "sigma": 0.0, "trial": 0, "value": 5.0}]
    (drop,) = report.drop_table(rows, points=5)
    assert drop["clean"] == 0.6 and drop["threshold"] == pytest.approx(0.55)
    assert drop["n_not_reached"] == 1 and drop["n_trials"] == 3
    # trial 0: 0.1 + 0.1 x 0.05 / 0.2 = 0.125; trial 1: 0.05; trial 2: never (inf); median 0.125
    assert drop["sigma_median"] == pytest.approx(0.125) and drop["ci_low"] == pytest.approx(0.05)


def test_hub_task_offline_is_one_line_exit_2_and_no_run_folder(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    err = exits_2_with_one_line(main, flags(tiny_model_dir, out, "--tasks", "arc_easy"), capsys)
    assert "could not be fetched" in err and "arc_easy" in err
    assert not out.exists()
    err = exits_2_with_one_line(main, flags(tiny_model_dir, out, "--tasks", "no_such_task"), capsys)
    assert "unknown lm-eval task" in err and not out.exists()


@pytest.mark.parametrize("extra,message", [
    (("--batch_size", "0"), "not a positive integer or auto"),
    (("--batch_size", "100000"), "above 65,536"),
    (("--tasks", "missing.yaml"), "task file missing.yaml does not exist"),
    (("--include_path", "/no/such/folder"), "is not a folder"),
    (("--noise_type", "nope"), "unknown noise type"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_folder(tmp_path, tiny_model_dir, capsys, extra, message):
    out = tmp_path / "run"
    assert message in exits_2_with_one_line(main, flags(tiny_model_dir, out, *extra), capsys)
    assert not out.exists()


def write_task(folder, name, targets, **config):
    """A tiny loglikelihood task YAML (JSON is YAML) over its own data file: one item per target."""
    folder.mkdir(exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"context": f"Item {i} is", "target": t}) + "\n" for i, t in enumerate(targets)))
    task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "loglikelihood", "doc_to_text": "{{context}}",
            "doc_to_target": "{{target}}", "metric_list": [{"metric": "acc", "aggregation": "mean",
                                                            "higher_is_better": True}], **config}
    (folder / f"{name}.yaml").write_text(json.dumps(task))
    return str(folder / f"{name}.yaml")


LONG = " " + "x" * 256  # 257 byte tokens: one more than the tiny model's 256 positions


@pytest.mark.parametrize("config,targets,argv,message", [
    # a metric lm-eval does not score: no value in lm-eval's results (a KeyError after the run folder was written)
    ({"metric_list": [{"metric": "no_such_metric", "aggregation": "mean", "higher_is_better": True}]}, (), (),
     "task tiny: metric 'no_such_metric' is not one lm-eval scores (for loglikelihood tasks: perplexity, acc)"),
    # more few-shot examples than the task's documents (random.sample: "Sample larger than population")
    ({}, (), ("--num_fewshot", "4"), "task tiny: 4-shot needs 4 few-shot documents but the task has 3"),
    # drawn from the items' own split: lm-eval leaves the item out, so 3 documents give 2 shots at most
    ({"fewshot_split": "test"}, (), ("--num_fewshot", "3"), "3-shot needs 4 few-shot documents (the item"),
    # a continuation longer than the model's context (lm-eval's HF model asserts it mid-run)
    ({}, (" small", LONG), (), "task tiny: item 1's continuation is 257 tokens, longer than the model's context of 256"),
])
def test_what_lm_eval_fails_on_mid_run_is_one_line_before_the_run_folder(tmp_path, tiny_model_dir, capsys, config,
                                                                          targets, argv, message):
    task = write_task(tmp_path / "tasks", "tiny", targets or (" small", " big", " odd"), **config)
    out = tmp_path / "run"
    err = exits_2_with_one_line(main, flags(tiny_model_dir, out, "--tasks", task, "--n_trials", "1", *argv), capsys)
    assert message in err and not out.exists()


def test_limits_that_fit_run(tmp_path, tiny_model_dir):
    """The checks' edges: 3 shots from 3 documents of another split; a continuation of exactly 256 tokens."""
    tasks = tmp_path / "tasks"
    shots = write_task(tasks, "shots", (" small", " big", " odd"))
    edge = write_task(tasks, "edge", (" small", LONG[:-1], " odd"))
    out = tmp_path / "run"
    assert main(flags(tiny_model_dir, out, "--tasks", f"{shots},{edge}", "--num_fewshot", "3", "--n_trials", "1")) == 0
    assert {r["task"] for r in read_rows(out / "results.csv")} == {"shots", "edge"}


def test_task_yaml_path(tmp_path, tiny_model_dir):
    from noisynn.tasks import build

    folder = tmp_path / "mytask"
    folder.mkdir()
    config = json.loads((build() / "noisynn_cloze.yaml").read_text())
    (folder / "my_cloze.yaml").write_text(json.dumps({**config, "task": "my_cloze", "tag": []}))
    out = tmp_path / "run"
    assert main(flags(tiny_model_dir, out, "--tasks", str(folder / "my_cloze.yaml"), "--n_trials", "1")) == 0
    assert {r["task"] for r in read_rows(out / "results.csv")} == {"my_cloze"}


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, tiny_model_dir):
    out, ref = tmp_path / "killed", tmp_path / "ref"
    more = ("--n_levels", "3", "--n_trials", "3")  # 9 points
    proc = subprocess.Popen([sys.executable, SCRIPT, *flags(tiny_model_dir, out, *more)], env=env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(read_rows(out / "results.csv")) < 2 * len(PARTS):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(read_rows(out / "results.csv"))
    assert 2 * len(PARTS) <= partial < 9 * len(PARTS), "the run must be killed mid-way for this test to mean anything"
    assert main(flags(tiny_model_dir, out, *more)) == 0
    assert main(flags(tiny_model_dir, ref, *more)) == 0
    assert (out / "results.csv").read_text() == (ref / "results.csv").read_text()


def test_two_processes_equal_one(tmp_path, tiny_model_dir):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(flags(tiny_model_dir, one, "--log_samples")) == 0
    multi = subprocess.run([*LAUNCH, SCRIPT, *flags(tiny_model_dir, two, "--log_samples")], env=env(), cwd=ROOT,
                           capture_output=True, text=True)
    assert multi.returncode == 0, multi.stderr[-2000:]
    assert (one / "results.csv").read_text() == (two / "results.csv").read_text()
    assert (one / "samples.jsonl").read_text() == (two / "samples.jsonl").read_text()
    assert not list(two.glob("*.rank*")) and (two / "task_accuracy.png").is_file()
    assert json.loads((two / "run.json").read_text())["last_session"]["processes"] == 2


@pytest.mark.integration
def test_embedded_model_is_above_chance_clean_and_falls_with_noise(tmp_path):
    out = tmp_path / "run"
    assert main(["--limit", "20", "--n_levels", "2", "--max_noise", "0.3", "--n_trials", "1", "--quiet",
                 "--out", str(out)]) == 0
    value = {(r["task"], r["metric"], r["sigma"]): r["value"] for r in read_rows(out / "results.csv")}
    assert value[("noisynn_cloze", "acc", 0.0)] >= 0.3  # chance: 0
    assert value[("noisynn_next_sentence", "acc_norm", 0.0)] >= 0.5  # chance: 0.25
    assert value[("noisynn_cloze", "acc", 0.3)] <= value[("noisynn_cloze", "acc", 0.0)] - 0.3
    assert value[("noisynn_next_sentence", "acc_norm", 0.3)] < value[("noisynn_next_sentence", "acc_norm", 0.0)]
    assert value[("noisynn_cloze", "perplexity", 0.3)] > 10 * value[("noisynn_cloze", "perplexity", 0.0)]


def test_lm_evals_git_lookup_is_quiet_outside_a_git_checkout(tmp_path, monkeypatch, capfd):
    """lm-eval runs `git describe` in the working directory, git's "fatal: not a git repository" going straight to
    stderr (task_accuracy, placement, the harness CLI): during an experiment's call it records noisynn's commit."""
    import lm_eval.evaluator as evaluator

    from noisynn.runs.provenance import git_hash
    from noisynn.task_sets import lm_eval_call

    monkeypatch.chdir(tmp_path)  # no checkout here
    expected = git_hash()
    with lm_eval_call():
        recorded = evaluator.get_git_commit_hash()
    assert recorded == expected and "fatal" not in capfd.readouterr().err
    assert evaluator.get_git_commit_hash is not git_hash  # lm-eval's own again after the call
