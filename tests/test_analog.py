"""The analog forward as aihwkit computes it (noisynn.converters, noisynn.presets, noisynn.compensation).

Each of issue 13's differences 3-7 has a test here that fails on the earlier whole-layer, clip-only,
frozen-read-noise, pre-ADC-compensation, normalized-units code. Sources cited are IBM/aihwkit at commit 4545f11.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noisynn.converters import (AnalogIO, ConverterHooks, analog_matmul, parse_tile_size, split_sizes, tile_layout,
                                tile_readout, weight_scales)
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
