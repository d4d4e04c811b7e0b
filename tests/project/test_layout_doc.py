"""docs/layout.md's package tree is what scripts/gen_layout.py writes from the package's docstrings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_layout", ROOT / "scripts" / "gen_layout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layout_page_is_what_the_generator_writes():
    current = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    assert current == _generator().render(current), (
        "docs/layout.md is stale: run `python scripts/gen_layout.py`")


def test_every_module_has_a_one_line_summary():
    gen = _generator()
    too_long = {}
    for path in sorted((ROOT / "noisynn").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        line = gen.summary(path)  # raises when a module has no docstring
        if len(line) > 120:
            too_long[path.relative_to(ROOT).as_posix()] = len(line)
    assert not too_long, f"first docstring lines over 120 characters: {too_long}"


def test_tree_lists_a_folder_before_its_files_and_keeps_the_rest_of_the_page(tmp_path):
    gen = _generator()
    page = "# Title\n\nintro\n\n```text\nstale\n```\n\nroot\n\n```text\nkept\n```\n"
    out = gen.render(page)
    assert out.startswith("# Title\n\nintro\n\n```text\nnoisynn/ ") and out.endswith("root\n\n```text\nkept\n```\n")
    lines = gen.tree().splitlines()
    assert lines[1].split()[0] == "__init__.py" and "  noise/" in "\n".join(lines)
