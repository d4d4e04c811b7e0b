"""placement: the additive prediction, the greedy choice, verification after a miss, placement.json on the
sweep (--digital keeps tensors bit-exactly clean), bad input, the run folder on a tiny model, the embedded model."""

import itertools
import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import byte_tokenizer, exits_2_with_one_line, tiny_llama
from noisynn.analog.hooks import install_converters
from noisynn.evaluation import tokenize
from noisynn.experiments.placement import plan
from noisynn.experiments.placement import run as pl
from noisynn.experiments.placement.report import decide
from noisynn.experiments.sweep import run as sweep
from noisynn.inject import NoiseInjector
from noisynn.targets import select
from noisynn.placements import read_digital, write_placement
from noisynn.runs.schema import LEADING_COLUMNS
from noisynn.runs.read import read_rows
from noisynn.spec import converter_spec_from_args, spec_from_args


@pytest.fixture
def small(tiny_model_dir, text_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64", "--max_length", "32",
            "--unit_trials", "2", "--n_trials", "3", "--quiet"]


# --- the arithmetic (plan.py) ------------------------------------------------------------------------------

def test_prediction_is_the_sum_of_single_unit_damages():
    damages = {"a": 0.01, "b": 0.025, "c": 0.002, "d": -0.004}
    assert plan.predicted_damage(damages, ["a", "b", "c"]) == pytest.approx(0.037)
    assert plan.predicted_damage(damages, ["a", "d"]) == pytest.approx(0.01)  # a helping unit counts as harmless
    assert plan.predicted_damage(damages, []) == 0.0


def test_greedy_is_optimal_on_a_hand_made_instance():
    """Seven units, budget ln 1.1: the best analog set (found by brute force) is the greedy's; taking the
    densest unit that does not fit would be wrong, and so would stopping at it (a smaller one still fits)."""
    sizes = {"a": 10, "b": 8, "c": 6, "d": 4, "e": 2, "f": 3, "g": 1}
    damages = {"a": 0.010, "b": 0.060, "c": 0.012, "d": 0.150, "e": 0.001, "f": 0.070, "g": 0.040}
    budget = math.log(1.1)  # 0.0953
    # damage per size: e 0.0005, a 0.001, c 0.002, b 0.0075, f 0.0233, d 0.0375, g 0.04
    assert plan.greedy_order(damages, sizes) == ["e", "a", "c", "b", "f", "d", "g"]
    chosen = plan.greedy_choice(damages, sizes, budget)
    assert chosen == ["e", "a", "c", "b"]  # 0.083; f would exceed the budget and g too

    def best():
        feasible = (s for k in range(len(sizes) + 1) for s in itertools.combinations(sizes, k)
                    if plan.predicted_damage(damages, s) <= budget)
        return max(feasible, key=lambda s: sum(sizes[u] for u in s))

    assert set(chosen) == set(best()) and sum(sizes[u] for u in chosen) == 26
    # A budget between prefixes: b does not fit, the smaller later units still may (f does not, g does).
    assert plan.greedy_choice(damages, sizes, 0.065) == ["e", "a", "c", "g"]


def test_greedy_never_takes_units_without_size_or_with_nonfinite_damage():
    damages = {"a": 0.0, "emb": 0.0, "broken": math.inf}
    sizes = {"a": 5, "emb": 0, "broken": 5}
    assert plan.greedy_choice(damages, sizes, 1.0) == ["a"]
    assert plan.greedy_order(damages, sizes)[-1] == "broken"


def test_frontier_is_the_cumulative_greedy_order():
    damages, sizes = {"a": 0.02, "b": 0.01, "c": 0.05}, {"a": 2, "b": 2, "c": 1}
    front = plan.frontier(damages, sizes)
    assert [f["unit"] for f in front] == ["", "b", "a", "c"]
    assert [f["share"] for f in front] == pytest.approx([0, 0.4, 0.8, 1.0])
    assert [f["predicted_delta_nll"] for f in front] == pytest.approx([0, 0.01, 0.03, 0.08])


def test_a_failed_verification_moves_the_last_taken_unit_to_digital():
    seen = []

    def verify(record):  # misses (dNLL 0.2 > budget 0.1) while unit "c" (the greedy's last) or "b" is analog
        seen.append(list(record["analog_units"]))
        return 0.2 if {"b", "c"} & set(record["analog_units"]) else 0.05

    records = plan.verify_until_met(["a", "b", "c"], verify, budget=0.1, max_rounds=10)
    assert seen == [["a", "b", "c"], ["a", "b"], ["a"]]
    assert [r["label"] for r in records] == ["v1", "v2", "v3"]
    assert [r.get("moved_to_digital") for r in records] == [["c"], ["b"], None]
    # Bounded: at most max_rounds verifications; nothing analog is never verified.
    assert len(plan.verify_until_met(["a", "b", "c"], lambda r: 1.0, 0.1, max_rounds=2)) == 2
    assert plan.verify_until_met([], verify, 0.1, 5) == []


def test_after_a_miss_scale_moves_units_until_the_rescaled_prediction_fits():
    damages = {"a": 0.01, "b": 0.02, "c": 0.03, "d": 0.04}
    assert plan.after_miss(["a", "b", "c", "d"]) == (["a", "b", "c"], ["d"])
    assert plan.after_miss(["a", "b", "c", "d"], damages, target=0.035) == (["a", "b"], ["d", "c"])
    assert plan.after_miss(["a", "b", "c", "d"], damages, target=1.0) == (["a", "b", "c"], ["d"])  # at least one
    assert plan.after_miss(["a", "b"], damages, target=0.0) == ([], ["b", "a"])
    seen = []

    def verify(record):  # the measured dNLL: 2 x the prediction
        seen.append(record["analog_units"])
        return 2 * plan.predicted_damage(damages, record["analog_units"])

    records = plan.verify_until_met(["a", "b", "c", "d"], verify, budget=0.07, max_rounds=10, damages=damages)
    # v1: predicted 0.10, measured 0.20: the rest must predict <= 0.10 x 0.07 / 0.20 = 0.035 -> a, b (0.03),
    # measured 0.06: meets
    assert seen == [["a", "b", "c", "d"], ["a", "b"]] and records[0]["moved_to_digital"] == ["d", "c"]
    assert len(records) == 2 and "moved_to_digital" not in records[1]


def test_after_a_miss_bisect_finds_the_longest_prefix_that_meets():
    order = [f"u{i}" for i in range(10)]
    seen = []

    def verify(record):  # any prefix longer than 6 units misses (measured 0.2 > budget 0.1)
        seen.append(len(record["analog_units"]))
        return 0.2 if len(record["analog_units"]) > 6 else 0.05

    records = plan.verify_until_met(order, verify, budget=0.1, max_rounds=10, bisect=True)
    # v1 all 10 (miss); then [0, 10): 5 meets, [5, 10): 7 misses, [5, 7): 6 meets, and the search is closed
    assert seen == [10, 5, 7, 6]
    assert records[0]["moved_to_digital"] == order[5:] and records[1]["moved_to_analog"] == order[5:7]
    assert records[2]["moved_to_digital"] == order[6:7] and "moved_to_digital" not in records[3]
    # a first set that meets is verified once; nothing that meets: the search ends at one unit
    assert len(plan.verify_until_met(order, lambda r: 0.0, 0.1, 10, bisect=True)) == 1
    last = plan.verify_until_met(order, lambda r: 1.0, 0.1, 10, bisect=True)
    assert [len(r["analog_units"]) for r in last] == [10, 5, 2, 1]
    assert len(plan.verify_until_met(order, lambda r: 1.0, 0.1, 2, bisect=True)) == 2
    assert plan.verify_until_met([], verify, 0.1, 5, bisect=True) == []


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), threshold=st.integers(0, 200))
def test_bisect_finds_the_monotone_threshold_in_log2_verifications(n, threshold):
    records = plan.verify_until_met(list(range(n)), lambda r: float(len(r["analog_units"]) > threshold), 0.5,
                                    max_rounds=64, bisect=True)
    met = [len(r["analog_units"]) for r in records if len(r["analog_units"]) <= threshold]
    assert max(met, default=0) == min(n, threshold)  # the longest prefix that meets was verified (or none does)
    assert len(records) <= 2 + math.ceil(math.log2(n + 1))


def test_units_and_baselines_by_granularity():
    tensors = [plan.Tensor(f"m.{b}.{p}.weight", f"m.{b}.{p}", "attention" if p in "qo" else "mlp", b, p, 4, 4)
               for b in range(3) for p in ("q", "o", "up")]
    assert [u.label for u in plan.make_units(tensors, "tensor")] == [t.layer for t in tensors]
    blocks = plan.make_units(tensors, "block")
    assert [(u.label, u.weights, len(u.tensors)) for u in blocks] == [("b0", 12, 3), ("b1", 12, 3), ("b2", 12, 3)]
    assert [u.label for u in plan.make_units(tensors, "projection")] == ["q", "o", "up"]
    base = plan.baselines(blocks, tensors)
    assert list(base) == ["all_analog", "digital_attention", "digital_mlp", "digital_first_last"]
    assert base["digital_attention"] == ["m.0.up.weight", "m.1.up.weight", "m.2.up.weight"]
    assert base["digital_first_last"] == ["m.1.q.weight", "m.1.o.weight", "m.1.up.weight"]


# --- the run folder on a tiny model -------------------------------------------------------------------------

def test_run_folder_placement_json_and_resume(tmp_path, small, capsys):
    out = tmp_path / "run"
    argv = small + ["--noise_type", "gaussian", "--scale", "relative", "--noise_level", "10", "--max_ppl_ratio", "1.05",
                    "--out", str(out)]
    assert pl.main(argv) == 0
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == list(LEADING_COLUMNS) + list(pl.EXTRA) + list(pl.METRICS)
    units = [r for r in rows if r["phase"] == "unit"]
    assert len(units) == 14 * 2 and len({r["target"] for r in units}) == 14  # 2 blocks x 7 layers, 2 realizations
    assert {r["target"] for r in rows if r["phase"] == "baseline"} == {"all_analog", "digital_attention", "digital_mlp"}
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["verifications"]
    # The prediction of each verification is the sum of its units' single-unit medians (negatives as 0).
    unit_rows = {r["unit"]: r for r in read_rows(out / "units.csv")}
    for v, row in zip(meta["verifications"], [r for r in read_rows(out / "verifications.csv") if r["phase"] == "verify"]):
        expected = sum(max(unit_rows[u]["delta_nll"], 0.0) for u in v["analog_units"])
        assert v["predicted_delta_nll"] == pytest.approx(expected)
        assert row["predicted_ppl_ratio"] == pytest.approx(math.exp(expected))
    placement = json.loads((out / "placement.json").read_text())
    candidates = {t["name"] for t in meta["tensors"]}
    assert set(placement["tensors"]) == candidates and len(candidates) == 14
    assert set(placement["analog"]) | set(placement["digital"]) == candidates
    assert read_digital(out / "placement.json") == frozenset(placement["digital"])
    assert placement["analog"] == meta["placement"]["analog_tensors"]
    assert (out / "placement.png").stat().st_size > 10_000
    assert "kept:" in capsys.readouterr().out
    # Resuming a finished run recomputes nothing and changes nothing.
    before = {f: (out / f).read_bytes() for f in ("results.csv", "placement.json", "verifications.csv", "units.csv")}
    assert pl.main(argv) == 0
    assert {f: (out / f).read_bytes() for f in before} == before


def test_accuracy_tolerance_scores_the_sets_and_bisects_by_points(tmp_path, small, monkeypatch, capsys):
    """--max_acc_drop: clean and set rows carry the task accuracy (unit rows nan), the bisection is judged by
    100 (clean - median accuracy), and the kept set is one that met it."""
    from noisynn.experiments.placement import accuracy

    scored = []
    real_call = accuracy.TaskScorer.__call__

    def call(self):  # the real lm-eval score, recorded
        scored.append(real_call(self))
        return scored[-1]

    monkeypatch.setattr(accuracy.TaskScorer, "__call__", call)
    out = tmp_path / "run"
    argv = small + ["--noise_type", "gaussian", "--scale", "relative", "--noise_level", "0.5", "--max_acc_drop", "20",
                    "--task_limit", "4", "--unit_trials", "1", "--n_trials", "2", "--out", str(out)]
    assert pl.main(argv) == 0
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == list(LEADING_COLUMNS) + list(pl.EXTRA) + list(pl.METRICS) + list(pl.ACC_METRICS)
    assert all(math.isnan(r["accuracy"]) and r["acc_items"] == 0 for r in rows if r["phase"] == "unit")
    sets = [r for r in rows if r["phase"] in ("clean", "verify", "baseline")]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["acc_items"] == 4 for r in sets)
    assert len(scored) == len(sets)  # every set realization scored once, the clean model once
    meta = json.loads((out / "run.json").read_text())
    clean = next(r["accuracy"] for r in rows if r["phase"] == "clean")
    table = {r["label"]: r for r in read_rows(out / "verifications.csv")}
    for v in meta["verifications"]:
        acc = sorted(r["accuracy"] for r in rows if r["phase"] == "verify" and r["target"] == v["label"])
        drop = 100 * (clean - (acc[0] + acc[1]) / 2)
        assert table[v["label"]]["acc_drop"] == pytest.approx(drop)
        assert table[v["label"]]["meets"] == (drop <= 20)
    # the search starts from every unit (no NLL budget by accuracy) and is a bisection over its prefixes
    first = meta["verifications"][0]["analog_units"]
    assert len(first) == 14
    assert all(v["analog_units"] == first[:len(v["analog_units"])] for v in meta["verifications"])
    kept = meta["placement"]
    if kept["verified"]:
        assert kept["acc_drop"] <= 20 and kept["clean_accuracy"] == pytest.approx(clean)
    assert "points of accuracy lost on noisynn_cloze" in capsys.readouterr().out


def test_a_miss_in_the_run_moves_a_unit_and_verifies_again(tmp_path, small, monkeypatch):
    calls = []

    def first_misses(summary, stat="median"):  # the first verification measures 2 x clean perplexity
        calls.append(summary)
        return 2.0 if len(calls) == 1 else 1.0

    monkeypatch.setattr(pl, "statistic", first_misses)
    out = tmp_path / "run"
    assert pl.main(small + ["--granularity", "projection", "--max_ppl_ratio", "1.5", "--after_miss", "one",
                            "--out", str(out)]) == 0
    meta = json.loads((out / "run.json").read_text())
    v1, v2 = meta["verifications"]
    assert v2["analog_units"] == v1["analog_units"][:-1] and v1["moved_to_digital"] == v1["analog_units"][-1:]
    rows = read_rows(out / "results.csv")
    assert {r["target"]: r["n_tensors"] for r in rows if r["phase"] == "verify"} == {
        "v1": 2 * len(v1["analog_units"]), "v2": 2 * len(v2["analog_units"])}
    table = {r["label"]: r for r in read_rows(out / "verifications.csv")}
    assert table["v1"]["moved_to_digital"] == v1["moved_to_digital"][0] and table["v2"]["n_trials"] == 3


def test_each_point_noises_only_its_set_and_converters_follow(small):
    """A unit row changes exactly its tensors (the rest bit-exact) and turns on only its layers' converters."""
    args = pl.parse(small[:8] + ["--analog_io", "--scale", "relative_channel"])
    model = tiny_llama()
    lm = SimpleNamespace(model=model, tokenizer=byte_tokenizer())  # what the trial uses of a LoadedModel
    spec = spec_from_args(args)
    targets = select(model, spec)
    hooks = install_converters(converter_spec_from_args(args), lm, targets)
    hooks.set_enabled(False)
    q0, d1 = "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"
    sets = {("clean", "clean"): [], ("unit", "q0"): [q0], ("verify", "v1"): [q0, d1]}
    trials = pl.PlacementTrials(lm, tokenize(lm.tokenizer, "The quick brown fox. " * 8, 32), spec, targets, hooks,
                                sets, 1.0, 0, 32)
    clean = {n: p.detach().clone() for n, p in model.named_parameters()}

    def changed():
        return {n for n, p in model.named_parameters() if not torch.equal(p, clean[n])}

    trials(pl.PlacementPoint(0, 1.0, 0, "q0", "unit"))
    assert changed() == {q0}
    assert {t.name for t in hooks.tiles if t.enabled} == {q0[: -len(".weight")]}
    trials(pl.PlacementPoint(0, 1.0, 0, "v1", "verify"))
    assert changed() == {q0, d1} and sum(t.enabled for t in hooks.tiles) == 2
    result = trials(pl.PlacementPoint(0, 1.0, 0, "clean", "clean"))
    assert not changed() and not any(t.enabled for t in hooks.tiles) and result.metrics["delta_nll"] == 0
    trials.release()
    hooks.remove()


def test_antithetic_unit_rows_average_a_realization_and_its_mirror_image(small):
    """damage = (dNLL(W) + dNLL(2 E[W] - W)) / 2, E[W] the mean of mean_draws realizations: the mirror image
    cancels the realization's first-order term. Set rows are single realizations."""
    args = pl.parse(small[:8])  # pcm, relative_channel, drift compensation on
    model = tiny_llama()
    lm = SimpleNamespace(model=model, tokenizer=byte_tokenizer())
    spec = spec_from_args(args)
    targets = select(model, spec)
    q0 = "model.layers.0.self_attn.q_proj.weight"
    sets = {("clean", "clean"): [], ("unit", "q0"): [q0], ("verify", "v1"): [q0]}
    ids = tokenize(lm.tokenizer, "The quick brown fox. " * 8, 32)
    trials = pl.PlacementTrials(lm, ids, spec, targets, None, sets, 1.0, 0, 32, mean_draws=4)
    point = pl.PlacementPoint(0, 1.0, 0, "q0", "unit")
    res = trials(point).metrics
    param = dict(model.named_parameters())[q0]
    mirrored = param.detach().clone()
    injector = trials.injector
    draws = []
    for k in range(4):
        injector.realize(pl.derive_seed(0, "placement-mean", k), 1.0)
        draws.append(param.detach().double().clone())
    mean = (sum(draws) / 4).float()
    injector.realize(point.seed(0), 1.0)
    assert torch.allclose(trials.mean[0], mean) and torch.allclose(mirrored, 2 * mean - param, atol=1e-6)
    assert res["damage"] == pytest.approx((res["delta_nll"] + res["delta_nll_mirror"]) / 2)
    assert res["delta_nll"] != res["delta_nll_mirror"]
    verify = trials(pl.PlacementPoint(0, 1.0, 0, "v1", "verify")).metrics
    assert math.isnan(verify["delta_nll_mirror"]) and verify["damage"] == verify["delta_nll"]
    trials.release()
    assert torch.equal(param, injector.clean[0])


def test_the_default_analog_setting_is_pcm_at_one_day_compensated_with_the_afm_converters():
    args = pl.parse([])
    assert (args.noise_type, args.scale, args.drift_compensation, args.analog_preset) == (
        "pcm", "relative_channel", True, "afm")
    assert spec_from_args(args).noise.t_seconds == 86400
    assert not hasattr(pl.parse(["--no_converters"]), "analog_preset")
    assert not hasattr(pl.parse(["--analog_io"]), "analog_preset")
    assert pl.parse(["--dac_bits", "6"]).analog_preset == "afm"  # a flag given overrides the preset's field
    assert pl.parse(["--no_drift_compensation"]).drift_compensation is False
    assert not hasattr(pl.parse(["--noise_type", "gaussian", "--scale", "relative"]), "drift_compensation")


# --- placement.json on the sweep ------------------------------------------------------------------------------

def test_digital_placement_keeps_exactly_those_tensors_clean_in_a_sweep(tmp_path, tiny_model_dir, text_file,
                                                                         monkeypatch):
    digital = ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    model = tiny_llama()
    blocks = [t.name for t in select(model, spec_from_args(sweep.parse([])))]
    path = write_placement(tmp_path / "placement.json", [n for n in blocks if n not in digital], digital)
    argv = ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32", "--max_length", "32",
            "--n_levels", "2", "--max_noise", "0.05", "--n_trials", "1", "--n_samples", "1", "--max_new_tokens", "2",
            "--entropy_tokens", "1", "--analog_io", "--quiet", "--digital", str(path)]
    seen = []
    real = sweep.quality_metrics

    def check(model, *a, **k):  # during each trial: the digital tensors are the clean ones, the rest noisy
        params = dict(model.named_parameters())
        seen.append({n: params[n].detach().clone() for n in blocks})
        return real(model, *a, **k)

    monkeypatch.setattr(sweep, "quality_metrics", check)
    assert sweep.main(argv + ["--out", str(tmp_path / "run")]) == 0
    clean_run, noisy_run = seen  # sigma 0, then sigma 0.05
    for n in blocks:
        if n in digital:
            assert torch.equal(noisy_run[n], clean_run[n]), n
        else:
            assert not torch.equal(noisy_run[n], clean_run[n]), n
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["digital"] == sorted(digital) and meta["injection"]["n_tensors"] == len(blocks) - 2
    assert meta["converters"]["n_layers"] == len(blocks) - 2  # digital layers run without converters


def test_digital_placement_on_the_injector_is_bit_exact():
    model = tiny_llama()
    digital = {"model.layers.1.self_attn.v_proj.weight"}
    spec = spec_from_args(sweep.parse(["--noise_type", "pcm", "--scale", "relative_channel"]))
    clean = {n: p.detach().clone() for n, p in model.named_parameters()}
    injector = NoiseInjector(model, replace(spec, digital=frozenset(digital)))
    injector.realize(3, 1.0)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, clean[n])}
    assert not changed & digital and len(changed) == 13
    injector.restore()


# --- bad input: one line, exit 2, no run folder ----------------------------------------------------------------

BAD = [
    (["--max_ppl_ratio", "1"], "--max_ppl_ratio must be > 1"),
    (["--max_ppl_ratio", "0.9"], "--max_ppl_ratio must be > 1"),
    (["--max_ppl_ratio", "-2"], "must be > 0"),
    (["--max_ppl_ratio", "nan"], "not a finite number"),
    (["--max_ppl_ratio", "ten"], "is not a number"),
    (["--granularity", "layer"], "invalid choice"),
    (["--objective", "energy"], "invalid choice"),
    (["--unit_trials", "0"], "must be >= 1"),
    (["--mean_draws", "0"], "must be >= 1"),
    (["--unit_estimator", "mean"], "invalid choice"),
    (["--drift_compensation", "--no_drift_compensation"], "not both"),
    (["--no_converters", "--dac_bits", "8"], "contradict"),
    (["--targets", "embedding", "--objective", "macs", "--noise_type", "gaussian", "--scale", "relative"],
     "no candidate unit has any macs"),
    (["--blocks", "9"], "block 9 does not exist"),
    (["--max_acc_drop", "2", "--max_ppl_ratio", "1.2"], "give one tolerance"),
    (["--max_acc_drop", "0"], "must be > 0"),
    (["--max_acc_drop", "2", "--after_miss", "scale"], "needs --after_miss bisect"),
    (["--task", "noisynn_cloze"], "--task needs --max_acc_drop"),
    (["--max_acc_drop", "2", "--task", "no_such_task"], "unknown lm-eval task 'no_such_task'"),
    (["--max_acc_drop", "2", "--task", "arc_easy"], "could not be fetched"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_flags_exit_2_with_one_line(tmp_path, small, capsys, extra, message):
    out = tmp_path / "run"
    assert message in exits_2_with_one_line(pl.main, small + ["--out", str(out)] + extra, capsys)
    assert not out.exists()


def test_a_model_without_targets_exits_2(tmp_path, text_file, capsys):
    folder = tmp_path / "empty"
    tiny_llama(layers=0).save_pretrained(folder)  # embeddings and a norm, no block
    byte_tokenizer().save_pretrained(folder)
    out = tmp_path / "run"
    err = exits_2_with_one_line(pl.main, ["--model", str(folder), "--text_file", str(text_file), "--eval_tokens", "16",
                                          "--max_length", "16", "--out", str(out), "--quiet"], capsys)
    assert "match no weights" in err and not out.exists()


@pytest.mark.parametrize("content,message", [
    ({"digital": ["model.layers.7.self_attn.q_proj.weight"]}, "tensor(s) this model does not have"),
    ({"tensors": {"model.layers.0.mlp.up_proj.weight": "digitl"}}, "'analog' or 'digital'"),
    ({"analog": []}, "is not a placement"),
    ("{not json", "not JSON"),
    (None, "does not exist"),
])
def test_a_bad_placement_exits_2_with_one_line(tmp_path, tiny_model_dir, text_file, capsys, content, message):
    path = tmp_path / "placement.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32", "--max_length", "32",
            "--digital", str(path), "--out", str(out), "--quiet"]
    assert message in exits_2_with_one_line(sweep.main, argv, capsys)
    assert not out.exists()


def test_a_placement_that_leaves_nothing_analog_exits_2(tmp_path, tiny_model_dir, text_file, capsys):
    names = [t.name for t in select(tiny_llama(), spec_from_args(sweep.parse([])))]
    path = write_placement(tmp_path / "p.json", [], names)
    out = tmp_path / "run"
    argv = ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32", "--max_length", "32",
            "--digital", str(path), "--out", str(out), "--quiet"]
    assert "nothing is left to noise" in exits_2_with_one_line(sweep.main, argv, capsys)
    assert not out.exists()


# --- the embedded model --------------------------------------------------------------------------------------

@pytest.mark.integration
def test_embedded_model_two_projections(tmp_path):
    """PCM at one day on v and down of blocks 0-1: projection units, one realization each, tiny evaluations."""
    out = tmp_path / "run"
    assert pl.main(["--targets", "v,down", "--blocks", "0,1", "--granularity", "projection", "--unit_trials", "1",
                    "--n_trials", "2", "--eval_tokens", "64", "--max_verifications", "2", "--quiet",
                    "--out", str(out)]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert [u["label"] for u in meta["units"]] == ["v", "down"]
    assert meta["config"]["drift_compensation"] is True and meta["injection"]["noise"]["params"]["t_seconds"] == 86400
    decision = decide(out)
    placement = json.loads((out / "placement.json").read_text())
    assert len(placement["tensors"]) == 4 and placement["analog"] == decision["analog_tensors"]
    assert 0 <= decision["share"] <= 1


def test_two_processes_equal_one(tmp_path, tiny_model_dir, text_file):
    """The adaptive loop under accelerate launch: every process reads the merged rows after each round and
    takes the same next step, so the folder equals a single process's."""
    import subprocess
    import sys

    from tests.helpers import ROOT
    from tests.runs.test_distributed import LAUNCH, env

    flags = ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32", "--max_length", "32",
             "--granularity", "projection", "--unit_trials", "2", "--n_trials", "2", "--max_ppl_ratio", "1.0001",
             "--quiet"]
    one, two = tmp_path / "one", tmp_path / "two"
    script = str(ROOT / "placement.py")
    single = subprocess.run([sys.executable, script, *flags, "--out", str(one)], env=env(), cwd=ROOT,
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run([*LAUNCH, script, *flags, "--out", str(two)], env=env(), cwd=ROOT, capture_output=True,
                           text=True)
    assert multi.returncode == 0, multi.stderr[-2000:]
    assert (one / "results.csv").read_text() == (two / "results.csv").read_text()
    assert not list(two.glob("*.rank*"))
    m1, m2 = (json.loads((d / "run.json").read_text()) for d in (one, two))
    assert m1["verifications"] == m2["verifications"] and m2["processes"] == 2 and m2["status"] == "finished"
    assert json.loads((one / "placement.json").read_text())["tensors"] == json.loads(
        (two / "placement.json").read_text())["tensors"]


def test_default_converters_calibrate_in_the_resolved_window(tmp_path, tiny_model_dir, text_file):
    """Without --max_length the afm preset's static input ranges are calibrated in the window the model
    allows (context.start passes the resolved --max_length on to the converter spec)."""
    out = tmp_path / "run"
    assert pl.main(["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32",
                    "--granularity", "projection", "--n_trials", "1", "--max_verifications", "1", "--quiet",
                    "--out", str(out)]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["analog_preset"] == "afm" and meta["config"]["max_length"] == 256
    assert meta["converters"]["n_layers"] == 14 and "calibration" in meta["converters"]
