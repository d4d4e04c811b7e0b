"""Every file a run reads is fingerprinted and compared on resume (noisynn.runs.inputs): the mechanism, and the
sweep's --digital placement and --tokenizer folder changed in place between two sessions (issue 25)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import byte_tokenizer, exits_2_with_one_line
from noisynn.errors import NoisyNNError
from noisynn.experiments.sweep import run as sweep
from noisynn.placements import write_placement
from noisynn.runs import inputs

FILES = st.dictionaries(st.sampled_from(["a", "b.txt", "sub/c", "sub/deep/d.json", "z"]),
                        st.binary(min_size=1, max_size=40), min_size=1)


def _write(folder: Path, files: dict, order) -> Path:
    folder.mkdir(parents=True)
    for name in order:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(files[name])
    return folder


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


# --- the mechanism -------------------------------------------------------------------------------------------------

def test_a_file_fingerprint_is_the_sha256_of_its_bytes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"\x00abc\xff")
    assert inputs.fingerprint(path) == hashlib.sha256(b"\x00abc\xff").hexdigest()


@settings(max_examples=40, deadline=None)
@given(files=FILES, seed=st.integers(0, 1000), data=st.data())
def test_a_folder_fingerprint_follows_every_byte_not_the_listing_order(tmp_path_factory, files, seed, data):
    root = tmp_path_factory.mktemp("fp")
    names = sorted(files)
    shuffled = names[:]
    random.Random(seed).shuffle(shuffled)
    one, two = _write(root / "one", files, names), _write(root / "two", files, shuffled)
    assert inputs.fingerprint(one) == inputs.fingerprint(two)
    name = data.draw(st.sampled_from(names))
    at = data.draw(st.integers(0, len(files[name]) - 1))
    changed = bytearray(files[name])
    changed[at] ^= 1 << data.draw(st.integers(0, 7))
    (two / name).write_bytes(bytes(changed))
    assert inputs.fingerprint(one) != inputs.fingerprint(two)


def test_a_renamed_file_changes_a_folder_fingerprint(tmp_path):
    folder = _write(tmp_path / "f", {"a": b"x", "b": b"y"}, ["a", "b"])
    before = inputs.fingerprint(folder)
    (folder / "b").rename(folder / "c")
    assert inputs.fingerprint(folder) != before


def test_the_flags_files_are_recorded_and_hub_ids_and_words_are_not(tmp_path):
    f = tmp_path / "p.json"
    f.write_text("{}")
    args = SimpleNamespace(digital=str(f), tokenizer="HuggingFaceTB/SmolLM2-135M", train_file=None, data="self")
    assert inputs.of_args(args) == {"digital": {"path": str(f), "sha256": inputs.fingerprint(f)}}


def test_check_refuses_changed_inputs_and_passes_what_was_never_recorded(tmp_path):
    old = {"digital": {"path": "p.json", "sha256": "a" * 64}}
    inputs.check(tmp_path, old, {"digital": {"path": "p.json", "sha256": "a" * 64}})
    inputs.check(tmp_path, None, {"digital": {"path": "p.json", "sha256": "b" * 64}})  # an older run folder
    inputs.check(tmp_path, old, {})  # not given now: the config says so
    with pytest.raises(NoisyNNError) as err:
        inputs.check(tmp_path, old, {"digital": {"path": "p.json", "sha256": "b" * 64}})
    assert str(err.value) == (f"{tmp_path} was run on other content: --digital p.json changed since (fingerprint "
                              f"{'a' * 12}... recorded, {'b' * 12}... now); restore it, or use another --out")


def test_check_compares_a_written_file_with_its_record_and_a_removed_one_passes(tmp_path):
    path = tmp_path / "finetuned.safetensors"
    path.write_bytes(b"weights")
    recorded = {path.name: inputs.written(path)}
    inputs.check(tmp_path, recorded, {})
    path.write_bytes(b"other weights")
    with pytest.raises(NoisyNNError, match="finetuned.safetensors, which the run wrote and reads back, changed since"):
        inputs.check(tmp_path, recorded, {})
    assert inputs.kept(tmp_path, recorded) == recorded
    path.unlink()
    inputs.check(tmp_path, recorded, {})
    assert inputs.kept(tmp_path, recorded) == {}


# --- the sweep: --digital and --tokenizer --------------------------------------------------------------------------

def _argv(model, text_file, out, *extra) -> list[str]:
    return ["--model", str(model), "--text_file", str(text_file), "--eval_tokens", "32", "--max_length", "32",
            "--n_levels", "2", "--max_noise", "0.05", "--n_trials", "1", "--n_samples", "1", "--max_new_tokens", "2",
            "--entropy_tokens", "1", "--quiet", "--out", str(out), *extra]


def test_a_sweep_resumed_after_its_digital_placement_changed_is_refused(tmp_path, tiny_model_dir, text_file, capsys):
    path = write_placement(tmp_path / "placement.json", ["model.layers.1.mlp.down_proj.weight"],
                           ["model.layers.0.self_attn.q_proj.weight"])
    out = tmp_path / "run"
    argv = _argv(tiny_model_dir, text_file, out, "--digital", str(path))
    assert sweep.main(argv) == 0
    assert json.loads((out / "run.json").read_text())["inputs"]["digital"]["sha256"] == inputs.fingerprint(path)
    assert sweep.main(argv) == 0  # unchanged: resumes (nothing left to run)
    before = snapshot(out)
    write_placement(path, ["model.layers.0.self_attn.q_proj.weight"], ["model.layers.1.mlp.down_proj.weight"])
    err = exits_2_with_one_line(sweep.main, argv, capsys)
    assert f"was run on other content: --digital {path} changed since" in err and "use another --out" in err, err
    assert snapshot(out) == before


def test_a_placement_planned_on_other_weights_is_refused_before_the_folder(tmp_path, tiny_model_dir, text_file,
                                                                          capsys):
    path = write_placement(tmp_path / "placement.json", ["model.layers.1.mlp.down_proj.weight"],
                           ["model.layers.0.self_attn.q_proj.weight"], model="another", model_fingerprint="0" * 64)
    out = tmp_path / "run"
    err = exits_2_with_one_line(sweep.main, _argv(tiny_model_dir, text_file, out, "--digital", str(path)), capsys)
    assert f"placement file {path} was planned on other weights (model another" in err, err
    assert not out.exists()


def _swap_two_letters(tokenizer_json: Path) -> None:
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    tokenizer_json.write_text(json.dumps(data), encoding="utf-8")


def test_a_sweep_resumed_after_its_tokenizer_folder_changed_is_refused(tmp_path, tiny_model_dir, text_file, capsys):
    tok = tmp_path / "tok"
    byte_tokenizer().save_pretrained(tok)
    out = tmp_path / "run"
    argv = _argv(tiny_model_dir, text_file, out, "--tokenizer", str(tok))
    assert sweep.main(argv) == 0
    assert json.loads((out / "run.json").read_text())["inputs"]["tokenizer"]["sha256"] == inputs.fingerprint(tok)
    before = snapshot(out)
    _swap_two_letters(tok / "tokenizer.json")
    err = exits_2_with_one_line(sweep.main, argv, capsys)
    assert f"was run on other content: --tokenizer {tok} changed since" in err, err
    assert snapshot(out) == before
