"""The house stays in order: no import cycle, reports without torch, small modules, one registry."""

import ast
import subprocess
import sys

import pytest

from conftest import ROOT
from noisynn import registry

PACKAGE = ROOT / "noisynn"
PLOTTING_MAX_LINES = 300
MODULE_MAX_LINES = 500
LONG_REASON = "Why this module is long:"  # a module over MODULE_MAX_LINES says so in its docstring


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(node):
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def runtime_nodes(tree):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (annotations only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node) if not is_type_checking(child))


def imports_of(name):
    """The noisynn modules ``name`` imports, anywhere in its body (a function-level import is still a
    dependency; one under ``if TYPE_CHECKING:`` is not), relative imports resolved against the package;
    ``from pkg import sub`` names ``pkg.sub``."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    found.add(f"{target}.{alias.name}")
                elif target in MODULES:
                    found.add(target)
    found.discard(name)
    return found


def find_cycle(graph):
    """One import cycle as a list of modules (first = last), or None."""
    state, stack = {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                return stack[stack.index(v):] + [v]
            if v not in state and (cycle := visit(v)):
                return cycle
        stack.pop()
        state[u] = "done"
        return None

    for u in sorted(graph):
        if u not in state and (cycle := visit(u)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_resolution_sees_relative_imports():
    deps = imports_of("noisynn.experiments.sweep.run")
    assert {"noisynn.runner", "noisynn.context", "noisynn.experiments.sweep.report"} <= deps
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\nimport y\n")
    assert [n.names[0].name for n in runtime_nodes(tree) if isinstance(n, ast.Import)] == ["y"]


def test_no_import_cycle_inside_the_package():
    graph = {name: imports_of(name) for name in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_experiments_never_import_each_other():
    for name in MODULES:
        parts = name.split(".")
        if len(parts) > 3 and parts[1] == "experiments":
            others = {d for d in imports_of(name) if d.startswith("noisynn.experiments.")
                      and d.split(".")[2] != parts[2]}
            assert not others, f"{name} imports {others}"


def test_reports_registry_and_plotting_import_no_torch():
    modules = ["noisynn.registry", "noisynn.plotting", "noisynn.graphs", "noisynn.saved_runs"] + [
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
    for name, path in MODULES.items():
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
