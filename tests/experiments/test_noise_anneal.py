"""Annealed training noise (--anneal) of noise_aware_training: the schedule, both recipes, the record, the flags,
and the paired comparison of run folders (anneal_report), on tiny random models."""

import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tests.helpers import exits_2_with_one_line, tiny_llama
from noisynn.errors import NoisyNNError
from noisynn.experiments.noise_aware_training import afm, anneal_report, report, training
from noisynn.experiments.noise_aware_training import analog_train as at
from noisynn.experiments.noise_aware_training import run as nat
from noisynn.experiments.noise_aware_training.training import NoiseSchedule, noise_factor
from noisynn.runs.read import read_rows
from noisynn.targets import select_targets

torch.set_num_threads(1)

KINDS = ("linear", "cosine", "step")


# ---------------------------------------------------------------------------------------------- the schedule

def test_constant_is_one_exactly_whatever_its_other_fields():
    for step in range(10):
        assert noise_factor(step, 10) == 1.0
        assert noise_factor(step, 10, NoiseSchedule("constant", start=5.0, end=0.0, ramp=0.3)) == 1.0
    assert 0.03 * noise_factor(3, 48) == 0.03  # the level of today's runs, bit for bit


@pytest.mark.parametrize("kind", KINDS)
def test_endpoints_and_the_hold_after_the_ramp(kind):
    s = NoiseSchedule(kind, start=0.0, end=2.0)
    assert noise_factor(0, 48, s) == 0.0 and noise_factor(47, 48, s) == 2.0
    down = NoiseSchedule(kind, start=2.0, end=0.5, ramp=0.5)  # 24 steps of ramp, then held at the end
    assert noise_factor(0, 48, down) == 2.0
    assert all(noise_factor(k, 48, down) == 0.5 for k in range(23, 48))
    assert noise_factor(22, 48, down) > 0.5 or kind == "step"  # step: the last of 4 stairs is the ramp's last quarter


def test_shapes():
    lin, cos = NoiseSchedule("linear", 0.0, 1.0), NoiseSchedule("cosine", 0.0, 1.0)
    assert noise_factor(5, 11, lin) == pytest.approx(0.5)  # p = 5 / 10
    assert noise_factor(5, 11, cos) == pytest.approx(0.5)  # symmetric about the middle
    assert noise_factor(1, 11, cos) < noise_factor(1, 11, lin)  # flat at the start
    assert noise_factor(9, 11, cos) > noise_factor(9, 11, lin)  # and at the end
    stairs = NoiseSchedule("step", 0.0, 3.0, stairs=4)
    levels = [noise_factor(k, 40, stairs) for k in range(40)]
    assert sorted(set(levels)) == [0.0, 1.0, 2.0, 3.0]  # 4 equal-width levels, start and end included
    assert levels.count(0.0) == 10 and levels[-1] == 3.0


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(KINDS), start=st.floats(0, 10), end=st.floats(0, 10), ramp=st.floats(0.01, 1.0),
       stairs=st.integers(2, 9), total=st.integers(1, 300))
def test_within_start_and_end_and_monotone(kind, start, end, ramp, stairs, total):
    s = NoiseSchedule(kind, start, end, ramp, stairs)
    f = [noise_factor(k, total, s) for k in range(total)]
    lo, hi = min(start, end), max(start, end)
    assert all(lo - 1e-12 <= v <= hi + 1e-12 for v in f)
    sign = 1 if end >= start else -1
    assert all(sign * (b - a) >= -1e-12 for a, b in zip(f, f[1:]))
    assert f[0] == start


@pytest.mark.parametrize("fields,message", [
    ({"kind": "exp"}, "unknown noise schedule"), ({"kind": "linear", "start": -1.0}, "start must be"),
    ({"kind": "linear", "end": math.inf}, "end must be"), ({"kind": "linear", "ramp": 0.0}, "ramp must lie"),
    ({"kind": "step", "stairs": 1}, "stairs must be")])
def test_bad_schedules_raise(fields, message):
    with pytest.raises(NoisyNNError, match=message):
        NoiseSchedule(**fields)


# ---------------------------------------------------------------------------------------------- today's recipe

CFG = nat.TrainConfig(noise_level=0.3, scale="relative_channel", steps=4, lr=1e-2, grad_clip=0.0, seed=0,
                      batch_size=2, seq_len=24)


def chunks(n=6, length=24, seed=1):
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))


def test_constant_schedule_trains_the_same_weights_as_no_schedule():
    model = tiny_llama()
    plain, h1 = nat.finetune(model, chunks(), CFG)
    const, h2 = nat.finetune(model, chunks(), dataclasses.replace(CFG, anneal=NoiseSchedule("constant", 3.0, 0.0)))
    assert all(torch.equal(plain[k], const[k]) for k in plain)
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2] and all(h["noise_level"] == 0.3 for h in h1)
    annealed, _ = nat.finetune(model, chunks(), dataclasses.replace(CFG, anneal=NoiseSchedule("linear", 0.0, 2.0)))
    assert not all(torch.equal(plain[k], annealed[k]) for k in plain)


def test_an_annealed_step_is_a_constant_step_at_the_scheduled_level():
    model = tiny_llama()
    cfg = dataclasses.replace(CFG, anneal=NoiseSchedule("cosine", 2.0, 0.5))
    x = chunks(n=2)
    grads = []
    for c in (cfg, dataclasses.replace(CFG, noise_level=training.step_noise_level(2, cfg))):
        opt = torch.optim.SGD([t.param for t in select_targets(model, "blocks")], lr=0.0)
        training.noisy_step(model, x, opt, c, step=2)
        grads.append({t.name: t.param.grad.clone() for t in select_targets(model, "blocks")})
    assert training.step_noise_level(2, cfg) == 0.3 * noise_factor(2, 4, cfg.anneal) != 0.3
    assert all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0])


@pytest.fixture
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "train.txt"
    path.write_text(("Pack my box with five dozen liquor jugs, said the sphinx of black quartz. " * 60).strip())
    return path


@pytest.fixture
def small(tiny_model_dir, text_file, train_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--train_file", str(train_file),
            "--eval_tokens", "64", "--max_length", "32", "--seq_len", "24", "--max_samples", "8", "--batch_size", "2",
            "--lr", "1e-2", "--noise_level", "0.3", "--max_noise", "0.6", "--n_levels", "3", "--n_trials", "2",
            "--quiet", "--no_control"]


def test_anneal_constant_is_the_run_without_the_flag(tmp_path, small):
    a, b = tmp_path / "a", tmp_path / "b"
    assert nat.main(small + ["--out", str(a)]) == 0
    assert nat.main(small + ["--anneal", "constant", "--out", str(b)]) == 0
    assert read_rows(a / "results.csv") == read_rows(b / "results.csv")
    ca, cb = (json.loads((d / "run.json").read_text())["config"] for d in (a, b))
    assert {k: v for k, v in ca.items() if k != "out"} == {k: v for k, v in cb.items() if k != "out"}
    assert ca["anneal"] is None  # recorded as no flag: folders written before --anneal resume
    assert nat.main(small + ["--anneal", "constant", "--out", str(a)]) == 0  # and resume under --anneal constant
    assert report.noise_levels(a) is None
    # a training.csv written before the noise_level column still reads, and is rewritten with it
    path = a / "training.csv"
    rows = read_rows(path)
    old = [{k: v for k, v in r.items() if k != "noise_level"} for r in rows]
    path.write_text("variant,step,loss,lr,grad_norm,tokens,seconds\n" + "".join(
        f"{r['variant']},{r['step']},{r['loss']},{r['lr']},{r['grad_norm']},{r['tokens']},{r['seconds']}\n" for r in old))
    assert [s.tolist() for _, s, _ in report.loss_histories(a)] == [[0, 1, 2, 3]]
    report.write_training_csv(a, "control", [{"step": 0, "loss": 1.0, "lr": 0.1, "grad_norm": 1.0, "tokens": 48,
                                              "seconds": 1.0, "noise_level": 0.0}])
    assert [r.get("noise_level") for r in read_rows(path)][-1] == 0.0 and len(read_rows(path)) == 5


def test_the_recorded_noise_level_per_step_is_the_level_times_the_factor(tmp_path, small):
    out = tmp_path / "run"
    argv = small + ["--anneal", "step", "--anneal_start", "2", "--anneal_end", "0.5", "--anneal_stairs", "2",
                    "--save_weights", "--out", str(out)]
    argv.remove("--no_control")
    assert nat.main(argv) == 0
    meta = json.loads((out / "run.json").read_text())
    schedule = NoiseSchedule(**meta["training_config"]["anneal"])
    assert schedule == NoiseSchedule("step", 2.0, 0.5, 1.0, 2)
    rows = read_rows(out / "training.csv")
    assert [r["noise_level"] for r in rows if r["variant"] == "finetuned"] == [
        0.3 * noise_factor(k, 4, schedule) for k in range(4)] == [0.6, 0.6, 0.15, 0.15]
    assert all(r["noise_level"] == 0.0 for r in rows if r["variant"] == "control")
    _, saved = nat.read_weights(out / "finetuned.safetensors")
    assert json.loads(saved["anneal"])["kind"] == "step"
    assert report.noise_levels(out)[1].tolist() == [0.6, 0.6, 0.15, 0.15]
    assert (out / "noise_aware_training.png").stat().st_size > 10_000


def test_compare_runs_pairs_the_draws_and_refuses_another_run(tmp_path, small, capsys):
    const, lin = tmp_path / "const", tmp_path / "lin"
    assert nat.main(small + ["--out", str(const)]) == 0
    assert nat.main(small + ["--anneal", "linear", "--anneal_end", "2", "--out", str(lin)]) == 0
    c = anneal_report.compare_runs(const, [lin])
    assert c["original_rows_identical"] and c["shared_original_rows"] == 6 and c["n_trials"] == 2
    assert c["original_rows_max_rel_diff"] == 0.0
    assert [r["schedule"] for r in c["runs"]] == ["constant", "linear x0 -> x2"]
    assert c["runs"][0]["mean_noise_level"] == 0.3 and c["runs"][1]["mean_noise_level"] == pytest.approx(0.3)
    ft = {name: {(r["sigma"], r["trial"]): r for r in read_rows(d / "results.csv") if r["model_variant"] == "finetuned"}
          for name, d in (("c", const), ("l", lin))}
    top = c["levels"][-1]
    ratios = [math.exp(ft["c"][(0.6, t)]["nll"] - ft["l"][(0.6, t)]["nll"]) for t in (0, 1)]
    assert top["runs"][1]["reference_over_this"]["median"] == pytest.approx(sum(ratios) / 2)
    fig = anneal_report.plot_comparison(c, tmp_path / "cmp.png")
    assert fig.stat().st_size > 10_000 and "constant / linear" in anneal_report.format_comparison(c)
    assert anneal_report.main([str(const), str(lin), "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["original_rows_identical"]
    other = tmp_path / "other"
    assert nat.main(small + ["--lr", "2e-2", "--out", str(other)]) == 0
    with pytest.raises(NoisyNNError, match="differs in: lr"):
        anneal_report.compare_runs(const, [other])


BAD = [
    (["--anneal", "exp"], "invalid choice"),
    (["--anneal", "linear", "--anneal_start", "-1"], "must be >= 0"),
    (["--anneal", "linear", "--anneal_end", "nan"], "not a finite number"),
    (["--anneal", "linear", "--anneal_ramp", "0"], "must be > 0"),
    (["--anneal", "linear", "--anneal_ramp", "1.5"], "must lie in [0, 1]"),
    (["--anneal", "step", "--anneal_stairs", "1"], "must be >= 2"),
    (["--anneal", "linear", "--anneal_stairs", "3"], "--anneal_stairs needs --anneal step"),
    (["--anneal_end", "2"], "--anneal_end needs --anneal linear, cosine or step"),
    (["--anneal", "constant", "--anneal_start", "0"], "--anneal_start needs --anneal"),
    (["--anneal", "cosine", "--noise_level", "0"], "trains without any"),
    (["--anneal", "linear", "--anneal_start", "1"], "is constant noise"),
    (["--recipe", "afm", "--no_weight_noise", "--anneal", "linear"], "trains without any"),
    (["--recipe", "afm", "--no_analog", "--anneal", "linear"], "trains without any"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_anneal_flags_exit_2_with_one_line(tmp_path, small, capsys, extra, message):
    argv = small + ["--out", str(tmp_path / "run")] + extra
    if "--recipe" in extra:  # --train_file belongs to today's recipe
        i = argv.index("--train_file")
        del argv[i:i + 2]
    assert message in exits_2_with_one_line(nat.main, argv, capsys)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- the AFM recipe

AFM_CFG = afm.AFMConfig(steps=6, lr=1e-2, batch_size=2, seq_len=24, save_every=2, range_lr=0.05,
                        analog=at.AnalogTrainConfig(init_batches=1), anneal=NoiseSchedule("linear", 0.0, 2.0))


def test_afm_weight_noise_follows_the_factor():
    model = tiny_llama().train()
    x = chunks(1)
    cfg = at.AnalogTrainConfig(dac_bits=None, adc_bits=None, out_bound=None, input_ranges=False)
    with torch.no_grad():
        with at.AnalogTraining(model, select_targets(model, "blocks"), cfg, seed=0) as analog:
            analog.step, analog.noise_scale = 3, 0.5
            scaled = model(input_ids=x).logits
        with at.AnalogTraining(model, select_targets(model, "blocks"), dataclasses.replace(cfg, weight_noise=0.015),
                               seed=0) as analog:
            analog.step = 3
            direct = model(input_ids=x).logits
        with at.AnalogTraining(model, select_targets(model, "blocks"), cfg, seed=0) as analog:
            analog.step, analog.noise_scale = 3, 0.0
            off = model(input_ids=x).logits
        model.eval()
        assert torch.equal(scaled, direct) and torch.equal(off, model(input_ids=x).logits)


def test_afm_training_sets_the_factor_of_each_step_and_records_it():
    model = tiny_llama()
    seen = []
    original = at.AnalogTraining.analog

    def spy(self, i, name, module, x):
        if i == 0 and self.enabled and module.training:
            seen.append((self.step, self.noise_scale))
        return original(self, i, name, module, x)

    at.AnalogTraining.analog = spy
    try:
        _, _, history = afm.afm_finetune(model, chunks(8), AFM_CFG)
    finally:
        at.AnalogTraining.analog = original
    factors = [noise_factor(k, 6, AFM_CFG.anneal) for k in range(6)]
    assert sorted(set(seen)) == list(enumerate(factors))
    assert [h["noise_level"] for h in history] == [0.03 * f for f in factors]
    plain = dataclasses.replace(AFM_CFG, anneal=training.CONSTANT)
    assert "anneal" not in afm._config_record(plain) and "anneal" in afm._config_record(AFM_CFG)  # old checkpoints


def test_afm_resume_from_a_checkpoint_gives_the_same_factors_and_weights(tmp_path):
    straight, _, h1 = afm.afm_finetune(tiny_llama(), chunks(8), AFM_CFG)

    def stop(step, saved):
        if step == 3:
            raise KeyboardInterrupt

    ckpt = tmp_path / "finetuned.ckpt"
    with pytest.raises(KeyboardInterrupt):
        afm.afm_finetune(tiny_llama(), chunks(8), AFM_CFG, checkpoint=ckpt, on_step=stop)
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    resumed, _, h2 = afm.afm_finetune(tiny_llama(), chunks(8), AFM_CFG, checkpoint=ckpt)
    assert [h["noise_level"] for h in h2] == [h["noise_level"] for h in h1]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    with pytest.raises(NoisyNNError, match="another training configuration"):
        afm.afm_finetune(tiny_llama(), chunks(8), dataclasses.replace(AFM_CFG, anneal=NoiseSchedule("cosine", 0, 2)),
                         checkpoint=ckpt)


def test_afm_run_folder_records_the_schedule(tmp_path, small, capsys):
    out = tmp_path / "afm"
    argv = small + ["--recipe", "afm", "--times", "1s", "--self_batch", "4", "--n_trials", "1", "--no_pcm_afm",
                    "--anneal", "cosine", "--anneal_start", "2", "--anneal_end", "0", "--out", str(out)]
    i = argv.index("--train_file")
    del argv[i:i + 2]
    argv.remove("--no_control")
    assert nat.main(argv) == 0
    meta = json.loads((out / "run.json").read_text())
    schedule = NoiseSchedule(**meta["training_config"]["anneal"])
    steps = meta["training_config"]["steps"]
    rows = read_rows(out / "training.csv")
    assert [r["noise_level"] for r in rows if r["variant"] == "finetuned"] == [
        0.3 * noise_factor(k, steps, schedule) for k in range(steps)]
    assert rows[-1]["variant"] == "control" and all(r["noise_level"] == 0.0 for r in rows if r["variant"] == "control")
    assert report.noise_levels(out) is not None and (out / "noise_aware_training.png").stat().st_size > 10_000


@pytest.mark.parametrize("folder", ["results/noise_aware_training", "results/noise_aware_training_afm"])
def test_the_committed_runs_recorded_before_anneal_still_match_their_command(folder):
    from tests.helpers import ROOT
    from noisynn.options.flags import config_of

    meta = json.loads((ROOT / folder / "run.json").read_text())
    args = nat.parse(meta["argv"][1:])
    new = json.loads(json.dumps({"experiment": "noise_aware_training", **config_of(args)}, default=str))
    old = meta["config"]
    # max_length is resolved against the model when the run starts; nothing else may differ
    assert sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in ("out", "max_length")) == []
    assert all(new[k] is None for k in ("anneal", "anneal_start", "anneal_end", "anneal_ramp", "anneal_stairs"))
