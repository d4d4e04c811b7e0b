"""Custom noise and plugins: the original README's recipe verbatim, checked samples, plugins loaded twice,
a plugin calling sys.exit, and the plugin's content hash in run.json (tiny random models, no downloads)."""

import hashlib
import json

import pytest
import torch

from tests.helpers import exits_2_with_one_line, tiny_llama
from noisynn.errors import NoisyNNError
from noisynn.experiments.sweep import run as sweep
from noisynn.inject import NoiseInjector, inject_thermal_noise, noisy_weights
from noisynn.noise import NOISE_REGISTRY, NoiseDistribution, get_noise, register_noise
from noisynn.options.plugins import load_plugins

# The original toolkit's README, "Adding Custom Noise Distributions", character for character.
RECIPE = '''from noise_distributions import NoiseDistribution, NOISE_REGISTRY

class LaplacianNoise(NoiseDistribution):
    """Laplacian noise for modeling double-exponential errors."""

    def sample(self, shape, scale, device):
        # Laplacian via inverse CDF
        u = torch.rand(shape, device=device) - 0.5
        return scale * torch.sign(u) * torch.log(1 - 2 * torch.abs(u))

    @property
    def name(self):
        return "Laplacian"

# Register the new distribution
NOISE_REGISTRY["laplacian"] = LaplacianNoise
'''


@pytest.fixture(autouse=True)
def registry():
    """Every test may register or replace noises: the registry is restored afterwards."""
    saved = dict(NOISE_REGISTRY)
    yield NOISE_REGISTRY
    NOISE_REGISTRY.clear()
    NOISE_REGISTRY.update(saved)


@pytest.fixture
def small(tiny_model_dir, text_file):
    return ["--model", str(tiny_model_dir), "--text_file", str(text_file), "--eval_tokens", "32", "--max_length", "32",
            "--n_levels", "2", "--n_trials", "1", "--max_new_tokens", "2", "--n_samples", "1", "--quiet",
            "--max_noise", "0.05"]


def changed(model, before) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- (a) the recipe, from Python and the shell

def test_recipe_verbatim_from_python_replaces_the_builtin():
    namespace = {"torch": torch}  # the README's snippet uses torch as imported in the user's notebook
    exec(RECIPE, namespace)
    cls = namespace["LaplacianNoise"]
    assert NOISE_REGISTRY["laplacian"] is cls
    noise = get_noise("laplacian")
    assert type(noise) is cls and noise.name == "Laplacian"  # the read-only property is kept
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with noisy_weights(model, 0.05, "laplacian", seed=3) as inj:
        assert changed(model, before)
        assert inj.describe()["noise"] == {**inj.describe()["noise"], "name": "Laplacian", "class": "LaplacianNoise"}
        noisy = {k: v.clone() for k, v in model.state_dict().items()}
    assert not changed(model, before)
    inject_thermal_noise(model, 0.05, "laplacian", targets="blocks", seed=3)  # noisy_weights' targets, same seed: same draw
    assert all(torch.allclose(noisy[k], v, atol=1e-7) for k, v in model.state_dict().items())
    # a new name works the same way, without touching the built-in
    NOISE_REGISTRY["laplace_inverse_cdf"] = cls
    with noisy_weights(tiny_llama(), 0.05, "laplace_inverse_cdf", seed=1) as inj:
        assert type(inj.noise) is cls


@pytest.mark.parametrize("suffix, name", [("", "laplacian"),
                                          ('NOISE_REGISTRY["my_laplacian"] = LaplacianNoise\n', "my_laplacian")])
def test_recipe_verbatim_as_a_plugin_from_the_shell(tmp_path, small, suffix, name):
    plugin = tmp_path / "laplacian_plugin.py"
    plugin.write_text(RECIPE + suffix)  # verbatim: no `import torch` line, as in the README
    out = tmp_path / "run"
    assert sweep.main(small + ["--plugin", str(plugin), "--noise_type", name, "--out", str(out)]) == 0
    noise = json.loads((out / "run.json").read_text())["injection"]["noise"]
    assert noise["class"] == "LaplacianNoise" and noise["name"] == "Laplacian"
    assert NOISE_REGISTRY[name].__module__.startswith("noisynn_plugin_")


# ---------------------------------------------------------------- (b) every sample checked against the request

def _bad(kind):
    class Bad(NoiseDistribution):
        def sample(self, shape, scale, device=None, generator=None):
            if kind == "raises":
                raise ValueError("broken sampler")
            if kind == "numpy":
                return torch.zeros(shape).numpy()
            if kind == "none":
                return None
            if kind == "broadcastable":  # one row: broadcasts against the weight, silently wrong
                return torch.zeros(tuple(shape)[-1:])
            if kind == "integer":
                return torch.zeros(shape, dtype=torch.int64)
            if kind == "device":
                return torch.zeros(shape, device="meta")
            raise AssertionError(kind)

    Bad.__qualname__ = Bad.__name__ = f"Bad_{kind}"
    return Bad


@pytest.mark.parametrize("kind, message", [
    ("raises", "sample failed: ValueError: broken sampler"),
    ("numpy", "returned ndarray, not a torch.Tensor"),
    ("none", "returned NoneType, not a torch.Tensor"),
    ("broadcastable", "returned shape"),
    ("integer", "not a floating-point tensor"),
    ("device", "on meta"),
])
@pytest.mark.parametrize("call", ["noisy_weights", "inject_thermal_noise"])
def test_a_bad_sample_is_one_line_naming_the_class(kind, message, call):
    NOISE_REGISTRY["bad"] = _bad(kind)
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NoisyNNError, match=message) as err:
        if call == "noisy_weights":
            with noisy_weights(model, 0.1, "bad", seed=0):
                pass
        else:
            inject_thermal_noise(model, 0.1, "bad", seed=0)
    assert f"Bad_{kind}" in str(err.value) and "\n" not in str(err.value)
    assert not changed(model, before)  # refused before any weight was touched


def test_a_raising_init_is_one_line_naming_the_class():
    @register_noise("broken_init")
    class BrokenInit(NoiseDistribution):
        def __init__(self, **params):
            raise RuntimeError("no hardware attached")

    with pytest.raises(NoisyNNError, match=r"BrokenInit\) failed to initialise: RuntimeError: no hardware") as err:
        NoiseInjector(tiny_llama(), "broken_init")
    assert "\n" not in str(err.value)


def test_a_bad_plugin_sample_from_the_shell_is_one_line(tmp_path, small, capsys):
    plugin = tmp_path / "wrong_shape.py"
    plugin.write_text("from noisynn import NoiseDistribution, register_noise\n"
                      "@register_noise('wrong_shape')\n"
                      "class WrongShape(NoiseDistribution):\n"
                      "    def sample(self, shape, scale, device=None, generator=None):\n"
                      "        return torch.ones(shape[-1]) * scale\n")
    err = exits_2_with_one_line(sweep.main, small + ["--plugin", str(plugin), "--noise_type", "wrong_shape",
                                                     "--out", str(tmp_path / "run")], capsys)
    assert "WrongShape.sample returned shape" in err


# ---------------------------------------------------------------- (c) the same plugin loaded twice

PLUGIN = ("from noisynn import NoiseDistribution, register_noise\n"
          "@register_noise('twice')\n"
          "class Twice(NoiseDistribution):\n"
          "    def sample(self, shape, scale, device=None, generator=None):\n"
          "        return torch.randn(shape, generator=generator, device=device) * scale * {factor}\n")


def test_the_same_plugin_twice_is_not_already_registered(tmp_path):
    plugin = tmp_path / "twice.py"
    plugin.write_text(PLUGIN.format(factor=1))
    first = load_plugins([str(plugin), str(plugin)])  # given twice on one command line
    cls = NOISE_REGISTRY["twice"]
    again = load_plugins([str(plugin)])  # loaded again (the UI after the CLI)
    assert NOISE_REGISTRY["twice"] is cls and first[0] == first[1] == again[0]
    plugin.write_text(PLUGIN.format(factor=2))  # edited, then loaded again: the new class replaces the old
    load_plugins([str(plugin)])
    assert NOISE_REGISTRY["twice"] is not cls and NOISE_REGISTRY["twice"].__qualname__ == "Twice"


def test_the_same_plugin_twice_from_the_shell(tmp_path, small):
    plugin = tmp_path / "twice_shell.py"
    plugin.write_text(PLUGIN.format(factor=1).replace("'twice'", "'twice_shell'"))
    argv = small + ["--plugin", str(plugin), "--plugin", str(plugin), "--noise_type", "twice_shell"]
    assert sweep.main(argv + ["--out", str(tmp_path / "run")]) == 0


# ---------------------------------------------------------------- (d) sys.exit in a plugin

@pytest.mark.parametrize("call", ["sys.exit()", "sys.exit(0)", "sys.exit(3)", "raise SystemExit('bye')"])
def test_a_plugin_calling_sys_exit_is_one_line_exit_2(tmp_path, small, capsys, call):
    plugin = tmp_path / "exits.py"
    plugin.write_text(f"import sys\n{call}\n")
    out = tmp_path / "run"
    err = exits_2_with_one_line(sweep.main, small + ["--plugin", str(plugin), "--out", str(out)], capsys)
    assert "exits.py called sys.exit" in err and not out.exists()


# ---------------------------------------------------------------- (e) the plugin's content in run.json

def test_run_json_records_each_plugins_sha256_and_resume_compares_it(tmp_path, small, capsys):
    plugin = tmp_path / "hashed.py"
    plugin.write_text(PLUGIN.format(factor=1).replace("'twice'", "'hashed'"))
    out = tmp_path / "run"
    argv = small + ["--plugin", str(plugin), "--noise_type", "hashed", "--out", str(out)]
    assert sweep.main(argv) == 0
    meta = json.loads((out / "run.json").read_text())
    digest = hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert meta["plugins"] == [{"path": str(plugin), "sha256": digest}]
    assert meta["config"]["plugin_sha256"] == [digest] and meta["config"]["plugin"] == [str(plugin)]
    assert sweep.main(argv) == 0  # the same content resumes (nothing left to do)
    plugin.write_text(PLUGIN.format(factor=3).replace("'twice'", "'hashed'"))  # same path, other noise
    before = (out / "results.csv").read_bytes()
    err = exits_2_with_one_line(sweep.main, argv, capsys)
    assert "plugin_sha256" in err and (out / "results.csv").read_bytes() == before


def test_a_run_without_plugins_records_no_hash(tmp_path, small):
    out = tmp_path / "run"
    assert sweep.main(small + ["--out", str(out)]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert "plugin_sha256" not in meta["config"] and "plugins" not in meta and meta["config"]["plugin"] == []
