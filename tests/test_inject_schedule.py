"""Per-layer noise schedules in the injector and the runs: block b gets sigma x m_b for every noise type, constant
is bit-identical to no schedule, the multipliers land in run.json and the rows, bad settings are one line."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tests.helpers import exits_2_with_one_line, tiny_gpt2, tiny_llama
from noisynn import registry
from noisynn.errors import NoisyNNError
from noisynn.inject import NoiseInjector, resolve_schedule
from noisynn.noise.schedule import make_schedule
from noisynn.spec import make_noise_spec
from noisynn.targets import count_blocks, scheduled_block, select


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_count_blocks():
    assert count_blocks(tiny_llama(layers=4)) == 4 and count_blocks(tiny_gpt2()) == 2


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2 ** 31), st.floats(0.001, 0.2), st.sampled_from(["gaussian", "uniform", "laplacian"]),
       st.sampled_from(["absolute", "relative", "relative_channel"]))
def test_constant_and_all_ones_are_bit_identical_to_no_schedule(seed, sigma, noise, scale):
    model = tiny_llama(layers=3)
    out = []
    for schedule in (None, make_schedule("constant"), make_schedule("table", values=[1, 1, 1], normalize="none")):
        spec = make_noise_spec(noise, scale=scale, schedule=schedule)
        inj = NoiseInjector(model, spec)
        inj.realize(seed, sigma)
        out.append(weights(model))
        inj.restore()
    assert make_noise_spec(schedule=make_schedule("constant")).schedule is None
    for other in out[1:]:
        assert all(torch.equal(out[0][k], other[k]) for k in out[0])


@pytest.mark.parametrize("noise,scale,params,sigma", [
    ("gaussian", "absolute", {}, 0.02),
    ("student_t", "relative", {"df": 4.0}, 0.1),
    ("quantize", "relative_channel", {}, 1 / 15),
    ("stuck_at", "relative_channel", {}, 0.1),
    ("pcm", "relative_channel", {}, 1.0),
])
def test_each_block_gets_sigma_times_its_multiplier_for_every_noise_type(noise, scale, params, sigma):
    """Scheduled at sigma == unscheduled at sigma x m_b, block by block (the same draws); the head x 1."""
    model = tiny_llama(layers=3, tie=False)
    table = make_schedule("table", values=[0.5, 2.0, 0.0], normalize="none")
    spec = make_noise_spec(noise, params, scale, "blocks,head", schedule=table)
    inj = NoiseInjector(model, spec)
    assert inj.spec.multipliers == (0.5, 2.0, 0.0)
    inj.realize(7, sigma)
    scheduled = weights(model)
    inj.restore()
    clean = weights(model)
    plain = NoiseInjector(model, make_noise_spec(noise, params, scale, "blocks,head"))
    for t in plain.targets:
        b = scheduled_block(t)
        plain.realize(7, sigma * (1.0 if b is None else table.values[b]))
        assert torch.equal(t.param.data, scheduled[t.name]), t.name
        if b == 2:
            assert torch.equal(scheduled[t.name], clean[t.name])  # multiplier 0: clean, whatever the noise
    plain.restore()


def test_measured_noise_std_per_block_and_equal_energy():
    model = tiny_llama(layers=4)
    clean = weights(model)
    spec = make_noise_spec("gaussian", schedule=make_schedule("linear", 0.25, 1.75))
    inj = NoiseInjector(model, spec)
    m = inj.spec.multipliers
    inj.realize(3, 0.05)
    energy = n_total = 0.0
    for b in range(4):
        noise = torch.cat([(t.param.data - clean[t.name]).flatten() for t in inj.targets if t.cls.block == b])
        assert float(noise.std()) == pytest.approx(0.05 * m[b], rel=0.05)
        energy += float((noise ** 2).sum())
        n_total += noise.numel()
    assert energy == pytest.approx(n_total * 0.05 ** 2, rel=0.05)  # the constant schedule's energy
    assert m[0] < m[1] < m[2] < m[3]
    inj.restore()
    assert all(torch.equal(clean[k], v) for k, v in model.state_dict().items())


def test_accumulate_steps_by_block():
    model = tiny_llama(layers=2)
    clean = weights(model)
    inj = NoiseInjector(model, make_noise_spec("gaussian", schedule=make_schedule("table", values=[0, 1],
                                                                                   normalize="none")))
    inj.draw(1)
    inj.accumulate(0.05)
    for t in inj.targets:
        assert torch.equal(t.param.data, clean[t.name]) == (t.cls.block == 0), t.name
    inj.restore()


def test_multipliers_are_normalized_over_the_flags_targets_and_kept_for_subsets():
    """resolve_schedule fixes the multipliers on the run's targets; with_targets (layer_sensitivity) keeps them."""
    model = tiny_llama(layers=2)
    spec = make_noise_spec("gaussian", targets="mlp", schedule=make_schedule("linear", 1, 3))
    resolved = resolve_schedule(spec, model, select(model, spec))
    assert resolved.multipliers == pytest.approx([1 / 5 ** 0.5, 3 / 5 ** 0.5])
    sub = resolved.with_targets("mlp", "1")
    assert NoiseInjector(model, sub).spec.multipliers == resolved.multipliers
    assert NoiseInjector(model, spec.with_targets("mlp", "1")).spec.multipliers == pytest.approx([1 / 3, 1.0])
    with pytest.raises(NoisyNNError, match="has 3 values but the model has 2 blocks"):
        NoiseInjector(model, make_noise_spec(schedule=make_schedule("table", values=[1, 2, 3])))


def test_every_experiment_with_a_noise_type_takes_the_schedule_flags_and_the_explorer_none():
    assert "--layer_schedule" not in {s for a in registry.parser("ui")._actions for s in a.option_strings}
    for name in registry.names():
        parser = registry.parser(name)
        flags = {s for a in parser._actions for s in a.option_strings}
        if "--noise_type" in flags:
            assert {"--layer_schedule", "--schedule_start", "--schedule_end", "--schedule_file",
                    "--schedule_normalize"} <= flags, name


def sweep_argv(model_dir, text_file, out, *extra):
    return ["--model", str(model_dir), "--text_file", str(text_file), "--eval_tokens", "32", "--max_length", "32",
            "--n_levels", "2", "--n_trials", "1", "--max_noise", "0.1", "--n_samples", "1", "--max_new_tokens", "2",
            "--entropy_tokens", "1", "--quiet", "--out", str(out), *extra]


def test_sweep_records_the_schedule_and_refuses_a_wrong_table(tiny_model_dir, text_file, tmp_path, capsys):
    sweep = registry.run_module("sweep")
    table = tmp_path / "table.txt"
    table.write_text("1\n2\n3\n")
    bad = tmp_path / "bad"
    err = exits_2_with_one_line(sweep.main, sweep_argv(tiny_model_dir, text_file, bad, "--layer_schedule", "table",
                                                       "--schedule_file", str(table)), capsys)
    assert "has 3 values but the model has 2 blocks" in err and not bad.exists()
    err = exits_2_with_one_line(sweep.main, sweep_argv(tiny_model_dir, text_file, bad, "--schedule_start", "1"), capsys)
    assert "need --layer_schedule" in err and not bad.exists()
    table.write_text("0.5, 1.5\n")
    out = tmp_path / "run"
    argv = sweep_argv(tiny_model_dir, text_file, out, "--layer_schedule", "table", "--schedule_file", str(table))
    assert sweep.main(argv) == 0
    meta = json.loads((out / "run.json").read_text())
    rec = meta["layer_schedule"]
    assert rec["label"] == "table:table.txt,energy" and rec["values"] == [0.5, 1.5] and rec["n_blocks"] == 2
    assert rec["multipliers"] == pytest.approx([0.5 / 1.25 ** 0.5, 1.5 / 1.25 ** 0.5])
    assert meta["injection"]["layer_schedule"] == rec and meta["inputs"]["schedule_file"]["path"] == str(table)
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].split(",")[7] == "layer_schedule" and all('"table:table.txt,energy"' in ln for ln in lines[1:])
    assert sweep.main(argv) == 0  # resumes: same flags, same file
    table.write_text("1, 1.5\n")
    err = exits_2_with_one_line(sweep.main, argv, capsys)  # the file changed: another run
    assert "schedule_file" in err


def test_sweep_without_a_schedule_writes_as_before_and_compares_with_one(tiny_model_dir, text_file, tmp_path):
    sweep = registry.run_module("sweep")
    out = tmp_path / "constant"
    assert sweep.main(sweep_argv(tiny_model_dir, text_file, out)) == 0
    meta = json.loads((out / "run.json").read_text())
    assert "layer_schedule" not in meta and "layer_schedule" not in meta["injection"]
    assert not any(k.startswith("schedule") or k == "layer_schedule" for k in meta["config"])
    assert "layer_schedule" not in (out / "results.csv").read_text().splitlines()[0]
    lin = tmp_path / "linear"
    assert sweep.main(sweep_argv(tiny_model_dir, text_file, lin, "--layer_schedule", "linear", "--schedule_start",
                                 "0.5", "--schedule_end", "1.5")) == 0
    report = registry.report_module("sweep")
    table = report.compare_table([lin, out])
    rows = [ln for ln in table.splitlines() if ln.startswith("| linear") or ln.startswith("| constant")]
    assert rows[0].startswith("| constant | 0 |") and "| linear:0.5->1.5,energy | 0.1 | 1 |" in table
    assert rows[0].endswith("| 1 [1, 1] |") and "sigma at 2x clean perplexity" in table
    assert report.plot_compare([out, lin], tmp_path / "cmp.png").is_file()
