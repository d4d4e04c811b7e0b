"""Static input-range calibration (``ConverterHooks.calibrate``, ``install_converters``): exactly the requested
tokens, windows weighted by their tokens in the std rule, and "analog" calibration through the analog forward
(aihwkit-lightning's init_from_data order) against "digital" (the former way). Tiny random models only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.helpers import byte_tokenizer, tiny_llama
from noisynn.analog.mvm import AnalogIO
from noisynn.analog.hooks import ConverterHooks, install_converters
from noisynn.errors import NoisyNNError
from noisynn.targets import select_targets
from noisynn.analog.setting import ConverterSpec

F64 = torch.float64


def _io(**kw) -> AnalogIO:
    base = dict(dac_bits=4, adc_bits=None, out_noise=0.0, out_bound=None, input_range="calibrated", range_std=1.0,
                tile_size=(16, 0))
    return AnalogIO(**{**base, **kw})


class _TableLm(nn.Module):
    """calibrate() feeds input_ids; one Linear layer reads rows of a fixed table."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.inner = nn.Linear(table.shape[1], 4).double()

    def forward(self, input_ids, use_cache=False):
        return self.inner(self.table[input_ids])


def test_calibration_uses_exactly_the_requested_tokens(text_file):
    model = tiny_llama()
    lm = SimpleNamespace(model=model, tokenizer=byte_tokenizer())
    spec = ConverterSpec(_io(), text_file=str(text_file), calibration_tokens=64, max_length=32)
    hooks = install_converters(spec, lm, select_targets(model, "blocks"))
    try:
        cal = hooks.describe()["calibration"]
        assert cal["tokens"] == 64 and cal["windows"] == [32, 32]  # not 65 tokens: no one-token window
        assert cal["range_calibration"] == "analog" and cal["rule"] == "1 x std" and cal["text"] == "file"
        assert hooks.describe()["range_calibration"] == "analog"
    finally:
        hooks.remove()


@pytest.mark.parametrize("mode", ["analog", "digital"])
def test_std_rule_weights_windows_by_their_tokens(mode):
    table = torch.randn(50, 32, generator=torch.Generator().manual_seed(1), dtype=F64)
    table[:, 16:] *= 4
    lm = _TableLm(table)
    targets = select_targets(lm, "other")
    with ConverterHooks(lm, targets, _io(range_std=3.0, range_calibration=mode)) as hooks:
        ranges = hooks.calibrate(lm, torch.arange(50), max_length=40)  # windows of 40 and 10 tokens
        assert hooks.calibration["windows"] == [40, 10]
    for i, cols in enumerate((slice(0, 16), slice(16, 32))):
        by_hand = (40 * 3 * table[:40, cols].std() + 10 * 3 * table[40:, cols].std()) / 50
        equal_weights = (3 * table[:40, cols].std() + 3 * table[40:, cols].std()) / 2
        assert ranges["inner"][i] == pytest.approx(float(by_hand), rel=1e-12)
        assert ranges["inner"][i] != pytest.approx(float(equal_weights), rel=1e-3)
    with ConverterHooks(lm, targets, _io(range_std=0.0, range_calibration=mode)) as hooks:  # max|x| stays a max
        ranges = hooks.calibrate(lm, torch.arange(50), max_length=40)
    assert ranges["inner"] == [pytest.approx(float(table[:, :16].abs().max())),
                               pytest.approx(float(table[:, 16:].abs().max()))]


def _inputs(model, names, ids, prepend=True):
    """The input each named layer sees in one forward of ``ids`` (captured before any converter hook)."""
    seen, handles = {}, []
    for name in names:
        def grab(module, args, name=name):
            seen[name] = args[0].detach().reshape(-1, args[0].shape[-1]).clone()
        handles.append(model.get_submodule(name).register_forward_pre_hook(grab, prepend=prepend))
    try:
        with torch.no_grad():
            model(input_ids=ids[None], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen


def _std_per_tile(x, tile, k):
    return [float(k * x[:, i:i + tile].std()) for i in range(0, x.shape[1], tile)]


def test_digital_calibration_is_the_former_computation_and_analog_differs_where_clipping_bites():
    model = tiny_llama(layers=2)
    targets = select_targets(model, "blocks")
    ids = torch.randint(0, 256, (64,), generator=torch.Generator().manual_seed(0))
    io = _io(range_std=1.0)  # 1 std: clipping bites hard
    with ConverterHooks(model, targets, io) as hooks:
        names = [t.name for t in hooks.tiles]
        hooks.set_enabled(False)
        windows = [_inputs(model, names, ids[s:s + 32]) for s in (0, 32)]
        hooks.set_enabled(True)
    former = {n: [sum(v) / 2 for v in zip(*(_std_per_tile(w[n], 16, 1.0) for w in windows))] for n in names}
    with ConverterHooks(model, targets, _io(range_std=1.0, range_calibration="digital")) as hooks:
        digital = hooks.calibrate(model, ids, max_length=32)  # two full windows: equal weights as before
    with ConverterHooks(model, targets, io) as hooks:
        analog = hooks.calibrate(model, ids, max_length=32)
    for n in names:
        assert digital[n] == pytest.approx(former[n], rel=1e-5)
    first = "model.layers.0.self_attn.q_proj"  # its input is the (digital) embedding's norm in both passes
    assert analog[first] == pytest.approx(digital[first], rel=1e-6)
    late = "model.layers.1.mlp.down_proj"
    assert max(abs(a / d - 1) for a, d in zip(analog[late], digital[late])) > 0.01


def test_analog_calibration_measures_each_layer_through_the_analog_forward_with_its_own_range():
    """One window: every layer's range is K std of the input it sees when all layers convert with the final
    ranges (earlier layers analog, its own range set before its conversion), as lightning's first init batch."""
    model = tiny_llama(layers=2)
    targets = select_targets(model, "blocks")
    ids = torch.randint(0, 256, (48,), generator=torch.Generator().manual_seed(2))
    with ConverterHooks(model, targets, _io(range_std=2.0)) as hooks:
        ranges = hooks.calibrate(model, ids, max_length=48)
        seen = _inputs(model, [t.name for t in hooks.tiles], ids)  # the analog forward with the ranges set
    for name, x in seen.items():
        assert ranges[name] == pytest.approx(_std_per_tile(x, 16, 2.0), rel=1e-5)


def test_range_calibration_is_checked_and_recorded():
    with pytest.raises(NoisyNNError):
        AnalogIO(range_calibration="sometimes")
    assert AnalogIO().range_calibration == "analog" and AnalogIO().describe()["range_calibration"] == "analog"
    from noisynn.experiments.sweep import run as sweep_run
    from noisynn.spec import converter_spec_from_args

    io = converter_spec_from_args(sweep_run.parse(["--analog_preset", "afm", "--range_calibration", "digital"])).io
    assert io.range_calibration == "digital" and io.range_std == 18.0
    assert "range_calibration" not in vars(sweep_run.parse([]))  # SUPPRESS: left out of run.json unless given
