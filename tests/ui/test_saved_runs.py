"""Saved run folders in `noisynn ui` (noisynn.ui.saved_runs) on tiny random models: listed, shown, redrawn,
refused when damaged, tables to four significant digits."""

import pytest

from noisynn.ui import saved_runs
from noisynn.errors import NoisyNNError


@pytest.fixture
def saved_run(tmp_path, tiny_model_dir, text_file):
    from noisynn.experiments.sweep import run as sweep

    out = tmp_path / "runs" / "tiny-sweep"
    assert sweep.main(["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32",
                       "--max_length", "32", "--n_levels", "3", "--n_trials", "2", "--max_new_tokens", "2",
                       "--n_samples", "1", "--quiet", "--max_noise", "0.5", "--out", str(out)]) == 0
    return out


def test_saved_runs_listed_and_shown(saved_run, tmp_path):
    assert saved_runs.list_runs([tmp_path / "runs", tmp_path / "nothing"]) == [str(saved_run)]
    run = saved_runs.load_saved_run(saved_run)
    assert [p.name for p in run.figures] == ["sweep.png"] and run.table_name == "summary.csv"
    assert "median" in run.columns and len(run.rows) == 5 * 3  # 5 metrics x 3 levels
    assert run.meta["config"]["n_trials"] == 2


def test_saved_run_without_png_is_redrawn_elsewhere(saved_run):
    (saved_run / "sweep.png").unlink()
    (saved_run / "summary.csv").unlink()
    before = sorted(p.name for p in saved_run.iterdir())
    run = saved_runs.load_saved_run(saved_run)
    assert len(run.figures) == 1 and run.figures[0].stat().st_size > 10_000
    assert saved_run not in run.figures[0].parents and "redrawn" in run.note
    assert run.table_name == "summary.csv" and sorted(p.name for p in saved_run.iterdir()) == before


@pytest.mark.parametrize("make,message", [
    (lambda tmp: tmp / "no" / "such" / "run", "does not exist"),
    (lambda tmp: (tmp / "file.txt", (tmp / "file.txt").write_text("x"))[0], "is not a folder"),
    (lambda tmp: (tmp / "empty", (tmp / "empty").mkdir())[0], "not a run folder"),
    (lambda tmp: "  ", "no run folder given"),
])
def test_bad_run_folders(tmp_path, make, message):
    with pytest.raises(NoisyNNError, match=message):
        saved_runs.load_saved_run(make(tmp_path))


def test_saved_run_tables_show_four_significant_digits(saved_run):
    run = saved_runs.load_saved_run(saved_run)
    cells = [c for row in run.rows for c in row if isinstance(c, str)]
    assert cells and all(len(c) <= 10 for c in cells if c.replace(".", "").replace("e", "").replace("-", "")
                         .replace("+", "").isdigit()), cells
    assert saved_runs.shown_value(0.123456789) == "0.1235" and saved_runs.shown_value(float("inf")) == "inf"


def test_an_exported_curve_shows_unmeasured_metrics_as_not_measured(tmp_path, monkeypatch, text_file):
    """The explorer's export measures perplexity only: its other metrics read "not measured", never a failure
    (no red inf/nan marks, no "clean (nan)", no "0% CI band")."""
    from noisynn.experiments.sweep import report
    from noisynn.ui.curve import Curve
    from noisynn.ui.explore import Explorer
    from tests.ui.test_explore import setting, tiny_loader

    explorer = Explorer(device="cpu", text_file=str(text_file), loader=tiny_loader)
    curve = Curve()
    for sigma in (0.1, 0.5):
        clean, noisy = explorer.perplexity(setting(sigma=sigma, eval_tokens=32, max_length=32))
        curve.add(setting(sigma=sigma, eval_tokens=32, max_length=32), noisy, clean)
    folder, = curve.export(tmp_path / "runs").iterdir()
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig) or path)
    run = saved_runs.load_saved_run(folder)
    texts = [t.get_text() for fig in figures for ax in fig.axes for t in ax.texts + (
        ax.get_legend().get_texts() if ax.get_legend() else [])]
    shown = " | ".join(texts)
    assert "not measured" in shown and "inf/nan" not in shown and "(nan)" not in shown and "0% CI" not in shown
    assert "Not measured in this run" in run.note and "entropy_bits" in run.note
    assert "nan" not in {c for row in run.rows for c in row}
