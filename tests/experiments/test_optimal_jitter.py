"""optimal_jitter: run folder on a tiny model, clean rows are really clean, the zone rule, bad flags, embedded model."""

import json

import pytest
import torch

from tests.helpers import exits_2_with_one_line
from noisynn.evaluation import decode
from noisynn.experiments.optimal_jitter import run as oj
from noisynn.models.loading import load_model
from noisynn.experiments.optimal_jitter.report import jitter_zone
from noisynn.runs.schema import LEADING_COLUMNS
from noisynn.runs.read import read_rows
from noisynn.runs.runner import Point

PROMPTS = ["The fox", "A lazy dog sleeps and"]


@pytest.fixture
def small(tiny_model_dir, text_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64", "--max_length", "32",
            "--search_range", "0.05", "0.5", "--n_points", "2", "--n_trials", "2", "--max_new_tokens", "6",
            "--n_samples", "2", "--prompts", *PROMPTS, "--quiet"]


def test_run_folder_schema_samples_and_clean_rows(tmp_path, small, tiny_model_dir, capsys):
    out = tmp_path / "run"
    assert oj.main(small + ["--out", str(out), "--output", str(tmp_path / "copy.png")]) == 0
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == list(LEADING_COLUMNS) + list(oj.METRICS)
    assert sorted({r["sigma"] for r in rows}) == [0.0, 0.05, 0.5] and len(rows) == 3 * 2
    assert all(r["eval_tokens"] == 64 and 0 < r["gen_tokens"] <= 2 * 2 * 6 for r in rows)
    assert all(0 <= r[f"distinct_{n}"] <= 1 for r in rows for n in (1, 2, 3))
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 * len(PROMPTS) * 2 and [s["prompt"] for s in samples[:4]] == [p for p in PROMPTS for _ in "ab"]
    assert (out / "optimal_jitter.png").stat().st_size > 10_000 and (tmp_path / "copy.png").is_file()
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["zone"]["verdict"] and isinstance(meta["zone"]["found"], bool)
    assert meta["zone"]["verdict"] in capsys.readouterr().out
    # The clean rows of trial 1 come after the sigma-0.5 row of trial 0: their samples must be those of
    # the clean model (weights restored), drawn with that point's own sampling seed.
    lm = load_model(str(tiny_model_dir), device="cpu")
    args = oj.parse(small)
    rng = torch.Generator().manual_seed(Point(0, 0.0, 1).sample_seed(args.seed))
    fresh = decode(lm.model, lm.tokenizer, [p for p in PROMPTS for _ in range(2)], 6, greedy=False, temperature=0.8,
                   top_k=50, generator=rng).texts
    assert [s["text"] for s in samples if s["sigma"] == 0 and s["trial"] == 1] == fresh
    noisy = [s["text"] for s in samples if s["sigma"] == 0.5 and s["trial"] == 1]
    assert noisy != fresh  # and noise changes what is sampled


def test_search_levels():
    assert oj.search_levels(0.01, 0.03, 3) == pytest.approx([0.0, 0.01, 0.02, 0.03])
    assert oj.search_levels(0.0, 0.02, 3) == pytest.approx([0.0, 0.01, 0.02])  # 0 once
    assert oj.search_levels(0.001, 0.1, 3, "log") == pytest.approx([0.0, 0.001, 0.01, 0.1])


def _rows(levels):
    return [{"sigma": s, "trial": t, "distinct_2": d, "perplexity": p, "eval_tokens": 64}
            for s, per_trial in levels.items() for t, (d, p) in enumerate(per_trial)]


def test_zone_rule():
    clean = [(0.80, 10.0), (0.82, 10.0), (0.81, 10.0)]  # median 0.81, spread 0.02 -> needs > 0.83
    rows = _rows({0.0: clean,
                  0.01: [(0.81, 11), (0.82, 11), (0.84, 11)],  # median 0.82: not above 0.83
                  0.02: [(0.84, 12), (0.86, 13), (0.85, 14)],  # median 0.85, ppl 1.3x: in the zone
                  0.03: [(0.90, 12), (0.88, 14), (0.89, 15)],  # in the zone (ppl 1.4x)
                  0.04: [(0.95, 16), (0.97, 20), (0.96, 30)]})  # 2x perplexity: out of bound
    z = jitter_zone(rows, 1.5)
    assert z["found"] and z["zone"] == [0.02, 0.03] and z["sigmas_in_zone"] == [0.02, 0.03]
    assert z["clean_spread"] == pytest.approx(0.02) and z["clean_distinct_2"] == 0.81
    assert [lv["within_bound"] for lv in z["levels"]] == [True, True, True, False]
    z = jitter_zone(rows, 1.25)
    assert not z["found"] and z["zone"] is None and z["verdict"].startswith("no Goldilocks zone for this model")
    z = jitter_zone(_rows({0.0: clean, 0.01: [(0.9, 100)] * 3}), 1.5)
    assert not z["found"] and "every searched sigma" in z["verdict"]


BAD = [
    (["--search_range", "0.5", "0.1"], "needs LOW <= HIGH"),
    (["--search_range", "-0.1", "0.1"], "must be >= 0"),
    (["--search_range", "0.1"], "expected 2 arguments"),
    (["--search_range", "0", "0.1", "--spacing", "log"], "needs LOW > 0"),
    (["--max_ppl_ratio", "0.9"], "must be > 1"),
    (["--n_points", "0"], "must be >= 1"),
    (["--noise_type", "pink"], "unknown noise type 'pink'"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_flags_exit_2_with_one_line(tmp_path, small, capsys, extra, message):
    out = tmp_path / "run"
    assert message in exits_2_with_one_line(oj.main, small + ["--out", str(out)] + extra, capsys)
    assert not out.exists()



@pytest.mark.integration
def test_embedded_model_reduced(tmp_path):
    out = tmp_path / "run"
    assert oj.main(["--eval_tokens", "128", "--search_range", "0.01", "0.06", "--n_points", "2", "--n_trials", "2",
                    "--max_new_tokens", "12", "--prompts", "The history of science shows that", "Once upon a time,",
                    "--quiet", "--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    ppl = {r["sigma"]: r["perplexity"] for r in rows if r["trial"] == 0}
    assert 5 < ppl[0.0] < 40 and ppl[0.06] > 10 * ppl[0.0]
    zone = json.loads((out / "run.json").read_text())["zone"]
    assert [lv["within_bound"] for lv in zone["levels"]] == [True, False]
    assert 0.5 < zone["clean_distinct_2"] <= 1 and zone["verdict"]
