"""Drift compensation as aihwkit reads it out (noisynn.analog.compensation, issue 13's difference 4): the
readout per tile, after the ADC, through the noisy forward, once per realization, from the shell."""

from __future__ import annotations

import pytest
import torch

from noisynn.analog.mvm import AnalogIO, tile_readout
from tests.analog.test_hooks import hooks_on, tiny_layer
from tests.analog.test_mvm import F64, OFF, gen, rand


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
