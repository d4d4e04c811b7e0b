"""The offline lm-eval tasks (deterministic, disjoint from the eval text) and the noisy lm-eval model
(equal to lm-eval's plain HF model at sigma 0, on the same items and model)."""

import json
import re
import sys

import pytest

from tests.helpers import ROOT  # noqa: F401  (puts the worktree first on sys.path)
from noisynn.corpus import embedded_split, load_text
from noisynn.errors import NoisyNNError
from noisynn.tasks import CLOZE, NEXT_SENTENCE, TASKS, build, manifest
from noisynn.tasks.build import RULES, split_sentences, task_files


def items(folder, task):
    return [json.loads(line) for line in (folder / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tasks"))


def test_builder_is_deterministic(task_dir, tmp_path):
    again = build(tmp_path)
    assert again.name == task_dir.name  # same fingerprint
    for task in TASKS:
        assert (again / f"{task}.jsonl").read_bytes() == (task_dir / f"{task}.jsonl").read_bytes()
    assert task_files() == task_files()
    assert build(tmp_path) == again  # built once, then reused


def test_tasks_are_disjoint_from_the_eval_text_and_far_from_the_training_head(task_dir):
    eval_titles = {t for t, _ in embedded_split("eval")}
    eval_text = load_text().text
    for task in TASKS:
        docs = items(task_dir, task)
        assert not {d["title"] for d in docs} & eval_titles
        assert not any((d.get("text") or d["query"])[:200] in eval_text for d in docs)
    pool = manifest(task_dir)["pool"]
    # noise_aware_training reads max_samples x seq_len x 8 + 1000 characters from the train split's start
    # (192 x 128 by default): ten times the default still stays clear of the task pool
    assert pool["pool_offset_chars"] > 10 * (192 * 128 * 8 + 1000)


def test_cloze_items_follow_the_rules(task_dir):
    docs = items(task_dir, CLOZE)
    assert 200 <= len(docs) <= RULES[CLOZE]["max_items"]
    assert manifest(task_dir)["counts"][CLOZE] == len(docs)
    for d in docs:
        assert d["context"] + d["target"] == d["text"]
        word = d["target"][1:]
        assert d["target"] == " " + word and word.isalpha() and len(word) >= 3
        assert re.search(rf"\b{word}\b", d["context"]), d["title"]


def test_next_sentence_items_follow_the_rules(task_dir):
    docs = items(task_dir, NEXT_SENTENCE)
    assert len(docs) == RULES[NEXT_SENTENCE]["max_items"]
    labels = [d["label"] for d in docs]
    assert set(labels) == {0, 1, 2, 3} and max(labels.count(i) for i in range(4)) < 0.35 * len(docs)
    for d in docs:
        assert len(d["choices"]) == 4 and len(set(d["choices"])) == 4
        true = d["choices"][d["label"]]
        n = len(true.split())
        assert all(abs(len(c.split()) - n) <= RULES[NEXT_SENTENCE]["length_ratio"] * n for c in d["choices"])


def test_sentence_splitter_keeps_initials_and_abbreviations():
    text = "J. S. Bach was born in Eisenach. He moved to St. Thomas in Leipzig. Was it 1723? Yes."
    assert split_sentences(text) == ["J. S. Bach was born in Eisenach.", "He moved to St. Thomas in Leipzig.",
                                     "Was it 1723?", "Yes."]


# --- the noisy lm-eval model ---------------------------------------------------------------------

def _scores(result):
    return {task: {k: v for k, v in metrics.items() if k != "alias"} for task, metrics in result["results"].items()}


def _evaluate(lm, manager, limit=6):
    import lm_eval

    return _scores(lm_eval.simple_evaluate(model=lm, tasks=list(TASKS), task_manager=manager, limit=limit,
                                           log_samples=False, verbosity="ERROR", bootstrap_iters=0))


@pytest.fixture(scope="module")
def manager(task_dir):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir))


def test_sigma0_equals_lm_evals_plain_hf_model(tiny_model_dir, manager):
    from lm_eval.models.huggingface import HFLM

    from noisynn.harness import NoisyLM
    from noisynn.models.loading import load_model

    plain = load_model(str(tiny_model_dir), device="cpu")
    expected = _evaluate(HFLM(pretrained=plain.model, tokenizer=plain.tokenizer, batch_size=4), manager)
    noisy = NoisyLM(pretrained=str(tiny_model_dir), device="cpu", scale="relative", sigma=0.0, seed=3, batch_size=4)
    assert _evaluate(noisy, manager) == expected  # same numbers, not just close
    noisy.set_noise(0.5, seed=3)
    assert _evaluate(noisy, manager)[CLOZE]["perplexity,none"] != expected[CLOZE]["perplexity,none"]
    noisy.set_noise(0.0, seed=3)  # back to clean, in place
    assert _evaluate(noisy, manager) == expected


def test_registered_under_noisynn_and_built_from_model_args(tiny_model_dir, manager):
    import lm_eval
    from lm_eval.api.registry import get_model

    from noisynn.harness import NoisyLM

    assert get_model("noisynn") is NoisyLM
    result = lm_eval.simple_evaluate(model="noisynn", model_args=f"pretrained={tiny_model_dir},device=cpu,sigma=0.2,"
                                     "seed=1,scale=relative,targets=mlp+attention,blocks=1", tasks=[CLOZE],
                                     task_manager=manager, limit=2, log_samples=False, verbosity="ERROR")
    assert result["results"][CLOZE]["acc,none"] in (0.0, 0.5, 1.0)
    lm = NoisyLM(pretrained=str(tiny_model_dir), device="cpu", targets="mlp+attention", blocks="1")
    assert {t.cls.block for t in lm.injector.targets} == {1} and {t.cls.kind for t in lm.injector.targets} == {"mlp", "attention"}


def test_converters_and_spec_from_python(tiny_model_dir, manager):
    from noisynn.harness import NoisyLM
    from noisynn.spec import make_noise_spec

    spec = make_noise_spec("gaussian", scale="relative", targets="mlp")
    clean = NoisyLM(pretrained=str(tiny_model_dir), device="cpu", spec=spec)
    assert {t.cls.kind for t in clean.injector.targets} == {"mlp"} and clean.hooks is None
    before = _evaluate(clean, manager, limit=3)
    analog = NoisyLM(pretrained=clean.loaded, spec=spec, adc_bits=3, out_bound=2)  # the same loaded model, reused
    assert analog.describe()["converters"]
    assert _evaluate(analog, manager, limit=3) != before
    analog.restore()  # hooks removed from the shared model
    assert analog.hooks is None and _evaluate(clean, manager, limit=3) == before


def test_bad_noise_settings_fail_before_the_model_is_loaded():
    from noisynn.harness import NoisyLM

    with pytest.raises(NoisyNNError, match="unknown target"):
        NoisyLM(pretrained="/no/such/model", targets="nothing")
    with pytest.raises(NoisyNNError, match="unknown noise type"):
        NoisyLM(pretrained="/no/such/model", noise_type="nope")


def test_hub_task_offline_is_one_clear_line(manager, monkeypatch):
    from noisynn.harness import load_tasks

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(NoisyNNError, match="could not be fetched") as err:
        load_tasks(["arc_easy"], manager)
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(NoisyNNError, match="unknown lm-eval task 'no_such_task'"):
        load_tasks(["no_such_task"], manager)


def test_lm_eval_cli_through_python_m_noisynn_harness(tiny_model_dir, capsys):
    from noisynn.harness import main

    main(["run", "--model", "noisynn", "--model_args", f"pretrained={tiny_model_dir},device=cpu,sigma=0.1,seed=2",
          "--tasks", CLOZE, "--limit", "2"])
    out = capsys.readouterr().out
    assert CLOZE in out and "perplexity" in out and "noisynn" in out


# --- the harness CLI at the script boundary (issue 25): one line, exit 2, before anything is loaded -------------

@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny BERT folder: an encoder (is_decoder=False), not a causal language model."""
    from transformers import BertConfig, BertModel

    from tests.helpers import byte_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(BertConfig(vocab_size=258, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


HARNESS_CASES = [  # (model_args after pretrained=@MODEL,device=cpu; more flags; fragment of the one stderr line)
    ("sigma=abc", [], "model_args sigma: 'abc' is not a number"),
    ("sigma=-0.5", [], "must be >= 0"),
    ("sigma=nan", [], "is not a finite number"),
    ("seed=x", [], "model_args seed: 'x' is not an integer"),
    ("sigam=0.5", [], "unknown model_args key 'sigam'; known: pretrained"),
    ("analog_preset=afm", [], "unknown model_args key 'analog_preset'"),
    ("include_bias=maybe", [], "model_args include_bias: 'maybe' is not true or false"),
    ("noise_type=nope", [], "unknown noise type 'nope'"),
    ("targets=nothing", [], "unknown target 'nothing'"),
    ("scale=huge", [], "unknown scale 'huge'"),
    ("blocks=9", [], "block 9 does not exist: this model has blocks 0-1"),
    ("dac_bits=1", [], "'1' must be >= 2 bits"),
    ("", ["--limit", "0"], "--limit 0: must be > 0"),
]


def harness_argv(model, model_args, extra=()):
    args = f"pretrained={model},device=cpu" + (f",{model_args}" if model_args else "")
    return ["run", "--model", "noisynn", "--model_args", args, "--tasks", CLOZE, "--limit", "2", *extra]


@pytest.mark.parametrize("model_args,extra,message", HARNESS_CASES, ids=[c[0] or " ".join(c[1]) for c in HARNESS_CASES])
def test_harness_cli_bad_setting_is_one_line_exit_2(model_args, extra, message, tiny_model_dir, capsys, monkeypatch):
    from tests.helpers import exits_2_with_one_line
    from noisynn.harness import main

    monkeypatch.setattr(sys, "argv", ["noisynn.harness"])
    err = exits_2_with_one_line(main, harness_argv(tiny_model_dir, model_args, extra), capsys)
    assert message in err and "Traceback" not in err, err


def test_harness_cli_refuses_a_missing_or_non_causal_model_before_loading(bert_dir, tmp_path, capsys, monkeypatch):
    from tests.helpers import exits_2_with_one_line
    from noisynn.harness import main

    monkeypatch.setattr(sys, "argv", ["noisynn.harness"])
    err = exits_2_with_one_line(main, harness_argv(tmp_path / "no" / "such", ""), capsys)
    assert "does not exist" in err, err
    err = exits_2_with_one_line(main, harness_argv(bert_dir, ""), capsys)
    assert "is not a causal language model" in err, err


def test_python_m_noisynn_harness_is_one_line_exit_2(tiny_model_dir, tmp_path):
    """The real entry point: an unknown key is refused before lm-eval starts; an unknown task (lm-eval's own check
    of its arguments) ends in one error line, after lm-eval's log lines, without a traceback."""
    from tests.helpers import run_python, script_env

    env = script_env(HF_HUB_OFFLINE="1")
    proc = run_python(["-m", "noisynn.harness", *harness_argv(tiny_model_dir, "sigam=0.5")], cwd=tmp_path, env=env,
                      timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "unknown model_args key 'sigam'" in proc.stderr
    proc = run_python(["-m", "noisynn.harness", "run", "--model", "noisynn", "--model_args",
                       f"pretrained={tiny_model_dir},device=cpu", "--tasks", "no_such_task"], cwd=tmp_path, env=env,
                      timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert last.startswith("noisynn.harness: error:") and "no_such_task" in last, proc.stderr


def test_noisylm_checks_sigma_seed_and_keys_from_python(tiny_model_dir):
    from noisynn.harness import NoisyLM

    with pytest.raises(NoisyNNError, match="sigma: '-1' must be >= 0"):
        NoisyLM(pretrained="/no/such/model", sigma=-1)
    with pytest.raises(NoisyNNError, match="unknown model_args key 'sigam'"):
        NoisyLM.create_from_arg_string(f"pretrained={tiny_model_dir},sigam=0.5")
