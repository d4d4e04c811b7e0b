"""Write the package tree of docs/layout.md from the package itself.

    python scripts/gen_layout.py            # rewrite the tree in docs/layout.md
    python scripts/gen_layout.py --check    # exit 1 if docs/layout.md is stale

The tree is the page's first ```text block: one line per file and folder of ``noisynn/``, each with
the first line of its docstring (a folder's from its ``__init__.py``). Everything else on the page
(the intro, the repository root, what moved) is written by hand and kept as it is. In a folder,
``__init__.py`` comes first, then the modules, then the subfolders, each in name order.
tests/project/test_layout_doc.py fails when the page differs from what this script writes.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "noisynn"
LAYOUT_MD = ROOT / "docs" / "layout.md"
COLUMN = 33  # where the descriptions start (names are indented two spaces per level)
TREE_BLOCK = re.compile(r"^```text\n(.*?)^```", re.S | re.M)


def summary(path: Path) -> str:
    """The first line of a module's docstring, as plain text (no ``code`` marks, no final full stop)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        raise SystemExit(f"{path.relative_to(ROOT)} has no docstring: its first line is its line in docs/layout.md")
    line = doc.strip().splitlines()[0].strip().replace("``", "")
    return line[:-1] if line.endswith(".") and not line.endswith("..") else line


def init_summary(path: Path) -> str:
    """An ``__init__.py``'s own line: its docstring already describes the folder, so say what else it holds."""
    body = [n for n in ast.parse(path.read_text(encoding="utf-8")).body
            if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
            and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    if not body:
        return "the folder's docstring, no code"
    lazy = any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in body)
    return "the package's names" + (", imported on first use (PEP 562)" if lazy else "")


def _line(depth: int, name: str, text: str) -> str:
    head = "  " * depth + name
    return f"{head:<{COLUMN}}{text}".rstrip() if len(head) < COLUMN - 1 else f"{head}  {text}"


def _folder(path: Path, depth: int) -> list[str]:
    lines = [_line(depth, path.name + "/", summary(path / "__init__.py"))]
    lines.append(_line(depth + 1, "__init__.py", init_summary(path / "__init__.py")))
    for module in sorted(p for p in path.glob("*.py") if p.name != "__init__.py"):
        lines.append(_line(depth + 1, module.name, summary(module)))
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        lines += _folder(sub, depth + 1)
    return lines


def tree() -> str:
    """The package tree, one line per file and folder."""
    return "\n".join(_folder(PACKAGE, 0)) + "\n"


def render(page: str) -> str:
    """``page`` (docs/layout.md's text) with its first ```text block replaced by the current tree."""
    match = TREE_BLOCK.search(page)
    if match is None:
        raise SystemExit("docs/layout.md has no ```text block for the package tree")
    return page[:match.start(1)] + tree() + page[match.end(1):]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/layout.md is stale, write nothing")
    args = p.parse_args(argv)
    current = LAYOUT_MD.read_text(encoding="utf-8")
    expected = render(current)
    if args.check:
        if current != expected:
            print("docs/layout.md is stale: run python scripts/gen_layout.py", file=sys.stderr)
            return 1
        return 0
    if current != expected:
        LAYOUT_MD.write_text(expected, encoding="utf-8")
        print(f"wrote {LAYOUT_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
