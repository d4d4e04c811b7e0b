"""The AFM recipe of noise_aware_training on tiny random models: distillation loss, straight-through
converters, learned input ranges, the clean snapshot, resume after SIGKILL, the run folder."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.helpers import ROOT, tiny_llama, script_env
from noisynn.experiments.noise_aware_training import afm, analog_train as at
from noisynn.targets import select_targets

torch.set_num_threads(1)


def chunks(n=6, length=24, seed=1):
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))


CFG = afm.AFMConfig(steps=4, lr=1e-2, batch_size=2, seq_len=24, save_every=2, range_lr=0.05,
                    analog=at.AnalogTrainConfig(init_batches=1))


# ---------------------------------------------------------------------------------------------- the loss

def test_kl_is_zero_for_identical_distributions_and_positive_otherwise():
    z = torch.randn(2, 5, 11, dtype=torch.float64)
    assert afm.distillation_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert afm.distillation_loss(z, z + 3.0).item() == pytest.approx(0.0, abs=1e-12)  # shift-invariant
    assert afm.distillation_loss(z, torch.randn(2, 5, 11, dtype=torch.float64)).item() > 1e-3


def test_model_student_equal_to_teacher_gives_zero_loss():
    model = tiny_llama()
    x = chunks(2)
    clean = {t.name: t.param.detach().clone() for t in select_targets(model, "blocks")}
    cfg = afm.AFMConfig(analog=None)
    with torch.no_grad():
        teacher = torch.func.functional_call(model, clean, (), {"input_ids": x}).logits
        out = model(input_ids=x)
    loss, parts = afm.afm_loss(out, teacher, cfg)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and set(parts) == {"kl"}


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kl_gradient_matches_autograd_and_the_analytic_gradient_in_float64(temperature):
    torch.manual_seed(0)
    zs = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(2, 3, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: afm.distillation_loss(s, zt, temperature), (zs,))
    afm.distillation_loss(zs, zt, temperature).backward()
    # d/dz_s of T^2/N sum p_t (log p_t - log p_s) = T/N (softmax(z_s/T) - softmax(z_t/T))
    analytic = temperature / 6 * (torch.softmax(zs.detach() / temperature, -1) - torch.softmax(zt / temperature, -1))
    assert torch.allclose(zs.grad, analytic, atol=1e-12)


def test_beta_mixes_kl_and_next_token_loss():
    out = type("Out", (), {"logits": torch.randn(1, 4, 9), "loss": torch.tensor(2.0)})()
    teacher = torch.randn(1, 4, 9)
    kl = afm.distillation_loss(out.logits, teacher).item()
    loss, parts = afm.afm_loss(out, teacher, afm.AFMConfig(beta=0.25))
    assert loss.item() == pytest.approx(0.25 * kl + 0.75 * 2.0) and set(parts) == {"kl", "ce"}
    loss, parts = afm.afm_loss(out, None, afm.AFMConfig(distill=False))
    assert loss.item() == 2.0 and set(parts) == {"ce"}


# ---------------------------------------------------------------------------------------------- converters

def test_dac_passes_gradients_inside_the_range_and_blocks_them_outside():
    x = torch.tensor([-3.0, -0.7, 0.0, 0.33, 0.9, 2.0], requires_grad=True)
    r = torch.tensor(1.0, requires_grad=True)
    y = at.dac(x, r, bits=8)
    step = 2 / 254
    assert torch.allclose(y[1:5], torch.round(x[1:5].detach() / step) * step) and y[0] == -1 and y[-1] == 1
    y.backward(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, -2.0]))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # straight through the rounding, zero where clipped
    # lightning's range gradient: r (sum of min(g, 0) over x >= r - sum of max(g, 0) over x <= -r)
    assert r.grad.item() == pytest.approx(1.0 * (-2.0 - 1.0))


def test_range_decay_shrinks_an_unused_range():
    x = torch.linspace(-0.5, 0.5, 101)
    r = torch.tensor(2.0, requires_grad=True)
    at.dac(x, r, bits=8, decay=0.01, min_percentage=0.95).sum().backward()
    assert r.grad.item() == pytest.approx(0.01 * 2.0)  # nothing clips: only the decay term, which shrinks r


def test_adc_passes_gradients_where_unclipped_and_blocks_where_clipped():
    y = torch.tensor([[-30.0, -1.234, 0.5, 9.99, 30.0]], requires_grad=True)
    bound = torch.tensor([10.0])
    q = at.adc(y, bound, bits=8)
    step = 20 / 254
    assert q[0, 0] == -10 and q[0, -1] == 10 and torch.allclose(q[0, 1:4], torch.round(y[0, 1:4].detach() / step) * step)
    q.sum().backward()
    assert y.grad.tolist() == [[0.0, 1.0, 1.0, 1.0, 0.0]]


def test_learned_input_ranges_initialise_from_data_and_move():
    model = tiny_llama()
    cfg = at.AnalogTrainConfig(init_batches=1)
    targets = select_targets(model, "blocks")
    analog = at.AnalogTraining(model, targets, cfg, seed=0)
    try:
        model.train()
        opt = torch.optim.AdamW([analog.ranges], lr=0.1)
        analog.step = 0
        model(input_ids=chunks(2), labels=chunks(2)).loss.backward()
        init = analog.ranges.detach().clone()
        assert (analog.init_count == 1).all() and not torch.equal(init, torch.ones_like(init))
        assert analog.ranges.grad is not None and analog.ranges.grad.abs().sum() > 0
        opt.step()
        assert not torch.equal(analog.ranges.detach(), init)  # learned: the optimizer moved them
        analog.step = 1  # past init_batches: no further data initialisation
        model(input_ids=chunks(2, seed=5)).logits.sum().backward()
        assert (analog.init_count == 1).all()
    finally:
        analog.remove()
    assert all("forward" not in m.__dict__ for m in model.modules())  # plain forwards back


def test_weight_noise_is_fresh_per_step_and_reproducible():
    model = tiny_llama().train()
    x = chunks(1)
    cfg = at.AnalogTrainConfig(dac_bits=None, adc_bits=None, out_bound=None, input_ranges=False)
    with at.AnalogTraining(model, select_targets(model, "blocks"), cfg, seed=0) as analog, torch.no_grad():
        analog.step = 0
        a = model(input_ids=x).logits
        b = model(input_ids=x).logits
        analog.step = 1
        c = model(input_ids=x).logits
        analog.enabled = False
        d = model(input_ids=x).logits
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.allclose(a, d)
    assert torch.equal(d, model(input_ids=x).logits)  # off = the plain digital model


# ---------------------------------------------------------------------------------------------- training

def test_clean_snapshot_restored_bit_exactly_and_training_moved_the_weights():
    model = tiny_llama()
    full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trained, ranges, history = afm.afm_finetune(model, chunks(), CFG)
    assert all(torch.equal(full[k], v) for k, v in model.state_dict().items())
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert all(not torch.equal(trained[k], full[k]) for k in trained)
    assert len(ranges) == len(trained) and [h["step"] for h in history] == [0, 1, 2, 3]
    assert all(h["kl"] >= 0 for h in history) and history[0]["kl"] > 0  # the noisy student differs from the teacher


def test_control_has_no_analog_forward_and_no_ranges():
    model = tiny_llama()
    trained, ranges, history = afm.afm_finetune(model, chunks(), afm.AFMConfig(**{**CFG.__dict__, "analog": None}))
    assert ranges == {} and history[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # identical student and teacher at step 0


def test_gradient_checkpointing_gives_the_same_weights():
    model = tiny_llama()
    plain, _, _ = afm.afm_finetune(model, chunks(), CFG)
    ckpt, _, _ = afm.afm_finetune(model, chunks(), afm.AFMConfig(**{**CFG.__dict__, "grad_checkpointing": True}))
    assert all(torch.allclose(plain[k], ckpt[k], atol=1e-6) for k in plain)


SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from tests.helpers import tiny_llama
    from tests.experiments.test_afm_recipe import CFG, chunks
    from noisynn.experiments.noise_aware_training import afm
    def on_step(step, saved):
        print(f"step {{step}} saved {{saved}}", flush=True)
        if {hang} and step == 3:
            import time; time.sleep(60)  # killed here: steps 0-3 ran, the checkpoint holds step 3
    trained, ranges, _ = afm.afm_finetune(tiny_llama(), chunks(), afm.AFMConfig(**{{**CFG.__dict__, "steps": 7}}),
                                          checkpoint=__import__("pathlib").Path({ckpt!r}), on_step=on_step)
    torch.save({{"trained": trained, "ranges": ranges}}, {result!r})
""")


def _script(tmp_path, name, hang):
    path = tmp_path / f"{name}.py"
    path.write_text(SCRIPT.format(tests=str(ROOT / "tests"), root=str(ROOT), hang=hang, ckpt=str(tmp_path / f"{name}.ckpt"),
                                  result=str(tmp_path / f"{name}.pt")))
    return [sys.executable, str(path)]


def test_resume_after_sigkill_reaches_the_same_final_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_script(tmp_path, "straight", False), check=True, env=env, capture_output=True, timeout=120)
    proc = subprocess.Popen(_script(tmp_path, "killed", True), stdout=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line.strip())
        if line.startswith("step 3 "):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and seen[-1] == "step 3 saved True"
    assert afm.torch.load(tmp_path / "killed.ckpt", weights_only=False)["step"] == 3
    rerun = subprocess.run(_script(tmp_path, "killed", False), check=True, env=env, capture_output=True, text=True,
                           timeout=120)
    assert rerun.stdout.splitlines()[0] == "step 4 saved False"  # continued after the last saved step
    a, b = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "killed.pt")
    assert a["ranges"] == b["ranges"] and all(torch.equal(a["trained"][k], b["trained"][k]) for k in a["trained"])


# ---------------------------------------------------------------------------------------------- data and the run folder

def test_self_generated_data_is_seeded_cached_and_resumes_after_a_torn_write(tmp_path, tokenizer):
    from noisynn.experiments.noise_aware_training import data

    model = tiny_llama()
    path = tmp_path / "self.jsonl"
    first = data.self_generated_chunks(model, tokenizer, 5, 12, path, seed=3, batch=2)
    assert first.shape == (5, 12) and len(path.read_text().splitlines()) == 3
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:20])  # killed while writing batch 1
    again = data.self_generated_chunks(model, tokenizer, 5, 12, path, seed=3, batch=2)
    assert torch.equal(first, again) and len(path.read_text().splitlines()) == 3
    stamp = path.stat().st_mtime_ns
    assert torch.equal(data.self_generated_chunks(model, tokenizer, 5, 12, path, seed=3, batch=2), first)
    assert path.stat().st_mtime_ns == stamp  # complete cache: nothing generated again
    other = data.self_generated_chunks(model, tokenizer, 5, 12, tmp_path / "other.jsonl", seed=4, batch=2)
    assert not torch.equal(first, other)


@pytest.fixture
def base(tiny_model_dir, text_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64", "--max_length", "32",
            "--seq_len", "24", "--max_samples", "6", "--batch_size", "2", "--lr", "1e-2", "--n_trials", "2", "--quiet"]


@pytest.fixture
def small(base):
    return ["--recipe", "afm", "--times", "1s,1d", "--self_batch", "3"] + base


def test_afm_run_folder(tmp_path, small, capsys):
    from noisynn.experiments.noise_aware_training import run as nat
    from noisynn.runs.read import read_rows

    out = tmp_path / "run"
    assert nat.main(small + ["--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 3 * (2 + 2 * 2 + 1 + 2) and {r["model_variant"] for r in rows} == {"original", "finetuned", "control"}
    by = {(r["model_variant"], r["condition"], r["t_seconds"], r["trial"]): r for r in rows}
    # the same programming draw for every variant; clean rows: the original is the untouched model
    assert by[("original", "pcm", 1.0, 1)]["seed"] == by[("finetuned", "pcm", 1.0, 1)]["seed"] != by[
        ("finetuned", "pcm", 1.0, 0)]["seed"]
    clean = {v: by[(v, "clean", 0.0, 0)]["perplexity"] for v in ("original", "finetuned", "control")}
    assert len(set(clean.values())) == 3
    ranges = json.loads((out / "input_ranges.json").read_text())
    assert set(ranges) == {"original", "finetuned", "control"} and ranges["finetuned"] != ranges["control"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["recipe"] == "afm" and meta["training_text"]["source"] == "self" and meta["status"] == "finished"
    assert meta["training_config"]["analog"]["dac_bits"] == 8 and meta["training_config"]["clip_sigma"] == 0.0
    assert not list(out.glob("*.ckpt")) and (out / "self_data.jsonl").is_file()
    report = json.loads((out / "report.json").read_text())
    assert [t["t_seconds"] for t in report["variants"]["finetuned"]["times"]] == [1.0, 86400.0]
    assert "over_afm" in report["variants"]["control"] and "AFM recipe" in capsys.readouterr().out
    assert (out / "noise_aware_training.png").stat().st_size > 10_000
    training = read_rows(out / "training.csv")
    assert {r["variant"] for r in training} == {"finetuned", "control"} and "kl" in training[0]
    # rerun of a finished run: the same rows, nothing trained or generated again
    stamps = {f: (out / f).stat().st_mtime_ns for f in ("training.csv", "self_data.jsonl", "input_ranges.json")}
    assert nat.main(small + ["--out", str(out)]) == 0 and read_rows(out / "results.csv") == rows
    assert stamps == {f: (out / f).stat().st_mtime_ns for f in stamps}
    # ... and what the first session recorded about training and evaluation is kept
    again = json.loads((out / "run.json").read_text())
    assert {k: again.get(k) for k in ("training", "converters", "eval_seconds")} == {
        k: meta[k] for k in ("training", "converters", "eval_seconds")} and again["training"]["finetuned"]["steps"]
    assert json.loads((out / "report.json").read_text()) == report


def test_afm_evaluation_in_afms_own_setting(tmp_path, small):
    """pcm_afm rows: AFM's hardware noise, one tile per layer, the head analog (untied, its own range), float16;
    today's columns are the same with and without them (float32 restored bit-exactly after the float16 rows);
    with today's converter setting (512-input tiles, head digital, float32) afm_converters = converters."""
    from noisynn.experiments.noise_aware_training import run as nat
    from noisynn.runs.read import read_rows

    runs = {}
    for name, extra in (("afm", []), ("off", ["--no_pcm_afm"]),
                        ("today", ["--eval_tile_size", "512", "--eval_head", "digital", "--eval_dtype", "float32"])):
        assert nat.main(small + ["--n_trials", "1", "--times", "1d", "--out", str(tmp_path / name)] + extra) == 0
        runs[name] = {(r["model_variant"], r["condition"], r["trial"]): r for r in read_rows(tmp_path / name / "results.csv")}
    afm, off, today = runs["afm"], runs["off"], runs["today"]
    assert {k: v for k, v in afm.items() if k[1] in ("clean", "converters", "pcm")} == off
    assert len(afm) == 3 * 5 and afm[("finetuned", "pcm_afm", 0)]["noise_type"] == "pcm_afm"
    for v in ("original", "finetuned", "control"):
        assert today[(v, "afm_converters", 0)]["perplexity"] == today[(v, "converters", 0)]["perplexity"]
        assert afm[(v, "afm_converters", 0)]["perplexity"] != afm[(v, "converters", 0)]["perplexity"]
        assert afm[(v, "pcm_afm", 0)]["perplexity"] != afm[(v, "afm_converters", 0)]["perplexity"]
    meta = json.loads((tmp_path / "afm" / "run.json").read_text())
    ev = meta["afm_evaluation"]
    assert (ev["tile_size"], ev["head"], ev["dtype"], ev["on"]) == (0, "analog", "float16", True)
    assert ev["converters"]["tile_size"] == [0, 0] and "head" in ev["targets"]
    assert json.loads((tmp_path / "today" / "run.json").read_text())["afm_evaluation"]["dtype"] == "float32"
    assert "afm_evaluation" not in json.loads((tmp_path / "off" / "run.json").read_text())
    ranges = json.loads((tmp_path / "afm" / "input_ranges.json").read_text())
    assert all(ranges[v]["lm_head"] > 0 for v in ranges)
    assert "lm_head" not in json.loads((tmp_path / "today" / "input_ranges.json").read_text())["original"]
    report = json.loads((tmp_path / "afm" / "report.json").read_text())
    assert report["variants"]["control"]["pcm_afm_over_afm"]["n_trials"] == 1
    assert report["variants"]["original"]["pcm_afm"]["median"] > 0


def test_afm_run_with_lost_rows_trains_again_to_the_same_rows(tmp_path, small):
    from noisynn.experiments.noise_aware_training import run as nat
    from noisynn.runs.read import read_rows

    out = tmp_path / "run"
    assert nat.main(small + ["--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    training = (out / "training.csv").read_text()
    # half the rows lost; the checkpoints are gone with the finished run and no weights were saved
    csv_lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(csv_lines[: len(csv_lines) // 2]))
    assert nat.main(small + ["--out", str(out)]) == 0
    assert read_rows(out / "results.csv") == rows  # trained again (same seed: same weights), evaluated the rest
    again = (out / "training.csv").read_text().splitlines()
    assert [line.split(",")[:3] for line in again] == [line.split(",")[:3] for line in training.splitlines()]


def test_afm_ablation_flags_reach_the_config(tmp_path, small, base):
    from noisynn.experiments.noise_aware_training import afm_run, run as nat

    args = nat.parse(small + ["--no_adc", "--no_weight_noise", "--no_learned_ranges", "--clip_sigma", "2.5",
                              "--distill_beta", "0.5", "--data", "corpus"])
    cfg = afm_run.afm_config(args, 6)
    assert cfg.analog.adc_bits is None and cfg.analog.out_bound is None and cfg.analog.weight_noise == 0
    assert not cfg.analog.learn_ranges and cfg.clip_sigma == 2.5 and cfg.beta == 0.5 and args.data == "corpus"
    assert afm_run.afm_config(nat.parse(small + ["--no_analog"]), 6).analog is None
    assert not afm_run.afm_config(nat.parse(small + ["--no_distill"]), 6).distill
    old = nat.parse(base)  # today's recipe: its recorded config is what it was before --recipe existed
    assert old.recipe is None and old.clip_sigma == 0.0 and old.weight_decay == 0.0 and old.data is None
    assert (old.epochs, old.max_samples) == (1, 6)
    assert afm_run.afm_config(nat.parse(["--recipe", "afm"]), 32).steps == 16  # the default: 2 epochs of 32 windows


BAD = [
    (["--recipe", "weight_noise", "--times", "1s"], "--times needs --recipe afm"),
    (["--recipe", "weight_noise", "--data", "self"], "--data self needs --recipe afm"),
    (["--recipe", "weight_noise", "--eval_dtype", "float32"], "--eval_dtype needs --recipe afm"),
    (["--train_file", "x.txt"], "use --data PATH with --recipe afm"),
    (["--distill_beta", "2"], "must lie in [0, 1]"),
    (["--times", "1s,1s"], "distinct times"),
    (["--data", "/no/such.txt"], "does not exist"),
    (["--data", "EVAL"], "contains evaluation text"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_input_exits_2_with_one_line(tmp_path, small, base, text_file, capsys, extra, message):
    from tests.helpers import exits_2_with_one_line
    from noisynn.experiments.noise_aware_training import run as nat

    extra = [str(text_file) if x == "EVAL" else x for x in extra]
    argv = base if extra[0] == "--recipe" else small
    assert message in exits_2_with_one_line(nat.main, argv + ["--out", str(tmp_path / "run")] + extra, capsys)
    assert not (tmp_path / "run" / "results.csv").exists()


@pytest.mark.integration
def test_afm_recipe_on_the_embedded_model(tmp_path, embedded):
    from noisynn.experiments.noise_aware_training import run as nat
    from noisynn.runs.read import read_rows

    out = tmp_path / "run"
    args = ["--recipe", "afm", "--steps", "2", "--batch_size", "1", "--seq_len", "24", "--max_samples", "2",
            "--self_batch", "2", "--eval_tokens", "48", "--targets", "down", "--times", "1y", "--n_trials", "1",
            "--quiet", "--out", str(out)]
    assert nat.main(args) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["training_text"]["source"] == "self" and meta["text"]["split"] == "eval"
    assert meta["trained_tensors"] == 30 and len(json.loads((out / "input_ranges.json").read_text())["finetuned"]) == 31  # + lm_head
    rows = read_rows(out / "results.csv")
    assert len(rows) == 3 * (2 + 1 + 2)  # clean, converters, 1 y; afm_converters, pcm_afm (float16, head analog)
    by = {(r["model_variant"], r["condition"], r["t_seconds"]): r["perplexity"] for r in rows}
    assert all(0 < by[(v, "pcm_afm", 0.0)] < float("inf") for v in ("original", "finetuned", "control"))
    assert meta["afm_evaluation"]["dtype"] == "float16" and "lm_head" in json.loads(
        (out / "input_ranges.json").read_text())["finetuned"]
    assert by[("original", "clean", 0.0)] < 100 and by[("finetuned", "clean", 0.0)] != by[("original", "clean", 0.0)]
    assert all(by[(v, "pcm", 3.1536e7)] > by[(v, "clean", 0.0)] for v in ("original", "finetuned", "control"))


def test_afm_two_processes_equal_one(tmp_path, tiny_model_dir, text_file):
    """DDP through Accelerate: each process runs half of every batch; gradients (weights and input ranges)
    are averaged and the ranges' data init uses the whole batch's std, so two processes train the same
    weights and ranges as one, up to float summation order."""
    from safetensors.torch import load_file

    from noisynn.runs.read import read_rows

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    env = script_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    script = str(ROOT / "noise_aware_training.py")
    runs = {}
    for name, prefix in (("one", [sys.executable]), ("two", launch)):
        out = tmp_path / name
        argv = ["--recipe", "afm", "--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64",
                "--max_length", "32", "--seq_len", "24", "--max_samples", "8", "--batch_size", "4", "--steps", "3",
                "--lr", "1e-3", "--n_trials", "1", "--times", "1s", "--self_batch", "4", "--save_weights", "--quiet",
                "--out", str(out)]
        proc = subprocess.run([*prefix, script, *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = out
    one, two = runs["one"], runs["two"]
    assert (one / "self_data.jsonl").read_text() == (two / "self_data.jsonl").read_text()
    for variant in ("finetuned", "control"):
        a, b = load_file(one / f"{variant}.safetensors"), load_file(two / f"{variant}.safetensors")
        assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    ra, rb = (json.loads((r / "input_ranges.json").read_text()) for r in (one, two))
    assert all(rb["finetuned"][k] == pytest.approx(v, rel=1e-4) for k, v in ra["finetuned"].items())
    rows_one, rows_two = read_rows(one / "results.csv"), read_rows(two / "results.csv")
    assert [(r["model_variant"], r["condition"], r["trial"]) for r in rows_one] == \
           [(r["model_variant"], r["condition"], r["trial"]) for r in rows_two]
    for r1, r2 in zip(rows_one, rows_two):
        # digital rows agree to float summation order; through 8-bit converters a weight that differs in its last
        # bits can flip a quantization step, so the analog rows agree to about a percent
        assert r2["perplexity"] == pytest.approx(r1["perplexity"], rel=1e-4 if r1["condition"] == "clean" else 2e-2)


def test_a_resume_after_the_self_generated_data_changed_is_refused(tmp_path, small, capsys):
    from tests.helpers import exits_2_with_one_line
    from noisynn.experiments.noise_aware_training import run as nat

    out = tmp_path / "run"
    args = small + ["--no_control", "--steps", "1", "--times", "1s", "--n_trials", "1", "--out", str(out)]
    assert nat.main(args) == 0
    data = out / "self_data.jsonl"
    assert json.loads((out / "run.json").read_text())["inputs"]["self_data.jsonl"]["written"]
    lines = data.read_text().splitlines()
    record = json.loads(lines[0])
    record["ids"][0][-1] = (record["ids"][0][-1] + 1) % 256  # one generated token changed
    data.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    err = exits_2_with_one_line(nat.main, args, capsys)
    assert "was run on other content: self_data.jsonl, which the run wrote and reads back, changed since" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_afm_on_a_conv1d_model_is_refused_before_the_run_folder(tmp_path, text_file, capsys):
    """GPT-2's projections are Conv1D, which the analog training forward does not run: one line, no folder."""
    from tests.helpers import byte_tokenizer, exits_2_with_one_line, tiny_gpt2
    from noisynn.experiments.noise_aware_training import run as nat

    model_dir = tmp_path / "gpt2"
    tiny_gpt2().save_pretrained(model_dir)
    byte_tokenizer().save_pretrained(model_dir)
    out = tmp_path / "run"
    line = exits_2_with_one_line(nat.main, ["--recipe", "afm", "--times", "1s", "--model", str(model_dir),
                                            "--text_file", str(text_file), "--eval_tokens", "64", "--max_length",
                                            "32", "--seq_len", "24", "--max_samples", "6", "--quiet", "--out",
                                            str(out)], capsys)
    assert "no Linear layers among the targets" in line and "Conv1D" in line
    assert not out.exists()
