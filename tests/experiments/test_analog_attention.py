"""analog_attention on a tiny random Llama: conditions, trials, the base = float check, recall rows, resume, refusals."""

import json
import math

import pytest

from tests.helpers import exits_2_with_one_line
from noisynn.experiments.analog_attention import report
from noisynn.experiments.analog_attention import run as aa
from noisynn.runs.read import read_rows


@pytest.fixture
def tiny(tiny_model_dir, text_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64", "--max_length", "32",
            "--quiet", "--recall_items", "2", "--recall_distances", "0,16"]


def test_a_run_has_every_condition_and_resumes(tmp_path, tiny):
    out = tmp_path / "run"
    argv = tiny + ["--conditions", "float,base,weight,write,leak,window", "--weight_levels", "0.05,0.5",
                   "--write_levels", "0.01,0.5", "--leak_levels", "64,2", "--window_levels", "4", "--n_trials", "2",
                   "--out", str(out)]
    assert aa.main(argv) == 0
    rows = read_rows(out / "results.csv")
    ppl = {(r["condition"], r["sigma"], r["trial"]): r["perplexity"] for r in rows if r["probe"] == "perplexity"}
    # noise draws: 2 trials; deterministic conditions (float, base with every knob off, window): 1
    assert sorted(k for k in ppl if k[0] in ("float", "base", "window")) == [("base", 0.0, 0), ("float", 0.0, 0),
                                                                          ("window", 4.0, 0)]
    assert {k[2] for k in ppl if k[0] in ("weight", "write", "leak")} == {0, 1}
    assert ppl[("base", 0.0, 0)] == pytest.approx(ppl[("float", 0.0, 0)], rel=1e-4)  # every knob off: the model
    assert ppl[("write", 0.5, 0)] > ppl[("write", 0.01, 0)] and ppl[("leak", 2.0, 0)] > ppl[("leak", 64.0, 0)]
    recall = [r for r in rows if r["probe"] == "recall"]
    assert {r["condition"] for r in recall} == {"float", "base", "leak", "window"}
    assert {r["distance"] for r in recall} == {0, 16} and all(r["n_scored"] == 2 * 16 for r in recall)
    assert all(0 <= r["recall_acc"] <= 1 for r in recall)
    meta = json.loads((out / "run.json").read_text())
    assert meta["decode_check"]["max_abs_logit_difference"] < 1e-3
    assert (out / report.FIGURE).exists() and (out / "summary.csv").exists()
    leak = report.doubling(rows, "leak")
    assert leak["n_trials"] == 2
    before = (out / "results.csv").read_text()
    assert aa.main(argv) == 0  # resume: every point is done
    assert (out / "results.csv").read_text() == before


@pytest.mark.parametrize("extra,words", [
    (["--conditions", "float,nope"], "unknown 'nope'"),
    (["--recall_distances", "0,-4"], "integers >= 0"),
    (["--write_levels", "0"], "> 0"),
    (["--leak_levels", "abc"], "comma list of numbers"),
    (["--kv_tau_spread", "0.3"], "needs --kv_tau"),
    (["--kv_bits", "1"], ">= 2"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny, capsys, extra, words):
    out = tmp_path / "bad"
    message = exits_2_with_one_line(aa.main, tiny + extra + ["--out", str(out)], capsys)
    assert words in message and not out.exists()


def test_doubling_reads_the_damage_axis():
    rows = [{"condition": "float", "probe": "perplexity", "sigma": 0.0, "trial": 0, "perplexity": 10.0}]
    rows += [{"condition": "leak", "probe": "perplexity", "sigma": tau, "trial": 0, "perplexity": p}
             for tau, p in ((1000.0, 10.5), (100.0, 15.0), (10.0, 40.0))]
    d = report.doubling(rows, "leak")
    # log-interpolated on 1 / tau between 0.01 (15) and 0.1 (40): ppl 20 at 1/tau = 0.01 + 0.09 ln(4/3) / ln(8/3)
    expected = 1 / (0.01 + 0.09 * math.log(20 / 15) / math.log(40 / 15))
    assert d["median"] == pytest.approx(expected)
