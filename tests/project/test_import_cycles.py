"""No import cycle inside the noisynn package: modules import one way (read from the source, no torch)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "noisynn"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(tree: ast.AST):
    """Every import statement, also inside functions (lazy imports) and under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                module = node.module if not node.level else ".".join(p for p in (base, node.module) if p)
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            deps.update(t for t in targets if t in modules and t != name)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, path + [dep])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "noisynn.noise.base" in graph and "noisynn.spec" in graph["noisynn.inject"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_type_checking_imports_count_as_imports():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import C\n")
    assert [n.module for n in _imports(tree) if isinstance(n, ast.ImportFrom)] == ["typing", "b"]


def test_no_re_export_lines_inside_the_package():
    """A name is imported from the module that defines it: no ``noqa: F401`` re-export lines (the public API,
    ``noisynn/__init__.py``, is lazy and has none either)."""
    found = [f"{name}: {line.strip()}" for name, path in _modules().items()
             for line in path.read_text(encoding="utf-8").splitlines() if "noqa: F401" in line]
    assert not found, "\n".join(found)


# plotting chooses matplotlib's Agg backend before it imports pyplot; reports take pyplot from it for that reason.
SHARED_NAMES = {("noisynn.plotting", "plt")}


def _defined(tree: ast.Module) -> set[str]:
    """Names a module defines at its top level (also inside top-level if / try blocks), not the ones it imports."""
    out: set[str] = set()

    def visit(body):
        for s in body:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(s.name)
            elif isinstance(s, (ast.Assign, ast.AnnAssign)):
                targets = s.targets if isinstance(s, ast.Assign) else [s.target]
                out.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(s, (ast.If, ast.Try)):
                visit(s.body)
                visit(s.orelse)
                for handler in getattr(s, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return out


def test_names_are_imported_from_the_module_that_defines_them():
    """No module passes on a name it imported itself (a re-export): importers go to the defining module.
    Packages' ``__init__`` files (the public API, noise's registry of built-ins) are not checked."""
    modules = _modules()
    trees = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in modules.items()}
    defined = {name: _defined(tree) for name, tree in trees.items()}
    found = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(trees[name]):
            if not isinstance(node, ast.ImportFrom) or not (node.level or (node.module or "").startswith("noisynn")):
                continue
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            module = node.module if not node.level else ".".join(p for p in (base, node.module) if p)
            if module not in modules or modules[module].name == "__init__.py":
                continue
            for alias in node.names:
                if (f"{module}.{alias.name}" not in modules and alias.name not in defined[module]
                        and (module, alias.name) not in SHARED_NAMES):
                    found.append(f"{name} line {node.lineno}: {alias.name} from {module}")
    assert not found, "\n".join(found)


def test_defined_names_leave_imports_out():
    tree = ast.parse("from .a import b\nx = 1\ntry:\n    import y\nexcept ImportError:\n    z = 2\n")
    assert _defined(tree) == {"x", "z"}
