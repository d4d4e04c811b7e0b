"""The house stays in order: experiments apart, reports without torch, small modules, one registry."""

import ast
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from noisynn import registry
from tests.project.test_import_cycles import _modules, import_graph  # the import cycle itself is checked there

PACKAGE = ROOT / "noisynn"
PLOTTING_MAX_LINES = 300
MODULE_MAX_LINES = 500
LONG_REASON = "Why this module is long:"  # a module over MODULE_MAX_LINES says so in its docstring


def test_import_graph_resolves_an_experiments_relative_imports():
    deps = import_graph()["noisynn.experiments.sweep.run"]
    assert {"noisynn.runs.runner", "noisynn.runs.context", "noisynn.experiments.sweep.report"} <= deps


def test_experiments_never_import_each_other():
    graph = import_graph()
    for name, deps in graph.items():
        parts = name.split(".")
        if len(parts) > 3 and parts[1] == "experiments":
            others = {d for d in deps if d.startswith("noisynn.experiments.") and d.split(".")[2] != parts[2]}
            assert not others, f"{name} imports {others}"


def test_reports_registry_and_plotting_import_no_torch():
    modules = ["noisynn.registry", "noisynn.plotting", "noisynn.graphs", "noisynn.ui.saved_runs"] + [
        f"{package}.report" for package in registry.EXPERIMENTS.values()]
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n"
            "    if 'torch' in sys.modules:\n"
            "        sys.exit(f'{name} imported torch')\n"
            "print('NO-TORCH')\n")
    proc = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})
    assert proc.returncode == 0 and "NO-TORCH" in proc.stdout, proc.stdout + proc.stderr


def test_plotting_is_small_and_no_module_is_long_without_a_reason():
    assert len((PACKAGE / "plotting.py").read_text().splitlines()) < PLOTTING_MAX_LINES
    for name, path in _modules().items():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MODULE_MAX_LINES:
            doc = ast.get_docstring(ast.parse(source)) or ""
            assert LONG_REASON in doc, f"{name} has {len(source.splitlines())} lines and no '{LONG_REASON}' in its docstring"


@pytest.mark.parametrize("name", registry.names())
def test_every_experiment_is_a_folder_with_run_and_report(name):
    run, report = registry.run_module(name), registry.report_module(name)
    assert callable(run.main) and callable(report.plot)
    assert registry.parser(name).parse_known_args([])[0] is not None
    assert (PACKAGE / "experiments" / name / "__init__.py").is_file()
    assert name not in registry.TOOLS


def test_registry_lists_every_experiment_folder():
    folders = sorted(p.parent.name for p in (PACKAGE / "experiments").glob("*/run.py"))
    assert folders == sorted(registry.names())


def test_no_test_file_is_longer_than_the_package_allows_its_modules():
    """The tests mirror the package (tests/<subpackage>/): a test file that grows past the modules' limit is split
    by what it tests, as a module would be."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "tests").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MODULE_MAX_LINES}
    assert not long, long
