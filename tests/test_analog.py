"""The analog forward as aihwkit computes it (noisynn.analog.hooks, noisynn.analog.presets, noisynn.analog.compensation).

Each of issue 13's differences 3-7 has a test here that fails on the earlier whole-layer, clip-only,
frozen-read-noise, pre-ADC-compensation, normalized-units code. Sources cited are IBM/aihwkit at commit 4545f11.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from noisynn.analog.mvm import AnalogIO, analog_matmul, tile_readout
from noisynn.analog.hooks import ConverterHooks
from noisynn.tiling import parse_tile_size, split_sizes
from noisynn.analog.tiles import tile_layout, weight_scales
from noisynn.errors import NoisyNNError

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=gen(seed), dtype=F64) * scale


OFF = dict(dac_bits=None, adc_bits=None, out_noise=0.0, out_bound=None)


# ---------------------------------------------------------------- tiles (difference 3)

def test_split_follows_aihwkit_tile_array():
    # aihwkit simulator/tiles/array.py l.94-97: ceil(size / max) near-equal parts
    assert split_sizes(576, 512) == [288, 288]
    assert split_sizes(1536, 512) == [512, 512, 512]
    assert split_sizes(1025, 512) == [342, 342, 341]
    assert split_sizes(100, 512) == [100] and split_sizes(700, 0) == [700]
    lay = tile_layout(1536, 576, (512, 512))
    assert lay.in_sizes == (288, 288) and lay.out_sizes == (512, 512, 512)
    assert parse_tile_size("512x256") == (512, 256) and parse_tile_size(0) == (0, 0)
    with pytest.raises(NoisyNNError):
        parse_tile_size("5x5x5")


def test_adc_per_tile_differs_from_whole_layer():
    """Per-tile abs-max and ADC: a layer of 600 inputs on 300-input tiles is not the whole-layer computation."""
    x, w = rand(256, 600, seed=1), rand(40, 600, seed=2, scale=0.05)
    x[:, :300] *= 10  # the two input tiles see very different ranges
    io = dict(dac_bits=6, adc_bits=6, out_noise=0.0, out_bound=2.0, bound_management="none")
    tiled = analog_matmul(x, w, AnalogIO(**io, tile_size=(300, 512)))
    whole = analog_matmul(x, w, AnalogIO(**io, tile_size=0))
    exact = x @ w.T
    assert not torch.allclose(tiled, whole)
    # per tile, the small inputs keep their resolution: the tiled result is closer to the exact product
    assert (tiled - exact).norm() < (whole - exact).norm()
    # and it equals the sum of the two tiles computed one by one
    halves = sum(analog_matmul(x[:, s], w[:, s], AnalogIO(**io, tile_size=0))
                 for s in (slice(0, 300), slice(300, 600)))
    assert torch.allclose(tiled, halves, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- invariants

@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(1, 70), n_out=st.integers(1, 40), t_in=st.integers(0, 32), t_out=st.integers(0, 32),
       seed=st.integers(0, 1000), mode=st.sampled_from(["dynamic", "none", 2.0]))
def test_everything_off_is_the_exact_product(n_in, n_out, t_in, t_out, seed, mode):
    x, w = rand(5, n_in, seed=seed), rand(n_out, n_in, seed=seed + 1)
    io = AnalogIO(**OFF, input_range=mode, tile_size=(t_in, t_out))
    ref = x.clamp(-1, 1) @ w.T if mode == "none" else (x.clamp(-2, 2) @ w.T if mode == 2.0 else x @ w.T)
    assert torch.allclose(analog_matmul(x, w, io), ref, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(2, 60), n_out=st.integers(1, 30), dac=st.sampled_from([None, 3, 6, 8]),
       adc=st.sampled_from([None, 4, 9]), bound=st.sampled_from([0.5, 2.0, 1e6]), per_channel=st.booleans(),
       seed=st.integers(0, 1000))
@example(n_in=2, n_out=1, dac=3, adc=4, bound=2.0, per_channel=False, seed=1)  # a tie at -3.5 ADC steps
def test_whole_layer_normalized_is_the_earlier_convention(n_in, n_out, dac, adc, bound, per_channel, seed):
    """tile_size 0 + out_noise_units normalized + no bound management = the earlier per-layer formula:
    r = max|x| per token, x_q = round(x / r h) r / h, y_n = x_q W^T / (r w_max), clip, ADC, y = y_n r w_max."""
    x, w = rand(7, n_in, seed=seed), rand(n_out, n_in, seed=seed + 1)
    io = AnalogIO(dac, adc, 0.0, bound, per_channel=per_channel, tile_size=0, out_noise_units="normalized",
                  bound_management="none")
    r = x.abs().amax(dim=-1, keepdim=True)
    xq = x if dac is None else torch.round(x / r * (2 ** dac - 2) / 2) * r / ((2 ** dac - 2) / 2)
    w_max = w.abs().amax(dim=1) if per_channel else w.abs().max()
    yn = (xq @ w.T / (r * w_max)).clamp(-bound, bound)
    tie = torch.zeros_like(yn, dtype=torch.bool)
    if adc:
        step = 2 * bound / (2 ** adc - 2)
        u = yn / step
        # An exact half step (e.g. y_n = 1 from a lone full-scale input on the largest weight) may round
        # either way after the code's different order of float operations: allow one ADC step there only.
        tie = ((u - u.floor()) - 0.5).abs() < 1e-9
        yn = torch.round(u) * step
    got, ref = analog_matmul(x, w, io), yn * r * w_max
    assert torch.allclose(got[~tie], ref[~tie], rtol=1e-9, atol=1e-9)
    if tie.any():
        one_step = (step * r * w_max).expand_as(ref)[tie]
        assert bool(((got[tie] - ref[tie]).abs() <= one_step * (1 + 1e-9)).all())


# ---------------------------------------------------------------- bound management (difference 5)

def test_iterative_bound_management_recovers_what_clipping_loses():
    x, w = rand(400, 64, seed=3), rand(16, 64, seed=4, scale=0.5)
    exact = x @ w.T
    base = dict(dac_bits=None, adc_bits=None, out_noise=0.0, out_bound=1.5, tile_size=0)
    clipped = analog_matmul(x, w, AnalogIO(**base, bound_management="none"))
    managed = analog_matmul(x, w, AnalogIO(**base, bound_management="iterative"))
    r = x.abs().amax(dim=-1, keepdim=True)
    saturated = (exact / r).abs().amax(dim=-1) > 1.5
    assert 0 < int(saturated.sum()) < 400
    assert torch.allclose(managed, exact, rtol=1e-10, atol=1e-10)  # every vector recovered (no DAC: r up to 1024)
    assert not torch.allclose(clipped[saturated], exact[saturated])
    assert float((clipped / r).abs().max()) <= 1.5 + 1e-12  # NONE clips at the bound


def test_bound_management_redoes_only_the_saturated_vectors_with_fresh_noise():
    x, w = rand(300, 64, seed=5), rand(16, 64, seed=6, scale=0.2)
    base = dict(dac_bits=7, adc_bits=9, out_noise=0.06, out_bound=1.5, tile_size=0)
    clipped = analog_matmul(x, w, AnalogIO(**base, bound_management="none"), generator=gen(9))
    managed = analog_matmul(x, w, AnalogIO(**base, bound_management="iterative"), generator=gen(9))
    r = x.abs().amax(dim=-1, keepdim=True)
    hit = (clipped / r).abs().amax(dim=-1) >= 1.5 - 1e-9  # vectors whose first pass saturated
    assert 0 < int(hit.sum()) < 300
    assert torch.equal(managed[~hit], clipped[~hit])  # the same first pass (same draws), kept
    assert not torch.allclose(managed[hit], clipped[hit])


def test_bound_management_stops_where_aihwkit_stops():
    # aihwkit analog_mvm.py l.116-160: stop once r > max_bm_factor or r > max_bm_res / (2 inp_res)
    assert AnalogIO().bm_limit() == 16  # 7-bit DAC: 0.25 / (2 / 126) = 15.75
    assert AnalogIO(dac_bits=8).bm_limit() == 32
    assert AnalogIO(dac_bits=None).bm_limit() == 1024  # max_bm_factor 1000
    assert AnalogIO(dac_bits=None, max_bm_factor=4).bm_limit() == 8
    x = torch.zeros(1, 4, dtype=F64)
    x[0, 0] = 1.0
    w = torch.full((1, 4), 100.0, dtype=F64)  # needs r = 100 / 1.5 -> 128 > 16: stays saturated at r = 16
    y = analog_matmul(x, w, AnalogIO(dac_bits=7, adc_bits=None, out_noise=0.0, out_bound=1.5, tile_size=0))
    assert float(y) == pytest.approx(1.5 * 16)


# ---------------------------------------------------------------- per-MVM weight noise (difference 6)

@pytest.mark.parametrize("kind", ["additive_constant", "pcm_read"])
def test_w_noise_has_aihwkit_std(kind):
    """rpucuda rpu_forward_backward_pass.cpp l.341-375: additive_constant std = w_noise ||x||_2,
    pcm_read std_i = w_noise sqrt(sum_j |W_ij| x_j^2) (inputs within the DAC range, weights as stored)."""
    n = 40000
    x1 = torch.rand(1, 32, generator=gen(1), dtype=F64) * 2 - 1
    x1[0, 0] = 1.0  # max|x| = 1: noise management leaves x unchanged
    w = rand(8, 32, seed=2, scale=0.3)
    x = x1.expand(n, -1)
    io = AnalogIO(**OFF, w_noise=0.05, w_noise_type=kind, tile_size=0)
    err = analog_matmul(x, w, io, generator=gen(3)) - x @ w.T
    if kind == "additive_constant":
        expected = 0.05 * x1.norm() * torch.ones(8, dtype=F64)
    else:
        expected = 0.05 * (w.abs() @ (x1[0] ** 2)).sqrt()
    assert torch.allclose(err.std(dim=0), expected, rtol=0.03)
    assert abs(float(err.mean())) < 0.01 * float(expected.mean())


def tiny_layer(n_in=64, n_out=48, seed=0, bias=True):
    from torch import nn

    torch.manual_seed(seed)
    lin = nn.Linear(n_in, n_out, bias=bias).double()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Module()
            self.mlp.up_proj = lin

        def forward(self, x):
            return self.mlp.up_proj(x)

    return Wrap()


def hooks_on(model, io, seed=0):
    from noisynn.targets import select_targets

    return ConverterHooks(model, select_targets(model, "all"), io, seed)


def test_w_noise_is_fresh_at_every_call_and_leaves_the_weights():
    model = tiny_layer()
    w0 = model.mlp.up_proj.weight.detach().clone()
    x = rand(16, 64, seed=1)
    with torch.no_grad(), hooks_on(model, AnalogIO(**OFF, w_noise=0.02, w_noise_type="pcm_read")):
        a, b = model(x), model(x)
    assert not torch.allclose(a, b)  # drawn per MVM, not frozen per evaluation
    assert torch.equal(model.mlp.up_proj.weight, w0)
    with torch.no_grad():
        assert torch.allclose(model(x), x @ w0.T + model.mlp.up_proj.bias)  # hooks removed


def test_input_noise_after_the_dac():
    x = torch.zeros(20000, 16, dtype=F64)
    x[:, 0] = 1.0
    w = torch.eye(16, dtype=F64)[:4]
    io = AnalogIO(dac_bits=7, adc_bits=None, out_noise=0.0, out_bound=None, inp_noise=0.1, tile_size=0)
    err = analog_matmul(x, w, io, generator=gen(4)) - x @ w.T
    assert torch.allclose(err.std(dim=0), torch.full((4,), 0.1, dtype=F64), rtol=0.03)


# ---------------------------------------------------------------- output-noise units (difference 7)

def test_aihwkit_default_units_are_the_tile_units():
    io = AnalogIO()
    assert io.out_noise_units == "tile" and io.omega == 0 and io.tile_size == (512, 512)
    assert io.bound_management == "iterative" and io.dac_bits == 7 and io.adc_bits == 9
    assert io.out_noise == 0.06 and io.out_bound == 12.0


@pytest.mark.parametrize("units", ["tile", "normalized"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_out_noise_std_in_each_unit(units, per_channel):
    n = 30000
    x = rand(n, 32, seed=7)
    w = rand(8, 32, seed=8, scale=0.2) * torch.linspace(0.2, 2.0, 8, dtype=F64)[:, None]
    io = AnalogIO(dac_bits=None, adc_bits=None, out_noise=0.06, out_bound=None, out_noise_units=units,
                  per_channel=per_channel, tile_size=0)
    err = analog_matmul(x, w, io, generator=gen(5)) - x @ w.T
    r = x.abs().amax(dim=-1, keepdim=True)
    unit = r if units == "tile" else r * (w.abs().amax(dim=1) if per_channel else w.abs().max())
    std = (err / unit).std(dim=0)
    assert torch.allclose(std, torch.full((8,), 0.06, dtype=F64), rtol=0.03)


def test_weight_scaling_per_tile():
    """omega > 0: the abs-max of each tile (not of the layer) maps to omega (periphery.py l.483-495)."""
    w = rand(6, 40, seed=9)
    w[:, :20] *= 10
    io = AnalogIO(out_noise_units="normalized", tile_size=(20, 0))
    s = weight_scales(w, io)
    assert s.shape == (2, 1, 6)
    assert torch.allclose(s[0, 0], w[:, :20].abs().max().expand(6)) and torch.allclose(s[1, 0], w[:, 20:].abs().max()
                                                                                      .expand(6))
    s = weight_scales(w, AnalogIO(weight_scaling_omega=0.5, per_channel=True, tile_size=(20, 0)))
    assert torch.allclose(s[1, 0], w[:, 20:].abs().amax(dim=1) / 0.5)
    assert weight_scales(w, AnalogIO()) is None


# ---------------------------------------------------------------- hooks, dtypes, devices

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_hooks_run_in_the_model_dtype(dtype):
    model = tiny_layer().to(dtype)
    x = rand(10, 64, seed=3).to(dtype)
    with torch.no_grad(), hooks_on(model, AnalogIO(tile_size=(16, 16))):
        y = model(x)
    assert y.dtype == dtype and y.shape == (10, 48) and torch.isfinite(y.float()).all()


def test_hooks_on_a_model_match_analog_matmul_with_the_same_stream():
    model = tiny_layer()
    lin = model.mlp.up_proj
    x = rand(12, 64, seed=2)
    io = AnalogIO(tile_size=(20, 20))
    with torch.no_grad(), hooks_on(model, io, seed=5) as hooks:
        y = model(x)
        gen_ = hooks.generators
        gen_.reseed(5)
        ref = analog_matmul(x, lin.weight, io, generator=gen_.on("cpu")) + lin.bias
    assert torch.equal(y, ref)


def test_gpt2_conv1d_layers(gpt2):
    from noisynn.targets import select_targets

    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        ref = gpt2(input_ids=ids).logits
        io = AnalogIO(dac_bits=None, adc_bits=None, out_noise=0.0, out_bound=None, tile_size=(16, 16))
        with ConverterHooks(gpt2, select_targets(gpt2, "blocks"), io):
            y = gpt2(input_ids=ids).logits
    assert torch.allclose(y, ref, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_without_noise():
    x, w = rand(64, 600, seed=1), rand(300, 600, seed=2, scale=0.05)
    io = AnalogIO(out_noise=0.0, out_bound=0.3)
    assert torch.allclose(analog_matmul(x.cuda(), w.cuda(), io).cpu(), analog_matmul(x, w, io), atol=1e-9)
    y = analog_matmul(x.cuda().float(), w.cuda().float(), AnalogIO(), generator=torch.Generator("cuda"))
    assert y.is_cuda and torch.isfinite(y).all()


# ---------------------------------------------------------------- drift compensation (difference 4)

YEAR = 365 * 86400.0


def pcm_injector(model, method, tile_size=(32, 32), t_seconds=YEAR):
    from noisynn.inject import NoiseInjector
    from noisynn.spec import make_noise_spec

    spec = make_noise_spec("pcm", {"t_seconds": t_seconds, "drift_compensation": True, "compensation_method": method,
                                   "tile_size": tile_size}, scale="relative_channel", targets="all")
    return NoiseInjector(model, spec)


def test_readout_without_converters_is_the_exact_per_tile_factor():
    """No converters: mean_j |W e_j| is exact, so the readout factor = sum|W_prog| / sum|W_t| per tile (folded)."""
    weights = {}
    for method in ("readout", "exact"):
        model = tiny_layer(n_in=64, n_out=48)
        inj = pcm_injector(model, method)
        inj.realize(3, 1.0)
        weights[method] = model.mlp.up_proj.weight.detach().clone()
        state = inj.states[0]
        assert 1.2 < state.alpha < 3.0  # a year of drift: g(t) / g_prog about 0.5
        if method == "readout":
            w_prog = inj.noise.programmed_weights(inj.clean[0], inj.state(0), 1.0)
            for o, i in ((slice(0, 48), slice(0, 32)), (slice(0, 48), slice(32, 64))):  # 2 tiles of 32 inputs
                assert float(weights[method][o, i].abs().sum()) == pytest.approx(float(w_prog[o, i].abs().sum()))
    assert torch.allclose(weights["readout"], weights["exact"], rtol=1e-6, atol=1e-9)


def test_readout_after_the_adc_differs_from_the_folded_factor_under_a_saturating_adc():
    """aihwkit multiplies the tile output by alpha after the ADC; folding alpha into the weights amplifies the
    drifted outputs before the ADC: with an ADC that saturates the two differ, without converters they agree."""
    io = AnalogIO(dac_bits=8, adc_bits=8, out_noise=0.0, out_bound=0.6, bound_management="none",
                  out_noise_units="normalized", tile_size=(32, 48))
    x = rand(256, 64, seed=11)
    out = {}
    for method in ("readout", "exact"):
        model = tiny_layer(n_in=64, n_out=48)
        inj = pcm_injector(model, method)
        with torch.no_grad():
            hooks = hooks_on(model, io, seed=1)
            inj.attach(hooks)
            inj.realize(3, 1.0)
            out[method] = model(x)
            if method == "readout":
                alpha = hooks.layers[0].alpha
                assert alpha.shape == (2, 1) and bool((alpha > 1.05).all())  # drift shrank the outputs: alpha > 1
                # the stored weights are the uncompensated W_t
                assert float(inj.states[0].l1_read) == pytest.approx(float(model.mlp.up_proj.weight.abs().sum()),
                                                                   rel=1e-6)
            hooks.remove()
    assert not torch.allclose(out["readout"], out["exact"], rtol=1e-3, atol=1e-3)
    # after the ADC the factor scales the clipped outputs too (bound x alpha); folded, they clip at the bound
    bias = tiny_layer().mlp.up_proj.bias.detach()
    assert (out["readout"] - bias).abs().amax() > (out["exact"] - bias).abs().amax()


def test_readout_factor_matches_the_exact_one_when_the_converters_are_transparent():
    io = AnalogIO(dac_bits=None, adc_bits=None, out_noise=0.0, out_bound=None, tile_size=(32, 32))
    model = tiny_layer(n_in=64, n_out=48)
    inj = pcm_injector(model, "readout")  # the same 2 x 2 tiles (input tile major, as noisynn.noise.mapping)
    with torch.no_grad(), hooks_on(model, io) as hooks:
        inj.attach(hooks)
        inj.realize(3, 1.0)
        alpha = hooks.layers[0].alpha.flatten()
    state = inj.states[0]
    exact = torch.tensor([p / r for p, r in zip(state.l1_programmed_tiles, state.l1_read_tiles)], dtype=F64)
    assert torch.allclose(alpha, exact, rtol=1e-6)
    inj.restore()
    assert hooks.layers[0].alpha is None  # clean weights: no factor


def test_readout_probe_goes_through_the_noisy_forward():
    w = rand(16, 32, seed=1, scale=0.1)
    noisy = AnalogIO(out_noise=0.5, tile_size=0)
    a, b = tile_readout(w, noisy, generator=gen(1)), tile_readout(w, noisy, generator=gen(2))
    assert not torch.equal(a, b)
    clean = tile_readout(w, AnalogIO(**OFF, tile_size=0))
    assert torch.allclose(clean, w.abs().mean().reshape(1, 1))


# ---------------------------------------------------------------- presets, flags, run.json

def test_presets_resolve_to_their_documented_values():
    from noisynn.analog.presets import PRESETS, get_preset

    assert set(PRESETS) == {"aihwkit_default", "aihwkit_hwa", "afm"}
    assert get_preset("aihwkit_default") == AnalogIO(preset="aihwkit_default")  # IOParameters() defaults
    hwa = get_preset("aihwkit_hwa")  # presets/inference.py l.78-132
    assert (hwa.dac_bits, hwa.adc_bits, hwa.out_noise, hwa.out_bound) == (8, 8, 0.04, 10.0)
    assert (hwa.w_noise, hwa.w_noise_type, hwa.bound_management) == (0.0175, "pcm_read", "none")
    assert hwa.tile_size == (512, 0) and hwa.omega == 1.0 and hwa.per_channel and hwa.input_range == "calibrated"
    afm = get_preset("afm")  # AFM config.yaml l.26-30
    assert (afm.dac_bits, afm.adc_bits, afm.out_noise, afm.out_bound) == (8, 8, 0.0, 14.0)
    assert afm.tile_size == (512, 0) and afm.input_range == "calibrated" and afm.range_std == 18.0
    for p in PRESETS.values():
        assert p.sources and all(".py" in s or ".yaml" in s for s in p.sources)
    assert get_preset("afm", out_noise=0.02).out_noise == 0.02
    with pytest.raises(NoisyNNError):
        get_preset("nope")


def test_flags_override_a_preset():
    from noisynn.experiments.sweep import run as sweep_run
    from noisynn.spec import converter_spec_from_args

    args = sweep_run.parse(["--analog_preset", "aihwkit_hwa", "--out_noise", "0.01", "--tile_size", "256x128",
                            "--bound_management", "iterative"])
    io = converter_spec_from_args(args).io
    assert io.preset == "aihwkit_hwa" and io.out_noise == 0.01 and io.tile_size == (256, 128)
    assert io.bound_management == "iterative" and io.w_noise == 0.0175
    assert converter_spec_from_args(sweep_run.parse(["--tile_size", "64"])) is None  # tiles alone: no converters
    io = converter_spec_from_args(sweep_run.parse(["--w_noise", "0.01", "--w_noise_type", "additive_constant"])).io
    assert io.w_noise == 0.01 and io.dac_bits is None and io.out_noise == 0.0


@pytest.mark.parametrize("flags", [["--tile_size", "5x5x5"], ["--bound_management", "sometimes"],
                                   ["--w_noise", "-1"], ["--analog_preset", "nope"], ["--inp_noise", "1e31"],
                                   ["--input_range", "sometimes"], ["--w_noise", "0.1"],
                                   ["--analog_preset", "afm", "--analog_io"], ["--max_bm_factor", "0.5"]])
def test_bad_analog_flags_exit_2_in_one_line(flags, tmp_path, capsys, tiny_model_dir, text_file):
    from noisynn.experiments.sweep import run as sweep_run

    out = tmp_path / "run"
    try:
        rc = sweep_run.main(["--model", str(tiny_model_dir), "--text_file", str(text_file), "--quiet",
                             "--out", str(out)] + flags)
    except SystemExit as err:
        rc = err.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "error" in err
    assert not out.exists()


def test_run_json_records_the_resolved_preset(tmp_path, tiny_model_dir, text_file):
    import json

    from noisynn.experiments.sweep import run as sweep_run

    out = tmp_path / "run"
    assert sweep_run.main(["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32",
                           "--max_length", "32", "--max_new_tokens", "2", "--n_samples", "1", "--quiet",
                           "--n_levels", "2", "--n_trials", "1", "--analog_preset", "aihwkit_hwa",
                           "--out_noise", "0.02", "--out", str(out)]) == 0
    conv = json.loads((out / "run.json").read_text())["converters"]
    assert conv["preset"] == "aihwkit_hwa" and conv["out_noise"] == 0.02 and conv["w_noise_type"] == "pcm_read"
    assert conv["tile_size"] == [512, 0] and conv["dac_steps"] == 254 and conv["calibration"]["rule"] == "3 x std"


def test_calibration_gives_one_static_range_per_input_tile():
    from torch import nn

    model = tiny_layer(n_in=64, n_out=8)
    table = rand(50, 64, seed=4)
    table[:, 32:] *= 5

    class Lm(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids, use_cache=False):
            return self.inner(table[input_ids])

    for rule, expect in ((0.0, [table[:, :32].abs().max(), table[:, 32:].abs().max()]),
                         (3.0, [3 * table[:, :32].std(), 3 * table[:, 32:].std()])):
        io = AnalogIO(dac_bits=8, adc_bits=None, out_noise=0.0, out_bound=None, input_range="calibrated",
                      range_std=rule, tile_size=(32, 0))
        with hooks_on(model, io) as hooks:
            ranges = hooks.calibrate(Lm(), torch.arange(50), max_length=64)  # one window: the std rule is exact
            assert ranges["mlp.up_proj"] == [pytest.approx(float(v)) for v in expect]
            x = table[:5]
            with torch.no_grad():
                y = model(x)
            r = torch.tensor(ranges["mlp.up_proj"], dtype=F64)
            xq = torch.cat([torch.round((x[:, :32] / r[0]).clamp(-1, 1) * 127) / 127 * r[0],
                            torch.round((x[:, 32:] / r[1]).clamp(-1, 1) * 127) / 127 * r[1]], dim=1)
            lin = model.mlp.up_proj
            assert torch.allclose(y, xq @ lin.weight.T + lin.bias, rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(n_in=st.integers(2, 50), n_out=st.integers(1, 30), t_in=st.integers(1, 20), t_out=st.integers(1, 20),
       seed=st.integers(0, 1000), units=st.sampled_from(["tile", "normalized"]), per_channel=st.booleans(),
       bm=st.sampled_from(["iterative", "none"]), mode=st.sampled_from(["dynamic", "none", 1.5]))
def test_a_tiled_layer_is_its_tiles_computed_one_by_one(n_in, n_out, t_in, t_out, seed, units, per_channel, bm, mode):
    """Without noise every tile is deterministic: the batched, padded computation equals each block of the
    weight computed alone (whole-layer tiles) and summed over input tiles; so does the drift readout."""
    x, w = rand(9, n_in, seed=seed, scale=2.0), rand(n_out, n_in, seed=seed + 1)
    settings_ = dict(dac_bits=5, adc_bits=6, out_noise=0.0, out_bound=1.0, out_noise_units=units,
                     per_channel=per_channel, bound_management=bm, input_range=mode)
    tiled = analog_matmul(x, w, AnalogIO(**settings_, tile_size=(t_in, t_out)))
    alone = AnalogIO(**settings_, tile_size=0)
    lay = tile_layout(n_out, n_in, (t_in, t_out))
    ref = torch.zeros(9, n_out, dtype=F64)
    readout = tile_readout(w, AnalogIO(**settings_, tile_size=(t_in, t_out)))
    for k, (o, i) in enumerate(lay.blocks()):
        ref[:, o] += analog_matmul(x[:, i], w[o, i], alone)
        expected = tile_readout(w[o, i], alone)[0, 0]
        assert float(readout[k // lay.n_out, k % lay.n_out]) == pytest.approx(float(expected), rel=1e-9)
    assert torch.allclose(tiled, ref, rtol=1e-9, atol=1e-9)


def test_the_baseline_readout_is_taken_once_per_realization():
    model = tiny_layer(n_in=64, n_out=48)
    inj = pcm_injector(model, "readout", t_seconds=3600.0)
    calls = []
    original = inj.noise.programmed_weights

    def counting(clean, state, level=None):
        calls.append(level)
        return original(clean, state, level)

    inj.noise.programmed_weights = counting
    io = AnalogIO(out_noise=0.02, tile_size=(32, 48))
    with torch.no_grad(), hooks_on(model, io) as hooks:
        inj.attach(hooks)
        inj.realize(3, 1.0)
        first = hooks.layers[0].alpha.clone()
        inj.noise.t_seconds = YEAR
        inj.apply(1.0)  # a later read of the same programming: the baseline is reused
        later = hooks.layers[0].alpha.clone()
        assert len(calls) == 1 and bool((later > first).all())
        inj.realize(4, 1.0)  # a new realization: a new baseline
        assert len(calls) == 2


def test_drift_over_time_with_a_preset_compensates_through_the_converters(tmp_path, tiny_model_dir, text_file):
    import json

    from noisynn.experiments.drift_over_time import run as drift
    from noisynn.runs.read import read_rows

    out = tmp_path / "run"
    assert drift.main(["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32",
                       "--max_length", "32", "--max_new_tokens", "2", "--n_samples", "1", "--entropy_tokens", "2",
                       "--quiet", "--times", "1y", "--n_trials", "1", "--digital_bits", "", "--analog_preset", "afm",
                       "--tile_size", "16", "--out", str(out)]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["converters"]["preset"] == "afm" and meta["converters"]["tile_size"] == [16, 16]
    assert meta["compensation"]["method"] == "readout"
    rows = {r["compensation"]: r for r in read_rows(out / "results.csv") if r["condition"] == "pcm"}
    assert rows[False]["alpha_mean"] == 1.0 and rows[True]["alpha_mean"] > 1.2  # a year of drift, per tile


def test_run_config_holds_the_resolved_analog_settings(tmp_path, tiny_model_dir, text_file):
    """A run folder resumes only under the same resolved converter settings, not just the same flags."""
    import json

    from noisynn.experiments.sweep import run as sweep_run

    out = tmp_path / "run"
    base = ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32", "--max_length",
            "32", "--max_new_tokens", "2", "--n_samples", "1", "--quiet", "--n_levels", "2", "--n_trials", "1",
            "--dac_bits", "6", "--out", str(out)]
    assert sweep_run.main(base) == 0
    analog = json.loads((out / "run.json").read_text())["config"]["analog"]
    assert analog["dac_bits"] == 6 and analog["tile_size"] == [512, 512] and analog["bound_management"] == "iterative"


@pytest.mark.parametrize("shape,tile", [((1536, 576), (512, 512)), ((50, 1025), (512, 16)), ((7, 9), (0, 0))])
def test_converters_and_device_mapping_tile_a_layer_identically(shape, tile):
    from noisynn.tiling import tile_blocks

    assert tile_layout(shape[0], shape[1], tile).blocks() == tile_blocks(shape, tile)
