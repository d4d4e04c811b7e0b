"""Lean options of the AFM recipe on tiny random models: the default path unchanged, gradient checkpointing
(same loss and gradients, weight noise reproduced on recomputation), the shared teacher (no copy of the
trained tensors), the 8-bit optimizer (bitsandbytes, when installed) and the one-line errors."""

import gc
import sys
import types
import warnings

import pytest
import torch

from tests.helpers import tiny_llama
from tests.experiments.test_afm_recipe import CFG, base, chunks, small  # noqa: F401 (fixtures)
from noisynn.experiments.noise_aware_training import afm, lean
from noisynn.experiments.noise_aware_training import analog_train as at
from noisynn.targets import select_targets

torch.set_num_threads(1)

# afm_finetune(tiny_llama(), chunks(), CFG) with the code before the lean options (commit 94d8a47), recorded on
# the 2-core AVX2 machine; the new code gave the same numbers bit for bit there. Other CPUs may round differently.
BEFORE = {"loss": [0.00010684543667593971, 0.0015672094887122512, 0.001594817265868187, 0.002712354762479663],
          "grad_norm": [0.5685135126113892, 0.5681280493736267, 0.5659888982772827, 0.5658836960792542]}


def with_(**changes) -> afm.AFMConfig:
    return afm.AFMConfig(**{**CFG.__dict__, **changes})


def test_default_path_gives_the_numbers_of_the_code_before_the_lean_options():
    _, _, history = afm.afm_finetune(tiny_llama(), chunks(), CFG)
    assert [h["loss"] for h in history] == pytest.approx(BEFORE["loss"], rel=1e-5)
    assert [h["grad_norm"] for h in history] == pytest.approx(BEFORE["grad_norm"], rel=1e-5)
    explicit, _, again = afm.afm_finetune(tiny_llama(), chunks(), with_(teacher="copy", optimizer="adamw"))
    default, _, _ = afm.afm_finetune(tiny_llama(), chunks(), CFG)
    assert [h["loss"] for h in again] == [h["loss"] for h in history]
    assert all(torch.equal(explicit[k], default[k]) for k in default)


def test_config_record_of_older_checkpoints_is_unchanged():
    record = afm._config_record(CFG)
    assert "teacher" not in record and "optimizer" not in record  # a checkpoint written before them still resumes
    assert afm._config_record(with_(teacher="shared", clip_sigma=0.0))["teacher"] == "shared"


# ---------------------------------------------------------------------------------------------- gradient checkpointing

def losses_and_grads(cfg, steps=2):
    """Loss and the targeted tensors' gradients of the first ``steps`` steps (read in on_step, before the next
    step clears them); gradient clipping off so the raw gradients are compared."""
    model, seen = tiny_llama(), []
    targets = select_targets(model, cfg.targets)

    def on_step(step, saved):
        seen.append({t.name: t.param.grad.clone() for t in targets})

    _, _, history = afm.afm_finetune(model, chunks(), afm.AFMConfig(**{**cfg.__dict__, "steps": steps,
                                                                       "grad_clip": 0.0}), on_step=on_step)
    return [h["loss"] for h in history], seen


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    """Tolerance: loss rel 1e-6, gradients atol 1e-6 (float32; the recomputed forward is the same arithmetic)."""
    plain_loss, plain = losses_and_grads(CFG)
    ckpt_loss, ckpt = losses_and_grads(with_(grad_checkpointing=True))
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-6)
    for a, b in zip(plain, ckpt):
        assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


def test_gradient_checkpointing_would_see_a_fresh_draw_if_the_noise_were_not_keyed_by_step(monkeypatch):
    """The negative control: with a weight-noise seed that changes on every call (so the recomputed forward of
    the backward pass draws other noise than the forward did) the gradients differ; the recipe keys each
    draw by (seed, step, layer), which is why the test above passes."""
    _, plain = losses_and_grads(CFG, steps=1)
    calls = iter(range(10 ** 6))
    real = at.derive_seed
    monkeypatch.setattr(at, "derive_seed", lambda *a: real(*a, next(calls)))
    _, fresh = losses_and_grads(with_(grad_checkpointing=True), steps=1)
    assert any(not torch.allclose(plain[0][k], fresh[0][k], atol=1e-6, rtol=0) for k in plain[0])


# ---------------------------------------------------------------------------------------------- shared teacher

def storages_of(shapes) -> int:
    """Distinct storages among the live Python tensors whose (shape, dtype) is one of ``shapes``."""
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        return len({o.untyped_storage().data_ptr() for o in gc.get_objects()
                    if isinstance(o, torch.Tensor) and (tuple(o.shape), o.dtype) in shapes})


def count_during_training(cfg, tmp_path) -> tuple[int, int]:
    model = tiny_llama()
    targets = select_targets(model, cfg.targets)
    shapes = {(tuple(t.param.shape), t.param.dtype) for t in targets}
    before, counts = storages_of(shapes), []
    afm.afm_finetune(model, chunks(), cfg, checkpoint=tmp_path / "x.ckpt", on_step=lambda s, _: counts.append(
        storages_of(shapes)))
    return counts[-1] - before, len(targets)


def test_shared_teacher_holds_no_copy_of_the_trained_tensors(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    copy, n = count_during_training(with_(save_every=100, clip_sigma=0.0), tmp_path / "a")
    shared, _ = count_during_training(with_(save_every=100, clip_sigma=0.0, teacher="shared"), tmp_path / "b")
    assert copy - shared == n  # exactly the teacher's copy, one per trained tensor
    assert shared == 3 * n  # on top of the weights only their gradients and AdamW's two moments
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["x.ckpt"]  # the restore snapshot's file is gone


def test_shared_teacher_restores_the_model_and_starts_as_the_copy_teacher(tmp_path):
    model = tiny_llama()
    full = {k: v.clone() for k, v in model.state_dict().items()}
    _, _, shared = afm.afm_finetune(model, chunks(), with_(teacher="shared", clip_sigma=0.0))
    assert all(torch.equal(full[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    _, _, copy = afm.afm_finetune(tiny_llama(), chunks(), with_(clip_sigma=0.0))
    assert shared[0]["kl"] == copy[0]["kl"]  # step 0: the student's weights are the clean ones
    assert shared[-1]["kl"] != copy[-1]["kl"]  # then the shared teacher follows the student


def test_disk_snapshot_leaves_no_file_even_if_training_never_starts(tmp_path):
    model = tiny_llama()
    snap = lean.Snapshot(select_targets(model, "blocks"), "disk", tmp_path)
    assert snap.tensors is None and snap.store.resident_bytes == 0
    assert not list(tmp_path.iterdir())  # the spill file is unlinked at once: nothing is left, however the run ends
    loaded = snap.load()
    assert all(torch.equal(loaded[t.name], t.param) for t in select_targets(model, "blocks"))
    snap.close()


# ---------------------------------------------------------------------------------------------- optimizer

def test_8bit_optimizer_trains_with_less_state(monkeypatch):
    pytest.importorskip("bitsandbytes")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # layers of >= 4,096 values: bitsandbytes keeps smaller tensors' moments in 32 bits
    model = LlamaForCausalLM(LlamaConfig(vocab_size=258, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    made = []

    def spy(*a, **k):
        made.append(lean.make_optimizer(*a, **k))
        return made[-1]

    monkeypatch.setattr(afm, "make_optimizer", spy)
    held = []  # the optimizer state's bytes after each step (it is freed when training ends)
    on_step = lambda s, _: held.append(lean.optimizer_state_bytes(made[-1]))  # noqa: E731
    _, _, h8 = afm.afm_finetune(model, chunks(), with_(optimizer="adamw8bit", steps=2, save_every=100), on_step=on_step)
    state8 = held[-1]
    _, _, h32 = afm.afm_finetune(model, chunks(), with_(steps=2, save_every=100), on_step=on_step)
    state32 = held[-1]
    assert lean.optimizer_state_bytes(made[-1]) == 0  # freed at the end
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in h8)
    assert h8[0]["loss"] == pytest.approx(h32[0]["loss"], rel=1e-6)  # step 0's loss precedes any update
    assert state8 < 0.4 * state32


def test_missing_bitsandbytes_and_paged_on_cpu_are_one_line_errors(monkeypatch):
    from noisynn.errors import NoisyNNError

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(NoisyNNError, match="needs bitsandbytes"):
        lean.check_optimizer("adamw8bit")
    monkeypatch.setitem(sys.modules, "bitsandbytes", types.ModuleType("bitsandbytes"))
    with pytest.raises(NoisyNNError, match="needs a CUDA device"):
        lean.check_optimizer("paged_adamw8bit", "cpu")
    with pytest.raises(NoisyNNError, match="needs distillation"):
        afm.afm_finetune(tiny_llama(), chunks(), with_(teacher="shared", distill=False, clip_sigma=0.0))
    with pytest.raises(NoisyNNError, match="clipped student"):
        afm.afm_finetune(tiny_llama(), chunks(), with_(teacher="shared"))
    with pytest.raises(NoisyNNError, match="unknown optimizer"):
        afm.afm_finetune(tiny_llama(), chunks(), with_(optimizer="sgd"))


BAD = [
    (["--teacher", "shared", "--no_distill"], "--teacher shared needs distillation"),
    (["--optimizer", "paged_adamw8bit"], "paged_adamw8bit"),
    (["--teacher", "shared", "--clip_sigma", "2.5"], "would distil from the clipped student"),
    (["--recipe", "weight_noise", "--teacher", "shared"], "--teacher needs --recipe afm"),
    (["--recipe", "weight_noise", "--optimizer", "adamw8bit"], "--optimizer needs --recipe afm"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_lean_combinations_exit_2_with_one_line(tmp_path, small, base, capsys, extra, message):
    from tests.helpers import exits_2_with_one_line
    from noisynn.experiments.noise_aware_training import run as nat

    argv = base if extra[0] == "--recipe" else small
    assert message in exits_2_with_one_line(nat.main, argv + ["--out", str(tmp_path / "run")] + extra, capsys)
    assert not (tmp_path / "run").exists()


def test_lean_flags_reach_the_config(small):
    from noisynn.experiments.noise_aware_training import afm_run, run as nat

    cfg = afm_run.afm_config(nat.parse(small + ["--gradient_checkpointing", "--teacher", "shared"]), 6)
    assert cfg.grad_checkpointing and cfg.teacher == "shared" and cfg.optimizer == "adamw"
    args = nat.parse(small)
    assert args.teacher is None and args.optimizer is None  # older run folders resume (None: not recorded as set)
    assert afm_run.afm_config(args, 6).teacher == "copy"
