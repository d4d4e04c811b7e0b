"""Device models against their formulas (large tensors), programming once, compensation, converter hooks."""

import math

import pytest
import torch
from torch import nn

from tests.helpers import tiny_llama
from noisynn.analog.mvm import AnalogIO, dac_levels
from noisynn.analog.hooks import ConverterHooks
from noisynn.noise import (PCMNoise, StuckAtFaults, bits_to_step, drift_factor, drift_nu_params, parse_time,
                           programming_noise_std, read_noise_q, read_noise_std, time_label)
from noisynn.errors import NoisyNNError
from noisynn.inject import NoiseInjector
from noisynn.targets import select_targets
from noisynn.noise import NOISE_REGISTRY, get_noise
from noisynn.seeding import make_generator

HOUR, DAY, YEAR = 3600.0, 86400.0, 365 * 86400.0


def gen(seed=0):
    return make_generator(seed)


def programmed(clean, level=1.0, unit=1.0, **params):
    noise = PCMNoise(**params)
    state = noise.program(clean, unit, gen(1))
    return noise, noise.programmed(clean, state, level)


def test_formula_checkpoints():
    # DESIGN.md section 4: at gT = 1, nu = 0.049, g(t)/g_prog is 0.775 at 1 h, 0.664 at 1 day, 0.497 at 1 year.
    assert round(drift_factor(HOUR, 0.049), 3) == 0.775
    assert round(drift_factor(DAY, 0.049), 3) == 0.664
    assert round(drift_factor(YEAR, 0.049), 3) == 0.497
    assert drift_factor(0.0, 0.1) == 1.0
    assert programming_noise_std(0.0) == pytest.approx(0.26348 / 25)
    assert programming_noise_std(1.0) == pytest.approx((0.26348 + 1.9650 - 1.1731) / 25)
    assert drift_nu_params(1.0) == pytest.approx((0.049, 0.008))
    assert drift_nu_params(0.0) == pytest.approx((0.1, 0.045))  # gT floored at 1e-7, both clipped high
    assert read_noise_q(1.0) == pytest.approx(0.0088)
    assert read_noise_q(0.01) == pytest.approx(0.0088 / 0.01 ** 0.65)
    assert read_noise_q(1e-4) == 0.2
    assert read_noise_std(1.0, 0.0) == pytest.approx(0.0088 * math.sqrt(math.log((20 + 250e-9) / 500e-9)))
    t = torch.tensor([1e-3, 0.3, 1.0])
    assert torch.allclose(programming_noise_std(t), torch.tensor([programming_noise_std(float(v)) for v in t]))
    assert torch.allclose(read_noise_q(t), torch.tensor([read_noise_q(float(v)) for v in t]))


@pytest.mark.parametrize("g_t", [0.1, 0.25, 0.5, 0.75, 1.0])
def test_programming_noise_std_follows_the_polynomial(g_t):
    clean = torch.full((400_000,), g_t)
    clean[0] = 1.0  # max|W| = 1: gT equals the weight
    _, st = programmed(clean)
    g_on = st.g_on[1:]
    s = programming_noise_std(g_t)
    assert abs(float(g_on.std()) / s - 1) < 0.01
    assert abs(float(g_on.mean()) - g_t) < 4 * s / math.sqrt(g_on.numel())
    # The partner device aims at 0: max(0, N(0, s(0))), mean s(0)/sqrt(2 pi), zero half of the time.
    g_off = -st.g_off[1:]
    s0 = programming_noise_std(0.0)
    assert abs(float(g_off.mean()) / (s0 / math.sqrt(2 * math.pi)) - 1) < 0.01
    assert abs(float((g_off == 0).float().mean()) - 0.5) < 0.005


@pytest.mark.parametrize("t,expected", [(HOUR, 0.775), (DAY, 0.664), (YEAR, 0.497)])
def test_mean_drift_factor_at_full_conductance(t, expected):
    # gT = 1 and no programming noise: g_prog = 1; nu = |N(0.049, 0.008)| per device, drawn once.
    noise, st = programmed(torch.ones(1_000_000), prog_scale=0.0)
    assert abs(float(st.nu_on.mean()) - 0.049) < 1e-4 and abs(float(st.nu_on.std()) - 0.008) < 1e-4
    factor = noise.read(st, t, None)  # no read noise; the partner device is exactly 0
    assert torch.allclose(factor, drift_factor(t, st.nu_on), rtol=1e-5)
    # Spread in nu raises the mean factor by exp((0.008 ln((t+t0)/t0))^2 / 2) <= 0.7 % over a year.
    assert abs(float(factor.mean()) / expected - 1) < 0.01
    assert abs(float(drift_factor(t, torch.full((3,), 0.049)).mean()) - expected) < 5e-4


def test_read_noise_std_grows_with_time():
    # max|W_prog| = 1 (element 0): the pair re-derived from W_prog (pair "tile") holds 0.5 of g_max, where Q_s is taken
    clean = torch.full((1_000_000,), 0.5)
    clean[0] = 1.0
    noise, st = programmed(clean, unit=1.0, prog_scale=0.0, drift_scale=0.0)
    stds = []
    for i, t in enumerate((1.0, HOUR, YEAR)):
        rel = noise.read(st, t, gen(10 + i))[1:] / 0.5 - 1
        assert abs(float(rel.mean())) < 1e-3
        stds.append(float(rel.std()))
        assert abs(stds[-1] / read_noise_std(0.5, t) - 1) < 0.01
    assert stds[0] < stds[1] < stds[2]


def test_stuck_at_fraction_and_values():
    p, r = 0.1, 0.3
    clean = torch.full((1_000_000,), 0.5)
    clean[0] = 1.0
    noise = StuckAtFaults(stuck_on_ratio=r)
    state = noise.program(clean, 1.0, gen(2))
    out = torch.empty_like(clean)
    noise.weights(clean, state, p, 1.0, gen(3), out)
    w = out[1:]
    # g+ (target 0.5) and g- (target 0) are each stuck with probability p, at g_max with probability r.
    expect = {0.5: (1 - p) * (1 - p * r), 1.0: p * r * (1 - p * r), 0.0: p * (1 - r) * (1 - p * r) + (p * r) ** 2,
              -0.5: (1 - p) * p * r, -1.0: p * (1 - r) * p * r}
    n = w.numel()
    for value, prob in expect.items():
        share = float((w == value).float().mean())
        assert abs(share - prob) < 4 * math.sqrt(prob * (1 - prob) / n), (value, share, prob)
    # Faults are nested across fractions: a device stuck at 5 % is stuck at the same value at 10 %, so every
    # weight broken at 5 % is broken at 10 %, the same way unless its partner device failed too.
    smaller = torch.empty_like(clean)
    noise.weights(clean, state, p / 2, 1.0, gen(3), smaller)
    broken = smaller != clean
    assert (out[broken] != clean[broken]).all() and (out != clean).sum() > 1.5 * broken.sum()
    assert float((smaller[broken] != out[broken]).float().mean()) < p
    with pytest.raises(NoisyNNError, match="fraction"):
        noise.weights(clean, state, 1.5, 1.0, gen(3), out)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_one_programming_per_realization_and_restore_is_bit_exact():
    model = tiny_llama()
    before = snapshot(model)
    inj = NoiseInjector(model, "pcm", "relative_channel", noise_params={"t_seconds": HOUR})
    inj.draw(7)
    inj.apply(1.0)
    at_t1 = snapshot(model)
    # The injector keeps no conductances (they would double the weights): each read forms them again from the
    # programming seed, so both reads see one programming.
    assert all(s.g_on is None and s.nu_on is None for s in inj.states)
    programmed = [inj.noise.programmed_weights(c, inj.state(i), 1.0).clone() for i, c in enumerate(inj.clean)]
    seeds = [s.seed for s in inj.states]
    inj.noise.t_seconds = YEAR
    inj.apply(1.0)
    at_t2 = snapshot(model)
    assert [s.seed for s in inj.states] == seeds
    for i, (c, w_prog) in enumerate(zip(inj.clean, programmed)):
        assert torch.equal(inj.noise.programmed_weights(c, inj.state(i), 1.0), w_prog)  # not reprogrammed
    name = inj.targets[0].name
    assert not torch.equal(at_t1[name], at_t2[name])
    # Drift shrinks the weights: a year after programming they are about half as large.
    ratio = float(at_t2[name].abs().sum() / at_t1[name].abs().sum())
    assert 0.55 < ratio < 0.75
    # The same time reads the same way again (read noise seeded by realization, layer and time).
    inj.noise.t_seconds = HOUR
    inj.apply(1.0)
    assert all(torch.equal(at_t1[k], v) for k, v in model.state_dict().items())
    inj.restore()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # A new realization programs anew.
    inj.draw(8)
    inj.apply(1.0)
    assert not torch.equal(model.state_dict()[name], at_t1[name])
    inj.restore()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_level_is_a_noise_multiplier_and_zero_is_clean():
    model = tiny_llama()
    before = snapshot(model)
    inj = NoiseInjector(model, "pcm", "relative_max", targets="mlp")
    inj.draw(0)
    errors = []
    for level in (0.0, 0.5, 1.0):
        inj.apply(level)
        t = inj.targets[0]
        errors.append(float((t.param.detach() - before[t.name]).std()))
    assert errors[0] == 0 and 0 < errors[1] < errors[2]
    inj.restore()


def test_drift_compensation_restores_output_magnitude():
    torch.manual_seed(0)
    w = torch.randn(512, 512) * 0.05
    unit = w.abs().amax(dim=1, keepdim=True)
    x = torch.randn(256, 512)
    out = {}
    for comp in (False, True):
        # "exact": the factor folded into the weights (the default "readout" leaves it to noisynn.analog.compensation)
        noise = PCMNoise(t_seconds=YEAR, drift_compensation=comp, compensation_method="exact")
        state = noise.program(w, unit, gen(4))
        out[comp] = torch.empty_like(w)
        noise.weights(w, state, 1.0, unit, gen(5), out[comp])
    w_prog = (state.g_on + state.g_off) * state.w_max
    ref = float((x @ w_prog.T).abs().mean())
    drifted = float((x @ out[False].T).abs().mean()) / ref
    compensated = float((x @ out[True].T).abs().mean()) / ref
    assert drifted < 0.65  # a year of drift
    assert abs(compensated - 1) < 0.03  # stated tolerance: 3 %
    assert torch.allclose(out[True], out[False] * state.alpha, rtol=1e-5)


def test_device_models_need_a_conductance_mapping(llama):
    for name in ("pcm", "stuck_at"):
        with pytest.raises(NoisyNNError, match="relative_channel or relative_max"):
            NoiseInjector(llama, name, "absolute")
    with pytest.raises(NoisyNNError, match="device model"):
        get_noise("pcm").sample((3,), 1.0)
    assert {"pcm", "stuck_at", "quantize"} <= set(NOISE_REGISTRY)


def test_clip_std_clips_large_weights():
    w = torch.randn(200_000)
    w[:10] = 50.0  # outliers
    noise = StuckAtFaults(clip_std=2.5)
    state = noise.program(w, float(w.abs().max()), gen(0))
    out = torch.empty_like(w)
    noise.weights(w, state, 0.0, 1.0, gen(0), out)  # no faults: only the mapping
    limit = 2.5 * float(w.std())
    assert abs(float(out.abs().max()) - limit) < 1e-4 * limit
    small = w.abs() < limit
    assert torch.allclose(out[small], w[small], atol=1e-6)


def test_quantize_per_channel_grid():
    model = tiny_llama()
    up = model.model.layers[0].mlp.up_proj.weight.data
    clean = up.detach().clone()
    inj = NoiseInjector(model, "quantize", "relative_channel", targets="up")
    inj.draw(0)
    inj.apply(bits_to_step(4))
    step = clean.abs().amax(dim=1, keepdim=True) / 7
    assert torch.allclose(up / step, (up / step).round(), atol=1e-4)
    assert float(((up - clean).abs() / step).max()) <= 0.5 + 1e-5
    assert max(len(torch.unique(row)) for row in up) <= 15
    inj.restore()
    assert torch.equal(up, clean)


def test_time_parsing_and_labels():
    assert parse_time("1s") == 1 and parse_time("1min") == 60 and parse_time("2h") == 7200
    assert parse_time("1d") == DAY and parse_time("1mo") == 30 * DAY and parse_time("1y") == YEAR
    assert parse_time("86400") == DAY and parse_time("0.5d") == DAY / 2
    for bad in ("abc", "1 week", "-1h", "inf"):
        with pytest.raises(NoisyNNError):
            parse_time(bad)
    assert [time_label(t) for t in (1, 60, HOUR, DAY, 30 * DAY, YEAR, 90)] == [
        "1 s", "1 min", "1 h", "1 d", "1 mo", "1 y", "90 s"]


# ---------------------------------------------------------------- converters

class Wrap(nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.up_proj = lin

    def forward(self, x):
        return self.mlp.up_proj(x)


def layer(n_in=64, n_out=48, seed=0, bias=True):
    torch.manual_seed(seed)
    lin = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        lin.weight.mul_(torch.linspace(0.2, 2.0, n_out)[:, None])  # channels of different ranges
    return Wrap(lin)


def hooked(model, io, seed=0):
    return ConverterHooks(model, select_targets(model, "all"), io, seed)


@pytest.mark.parametrize("per_channel", [False, True])
def test_many_bits_no_noise_equals_digital(per_channel):
    model = tiny_llama()
    ids = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        digital = model(input_ids=ids).logits
        io = AnalogIO(dac_bits=24, adc_bits=24, out_noise=0.0, out_bound=64.0, per_channel=per_channel)  # |y_n| <= fan-in
        with hooked(model, io):
            analog = model(input_ids=ids).logits
        again = model(input_ids=ids).logits
    assert torch.allclose(analog, digital, rtol=1e-4, atol=1e-4)
    assert not torch.equal(analog, digital)  # the hooks did run
    assert torch.equal(again, digital)  # and are gone


def test_dac_error_matches_the_quantization_step():
    model = layer()
    io = AnalogIO(dac_bits=4, adc_bits=None, out_noise=0.0, out_bound=None)
    hooks = hooked(model, io)
    x = torch.randn(4096, 64)
    levels = dac_levels(x, io)[0]  # the DAC's integer levels (one input tile)
    step = 2 * x.abs().amax(dim=-1, keepdim=True) / (2 ** 4 - 2)  # 14 steps over [-max|x|, max|x|]
    q = levels * step
    err = q - x
    assert float((err.abs() / step).max()) <= 0.5 + 1e-5
    assert torch.allclose(q / step, (q / step).round(), atol=1e-4)
    assert abs(float((err / step).std()) - 1 / math.sqrt(12)) < 0.01
    assert len(torch.unique((q / step).round())) == 15
    with torch.no_grad():
        y = model(x)
        lin = model.mlp.up_proj
    assert torch.allclose(y, torch.nn.functional.linear(q, lin.weight, lin.bias), atol=1e-5)
    hooks.remove()


def test_adc_error_matches_the_quantization_step():
    model = layer(bias=True)
    lin = model.mlp.up_proj
    bound, bits = 4.0, 6
    hooks = hooked(model, AnalogIO(dac_bits=None, adc_bits=bits, out_noise=0.0, out_bound=bound, per_channel=True,
                                   out_noise_units="normalized", bound_management="none"))
    x = torch.randn(2048, 64)
    with torch.no_grad():
        y = model(x)
        hooks.remove()
        ref = model(x)
    r = x.abs().amax(dim=-1, keepdim=True)
    w_max = lin.weight.detach().abs().amax(dim=1)
    unit = r * w_max  # normalization: input range x max|W| of the channel
    step = 2 * bound / (2 ** bits - 2)
    bias = lin.bias.detach()
    y_n, ref_n = (y - bias) / unit, (ref - bias) / unit
    inside = ref_n.abs() < bound
    err = (y_n - ref_n)[inside]
    assert float(err.abs().max()) <= step / 2 + 1e-4
    assert abs(float(err.std()) / (step / math.sqrt(12)) - 1) < 0.05
    assert torch.allclose(y_n / step, (y_n / step).round(), atol=1e-3)
    assert float(y_n.abs().max()) <= bound + 1e-4 and (~inside).any()  # clipped at the bound


def test_output_noise_std_and_reproducibility():
    model = layer(bias=False)
    lin = model.mlp.up_proj
    x = torch.randn(4096, 64)
    io = AnalogIO(dac_bits=None, adc_bits=None, out_noise=0.06, out_bound=None, per_channel=False,
                  out_noise_units="normalized")
    with torch.no_grad():
        ref = model(x)
        with hooked(model, io, seed=3) as hooks:
            y = model(x)
            hooks.reseed(3)
            y_again = model(x)
            y_next = model(x)
    unit = x.abs().amax(dim=-1, keepdim=True) * lin.weight.detach().abs().max()
    assert abs(float(((y - ref) / unit).std()) / 0.06 - 1) < 0.02
    assert torch.equal(y, y_again) and not torch.equal(y, y_next)


def test_fixed_and_calibrated_input_range():
    model = layer()
    x = torch.randn(512, 64)
    io = AnalogIO(dac_bits=6, adc_bits=None, out_noise=0.0, out_bound=None, input_range=1.0)
    hooks = hooked(model, io)
    levels = dac_levels(x, io)[0]
    assert torch.equal(levels, levels.round()) and float(levels.abs().max()) == 31  # 62 steps over [-1, 1], clipped
    assert torch.equal(levels, (x * 31).round().clamp(-31, 31))
    hooks.remove()
    hooks = hooked(model, AnalogIO(dac_bits=6, adc_bits=None, out_noise=0.0, out_bound=None, input_range="calibrated"))

    class Lm(nn.Module):  # calibrate() feeds input_ids; map them to vectors
        def __init__(self):
            super().__init__()
            self.inner = model
            self.table = torch.randn(50, 64)

        def forward(self, input_ids, use_cache=False):
            return self.inner(self.table[input_ids])

    lm = Lm()
    ranges = hooks.calibrate(lm, torch.arange(50), max_length=16)
    assert ranges["mlp.up_proj"] == [pytest.approx(float(lm.table.abs().max()))]  # one input tile
    assert hooks.describe()["dac_steps"] == 62
    hooks.remove()


def test_analog_io_rejects_bad_settings():
    with pytest.raises(NoisyNNError):
        AnalogIO(dac_bits=1)
    with pytest.raises(NoisyNNError):
        AnalogIO(adc_bits=8, out_bound=None)
    with pytest.raises(NoisyNNError):
        AnalogIO(input_range="sometimes")
    with pytest.raises(NoisyNNError):
        AnalogIO(input_range=-1.0)
    assert AnalogIO(input_range="2.5").input_range == 2.5
