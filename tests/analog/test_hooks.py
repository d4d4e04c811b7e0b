"""The analog hooks on a model (noisynn.analog.hooks): per-MVM weight noise drawn fresh at every call, input
noise after the DAC, output-noise units, weight scaling per tile, dtypes and devices, calibration of the
static input ranges (aihwkit's forward as in tests/analog/test_mvm.py; sources: IBM/aihwkit at 4545f11)."""

from __future__ import annotations

import pytest
import torch

from noisynn.analog.mvm import AnalogIO, analog_matmul
from noisynn.analog.hooks import ConverterHooks
from noisynn.analog.tiles import weight_scales
from tests.analog.test_mvm import F64, OFF, gen, rand


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
