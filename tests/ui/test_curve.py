"""The explorer's curve (issue 17; noisynn.ui.curve): sweep points run by the runner, cancellation by a
newer request, the curve per setting, run folders exported, PCM points over time."""

from dataclasses import replace

import pytest

from noisynn.ui import explore, saved_runs
from noisynn.errors import NoisyNNError
from noisynn.runs.read import read_rows
from tests.ui.test_explore import explorer, same_state, setting, state  # noqa: F401 - fixtures


def test_a_newer_request_cancels_the_running_computation(explorer):
    lm = explorer.model("tiny")
    before = state(lm.model)
    ticket = explorer.requests.ticket(0.5)
    assert not ticket()
    explorer.requests.want(0.7)  # a later release
    assert ticket() and not explorer.requests.ticket(0.7)()
    with pytest.raises(explore.Cancelled):
        explorer.compare(setting(sigma=0.5), cancelled=ticket)
    with pytest.raises(explore.Cancelled):
        explorer.perplexity(setting(sigma=0.5), cancelled=ticket)
    assert same_state(before, state(lm.model))  # restored, hooks gone
    assert all(not m._forward_pre_hooks for m in lm.model.modules())
    sweep_ticket = explorer.requests.ticket(None)
    explorer.requests.want(0.9)
    assert not sweep_ticket()
    explorer.requests.stop()
    assert sweep_ticket()
    explorer.compare(setting(sigma=0.5), cancelled=explorer.requests.ticket(0.5))  # a fresh ticket runs


def test_sweep_points_run_by_the_runner_and_stop(explorer, tmp_path):
    s = setting(sigma=0.5)
    got = list(explore.sweep_points(explorer, s, [0.1, 0.3, 0.5], tmp_path / "sweep"))
    assert [(i, sig) for i, sig, _, _ in got] == [(0, 0.1), (1, 0.3), (2, 0.5)]
    assert got[2][3].perplexity == pytest.approx(explorer.perplexity(s)[1].perplexity)
    rows = read_rows(tmp_path / "sweep" / "results.csv")
    assert [r["sigma"] for r in rows] == [0.1, 0.3, 0.5] and rows[0]["seed"] == explore.noise_seed(0)
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 40  # a few layers into the work: stops within the first points
    assert len(list(explore.sweep_points(explorer, s, [0.1, 0.2, 0.3, 0.4], tmp_path / "stopped", cancelled))) < 4


def test_the_curve_grows_per_setting_clears_and_exports_run_folders(explorer, tmp_path):
    from noisynn import graphs
    from noisynn.experiments.sweep import report
    from noisynn.experiments.sweep.run import METRICS
    from noisynn.ui.curve import SWEEP_METRICS, Curve

    assert SWEEP_METRICS == METRICS
    curve = Curve()
    a, b = setting(sigma=0.2), setting(sigma=0.2, noise_type="laplacian")
    for s in (a, replace(a, sigma=0.5), b):
        clean, noisy = explorer.perplexity(s)
        curve.add(s, noisy, clean)
    curve.add(replace(a, sigma=0.5), noisy, clean)  # the same sigma again replaces, not adds
    assert curve.n_points == 3 and len(curve.lines()) == 2 and len(curve.table()) == 3
    assert all(len(row[2]) <= 7 for row in curve.table())  # 4 significant digits
    fig = curve.figure()
    assert len([ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 0 and ln.get_linestyle() == "-"]) == 2
    out = curve.export(tmp_path / "runs")
    folders = sorted(out.iterdir())
    assert [f.name for f in folders] == ["01-gaussian", "02-laplacian"]
    first = saved_runs.load_saved_run(folders[0])
    assert first.meta["experiment"] == "sweep" and first.meta["status"] == "finished"
    assert [r["sigma"] for r in read_rows(folders[0] / "results.csv")] == [0.0, 0.2, 0.5]
    assert "derived seed" in first.note and report.plot(folders[0])
    assert graphs.main(["--results_dir", str(out), "--output_dir", str(tmp_path / "figs")]) == 0
    assert len(list((tmp_path / "figs").glob("*.png"))) >= 2
    curve.clear()
    assert curve.n_points == 0 and curve.figure().axes
    with pytest.raises(NoisyNNError, match="the curve is empty"):
        curve.export(tmp_path / "runs")


def test_pcm_points_at_several_times_give_a_time_view(explorer):
    from noisynn.ui.curve import Curve

    curve = Curve()
    base = setting(noise_type="pcm", scale="relative_channel", sigma=1.0)
    for t in ("1", "3600", "1e8"):
        s = replace(base, flags=(("t_seconds", t),))
        clean, noisy = explorer.perplexity(s)
        curve.add(s, noisy, clean)
    (label, sigma, pts), = curve.time_lines()
    assert sigma == 1.0 and [t for t, _ in pts] == [1.0, 3600.0, 1e8] and "t_seconds" not in label
    assert len(curve.figure().axes) == 2


def handler(explorer, name):
    """The page's handler ``name`` and its inputs' default values (the app built, no browser)."""
    pytest.importorskip("gradio")
    from noisynn.ui import app as ui
    from noisynn.ui.setting import check_setting

    app = ui.build_app(explorer, check_setting(setting(eval_tokens=64)), run_roots=("nowhere",))
    fn = next(f for f in app.fns.values() if getattr(f.fn, "__name__", "") == name)
    return fn.fn, [getattr(c, "value", None) for c in fn.inputs]


def test_a_point_finished_as_stop_is_pressed_stays_off_the_shown_curve(explorer, monkeypatch):
    import threading

    from noisynn.ui.curve import Curve

    on_sweep, values = handler(explorer, "on_sweep")
    finished = threading.Event()
    original = explorer.perplexity

    def perplexity(s, *args, **kwargs):
        out = original(s, *args, **kwargs)
        if len(calls := getattr(perplexity, "calls", [])) == 1:
            finished.set()  # the second point is done: Stop is pressed now
        perplexity.calls = calls + [s.sigma]
        return out

    monkeypatch.setattr(explorer, "perplexity", perplexity)
    steps = on_sweep(Curve(), 6, *values[2:])
    next(steps)  # "Sweep: 6 levels..."
    shown = next(c for c in next(steps).values() if isinstance(c, Curve))  # point 1 of 6, on the page
    assert shown.n_points == 1
    finished.wait(60)
    explorer.requests.stop()  # Gradio cancels the event: nothing more reaches the page, the thread runs on
    for _ in steps:
        pass
    assert shown.n_points == 1  # what Export writes is what the page showed


def test_every_result_names_its_whole_setting():
    """A PCM result names its read time, drift compensation and converter preset, given or by default."""
    pcm = setting(noise_type="pcm", scale="relative_channel", sigma=1.0)
    default = pcm.label
    assert "read at t = 86400 s (1 d)" in default and "no drift compensation" in default
    later = replace(pcm, flags=(("t_seconds", "3600"), ("drift_compensation", "true"),
                                ("analog_preset", "aihwkit_hwa"))).label
    assert "read at t = 3600 s (1 h)" in later and "drift compensation readout" in later
    assert "preset aihwkit_hwa" in later and later != default
    assert "read at" not in setting().label and "--dac_bits 8" in replace(setting(), flags=(("dac_bits", "8"),)).label


def test_generate_with_the_last_setting_shows_the_result_again(explorer):
    """A second tab, a reload or a repeated press with the setting last computed: the press answers (the result
    shown again, a message saying so), never nothing."""
    from noisynn.ui.curve import Curve

    on_compute, values = handler(explorer, "on_compute")
    first = list(on_compute(Curve(), *values[1:]))
    assert any("Done:" in str(getattr(v, "get", lambda k: v)("value")) for v in first[-1].values())
    again = list(on_compute(Curve(), *values[1:]))  # another tab: its own empty curve, the same setting
    out = again[-1]
    texts = [str(v.get("value")) if isinstance(v, dict) else str(v) for v in out.values()]
    assert any("shown again" in t for t in texts) and any("Results for **sigma" in t for t in texts)
    curve = next(v for v in out.values() if isinstance(v, Curve))
    assert curve.n_points == 1  # the point is on this tab's curve too
