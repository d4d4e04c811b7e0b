"""noise_aware_training on tiny random models: noisy steps, fine-tuning, the run folder, bad input."""

import dataclasses
import errno
import json
import os

import pytest
import torch

from tests.helpers import tiny_llama, exits_2_with_one_line
from noisynn.errors import NoisyNNError
from noisynn.evaluation import compute_perplexity, tokenize
from noisynn.experiments.noise_aware_training import data, training, weights
from noisynn.experiments.noise_aware_training import run as nat
from noisynn.targets import select_targets
from noisynn.models.loading import load_model
from noisynn.runs.schema import LEADING_COLUMNS
from noisynn.runs.read import read_rows


def targets_state(model):
    return {t.name: t.param.detach().clone() for t in select_targets(model, "blocks")}


def batch(seed=0, n=2, length=24):
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))


CFG = nat.TrainConfig(noise_level=0.3, scale="relative_channel", steps=3, lr=1e-2, grad_clip=0.0, seed=0,
                      batch_size=2, seq_len=24)


def sgd(model, lr):
    params = [t.param for t in select_targets(model, "blocks")]
    return torch.optim.SGD(params, lr=lr)


def test_noise_is_gone_after_a_step_and_gradient_is_taken_at_noisy_weights():
    model = tiny_llama()
    before = targets_state(model)
    x = batch()
    training.noisy_step(model, x, sgd(model, 0.0), CFG, step=0)
    noisy_grads = {t.name: t.param.grad.clone() for t in select_targets(model, "blocks")}
    # lr = 0: the weights after the step are the clean weights, bit for bit (the noise did not persist)
    assert all(torch.equal(before[k], v) for k, v in targets_state(model).items())
    assert all(g.abs().sum() > 0 for g in noisy_grads.values())  # gradients reached every targeted weight
    training.noisy_step(model, x, sgd(model, 0.0), dataclasses.replace(CFG, noise_level=0.0), step=0)
    clean_grads = {t.name: t.param.grad.clone() for t in select_targets(model, "blocks")}
    assert all(not torch.allclose(noisy_grads[k], clean_grads[k]) for k in clean_grads)  # noise was in the pass
    training.noisy_step(model, x, sgd(model, 0.0), CFG, step=1)
    other = {t.name: t.param.grad.clone() for t in select_targets(model, "blocks")}
    assert all(not torch.equal(noisy_grads[k], other[k]) for k in other)  # a fresh draw per step
    training.noisy_step(model, x, sgd(model, 0.0), CFG, step=0)
    again = {t.name: t.param.grad for t in select_targets(model, "blocks")}
    assert all(torch.equal(noisy_grads[k], again[k]) for k in again)  # seeded from (seed, step)


def test_update_lands_on_the_clean_weights():
    model = tiny_llama()
    before = targets_state(model)
    training.noisy_step(model, batch(), sgd(model, 1e-3), CFG, step=0)
    for t in select_targets(model, "blocks"):
        expected = before[t.name] - 1e-3 * t.param.grad
        assert torch.allclose(t.param.detach(), expected, atol=1e-7)
        # the step moved the weights far less than the noise they carried during the pass
        noise_scale = 0.3 * before[t.name].abs().amax(dim=1, keepdim=True)
        assert (t.param.detach() - before[t.name]).abs().mean() < 0.05 * noise_scale.mean()


def test_finetune_returns_new_weights_and_leaves_the_model_untouched():
    model = tiny_llama()
    full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    chunks = batch(1, n=6, length=24)
    trained, history = nat.finetune(model, chunks, CFG)
    assert all(torch.equal(full[k], v) for k, v in model.state_dict().items())
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags and not model.training
    assert all(p.grad is None for p in model.parameters())
    assert set(trained) == {t.name for t in select_targets(model, "blocks")}
    assert all(not torch.equal(trained[k], full[k]) for k in trained)
    assert [h["step"] for h in history] == [0, 1, 2] and all(h["loss"] > 0 for h in history)
    # same config, same result (seeded data order and noise)
    trained2, _ = nat.finetune(model, chunks, CFG)
    assert all(torch.equal(trained[k], trained2[k]) for k in trained)


def test_clip_weights_bounds_each_channel():
    model = tiny_llama()
    targets = select_targets(model, "blocks")
    bounds = [t.param.detach().std(dim=1, keepdim=True) * 1.5 for t in targets]
    training.clip_weights(targets, 1.5)
    for t, bound in zip(targets, bounds):
        w = t.param.detach()
        assert (w.abs() <= bound + 1e-7).all() and (w.abs() > bound - 1e-7).any()


def test_schedule_and_batches():
    cfg = dataclasses.replace(CFG, steps=10, warmup=0.2, batch_size=3)
    factors = [training.lr_factor(s, cfg) for s in range(10)]
    assert factors[0] == 0.5 and factors[1] == 1.0 and factors[-1] > 0 and factors == sorted(factors[:2]) + sorted(
        factors[2:], reverse=True)
    order = training.batch_order(7, cfg)
    assert len(order) == 10
    first_epoch = torch.cat(order[:3])  # ceil(7 / 3) batches cover every sample once
    assert sorted(first_epoch.tolist()) == list(range(7))


def test_check_disjoint():
    data.check_disjoint("a completely different text about rivers and mountains and the sea", "Erbium is a chemical "
                       "element with the symbol Er and atomic number 68.\n\nKelvin is a unit.")
    with pytest.raises(NoisyNNError, match="contains evaluation text"):
        data.check_disjoint("prefix. Erbium is a chemical element with the symbol Er and atomic number 68. suffix",
                           "Erbium is a chemical element with the symbol Er and atomic number 68.\n\nKelvin.")


@pytest.fixture
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "train.txt"
    path.write_text(("Pack my box with five dozen liquor jugs, said the sphinx of black quartz. " * 60).strip())
    return path


@pytest.fixture
def small(tiny_model_dir, text_file, train_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--train_file", str(train_file),
            "--eval_tokens", "64", "--max_length", "32", "--seq_len", "24", "--max_samples", "6", "--batch_size", "2",
            "--lr", "1e-2", "--noise_level", "0.3", "--max_noise", "0.6", "--n_levels", "3", "--n_trials", "2",
            "--quiet"]


def test_run_folder_and_fair_comparison(tmp_path, small, tiny_model_dir, text_file, capsys):
    out = tmp_path / "run"
    small = small + ["--save_weights"]
    assert nat.main(small + ["--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == list(LEADING_COLUMNS) + ["model_variant"] + list(nat.METRICS)
    assert len(rows) == 3 * 3 * 2 and {r["model_variant"] for r in rows} == set(nat.VARIANTS)
    # the same noise seed for every variant at a given trial
    seeds = {(r["model_variant"], r["trial"]): r["seed"] for r in rows}
    assert all(seeds[("finetuned", t)] == seeds[("original", t)] == seeds[("control", t)] for t in (0, 1))
    # "original" is the untouched model: its clean perplexity equals a fresh load's
    lm = load_model(str(tiny_model_dir), "cpu")
    ids = tokenize(lm.tokenizer, text_file.read_text(), 64)
    fresh = compute_perplexity(lm.model, lm.tokenizer, ids, max_length=32).perplexity
    clean = {r["model_variant"]: r["perplexity"] for r in rows if r["sigma"] == 0 and r["trial"] == 0}
    assert clean["original"] == fresh and clean["finetuned"] != fresh and clean["control"] != clean["finetuned"]
    # saved weights: only the trained tensors; the loader rebuilds the fine-tuned model
    tensors, meta = nat.read_weights(out / "finetuned.safetensors")
    assert set(tensors) == {t.name for t in select_targets(lm.model, "blocks")} and meta["variant"] == "finetuned"
    tuned = weights.load_finetuned(out, "finetuned")
    assert compute_perplexity(tuned.model, tuned.tokenizer, ids, max_length=32).perplexity == clean["finetuned"]
    training = read_rows(out / "training.csv")
    assert len(training) == 2 * 3 and {r["variant"] for r in training} == {"finetuned", "control"}
    report = json.loads((out / "report.json").read_text())
    assert set(report["variants"]) == set(nat.VARIANTS) and report["eval_tokens"] == 64
    assert "original_over_finetuned" in report["levels"][-1] and "control_over_finetuned" in report["levels"][-1]
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["training_config"]["steps"] == 3 and meta["train_tokens"] == 144
    assert (out / "noise_aware_training.png").stat().st_size > 10_000 and (out / "summary.csv").is_file()
    assert "control" in capsys.readouterr().out
    # resume: nothing is retrained or re-evaluated
    stamp = (out / "finetuned.safetensors").stat().st_mtime_ns
    assert nat.main(small + ["--out", str(out)]) == 0
    assert (out / "finetuned.safetensors").stat().st_mtime_ns == stamp and read_rows(out / "results.csv") == rows


def test_weights_are_saved_only_when_asked_and_a_resume_retrains_to_the_same_rows(tmp_path, small):
    out = tmp_path / "run"
    args = small + ["--n_levels", "2", "--n_trials", "1", "--out", str(out)]
    assert nat.main(args) == 0
    assert not list(out.glob("*.safetensors"))  # a smoke run writes no weights by default
    rows = read_rows(out / "results.csv")
    (out / "results.csv").write_text((out / "results.csv").read_text().splitlines(keepends=True)[0])  # rows lost
    assert nat.main(args) == 0  # resumes: trains again (same seed), evaluates again
    assert read_rows(out / "results.csv") == rows and not list(out.glob("*.safetensors"))
    with pytest.raises(NoisyNNError, match="--save_weights"):
        weights.load_finetuned(out, "finetuned")


def test_no_control(tmp_path, small):
    out = tmp_path / "run"
    assert nat.main(small + ["--no_control", "--n_levels", "2", "--n_trials", "1", "--out", str(out)]) == 0
    assert {r["model_variant"] for r in read_rows(out / "results.csv")} == {"original", "finetuned"}
    assert not (out / "control.safetensors").exists()


BAD = [
    (["--lr", "-1"], "must be > 0"),
    (["--lr", "0"], "must be > 0"),
    (["--steps", "0"], "must be >= 1"),
    (["--seq_len", "abc"], "is not an integer"),
    (["--warmup", "2"], "must be <= 1"),
    (["--noise_level", "nan"], "not a finite number"),
    (["--train_file", "EVAL"], "contains evaluation text"),
    (["--train_file", "/no/such.txt"], "does not exist"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_input_exits_2_with_one_line(tmp_path, small, text_file, capsys, extra, message):
    extra = [str(text_file) if x == "EVAL" else x for x in extra]
    assert message in exits_2_with_one_line(nat.main, small + ["--out", str(tmp_path / "run")] + extra, capsys)
    assert not (tmp_path / "run" / "results.csv").exists()


@pytest.mark.integration
def test_noise_aware_training_on_embedded_model(tmp_path, embedded):
    out = tmp_path / "run"
    args = ["--steps", "2", "--batch_size", "1", "--seq_len", "32", "--max_samples", "2", "--eval_tokens", "64",
            "--targets", "down", "--n_levels", "2", "--n_trials", "1", "--quiet", "--out", str(out)]
    assert nat.main(args) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["training_text"]["split"] == "train" and meta["text"]["split"] == "eval"
    assert meta["trained_params"] == 30 * 576 * 1536 and meta["trained_tensors"] == 30
    rows = read_rows(out / "results.csv")
    assert len(rows) == 3 * 2
    ids = tokenize(embedded.tokenizer, __import__("noisynn").load_text().text, 64)
    clean = compute_perplexity(embedded.model, embedded.tokenizer, ids).perplexity
    by = {(r["model_variant"], r["sigma"]): r["perplexity"] for r in rows}
    assert by[("original", 0.0)] == clean  # the original model is evaluated untouched
    assert by[("finetuned", 0.0)] != clean and by[("control", 0.0)] != by[("finetuned", 0.0)]
    assert all(by[(v, 0.05)] > by[(v, 0.0)] for v in nat.VARIANTS)
    assert json.loads((out / "report.json").read_text())["train_tokens"] == 64


def test_sharding_launches_are_refused():
    class FakeAccelerator:
        distributed_type = "DistributedType.FSDP"

    with pytest.raises(NoisyNNError, match="DDP only; this launch uses FSDP"):
        nat.check_launch(FakeAccelerator())
    nat.check_launch(type("A", (), {"distributed_type": "DistributedType.MULTI_CPU"})())  # DDP on CPUs: fine


# --- damaged or full storage (issue 25): one line, exit 2, finished rows kept, no temporary file ------------------

def _full_disk_for(monkeypatch, kind: str):
    """ENOSPC from ``os.fsync`` of the temporary file of a ``kind`` file (``.safetensors``, ``.ckpt``: a save through
    ``write_via_temp``); the run folder's own writes go through."""
    real = os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if name.endswith(".tmp") and f"{kind}." in name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_truncated_saved_weights_on_resume_are_one_line_and_the_rows_stay(tmp_path, small, capsys):
    out = tmp_path / "run"
    args = small + ["--save_weights", "--no_control", "--n_levels", "2", "--n_trials", "1", "--out", str(out)]
    assert nat.main(args) == 0
    rows = (out / "results.csv").read_bytes()
    _truncate(out / "finetuned.safetensors")
    err = exits_2_with_one_line(nat.main, args, capsys)  # its recorded fingerprint tells first
    assert "finetuned.safetensors, which the run wrote and reads back, changed since" in err and "remove it" in err, err
    meta = json.loads((out / "run.json").read_text())
    del meta["inputs"]  # a folder from before the fingerprints: the damage is found when it is read
    (out / "run.json").write_text(json.dumps(meta))
    err = exits_2_with_one_line(nat.main, args, capsys)
    assert "finetuned.safetensors cannot be read, it is damaged or truncated" in err and "remove it" in err, err
    assert (out / "results.csv").read_bytes() == rows and not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_a_full_disk_while_saving_weights_is_one_line_and_leaves_no_temporary_file(tmp_path, small, capsys,
                                                                                     monkeypatch):
    out = tmp_path / "run"
    args = small + ["--save_weights", "--no_control", "--n_levels", "2", "--n_trials", "1", "--out", str(out)]
    _full_disk_for(monkeypatch, ".safetensors")
    err = exits_2_with_one_line(nat.main, args, capsys)
    assert "No space left on device" in err and "free some space" in err, err
    assert not list(out.glob(".*.tmp")) and not (out / "finetuned.safetensors").exists()
    monkeypatch.undo()
    assert nat.main(args) == 0  # space again: the same command completes
    assert (out / "finetuned.safetensors").is_file() and not list(out.glob(".*.tmp"))


def test_checkpoints_truncated_or_written_to_a_full_disk(tmp_path, monkeypatch):
    from noisynn.experiments.noise_aware_training import afm

    cfg, path = afm.AFMConfig(), tmp_path / "finetuned.ckpt"
    state = {"config": afm._config_record(cfg), "step": 2, "tensors": {"w": torch.ones(64, 64)}}
    afm.save_checkpoint(path, state)
    assert afm.load_checkpoint(path, cfg)["step"] == 2
    before = path.read_bytes()
    _full_disk_for(monkeypatch, ".ckpt")
    with pytest.raises(OSError, match="No space left"):
        afm.save_checkpoint(path, {**state, "step": 3})
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file
    _truncate(path)
    with pytest.raises(NoisyNNError, match=r"finetuned.ckpt cannot be read, it is damaged or truncated") as err:
        afm.load_checkpoint(path, cfg)
    assert len(str(err.value).splitlines()) == 1
    torch.save([1, 2], path)  # readable, but no checkpoint
    with pytest.raises(NoisyNNError, match="is not a training checkpoint"):
        afm.load_checkpoint(path, cfg)


# --- resume on other content (issue 25): the run's saved weights and its --train_file are fingerprinted ----------

def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_resume_after_the_saved_weights_were_swapped_is_refused(tmp_path, small, capsys):
    out = tmp_path / "run"
    args = small + ["--save_weights", "--n_levels", "2", "--n_trials", "1", "--out", str(out)]
    assert nat.main(args) == 0
    recorded = json.loads((out / "run.json").read_text())["inputs"]
    assert recorded["finetuned.safetensors"]["written"] and recorded["control.safetensors"]["written"]
    finetuned, control = out / "finetuned.safetensors", out / "control.safetensors"
    a, b = finetuned.read_bytes(), control.read_bytes()
    finetuned.write_bytes(b)
    control.write_bytes(a)
    before = _snapshot(out)
    err = exits_2_with_one_line(nat.main, args, capsys)
    assert "was run on other content: control.safetensors, which the run wrote and reads back, changed since" in err
    assert _snapshot(out) == before
    control.unlink()  # removed: that variant is trained again; the other is still not this run's
    assert "finetuned.safetensors, which the run wrote" in exits_2_with_one_line(nat.main, args, capsys)


def test_a_resume_after_the_train_file_changed_is_refused(tmp_path, small, train_file, capsys):
    out = tmp_path / "run"
    args = small + ["--no_control", "--n_levels", "2", "--n_trials", "1", "--out", str(out)]
    assert nat.main(args) == 0
    before = _snapshot(out)
    train_file.write_text(("Five quacking zephyrs jolt my wax bed, and the sphinx of black quartz judges. " * 60).strip())
    err = exits_2_with_one_line(nat.main, args, capsys)
    assert f"was run on other content: --train_file {train_file} changed since" in err, err
    assert _snapshot(out) == before
