"""PCM as aihwkit computes it, and Analog Foundation Models' calibrated PCM, against their sources' file and line.

aihwkit at commit 4545f11 (src/aihwkit/...): inference/noise/pcm.py, inference/noise/base.py,
inference/converter/conductance.py, simulator/tiles/inference.py, simulator/tiles/array.py,
simulator/parameters/mapping.py. Analog Foundation Models at 4f4c505: apply_noise_model.py ("afm").
"""

import math

import numpy as np
import pytest
import torch

from tests.helpers import tiny_llama
from noisynn.errors import NoisyNNError
from noisynn.inject import NoiseInjector
from noisynn.noise import (AFM_STD_HIGH, AFM_STD_LOW, CalibratedPCMNoise, PCMNoise, StuckAtFaults, conductance_targets,
                           drift_factor, get_noise, programming_noise_std, read_noise_growth, read_noise_q)
from noisynn.tiling import split_sizes, tile_blocks, tile_index
from noisynn.seeding import make_generator

HOUR, DAY, YEAR = 3600.0, 86400.0, 365 * 86400.0
T0, G_MAX = 20.0, 25.0


def gen(seed=0):
    return make_generator(seed)


def program(clean, unit, level=1.0, **params):
    noise = PCMNoise(**params)
    state = noise.program(clean, unit, gen(1))
    return noise, noise.programmed(clean, state, level)


def row_max(w):
    return w.abs().amax(dim=1, keepdim=True)


# ------------------------------------------------------------------------------------------------ tiles

def test_split_sizes_and_blocks_follow_aihwkits_tile_array():
    # simulator/tiles/array.py:92-97: ceil(size / max) near-equal parts, the first (size mod n) one longer.
    assert split_sizes(576, 512) == [288, 288]  # not 512 + 64
    assert split_sizes(1536, 512) == [512, 512, 512]
    assert split_sizes(1001, 500) == [334, 334, 333]
    assert split_sizes(300, 512) == [300] and split_sizes(300, 0) == [300]  # array.py:92-93: max <= 0 is one part
    blocks = tile_blocks((1536, 576), (512, 512))
    # array.py:71-79 builds array[in tile][out tile]; array.py:112-123 slices weight[out, in] the same way
    assert blocks[:3] == [(slice(0, 512), slice(0, 288)), (slice(512, 1024), slice(0, 288)),
                          (slice(1024, 1536), slice(0, 288))]
    assert len(blocks) == 6 and blocks[3] == (slice(0, 512), slice(288, 576))
    assert tile_blocks((1536, 576), (0, 0)) == [(slice(0, 1536), slice(0, 576))]
    assert tile_blocks((1536, 576), (512, 0)) == [(slice(0, 1536), slice(0, 288)), (slice(0, 1536), slice(288, 576))]
    # GPT-2 Conv1D holds (in, out): the blocks stay (out slice, in slice), tile_index puts them in tensor order.
    assert tile_blocks((576, 1536), (512, 512), out_axis=1) == blocks
    assert tile_index((576, 1536), (512, 512), out_axis=1)[0] == (slice(0, 288), slice(0, 512))
    seen = torch.zeros(700, 1000, dtype=torch.int32)
    for idx in tile_index((700, 1000), (300, 256), out_axis=0):
        seen[idx] += 1
    assert bool((seen == 1).all())  # every weight on exactly one tile
    with pytest.raises(NoisyNNError, match="tile_size"):
        PCMNoise(tile_size=(512, -1))
    with pytest.raises(NoisyNNError, match="2-D"):
        tile_blocks((3, 4, 5), 512)


def test_each_tiles_abs_max_maps_to_g_max():
    # conductance.py:54-65: the converter maps a tile's abs-max to g_max; with aihwkit's default mapping
    # (weight_scaling_omega = 0, simulator/parameters/mapping.py:46) the tile holds the weights unscaled.
    torch.manual_seed(0)
    w = torch.randn(1000, 700, dtype=torch.float64)
    w[3, 5] = 40.0  # an outlier changes only its own tile's range
    noise = PCMNoise(tile_size=(512, 512))
    state = noise.program(w, float(w.abs().max()), gen(1))
    g_t, _ = conductance_targets(w, state.w_max)
    blocks = tile_index(w.shape, (512, 512))
    assert len(blocks) == 4  # 1000 outputs -> 500 + 500, 700 inputs -> 350 + 350
    for idx in blocks:
        assert float(g_t[idx].max()) == 1.0
        assert torch.equal(state.w_max[idx], torch.full_like(g_t[idx], float(w[idx].abs().max())))
    assert float(state.w_max[0, 0]) == 40.0 and float(state.w_max[600, 400]) < 6
    # relative_channel: per output row within each tile (mapping.py:53 weight_scaling_columnwise, the
    # hardware-aware-training preset; also afm:96-98)
    state = noise.program(w, row_max(w), gen(1))
    g_t, _ = conductance_targets(w, state.w_max)
    for idx in blocks:
        assert torch.equal(g_t[idx].amax(dim=1), torch.ones(500, dtype=torch.float64))
    assert float(state.w_max[3, 0]) == 40.0 and float(state.w_max[3, 400]) == float(w[3, 350:].abs().max())
    # one tile (tile_size 0) is the former per-tensor / per-channel mapping
    whole = PCMNoise(tile_size=0).program(w, row_max(w), gen(1))
    assert torch.equal(whole.w_max, row_max(w))


def test_stuck_at_maps_per_tile_too():
    w = torch.ones(4, 1024)
    w[:, 512:] *= 0.25
    noise = StuckAtFaults(stuck_on_ratio=1.0)  # every stuck device at g_max
    state = noise.program(w, row_max(w), gen(0))
    out = torch.empty_like(w)
    noise.weights(w, state, 1.0, row_max(w), gen(0), out)  # every device stuck on: W = g+ - g- = 0
    assert float(out.abs().max()) == 0.0
    assert float(state.w_max[0, 0]) == 1.0 and float(state.w_max[0, 600]) == 0.25


# ------------------------------------------------------------------------------------------------ read noise

def test_q_s_is_taken_at_the_programmed_conductance():
    # pcm.py:148-150: q_s = min(0.0088 / max((|g_prog| / g_max)^0.65, 1e-3), 0.2), at g_prog, not at the target.
    # The read draws one normal per weight (pair "tile") from its generator: redraw them to see each weight's std.
    torch.manual_seed(1)
    w = torch.rand(200, 300, dtype=torch.float64) * 0.2 + 0.05
    w[0, 0] = 1.0
    noise, st = program(w, 1.0, drift_scale=0.0, tile_size=0)
    t = DAY
    out = noise.read(st, t, gen(9))
    xi = torch.randn(w.shape, generator=gen(9), dtype=torch.float64)
    x = st.g_on + st.g_off  # W_prog / w_max
    implied_q = (out / x - 1) / (read_noise_growth(t) * xi)
    r = float(x.abs().max())  # the converter's range for W_prog (conductance.py:55)
    at_prog = read_noise_q(x / r)
    g_t = w / 1.0
    keep = (xi.abs() > 0.1) & (out != 0)  # out 0: clipped at 0 conductance (pcm.py:158)
    assert torch.allclose(implied_q[keep], at_prog[keep], rtol=1e-9)
    # today's code took Q_s at gT; programming noise makes that differ by more than 5 % on many weights
    assert float(((implied_q - read_noise_q(g_t)).abs() / read_noise_q(g_t))[keep].max()) > 0.2
    # pair "independent": each device's own |g_prog| (aihwkit's one-shot apply_noise, base.py:59-70)
    noise, st = program(w, 1.0, drift_scale=0.0, tile_size=0, pair="independent")
    out = noise.read(st, t, gen(9))
    g = gen(9)
    xi_on, xi_off = (torch.randn(w.shape, generator=g, dtype=torch.float64) for _ in range(2))
    growth = read_noise_growth(t)

    def expect(q_on, q_off):
        return (st.g_on * (1 + growth * q_on * xi_on).clamp(min=0) + st.g_off * (1 + growth * q_off * xi_off).clamp(min=0))

    assert torch.allclose(out, expect(read_noise_q(st.g_on), read_noise_q(st.g_off)), rtol=1e-12, atol=1e-15)
    assert not torch.allclose(out, expect(read_noise_q(g_t), 0.2), rtol=1e-6)


def test_read_noise_std_over_many_weights():
    # pcm.py:151-152: g = g_drift + |g_drift| q_s sqrt(ln((t + t_read) / (2 t_read))) xi, t = t_inference + t_0
    clean = torch.full((400_000,), 0.4, dtype=torch.float64)
    clean[0] = 1.0
    noise, st = program(clean, 1.0, prog_scale=0.0, drift_scale=0.0)
    for i, t in enumerate((1.0, YEAR)):
        rel = noise.read(st, t, gen(20 + i))[1:] / 0.4 - 1
        want = read_noise_q(0.4) * math.sqrt(math.log((t + T0 + 250e-9) / (2 * 250e-9)))
        assert abs(float(rel.std()) / want - 1) < 0.01


# ------------------------------------------------------------------------------------------------ the pair

def aihwkit_drift_weights(w_max, g_on, g_off, nu_on, nu_off, sign, t):
    """aihwkit's drift_weights written out from its source, read noise off: the tile's programmed weights
    (inference.py:206-207, base.py:89-98) converted back into a pair (base.py:117; conductance.py:54-65) and
    drifted with the nu of each slot (base.py:119-123; pcm.py:138-144)."""
    pos = sign > 0  # slot 0 holds g+ (the device of a positive weight), slot 1 g-
    g_plus = torch.where(pos, g_on.abs(), g_off.abs()) * G_MAX
    g_minus = torch.where(pos, g_off.abs(), g_on.abs()) * G_MAX
    nu = [torch.where(pos, nu_on, nu_off), torch.where(pos, nu_off, nu_on)]
    scale_ratio = G_MAX / w_max  # conductance.py:56 at programming (w_max: the tile's abs-max)
    w_prog = (g_plus - g_minus) / scale_ratio  # conductance.py:74-76
    ratio2 = G_MAX / w_prog.abs().max().clamp(min=1e-7)  # conductance.py:55-56 on the programmed weights
    slots = [(w_prog * ratio2).clamp(0.0, G_MAX), (-w_prog * ratio2).clamp(0.0, G_MAX)]
    tt = t + T0
    drifted = [g * (tt / T0) ** (-n) if tt > T0 else g for g, n in zip(slots, nu)]
    return (drifted[0] - drifted[1]) / ratio2, w_prog


@pytest.mark.parametrize("t", [0.0, HOUR, YEAR])
def test_tile_pair_drifts_the_programmed_weight_with_no_partner(t):
    torch.manual_seed(2)
    w = torch.randn(300, 400, dtype=torch.float64) * 0.03
    w_max = float(w.abs().max())
    noise, st = program(w, w_max, tile_size=0, read_scale=0.0)
    sign = torch.where(w < 0, -1.0, 1.0).double()
    ref_t, ref_prog = aihwkit_drift_weights(w_max, st.g_on, st.g_off, st.nu_on, st.nu_off, sign, t)
    assert torch.allclose(noise.programmed_weights(w, st), ref_prog, rtol=0, atol=1e-15)
    assert torch.allclose(noise.read(st, t, None) * w_max, ref_t, rtol=1e-12, atol=1e-16)
    # through weights() as the injector calls it (read noise off): the same
    noise.t_seconds = t
    out = torch.empty_like(w)
    noise.weights(w, st, 1.0, w_max, gen(3), out)
    assert torch.allclose(out, ref_t, rtol=1e-12, atol=1e-16)
    # programming noise flipped some weights: they drift with the partner slot's nu (drawn at target 0, base.py:95)
    flipped = (ref_prog * w) < 0
    assert int(flipped.sum()) > 100
    if t > 0:
        w_prog = ref_prog
        assert torch.allclose(out[flipped], w_prog[flipped] * drift_factor(t, st.nu_off[flipped]), rtol=1e-12)
        # pair "independent" drifts both devices: the partner's own drift changes W_t
        ind, st2 = program(w, w_max, tile_size=0, read_scale=0.0, pair="independent")
        both = ind.read(st2, t, None) * w_max
        assert torch.equal(st2.g_off, st.g_off)  # the same programming
        assert float((both - ref_t).abs().max()) > 1e-4 * w_max


def test_tile_pair_drift_check_numbers_still_hold():
    # DESIGN.md section 4: at gT = 1 and nu = 0.049, g(t)/g_prog is 0.775 at 1 h, 0.664 at 1 d, 0.497 at 1 y.
    for t, want in ((HOUR, 0.775), (DAY, 0.664), (YEAR, 0.497)):
        assert round(drift_factor(t, 0.049), 3) == want
    noise, st = program(torch.ones(200_000), 1.0, prog_scale=0.0)
    assert abs(float(st.nu_on.mean()) - 0.049) < 1e-4  # nu drawn at the target gT = 1 (pcm.py:126-128)
    for t, want in ((HOUR, 0.775), (DAY, 0.664), (YEAR, 0.497)):
        factor = noise.read(st, t, None)
        assert torch.allclose(factor, drift_factor(t, st.nu_on), rtol=1e-6)
        assert abs(float(factor.mean()) / want - 1) < 0.01


# ------------------------------------------------------------------------------------------------ programming

def test_programmed_weights_carry_programming_noise_only():
    torch.manual_seed(3)
    w = torch.randn(600, 512, dtype=torch.float64)
    unit = row_max(w)
    noise = PCMNoise(t_seconds=YEAR)
    state = noise.program(w, unit, gen(4))
    w_prog = noise.programmed_weights(w, state)  # programs at level 1 when the state was not yet programmed
    assert w_prog.dtype == torch.float64 and state.level == 1.0
    # pcm.py:108-116: g_prog = max(0, gT + s(gT) xi), s the polynomial / 25 (g_max 25 uS reference)
    g_t, _ = conductance_targets(w, state.w_max)
    assert torch.equal(w_prog, (state.g_on + state.g_off) * state.w_max)  # the pair's difference (conductance.py:74)
    z = (state.g_on.abs() - g_t) / programming_noise_std(g_t)
    big = g_t > 0.5  # clipping at 0 does not matter there
    assert abs(float(z[big].std()) - 1) < 0.03 and abs(float(z[big].mean())) < 0.05
    # no drift, no read noise: the same at any read time; and reading at t = 0 without read noise gives it back
    noise.t_seconds = 1.0
    assert torch.equal(noise.programmed_weights(w, state), w_prog)
    assert torch.allclose(noise.read(state, 0.0, None) * state.w_max, w_prog, rtol=1e-14)
    clean_prog = PCMNoise(prog_scale=0.0).programmed_weights(w, PCMNoise().program(w, unit, gen(4)))
    assert torch.allclose(clean_prog, w, rtol=1e-14)
    # level: the noise multiplier; the same random numbers at every level
    half = noise.programmed_weights(w, state, level=0.5)
    assert torch.allclose((half - w)[big], 0.5 * (w_prog - w)[big], rtol=1e-9)


def test_readout_leaves_the_weights_uncompensated_and_exact_folds_per_tile():
    torch.manual_seed(4)
    w = torch.randn(700, 1024, dtype=torch.float64) * 0.05
    unit = row_max(w)
    outs, states = {}, {}
    for name, params in {"off": {}, "readout": {"drift_compensation": True},
                         "exact": {"drift_compensation": True, "compensation_method": "exact"}}.items():
        noise = PCMNoise(t_seconds=YEAR, **params)
        states[name] = noise.program(w, unit, gen(5))
        outs[name] = torch.empty_like(w)
        noise.weights(w, states[name], 1.0, unit, gen(6), outs[name])
    assert torch.equal(outs["readout"], outs["off"])  # aihwkit's factor is applied after the ADC, not here
    assert states["readout"].alpha == 1.0 and states["readout"].alpha_tiles is None
    exact = states["exact"]
    tiles = tile_index(w.shape, (512, 512))
    assert len(exact.alpha_tiles) == len(tiles) == 4
    w_prog = PCMNoise().programmed_weights(w, exact)
    for idx, alpha in zip(tiles, exact.alpha_tiles):
        # drift.py:27-38 one-hot probe: mean|y| over the tile's outputs = mean|W| of the tile
        assert alpha == pytest.approx(float(w_prog[idx].abs().sum() / outs["off"][idx].abs().sum()), rel=1e-12)
        assert torch.allclose(outs["exact"][idx], outs["off"][idx] * alpha, rtol=1e-12)
        assert float(outs["exact"][idx].abs().sum()) == pytest.approx(float(w_prog[idx].abs().sum()), rel=1e-10)
    assert 1.4 < exact.alpha < 2.2 and exact.alpha == pytest.approx(sum(exact.alpha_tiles) / 4)
    assert exact.l1_read == pytest.approx(float(outs["off"].abs().sum()), rel=1e-10)
    # tile_size 0: one factor per layer, the former exact compensation
    noise = PCMNoise(t_seconds=YEAR, drift_compensation=True, compensation_method="exact", tile_size=0)
    st = noise.program(w, unit, gen(5))
    out = torch.empty_like(w)
    noise.weights(w, st, 1.0, unit, gen(6), out)
    assert len(st.alpha_tiles) == 1
    assert float(out.abs().sum()) == pytest.approx(float(noise.programmed_weights(w, st).abs().sum()), rel=1e-10)


def test_pcm_parameters_are_checked_and_recorded():
    with pytest.raises(NoisyNNError, match="pair"):
        PCMNoise(pair="both")
    with pytest.raises(NoisyNNError, match="compensation_method"):
        PCMNoise(compensation_method="after")
    d = get_noise("pcm", tile_size=(256, 0), pair="independent", compensation_method="exact").describe()
    assert d["params"]["tile_size"] == [256, 0] and d["params"]["pair"] == "independent"
    assert d["params"]["compensation_method"] == "exact"
    assert PCMNoise().describe()["params"]["tile_size"] == [512, 512]


# ------------------------------------------------------------------------------------------------ AFM

def test_afm_std_polynomials():
    # afm:68-85 (coefficients, highest power first as numpy.polyval), afm:106-117 (low set up to 52.5, high above)
    low = [2.939751381126213e-05, -0.00371581208142707, 0.22419685954327148, 2.5797410660159494]
    high = [1.2329755395573392e-05, -0.003054993405157235, 0.2453487119885723, 2.110295720240385]
    assert list(AFM_STD_LOW) == low and list(AFM_STD_HIGH) == high
    from noisynn.noise import afm_noise_std
    g = torch.tensor([0.0, 0.6, 10.0, 52.5, 52.5001, 100.0, 180.0, -100.0], dtype=torch.float64)
    want = [np.polyval(low if abs(v) <= 52.5 else high, abs(v)) for v in g.tolist()]
    assert torch.allclose(afm_noise_std(g), torch.tensor(want, dtype=torch.float64), rtol=1e-14)
    assert afm_noise_std(0.0) == pytest.approx(2.5797410660159494)
    assert afm_noise_std(100.0) == pytest.approx(8.42498826309866, rel=1e-12)  # the high set
    assert afm_noise_std(180.0) == pytest.approx(19.198411018073006, rel=1e-12)


def test_afm_model_scales_per_tile_row_zeroes_small_and_measures_std():
    # afm:88-104: per output row, the abs-max over each 512-input tile maps to 180
    rows, values = 2000, [0.3, 10.0, 30.0, 52.5, 100.0, 150.0]
    g = torch.tensor(values, dtype=torch.float64).repeat(rows, 171)[:, :1022]
    g = torch.cat([torch.full((rows, 1), 180.0, dtype=torch.float64), g[:, :511],
                   torch.full((rows, 1), 180.0, dtype=torch.float64), g[:, 511:]], dim=1)
    w = g / 180 * torch.linspace(0.5, 2.0, rows, dtype=torch.float64)[:, None]
    w[:, 512:] *= 0.01  # the second tile's rows have their own range
    noise = CalibratedPCMNoise()
    state = noise.program(w, row_max(w), gen(7))
    assert torch.allclose(noise.conductances(w, state), g, rtol=1e-12)
    out = torch.empty_like(w)
    noise.weights(w, state, 1.0, row_max(w), gen(8), out)
    noisy_g = out / state.w_max * 180
    assert float(noisy_g[g == 0.3].abs().max()) == 0.0  # afm:110: |g| < 0.6 -> 0
    for v in values[1:] + [180.0]:
        dev = (noisy_g - g)[g == v]
        want = np.polyval(AFM_STD_LOW if v <= 52.5 else AFM_STD_HIGH, v)
        assert abs(float(dev.std()) / want - 1) < 0.01, v
        assert abs(float(dev.mean())) < 4 * want / math.sqrt(dev.numel())
    # sigma multiplies the std, with the same draw at every level; 0 is the clean model
    half = torch.empty_like(w)
    noise.weights(w, state, 0.5, row_max(w), gen(8), half)
    kept = g >= 0.6
    assert torch.allclose((half - w)[kept], 0.5 * (out - w)[kept], rtol=1e-9, atol=1e-15)
    noise.weights(w, state, 0.0, row_max(w), gen(8), half)
    assert torch.equal(half, w)


def test_afm_model_through_the_injector():
    model = tiny_llama()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    inj = NoiseInjector(model, "pcm_afm", "relative_channel", noise_params={"tile_size": (16, 0)})
    inj.realize(seed=0, sigma=1.0)
    t = inj.targets[0]
    first = t.param.detach().clone()
    assert not torch.equal(first, before[t.name])
    rel = float((first - before[t.name]).std() / before[t.name].abs().max())
    assert 0.003 < rel < 0.2
    inj.apply(1.0)
    assert torch.equal(t.param.detach(), first)  # programmed once per realization: the same draw
    inj.restore()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(NoisyNNError, match="relative_channel"):
        NoiseInjector(model, "pcm_afm", "relative_max")
    assert "Analog Foundation Models" in get_noise("pcm_afm").describe()["sources"]


def test_stuck_devices_in_the_tile_pair_keep_their_programmed_value():
    # our extension (aihwkit's PCM model has no stuck devices): a weight whose re-derived device is stuck stays put
    torch.manual_seed(5)
    w = torch.randn(400, 300, dtype=torch.float64)
    noise, st = program(w, row_max(w), stuck_fraction=0.2, t_seconds=YEAR, tile_size=0)
    w_prog = noise.programmed_weights(w, st)
    out = noise.read(st, YEAR, gen(11)) * st.w_max
    on = st.g_on.abs() >= st.g_off.abs()
    stuck = torch.where(on, st.stuck_on, st.stuck_off)
    assert 0.15 < float(stuck.float().mean()) < 0.25
    assert torch.equal(out[stuck], w_prog[stuck])
    moved = ~stuck & (w_prog.abs() > 0)
    assert bool((out[moved] != w_prog[moved]).all())
