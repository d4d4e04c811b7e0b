"""The injector keeps no second copy of the weights, and gives the numbers a stored copy and draw gave."""

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tests.helpers import tiny_gpt2, tiny_llama
from noisynn.clean_weights import CleanWeights, resolve_where
from noisynn.errors import NoisyNNError
from noisynn.inject import NoiseInjector, unit_scale
from noisynn.targets import select_targets
from noisynn.seeding import derive_seed, make_generator
from noisynn.spec import make_noise_spec, spec_from_args

WHERE = ("disk", "cpu", "memory")


@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=3), min_size=1, max_size=4),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]),
       where=st.sampled_from(WHERE), seed=st.integers(0, 2**31))
def test_store_gives_back_every_tensor_bit_exactly(shapes, dtype, where, seed):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    store = CleanWeights(tensors, where)
    originals = [t.clone() for t in tensors]
    for t in tensors:
        t.add_(1.0)  # the model now carries noise
    for i, t in enumerate(tensors):
        got = store[i]
        assert got.dtype == dtype and got.shape == t.shape and torch.equal(got, originals[i])
        store.restore(i, t)
        assert torch.equal(t, originals[i])
    assert len(store) == len(tensors) and [torch.equal(a, b) for a, b in zip(store, originals)] == [True] * len(store)
    assert store.resident_bytes == (0 if where == "disk" else sum(t.numel() * t.element_size() for t in tensors))
    store.close()


def test_restore_into_a_non_contiguous_weight():
    w = torch.randn(6, 4)
    store = CleanWeights([w.t()], "disk")
    view = w.t()
    view.mul_(3)
    store.restore(0, view)
    assert torch.equal(view, store[0]) and not view.is_contiguous()


def test_where_is_checked_and_auto_keeps_cpu_weights_on_disk(monkeypatch):
    assert resolve_where("auto", [torch.zeros(2)]) == "disk"
    monkeypatch.setenv("NOISYNN_CLEAN_WEIGHTS", "memory")
    assert resolve_where("auto", [torch.zeros(2)]) == "memory"
    assert resolve_where("cpu", [torch.zeros(2)]) == "cpu"
    monkeypatch.setenv("NOISYNN_CLEAN_WEIGHTS", "ram")
    with pytest.raises(NoisyNNError, match="known: auto, disk, cpu, memory"):
        resolve_where("auto", [torch.zeros(2)])


def test_spill_folder_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("NOISYNN_SPILL_DIR", str(tmp_path / "missing"))
    with pytest.raises(NoisyNNError, match="is not a folder"):
        CleanWeights([torch.zeros(3)], "disk")
    monkeypatch.setenv("NOISYNN_SPILL_DIR", str(tmp_path))
    CleanWeights([torch.zeros(3)], "disk")
    assert list(tmp_path.iterdir()) == []  # the file is unlinked at once: nothing is left behind


def _stored_draw_weights(model, spec, seed, sigma):
    """What the former injector computed: a clean clone, one unit draw per tensor seeded by (seed, name), kept."""
    out = {}
    for t in select_targets(model, spec.targets):
        clean = t.param.detach().clone()
        u = unit_scale(clean, spec.scale, t.out_axis)
        state = spec.noise.program(clean, u, make_generator(derive_seed(seed, t.name), "cpu"), t.out_axis)
        w = torch.empty_like(clean)
        spec.noise.weights(clean, state, sigma, u, make_generator(derive_seed(seed, t.name, float(sigma)), "cpu"), w)
        out[t.name] = w
    return out


@pytest.mark.parametrize("noise,scale,params,sigma", [
    ("gaussian", "absolute", None, 0.05), ("student_t", "relative", {"df": 3.0}, 0.1),
    ("pcm", "relative_channel", {"t_seconds": 3600.0}, 1.0), ("stuck_at", "relative_channel", None, 0.2),
    ("pcm_afm", "relative_channel", None, 1.0)])
@pytest.mark.parametrize("where", WHERE)
def test_lean_injector_gives_the_stored_draws_numbers(noise, scale, params, sigma, where):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = make_noise_spec(noise, params, scale, "blocks")
    expected = _stored_draw_weights(model, spec, 11, sigma)
    inj = NoiseInjector(model, spec, clean_weights=where)
    for level in (sigma / 2, sigma):  # a second level from the same clean weights, not stacked on the first
        inj.realize(11, level)
    for t in inj.targets:
        assert torch.equal(t.param.detach(), expected[t.name]), t.name
    inj.restore()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("noise,params", [("pcm", {"t_seconds": 86400.0, "drift_compensation": True}),
                                          ("pcm", {"tile_size": (16, 16)}), ("stuck_at", {"tile_size": (16, 0)}),
                                          ("pcm_afm", {"tile_size": (16, 0)})])
def test_injector_keeps_no_tensor_of_a_state(noise, params):
    model = tiny_gpt2()
    inj = NoiseInjector(model, noise, "relative_channel", noise_params=params)
    inj.realize(3, 0.5)
    assert inj.clean.resident_bytes == 0
    for state in inj.states:  # a tiled mapping's w_max is a weight-sized tensor: formed again, not kept
        assert not [k for k, v in vars(state).items() if isinstance(v, torch.Tensor)]
    assert inj.state(0).seed == inj.states[0].seed
    inj.restore()


def test_noise_drawn_on_the_device_is_reproducible_and_on_cpu_the_same():
    a, b = tiny_llama(), tiny_llama()
    cpu = make_noise_spec("gaussian", None, "absolute", "blocks")
    dev = replace(cpu, draw_on="device")
    NoiseInjector(a, cpu).realize(4, 0.1)
    NoiseInjector(b, dev).realize(4, 0.1)
    # On a CPU the weight's device is the CPU: the same stream, the same noise.
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_noise_draw_flag_reaches_the_spec_and_is_left_out_of_the_config_unless_given():
    from noisynn.experiments.sweep.run import parse

    assert spec_from_args(parse([])).draw_on == "cpu" and "noise_draw" not in vars(parse([]))
    assert spec_from_args(parse(["--noise_draw", "device"])).draw_on == "device"


@pytest.mark.parametrize("where,draw_on,programs_per_level", [("disk", "cpu", 0), ("memory", "cpu", 0),
                                                              ("cpu", "device", 1)])
def test_unit_draws_are_formed_once_per_seed_and_kept_beside_the_clean_weights(where, draw_on, programs_per_level,
                                                                                monkeypatch):
    model = tiny_llama()
    spec = replace(make_noise_spec("gaussian", None, "absolute", "blocks"), draw_on=draw_on)
    inj = NoiseInjector(model, spec, clean_weights=where)
    calls = []
    original = type(spec.noise).program
    monkeypatch.setattr(type(spec.noise), "program", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    n = len(inj.targets)
    inj.realize(1, 0.1)
    first = {t.name: t.param.detach().clone() for t in inj.targets}
    inj.realize(1, 0.0)
    inj.realize(1, 0.1)
    assert len(calls) == n + n * programs_per_level
    assert all(torch.equal(t.param.detach(), first[t.name]) for t in inj.targets)
    inj.realize(2, 0.1)  # a new seed draws anew
    assert len(calls) == 2 * n + n * programs_per_level
    inj.restore()
