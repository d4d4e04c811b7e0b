"""benchmarks/bench_memory.py's machinery on the tiny random model: the probe's fields and the ratios (no timing asserts).

Integration: the random model takes the embedded SmolLM2-135M's tokenizer files.
"""

from __future__ import annotations

import json
import sys

import pytest
from safetensors import safe_open

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks import bench_memory, random_model  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return random_model.build("tiny", tmp_path_factory.mktemp("random") / "tiny")


def test_random_model_folder_loads_with_its_config_and_a_tied_head(tiny):
    from noisynn.models.loading import load_model

    meta = json.loads((tiny / random_model.DONE_MARKER).read_text())
    lm = load_model(str(tiny), device="cpu")
    cfg = lm.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (64, 2, 49152)
    assert lm.model.lm_head.weight.data_ptr() == lm.model.model.embed_tokens.weight.data_ptr()
    assert meta["n_params"] == lm.info["n_params"] and meta["weights_bytes"] == 4 * meta["n_params"]
    with safe_open(str(tiny / "model.safetensors"), "pt") as fh:
        assert "lm_head.weight" not in fh.keys()
    w = lm.model.model.layers[0].mlp.up_proj.weight
    assert abs(float(w.detach().std()) - cfg.initializer_range) < 0.002
    assert random_model.build("tiny", tiny) == tiny  # a complete folder is reused


def test_sweep_path_json_fields_ratios_table_and_resume(tiny, tmp_path, monkeypatch):
    out = tmp_path / "memory.json"
    assert bench_memory.main(["--models", str(tiny), "--paths", "sweep", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    weights = json.loads((tiny / random_model.DONE_MARKER).read_text())["weights_bytes"]
    session = results["sessions"][0]
    assert {"cpu", "cores", "ram_bytes", "torch"} <= set(session["machine"]) and len(session["load_start"]) == 3
    floor, sweep = results["runs"][f"{tiny}/floor"], results["runs"][f"{tiny}/sweep"]
    for rec in (floor, sweep):
        assert rec["weights_bytes"] == weights and rec["points"] == 3
        assert rec["peak_above_base_bytes"] == rec["peak_rss_bytes"] - rec["base"]["VmRSS"]
        assert rec["ratio"] == pytest.approx(rec["peak_above_base_bytes"] / weights)
        assert rec["peak_rss_bytes"] >= rec["after_load"]["VmRSS"] >= rec["base"]["VmRSS"]
        assert rec["seconds_per_point"] == pytest.approx(rec["loop_seconds"] / rec["points"])
        assert len(rec["load_before"]) == 3 and rec["commit"]
    assert sweep["settings"]["argv"] == bench_memory.PATHS["sweep"][1]
    assert sweep["floor_ratio"] == floor["ratio"]
    assert sweep["time_vs_floor"] == pytest.approx(sweep["seconds_per_point"] / floor["seconds_per_point"])
    assert f"| {tiny}/sweep |" in bench_memory.table(results)

    def no_run(*args):
        raise AssertionError("--resume reran a path whose record has the same settings")

    monkeypatch.setattr(bench_memory, "run_child", no_run)
    assert bench_memory.main(["--models", str(tiny), "--paths", "sweep", "--out", str(out), "--resume"]) == 0
    assert json.loads(out.read_text())["runs"][f"{tiny}/sweep"] == sweep
