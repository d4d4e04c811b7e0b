"""The documentation: README size and links, the MkDocs site builds strictly, docs/cli.md is current."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT = 15 * 1024

# [text](target) and ![alt](target); <img src="target">
_MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_IMG_SRC = re.compile(r"<img[^>]*\ssrc=\"([^\"]+)\"")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_links(markdown: str) -> list[str]:
    """Link and image targets that point into the repository (no URL, no pure anchor), fragment removed."""
    targets = _MD_LINK.findall(markdown) + _IMG_SRC.findall(markdown)
    return [t.split("#")[0] for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_is_a_front_page_under_15_kb():
    size = len(README.read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes; move detail into docs/ (limit {README_LIMIT})"


def test_every_relative_link_and_image_in_the_readme_exists():
    links = relative_links(README.read_text(encoding="utf-8"))
    assert any(t.startswith("images/") for t in links) and any(t.startswith("docs/") for t in links)
    missing = [t for t in links if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_link_finder_sees_links_images_and_skips_urls():
    text = '[a](docs/x.md#part) ![b](images/y.png) [c](https://example.org/z) [d](#top) <img src="images/w.png">'
    assert relative_links(text) == ["docs/x.md", "images/y.png", "images/w.png"]


def test_cli_reference_matches_the_parsers_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "37")  # the generator fixes the width itself: the terminal must not matter
    expected = _generator().render()
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == expected, "docs/cli.md is stale: run `python scripts/gen_cli_docs.py` (or `make cli-docs`)"
    for name in ("sweep", "layer_sensitivity", "ui", "generate_graphs"):
        assert f"\n## {name}\n" in current


def test_cli_reference_has_a_section_per_command_with_its_flags():
    gen = _generator()
    text = gen.render()
    for name, _kind in gen._commands():
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert "usage:" in section and "--help" in section, name


def test_mkdocs_builds_strictly(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "WARNING" not in log, log
    # the figures are served from images/ (not copied into docs/) and every page is built
    assert (site / "images" / "sweep.png").read_bytes() == (ROOT / "images" / "sweep.png").read_bytes()
    for page in ("cli", "original_toolkit", "extending", "layer_sensitivity"):
        assert (site / page / "index.html").exists(), page
    assert 'src="../images/sweep.png"' in (site / "sweep" / "index.html").read_text(encoding="utf-8")


def test_every_experiment_and_tool_has_its_docs_page_linked_from_the_readme():
    readme = README.read_text(encoding="utf-8")
    for name, kind in _generator()._commands():
        assert (ROOT / "docs" / f"{name}.md").exists(), f"{kind} {name} has no docs/{name}.md"
        if kind == "experiment":
            assert f"(docs/{name}.md)" in readme, f"README.md does not link docs/{name}.md"
