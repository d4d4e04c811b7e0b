"""temporal_drift on tiny random models: schedules, redraw vs accumulate, traces, verdict, bad input."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from tests.helpers import byte_tokenizer, tiny_llama, exits_2_with_one_line
from noisynn.errors import NoisyNNError
from noisynn.experiments.temporal_drift import report as td_report
from noisynn.experiments.temporal_drift import run as td
from noisynn.inject import NoiseInjector
from noisynn.runs.schema import LEADING_COLUMNS
from noisynn.runs.read import read_rows
from noisynn.stats import jump_share, rolling_median


@pytest.mark.parametrize("name", list(td.SCHEDULES))
@pytest.mark.parametrize("start,end", [(0.0, 0.05), (0.01, 0.05), (0.04, 0.005)])
@pytest.mark.parametrize("total", [2, 7, 100])
def test_schedules_hit_start_and_end(name, start, end, total):
    s = td.sigma_schedule(name, total, start, end)
    assert len(s) == total and s[0] == pytest.approx(start, abs=1e-12) and s[-1] == pytest.approx(end, abs=1e-12)
    assert min(s) >= 0
    if name in ("linear", "exponential", "step"):  # monotone between the ends
        assert s == sorted(s, reverse=start > end)


def test_step_and_sine_shapes():
    step = td.sigma_schedule("step", 99, 0.0, 0.06)
    assert sorted(set(step)) == [0.0, 0.03, 0.06] and step.count(0.0) == 33
    sine = td.sigma_schedule("sine", 100, 0.0, 0.05)
    assert max(sine) > 0.05 * 0.5 + 0.01 and any(b < a for a, b in zip(sine, sine[1:]))  # it goes down too


def test_parse_schedules():
    assert td.parse_schedules("all") == list(td.SCHEDULES)
    assert td.parse_schedules("step, linear,step") == ["step", "linear"]
    with pytest.raises(NoisyNNError, match="unknown schedule 'cubic'"):
        td.parse_schedules("linear,cubic")


def test_rolling_repetition():
    assert td.rolling_repetition(list(range(20)), window=8) == [0.0] * 20
    loop = td.rolling_repetition([5, 6, 7] * 10, window=6)
    assert loop[:5] == [0.0] * 5 and loop[-1] == 1.0 and loop == sorted(loop)
    assert td.rolling_repetition([1, 1, 1, 1], window=16, n=3) == [0.0, 0.0, 0.0, 0.25]


def _deviations(model, injector, sigmas, accumulate):
    """The targeted weights' deviation from clean after each before_step call."""
    drift = td.Drift(injector, sigmas, trial_seed=7, accumulate=accumulate)
    out = []
    for t in range(len(sigmas)):
        drift(t)
        out.append(torch.cat([(tg.param.detach() - c).flatten() for tg, c in zip(injector.targets, injector.clean)]))
    return out, drift.effective


def test_accumulate_is_a_random_walk_and_redraw_is_not():
    model = tiny_llama()
    injector = NoiseInjector(model, "gaussian", "absolute", "blocks")
    sigmas = td.sigma_schedule("linear", 12, 0.0, 0.1)
    redraw, eff_r = _deviations(model, injector, sigmas, accumulate=False)
    walk, eff_a = _deviations(model, injector, sigmas, accumulate=True)
    injector.restore()
    assert eff_r == sigmas and eff_a == pytest.approx(sigmas)
    for t in range(1, 12):  # same marginal size: std of the deviation ~ sigma_t in both semantics
        assert float(redraw[t].std()) == pytest.approx(sigmas[t], rel=0.1)
        assert float(walk[t].std()) == pytest.approx(sigmas[t], rel=0.1)
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])  # noqa: E731
    for t in range(3, 12):  # the walk remembers the previous step; a redraw does not
        assert corr(walk[t], walk[t - 1]) == pytest.approx(sigmas[t - 1] / sigmas[t], abs=0.05)
        assert abs(corr(redraw[t], redraw[t - 1])) < 0.1
    assert not torch.equal(walk[-1], redraw[-1])
    # the first step of both uses the same draw Z_0 ... (step 1: sigma_0 = 0, so both are sigma_1 Z_1)
    assert torch.allclose(walk[1], redraw[1])


def test_accumulate_never_undoes_drift():
    model = tiny_llama()
    injector = NoiseInjector(model, "gaussian", "absolute", "blocks")
    sigmas = [0.0, 0.05, 0.1, 0.05, 0.02, 0.1, 0.12]
    walk, eff = _deviations(model, injector, sigmas, accumulate=True)
    assert eff == pytest.approx([0.0, 0.05, 0.1, 0.1, 0.1, 0.1, 0.12])
    assert torch.equal(walk[2], walk[3]) and torch.equal(walk[3], walk[5])  # standing still while sigma <= max
    assert not torch.equal(walk[5], walk[6])
    assert float(walk[0].abs().max()) == 0.0


def test_run_trace_restores_weights_and_hooks_every_step():
    model, tok = tiny_llama(), byte_tokenizer()
    clean = {k: v.clone() for k, v in model.state_dict().items()}
    injector = NoiseInjector(model, "gaussian", "absolute", "blocks")
    sigmas = td.sigma_schedule("linear", 10, 0.0, 0.5)
    trace = td.run_trace(model, tok, injector, sigmas, 3, accumulate=False, prompt="hello")
    assert len(trace["entropy_bits"]) == 10 and len(trace["effective_sigma"]) == 10
    assert all(torch.equal(clean[k], v) for k, v in model.state_dict().items())
    again = td.run_trace(model, tok, injector, sigmas, 3, accumulate=False, prompt="hello")
    assert again["logprob"] == trace["logprob"]  # seeded from (trial seed, step)
    other = td.run_trace(model, tok, injector, sigmas, 4, accumulate=False, prompt="hello")
    assert other["logprob"][0] == trace["logprob"][0] and other["logprob"][1:] != trace["logprob"][1:]


@pytest.fixture
def small(tiny_model_dir, text_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32",
            "--total_tokens", "12", "--n_trials", "2", "--end_sigma", "0.5", "--quiet"]


def test_run_folder_traces_and_resume(tmp_path, small, capsys):
    out = tmp_path / "run"
    assert td.main(small + ["--schedule", "linear,step", "--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == list(LEADING_COLUMNS) + list(td.EXTRA) + list(td.METRICS)
    assert len(rows) == 2 * 2 * 12
    for r in rows:
        assert r["sigma"] == pytest.approx(td.SCHEDULES[r["schedule"]](r["step"], 12, 0.0, 0.5))
        assert r["semantics"] == "redraw" and r["effective_sigma"] == r["sigma"]
    seeds = {(r["schedule"], r["trial"]): r["seed"] for r in rows}
    assert seeds[("linear", 0)] == seeds[("step", 0)] != seeds[("linear", 1)]
    meta = json.loads((out / "run.json").read_text())
    assert meta["semantics"] == "redraw" and set(meta["verdicts"]) == {"linear", "step"}
    assert meta["verdicts"]["linear"]["verdict"] in ("flat", "gradual", "cliff")
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and [s["prompt"] for s in samples[:2]] == list(td.PROMPTS[:2])
    assert (out / "temporal_drift.png").stat().st_size > 10_000
    assert "rule:" in capsys.readouterr().out
    # resume after a kill in the middle of a trace: the missing rows come back identical
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-5]))
    assert td.main(small + ["--schedule", "linear,step", "--out", str(out)]) == 0
    assert read_rows(out / "results.csv") == rows
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4


def test_one_prompt_for_all_trials(tmp_path, small):
    assert td.main(small + ["--prompt", "hello", "--total_tokens", "3", "--out", str(tmp_path / "run")]) == 0
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == ["hello", "hello"]


def test_accumulate_flag_differs_from_redraw(tmp_path, small):
    assert td.main(small + ["--out", str(tmp_path / "redraw")]) == 0
    assert td.main(small + ["--accumulate", "--out", str(tmp_path / "walk")]) == 0
    redraw, walk = read_rows(tmp_path / "redraw" / "results.csv"), read_rows(tmp_path / "walk" / "results.csv")
    assert {r["semantics"] for r in walk} == {"accumulate"}
    assert json.loads((tmp_path / "walk" / "run.json").read_text())["semantics"] == "accumulate"
    assert [r["logprob"] for r in redraw[:2]] == [r["logprob"] for r in walk[:2]]  # sigma_0 = 0, then Z_1 alike
    assert [r["logprob"] for r in redraw] != [r["logprob"] for r in walk]


BAD = [
    (["--schedule", "cubic"], "unknown schedule"),
    (["--total_tokens", "0"], "must be >= 1"),
    (["--end_sigma", "-1"], "must be >= 0"),
    (["--start_sigma", "nan"], "not a finite number"),
    (["--noise_type", "pink"], "unknown noise type"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_input_exits_2_with_one_line(tmp_path, small, capsys, extra, message):
    assert message in exits_2_with_one_line(td.main, small + ["--out", str(tmp_path / "run")] + extra, capsys)
    assert not (tmp_path / "run").exists()


def test_jump_share_and_rolling_median():
    ramp = np.linspace(0, 1, 101)
    jump, total, _ = jump_share(ramp, 10)
    assert total == pytest.approx(1) and jump == pytest.approx(0.1)
    step = np.r_[np.zeros(50), np.ones(51)]
    assert jump_share(step, 10)[0] == 1.0 and jump_share(step, 10)[2] in range(40, 50)
    assert list(rolling_median([0, 0, 9, 0, 0], 3)) == [0, 0, 0, 0, 0]
    assert math.isnan(jump_share([1.0], 3)[0])
    bump = np.r_[np.zeros(20), np.ones(10), np.linspace(1, -0.5, 70)]  # a sudden rise, then a slow fall
    assert jump_share(bump, 5)[0] == 1.0 and jump_share(bump, 5, -1)[0] == pytest.approx(5 * 1.5 / 69)


def _fake_run(folder, traces, window=5):
    """A temporal-drift run folder with given entropy traces per trial (log-prob = -entropy)."""
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"config": {"window": window}, "semantics": "redraw"}))
    cols = list(LEADING_COLUMNS) + list(td.EXTRA) + list(td.METRICS)
    with open(folder / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        for trial, trace in enumerate(traces):
            for step, h in enumerate(trace):
                w.writerow({"experiment": "temporal_drift", "model": "m", "noise_type": "gaussian", "scale": "absolute",
                            "sigma": step / (len(trace) - 1) * 0.05, "trial": trial, "seed": trial, "schedule": "linear",
                            "semantics": "redraw", "step": step, "effective_sigma": 0, "token_id": 1, "token": "a",
                            "entropy_bits": h, "logprob": -h, "repetition": 0.0, "finite": "true"})
    return td_report.drift_verdicts(folder)["linear"]


def test_verdict_rule(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    cliff = [np.r_[np.full(30 + k, 2.0), np.full(n - 30 - k, 7.0)] + rng.normal(0, 0.1, n) for k in (-2, 0, 3)]
    ramp = [np.linspace(2, 7, n) + rng.normal(0, 0.1, n) for _ in range(3)]
    flat = [np.full(n, 3.0) + rng.normal(0, 0.05, n) for _ in range(3)]
    c = _fake_run(tmp_path / "cliff", cliff)
    assert c["verdict"] == "cliff" and c["metrics"]["entropy_bits"]["seeds_cliff"] == 3
    assert 25 <= c["metrics"]["entropy_bits"]["jump_steps"][0] <= 35
    g = _fake_run(tmp_path / "ramp", ramp)
    assert g["verdict"] == "gradual" and g["metrics"]["entropy_bits"]["jump_share"] < 0.2
    assert _fake_run(tmp_path / "flat", flat)["verdict"] == "flat"
    # a sudden move *against* the net change is not a cliff: slow rise 2 -> 7 with a sudden drop of 5 at step 20
    # that recovers over 20 steps (by |change| alone its drop would be 55% of the range)
    t = np.arange(n)
    dip_shape = np.where((t >= 20) & (t < 40), -5.0 * (1 - (t - 20) / 20), 0.0)
    dip = [np.linspace(2, 7, n) + dip_shape + rng.normal(0, 0.05, n) for _ in range(3)]
    d = _fake_run(tmp_path / "dip", dip)["metrics"]["entropy_bits"]
    assert d["verdict"] == "gradual" and d["jump_share"] < 0.35
    assert td_report.plot(tmp_path / "cliff")[0].stat().st_size > 10_000


@pytest.mark.integration
def test_temporal_drift_on_embedded_model(tmp_path, embedded):
    from noisynn.evaluation import decode

    out = tmp_path / "run"
    assert td.main(["--total_tokens", "6", "--n_trials", "2", "--eval_tokens", "64", "--targets", "mlp", "--quiet",
                    "--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 12 and {r["schedule"] for r in rows} == {"linear"}
    for r in (r for r in rows if r["step"] == 0):  # sigma_0 = 0: the clean model, on trial k's prompt
        clean = decode(embedded.model, embedded.tokenizer, [td.PROMPTS[r["trial"]]], 1)
        assert r["sigma"] == 0 and r["entropy_bits"] == pytest.approx(float(clean.entropy_bits[0, 0]), abs=1e-4)
    last = [r for r in rows if r["step"] == 5]
    assert last[0]["sigma"] == 0.05 and last[0]["entropy_bits"] != last[1]["entropy_bits"]  # independent draws
    assert json.loads((out / "run.json").read_text())["injection"]["params_by_kind"] == {"mlp": 30 * 3 * 576 * 1536}
