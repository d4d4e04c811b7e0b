"""The sweep's command line on a tiny local model: run-folder schema, plugins, and error cases."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, exits_2_with_one_line
from noisynn.experiments.sweep import run as sweep
from noisynn.runs.read import read_rows

SCHEMA = ["experiment", "model", "noise_type", "scale", "sigma", "trial", "seed", "perplexity", "nll",
          "bits_per_byte", "eval_tokens", "entropy_bits", "distinct_1", "distinct_2", "repetition", "finite"]


@pytest.fixture
def small(tiny_model_dir, text_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "64", "--max_length", "32",
            "--n_levels", "3", "--n_trials", "2", "--max_new_tokens", "4", "--n_samples", "2", "--quiet",
            "--max_noise", "0.5"]


def test_sweep_writes_run_folder(tmp_path, small, capsys):
    out = tmp_path / "run"
    assert sweep.main(small + ["--out", str(out), "--output", str(tmp_path / "copy.png")]) == 0
    rows = read_rows(out / "results.csv")
    assert list(rows[0]) == SCHEMA and len(rows) == 3 * 2
    assert len({(r["sigma"], r["trial"]) for r in rows}) == 6 and {r["sigma"] for r in rows} >= {0.0, 0.5}
    assert all(r["eval_tokens"] == 64 for r in rows)
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["injection"]["n_params"] > 0 and meta["text"]["source"] == "file"
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 * 3 and {s["kind"] for s in samples} == {"greedy", "sampled"}
    assert (out / "sweep.png").stat().st_size > 10_000 and (tmp_path / "copy.png").is_file()
    assert (out / "summary.csv").is_file()
    printed = capsys.readouterr().out
    assert "coherent" in printed and "perplexity" in printed
    # Same seed, same numbers; noise grows perplexity at the top level.
    assert sweep.main(small + ["--out", str(tmp_path / "again")]) == 0
    assert read_rows(tmp_path / "again" / "results.csv") == rows


def test_plugin_noise_from_the_shell(tmp_path, small):
    plugin = tmp_path / "my_noise.py"
    plugin.write_text(
        "import torch\n"
        "from noisynn import NoiseDistribution, register_noise\n"
        "@register_noise('rademacher')\n"
        "class Rademacher(NoiseDistribution):\n"
        "    def sample(self, shape, scale, device=None, generator=None):\n"
        "        return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).float().to(device) * scale\n")
    out = tmp_path / "run"
    assert sweep.main(small + ["--plugin", str(plugin), "--noise_type", "rademacher", "--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    assert {r["noise_type"] for r in rows} == {"rademacher"}
    assert json.loads((out / "run.json").read_text())["injection"]["noise"]["class"] == "Rademacher"


BAD = [
    (["--noise_type", "pink"], "unknown noise type 'pink'"),
    (["--max_noise", "-0.1"], "must be >= 0"),
    (["--max_noise", "nan"], "not a finite number"),
    (["--max_noise", "abc"], "not a number"),
    (["--n_levels", "0"], "must be >= 1"),
    (["--model", "/no/such/model"], "does not exist"),
    (["--model", "nobody/no-such-model-xyz"], "cannot reach the Hugging Face hub"),
    (["--text_file", "/no/such.txt"], "does not exist"),
    (["--text_file", "EMPTY"], "is empty"),
    (["--text_file", "LATIN1"], "is not UTF-8"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--scale", "percent"], "unknown --scale"),
    (["--targets", "attn"], "unknown target"),
    (["--plugin", "RAISES"], "failed to import"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_input_exits_2_with_one_line_and_keeps_run(tmp_path, small, capsys, extra, message):
    out = tmp_path / "run"
    assert sweep.main(small + ["--out", str(out), "--n_levels", "1", "--n_trials", "1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "raises.py").write_text("raise RuntimeError('plugin is broken')\n")
    subs = {"EMPTY": str(tmp_path / "empty.txt"), "LATIN1": str(tmp_path / "latin1.txt"),
            "RAISES": str(tmp_path / "raises.py")}
    extra = [subs.get(x, x) for x in extra]
    assert message in exits_2_with_one_line(sweep.main, small + ["--out", str(out), "--n_levels", "1", "--n_trials", "1"]
                                            + extra, capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_root_script_is_the_entry_point(tmp_path, small):
    proc = subprocess.run([sys.executable, str(ROOT / "thermal_noise_simulation.py"), "--noise_type", "pink",
                           "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown noise type" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_noisynn_console_script_dispatch(capsys):
    from noisynn import cli

    assert cli.main(["nosuch"]) == 2
    assert "unknown experiment 'nosuch'" in capsys.readouterr().err
    assert cli.main([]) == 2 and "sweep" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        cli.main(["sweep", "--help"])
    assert info.value.code == 0 and "--max_noise" in capsys.readouterr().out
