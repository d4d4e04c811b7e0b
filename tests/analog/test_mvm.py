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
from noisynn.tiling import parse_tile_size, split_sizes
from noisynn.analog.tiles import tile_layout
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


@pytest.mark.parametrize("shape,tile", [((1536, 576), (512, 512)), ((50, 1025), (512, 16)), ((7, 9), (0, 0))])
def test_converters_and_device_mapping_tile_a_layer_identically(shape, tile):
    from noisynn.tiling import tile_blocks

    assert tile_layout(shape[0], shape[1], tile).blocks() == tile_blocks(shape, tile)
