"""noisynn's analog forward (``noisynn.analog.mvm.analog_matmul``) against aihwkit-lightning 2.1.0's on one layer.

Same weights, same inputs, lightning configured from the same settings by ``tests/lightning_map.py``
(its module doc lists the mapping, setting by setting, and what lightning does not have):

- DAC (dynamic per-token range and a fixed range with clipping), ADC and output-bound clipping,
  per input tile: agree to 1e-6 relative in float64; in float32 up to rounding ties (a value that
  lands within float32 precision of a rounding boundary may round to the neighbouring level).
- output noise: lightning adds it in TRAINING mode only, with std out_noise / sqrt(n_slices)
  r_t max|W_t| per slice t, so its layer is built in training mode (under no_grad, the input range
  not learned and not initialised from data) with out_noise x sqrt(n_slices) to get noisynn's
  per-tile out_noise (aihwkit's: every tile adds its own). Stds agree within 2% over 10^5 samples.
- units: noisynn's out_noise_units "normalized" (r x max|W_tile|) are lightning's; aihwkit's default "tile"
  (r x raw weight) equals lightning's with out_bound and out_noise divided by max|W_tile|, checked on a
  weight whose tiles share one max|W|.
- static ranges: noisynn's "calibrated" range per input tile against lightning's stored per-slice range.
- per-MVM weight noise (additive, relative to the tile's max|W|): lightning's ADD_NORMAL modifier,
  also training mode only, drawn once per forward call; compared on the marginal std of one token's
  outputs (10^5 samples).

Outside the cross-check (lightning lacks them): iterative bound management, noise management NONE
with converters, output tiles, input noise, PCM_READ weight noise, per-token independence of
weight noise. Skipped with a reason when aihwkit_lightning is not importable; ``make install``
installs it (requirements-test-nodeps.txt), so CI runs it.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.lightning_map import analog_io, lightning_available, lightning_linear, lightning_reference, split_sizes

needs_lightning = pytest.mark.skipif(not lightning_available(), reason="aihwkit-lightning is not installed "
                                     "(make install puts it in from requirements-test-nodeps.txt with --no-deps)")

IN, OUT = 96, 48

# name -> settings shared by both sides (lightning_map.rpu_config's keywords)
DETERMINISTIC = {
    "DAC 8b dynamic, whole layer": dict(dac_bits=8, tile_in=0),
    "DAC 7b fixed range 1.0 (inputs clip), tiles of 32": dict(dac_bits=7, input_range=1.0, tile_in=32),
    "bound 1.5 only (outputs clip), tiles of 32": dict(out_bound=1.5, tile_in=32),
    "aihwkit IOParameters: DAC 7b, ADC 9b, bound 12, tiles of 32": dict(dac_bits=7, adc_bits=9, out_bound=12.0,
                                                                          tile_in=32),
    "DAC 8b, ADC 8b, bound 1 (saturating), whole layer": dict(dac_bits=8, adc_bits=8, out_bound=1.0, tile_in=0),
    "static range 2.0: DAC 8b, ADC 8b, bound 10, tiles of 48": dict(dac_bits=8, adc_bits=8, out_bound=10.0,
                                                                    input_range=2.0, tile_in=48),
}


def noisynn_forward(x, weight, generator=None, **settings):
    from noisynn.analog.mvm import analog_matmul

    return analog_matmul(x, weight, analog_io(**settings), generator=generator)


def needs_analog_matmul():
    try:
        from noisynn.analog.mvm import analog_matmul
    except ImportError:
        pytest.skip("noisynn.analog.mvm.analog_matmul is not on this branch yet (issue 13, analog-core)")


def layer(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(OUT, IN, generator=g, dtype=dtype) * 0.05
    x = torch.randn(4, 50, IN, generator=g, dtype=dtype)  # (batch, tokens, inputs)
    x[..., :8] *= 3.0  # a few large inputs, so per-tile ranges differ
    return weight, x


def assert_relative(actual, expected, rtol):
    scale = expected.abs().max()
    err = (actual - expected).abs().max()
    assert err <= rtol * scale, f"max |difference| {float(err):.3g} > {rtol} x max|y| {float(scale):.3g}"


def test_make_installs_lightning_without_its_dependencies():
    """A fresh `make test` installs aihwkit-lightning 2.1.0 with --no-deps (its metadata pins torch exactly)."""
    from tests.helpers import ROOT

    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements-test-nodeps.txt").read_text().splitlines()]
    assert [p for p in pins if p] == ["aihwkit-lightning==2.1.0"]
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --no-deps -r requirements-test-nodeps.txt" in makefile
    stamp_rule = next(line for line in makefile.splitlines() if line.startswith("$(STAMP):"))
    assert "requirements-test-nodeps.txt" in stamp_rule


def test_split_sizes_are_aihwkits_equal_pieces():
    assert split_sizes(1536, 512) == [512, 512, 512]
    assert split_sizes(576, 512) == [288, 288]
    assert split_sizes(96, 40) == [32, 32, 32]
    assert split_sizes(100, 0) == [100]


@needs_lightning
@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_lightning_does_what_the_mapping_says(name):
    """The mapping's formula (lightning_map's module doc) is lightning's eval forward, to float64 precision."""
    weight, x = layer()
    settings = DETERMINISTIC[name]
    with torch.no_grad():
        got = lightning_linear(weight, **settings)(x)
    assert_relative(got, lightning_reference(x, weight, **settings), 1e-12)


@needs_lightning
@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_dac_adc_and_bound_clipping_agree_in_float64(name):
    needs_analog_matmul()
    weight, x = layer()
    settings = DETERMINISTIC[name]
    with torch.no_grad():
        expected = lightning_linear(weight, **settings)(x)
    got = noisynn_forward(x, weight, **settings)
    assert got.shape == expected.shape and got.dtype == torch.float64
    assert_relative(got, expected, 1e-6)
    # the setting is not a no-op: the analog result differs from the digital one by far more than 1e-6
    assert not torch.allclose(expected, x @ weight.T, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_bound_clipping_is_exercised():
    """The saturating settings above clip 9% and 12% of outputs (so their agreement tests the bound)."""
    weight, x = layer()
    for name in ("bound 1.5 only (outputs clip), tiles of 32", "DAC 8b, ADC 8b, bound 1 (saturating), whole layer"):
        s = {**DETERMINISTIC[name], "adc_bits": None}
        clipped = lightning_reference(x, weight, **s)
        unclipped = lightning_reference(x, weight, **{**s, "out_bound": None})
        assert float(((clipped - unclipped).abs() > 1e-9).double().mean()) > 0.05, name


@needs_lightning
def test_uneven_tiles_split_like_aihwkit():
    """96 inputs on tiles of at most 40: aihwkit and lightning use three tiles of 32, not 40 + 40 + 16."""
    needs_analog_matmul()
    weight, x = layer()
    settings = dict(dac_bits=8, adc_bits=8, out_bound=4.0, tile_in=40)
    with torch.no_grad():
        expected = lightning_linear(weight, **settings)(x)
    assert_relative(noisynn_forward(x, weight, **settings), expected, 1e-6)


@needs_lightning
def test_calibrated_ranges_per_tile_agree():
    """A static range per input tile (noisynn's "calibrated", passed to analog_matmul; lightning's stored
    per-slice input_range, not learned): inputs clip per tile, DAC 8b, ADC 8b, bound 4."""
    needs_analog_matmul()
    from noisynn.analog.mvm import analog_matmul

    weight, x = layer()
    ranges = torch.tensor([4.0, 1.0, 1.5], dtype=torch.float64)  # tile 0 holds the 3x inputs
    settings = dict(dac_bits=8, adc_bits=8, out_bound=4.0, tile_in=32)
    lit = lightning_linear(weight, input_range=1.0, **settings)
    lit.input_range.data.copy_(ranges)
    with torch.no_grad():
        expected = lit(x)
    got = analog_matmul(x, weight, analog_io(input_range="calibrated", **settings), input_range=ranges)
    assert_relative(got, expected, 1e-6)
    assert bool((x[..., 32:64].abs() > 1.0).any())  # the ranges do clip


@needs_lightning
def test_float32_agrees_up_to_rounding_ties():
    """float32: at most 0.5% of outputs off, each by at most one ADC step plus one DAC level's worth."""
    needs_analog_matmul()
    weight, x = layer(torch.float32)
    settings = DETERMINISTIC["aihwkit IOParameters: DAC 7b, ADC 9b, bound 12, tiles of 32"]
    with torch.no_grad():
        expected = lightning_linear(weight, **settings)(x)
    got = noisynn_forward(x, weight, **settings)
    assert got.dtype == torch.float32
    n_tiles = len(split_sizes(IN, settings["tile_in"]))
    r_w = x.abs().amax(-1, keepdim=True) * weight.abs().max()  # an upper bound on every tile's r_t w_t
    adc_step = 2 * settings["out_bound"] * r_w / (2 ** settings["adc_bits"] - 2)
    dac_step = 2 * r_w / (2 ** settings["dac_bits"] - 2)
    diff = (got - expected).abs()
    off = diff > 1e-5 * expected.abs().max()
    assert float(off.double().mean()) <= 0.005
    assert bool((diff <= n_tiles * (adc_step + dac_step) + 1e-5 * expected.abs().max()).all())


def residual_scale(x, weight, tile_in):
    """sqrt(sum_t (r_t max|W_t|)^2) per token: the std of the summed output noise per unit out_noise."""
    total = 0
    start = 0
    for size in split_sizes(weight.shape[1], tile_in):
        r = x[..., start:start + size].abs().amax(-1, keepdim=True)
        total = total + (r * weight[:, start:start + size].abs().max()) ** 2
        start += size
    return total.sqrt()


@needs_lightning
def test_output_noise_std_agrees_within_2_percent():
    """10^5 output samples (3,125 tokens x 32 outputs) on 2 tiles: noisynn's out_noise sigma per tile and
    lightning's out_noise sigma sqrt(2) (training mode) give the same std, sigma sqrt(sum_t (r_t w_t)^2)."""
    needs_analog_matmul()
    sigma, tile_in = 0.04, 32
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(32, 64, generator=g, dtype=torch.float64) * 0.05
    x = torch.randn(3125, 64, generator=g, dtype=torch.float64)
    clean = x @ weight.T
    scale = residual_scale(x, weight, tile_in)
    torch.manual_seed(2)  # lightning draws from the global generator
    with torch.no_grad():
        noisy_l = lightning_linear(weight, train=True, out_noise=sigma, tile_in=tile_in)(x)
    noisy_n = noisynn_forward(x, weight, generator=torch.Generator().manual_seed(3), out_noise=sigma,
                              tile_in=tile_in)
    std_l = float(((noisy_l - clean) / scale).std())
    std_n = float(((noisy_n - clean) / scale).std())
    assert abs(std_l / sigma - 1) < 0.02, std_l  # the mapping (sqrt(n_slices)) is right
    assert abs(std_n / std_l - 1) < 0.02, (std_n, std_l)
    # and the noise is fresh: two calls differ
    again = noisynn_forward(x, weight, generator=torch.Generator().manual_seed(4), out_noise=sigma, tile_in=tile_in)
    assert not torch.equal(again, noisy_n)


@needs_lightning
def test_tile_units_agree_when_every_tile_has_the_same_max():
    """aihwkit's default units (out_noise_units "tile": weights unscaled, bound and noise in units of r x raw
    weight) are lightning's normalized ones divided by max|W_t|: with one max|W| = 0.4 on every tile, noisynn's
    bound 0.5 / ADC and out_noise 0.02 equal lightning's bound 0.5 / 0.4 and out_noise 0.02 / 0.4 x sqrt(2)."""
    needs_analog_matmul()
    g = torch.Generator().manual_seed(8)
    weight = torch.randn(32, 64, generator=g, dtype=torch.float64) * 0.05
    weight[0, 0] = weight[1, 40] = 0.4  # the max of both tiles of 32 inputs
    x = torch.randn(3125, 64, generator=g, dtype=torch.float64)
    w_max = 0.4
    settings = dict(dac_bits=8, adc_bits=8, tile_in=32)
    with torch.no_grad():
        expected = lightning_linear(weight, out_bound=0.5 / w_max, **settings)(x)
    got = noisynn_forward(x, weight, out_bound=0.5, out_noise_units="tile", **settings)
    assert_relative(got, expected, 1e-6)
    clean = x @ weight.T
    scale = residual_scale(x, weight, 32) / w_max  # sqrt(sum_t r_t^2)
    torch.manual_seed(9)
    with torch.no_grad():
        noisy_l = lightning_linear(weight, train=True, out_noise=0.02 / w_max, tile_in=32)(x)
    noisy_n = noisynn_forward(x, weight, generator=torch.Generator().manual_seed(10), out_noise=0.02,
                              out_noise_units="tile", tile_in=32)
    std_l, std_n = float(((noisy_l - clean) / scale).std()), float(((noisy_n - clean) / scale).std())
    assert abs(std_l / 0.02 - 1) < 0.02, std_l
    assert abs(std_n / std_l - 1) < 0.02, (std_n, std_l)


@needs_lightning
def test_lightning_adds_no_output_noise_in_eval():
    """Why the noise tests build lightning's layer in training mode."""
    weight, x = layer()
    with torch.no_grad():
        y = lightning_linear(weight, train=False, out_noise=0.5, tile_in=32)(x)
    assert_relative(y, x @ weight.T, 1e-12)


@needs_lightning
def test_weight_noise_std_agrees_within_2_percent():
    """One token through a 64 x 2,048 layer on 2 tiles: noisynn's per-MVM additive weight noise w_noise
    (relative to the tile's max|W|) and lightning's ADD_NORMAL modifier (training mode, std_dev = w_noise)
    give the same output std, w_noise sqrt(sum_t (max|W_t| |x_t|)^2): 49 calls x 2,048 outputs ~ 10^5."""
    needs_analog_matmul()
    w_noise, tile_in, calls = 0.03, 32, 49
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(2048, 64, generator=g, dtype=torch.float64) * 0.05
    x = torch.randn(1, 64, generator=g, dtype=torch.float64)
    clean = x @ weight.T
    expected = w_noise * math.sqrt(sum(float(weight[:, s].abs().max() * x[:, s].norm()) ** 2
                                       for s in (slice(0, 32), slice(32, 64))))
    torch.manual_seed(6)
    lit = lightning_linear(weight, train=True, w_noise=w_noise, tile_in=tile_in)
    with torch.no_grad():
        res_l = torch.cat([lit(x) - clean for _ in range(calls)])
    gen = torch.Generator().manual_seed(7)
    res_n = torch.cat([noisynn_forward(x, weight, generator=gen, w_noise=w_noise, tile_in=tile_in) - clean
                       for _ in range(calls)])
    std_l, std_n = float(res_l.std()), float(res_n.std())
    assert abs(std_l / expected - 1) < 0.02, (std_l, expected)
    assert abs(std_n / std_l - 1) < 0.02, (std_n, std_l)
