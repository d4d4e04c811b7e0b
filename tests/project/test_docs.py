"""The documentation: README size and links, the MkDocs site builds strictly, docs/cli.md is current,
and the docs name only code that exists (imports, package paths, dotted names, flags, the layout tree)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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


# --- The docs name only code that exists -------------------------------------------------------

DOC_PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
# Modules a reader imports in the snippets: the package and the original toolkit's root modules.
_IMPORTED = ("noisynn", "noise_distributions", "evaluation")
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
_IMPORT_START = re.compile(r"^\s*(from|import)\s+(%s)\b" % "|".join(_IMPORTED))
# `...` spans; inside them noisynn/....py (or a folder noisynn/.../) and dotted noisynn.x.y names
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_PACKAGE_PATH = re.compile(r"(?<![\w/.~-])noisynn/[\w/.<>-]*")
_DOTTED = re.compile(r"(?<![\w/.])noisynn(?:\.\w+)+")

_IMPORT_CHECKER = """
import sys
failed = []
for where, statement in STATEMENTS:
    try:
        exec(statement, {})
    except Exception as err:
        failed.append(f"{where}: {statement!r}: {type(err).__name__}: {err}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def python_imports(markdown: str) -> list[str]:
    """The import statements of noisynn (and the root modules) in the ```python blocks, one per
    statement: a parenthesised list over several lines is joined, comments are dropped."""
    found = []
    for block in _FENCE.findall(markdown):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not _IMPORT_START.match(lines[i]):
                i += 1
                continue
            statement = lines[i].split("#", 1)[0].strip()
            while statement.count("(") > statement.count(")") and i + 1 < len(lines):
                i += 1
                statement += " " + lines[i].split("#", 1)[0].strip()
            ast.parse(statement)  # a snippet that is not Python fails here, with its text
            found.append(statement)
            i += 1
    return found


def failing_imports(statements: list[tuple[str, str]]) -> list[str]:
    """Run every (where, statement) in one fresh interpreter from the repository root; the failures."""
    code = f"STATEMENTS = {statements!r}\n{_IMPORT_CHECKER}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)
    if proc.returncode not in (0, 1):
        raise AssertionError(f"import checker crashed: {proc.stderr[-2000:]}")
    return [line for line in proc.stdout.splitlines() if line.strip()]


def named_code(markdown: str) -> tuple[list[str], list[str]]:
    """Package paths (``noisynn/...``) and dotted names (``noisynn.x.y``) inside `code spans`."""
    prose = _FENCE.sub("", markdown)
    spans = _CODE_SPAN.findall(prose)
    paths = [m for s in spans for m in _PACKAGE_PATH.findall(s)]
    dotted = [m for s in spans for m in _DOTTED.findall(s)]
    return paths, dotted


def _top_level_names(source: Path) -> set[str]:
    names = set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def dotted_name_exists(name: str) -> bool:
    """``noisynn.a.b.c``: the longest module prefix is a file of the package, and the next part (if
    any) is defined at its top level (read with ast: nothing is imported). ``noisynn.X`` may also be
    a lazy re-export of the package."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if not source.is_file():
            continue
        if cut == len(parts):
            return True
        attr = parts[cut]
        if attr in _top_level_names(source):
            return True
        if cut == 1:  # the package's lazy exports (noisynn/__init__.py's _EXPORTS)
            import noisynn
            return attr in noisynn._EXPORTS
        return False
    return False


def test_import_finder_joins_parenthesised_imports_and_skips_prose():
    text = ("```python\nfrom noisynn import (a,  # first\n    b)\nimport noisynn.runs.runner\nx = 1\n"
            "from evaluation import compute_perplexity\nimport torch\n```\n"
            "from noisynn import not_in_a_block\n```bash\nfrom noisynn import shell\n```\n")
    assert python_imports(text) == ["from noisynn import (a, b)", "import noisynn.runs.runner",
                                    "from evaluation import compute_perplexity"]


def test_import_checker_reports_a_name_that_does_not_exist():
    failed = failing_imports([("a.md", "from noisynn.errors import NoisyNNError"),
                              ("b.md", "from noisynn.errors import NoSuchName"),
                              ("c.md", "import noisynn.no_such_module")])
    assert len(failed) == 2 and failed[0].startswith("b.md") and failed[1].startswith("c.md"), failed


def test_every_python_snippet_of_the_docs_is_python():
    bad = []
    for page in DOC_PAGES:
        for block in _FENCE.findall(page.read_text(encoding="utf-8")):
            try:
                ast.parse(block)
            except SyntaxError as err:
                line = block.splitlines()[max(0, (err.lineno or 1) - 1)]
                bad.append(f"{page.relative_to(ROOT).as_posix()}: {err.msg} in {line!r}")
    assert not bad, "```python blocks that do not parse:\n" + "\n".join(bad)


def test_every_import_in_the_python_snippets_of_the_docs_works():
    statements = [(page.relative_to(ROOT).as_posix(), s)
                  for page in DOC_PAGES for s in python_imports(page.read_text(encoding="utf-8"))]
    assert len(statements) >= 6  # the README, library, devices, extending, python-api, ... pages
    failed = failing_imports(statements)
    assert not failed, "imports in the docs' ```python blocks that fail:\n" + "\n".join(failed)


def test_code_name_finder_sees_paths_and_dotted_names_in_code_spans_only():
    text = ("See `noisynn/runs/` and `noisynn.runs.read.read_run(path)`, `~/.cache/noisynn/gguf/`,\n"
            "`noisynn/experiments/sweep/`; not noisynn/plain.py.\n```python\nimport noisynn.x\n```\n")
    assert named_code(text) == (["noisynn/runs/", "noisynn/experiments/sweep/"], ["noisynn.runs.read.read_run"])
    assert dotted_name_exists("noisynn.runs.read.read_run") and dotted_name_exists("noisynn.experiments.sweep")
    assert dotted_name_exists("noisynn.load_model")  # a lazy re-export
    assert not dotted_name_exists("noisynn.runs.no_such_reader") and not dotted_name_exists("noisynn.sweep")


def test_every_package_path_and_module_named_in_the_docs_exists():
    missing = []
    for page in DOC_PAGES:
        paths, dotted = named_code(page.read_text(encoding="utf-8"))
        where = page.relative_to(ROOT).as_posix()
        # noisynn/experiments/<name>/ is a pattern: its fixed part must exist
        missing += [f"{where}: {p}" for p in paths if not (ROOT / p.split("<", 1)[0]).exists()]
        missing += [f"{where}: {d}" for d in dotted if not dotted_name_exists(d)]
    assert not missing, "the docs name code that does not exist:\n" + "\n".join(missing)


def layout_tree(markdown: str) -> set[str]:
    """The file paths of the ``noisynn/`` tree in docs/layout.md's first code block: two spaces of
    indent per level, a name ending in ``/`` opens a folder, the rest of a line is its description."""
    block = re.search(r"^```text\n(.*?)^```", markdown, re.S | re.M).group(1)
    stack: list[str] = []
    files = set()
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        del stack[depth:]
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
        else:
            files.add("/".join([*stack, name]))
    return files


def test_layout_tree_parser_follows_the_indent():
    text = "```text\nnoisynn/   lib\n  a.py     x\n  sub/     y\n    b.py   z\n  c.py\n```\n"
    assert layout_tree(text) == {"noisynn/a.py", "noisynn/sub/b.py", "noisynn/c.py"}


def test_layout_page_lists_every_file_of_the_package():
    listed = layout_tree((ROOT / "docs" / "layout.md").read_text(encoding="utf-8"))
    present = {p.relative_to(ROOT).as_posix() for p in (ROOT / "noisynn").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert listed == present, (f"docs/layout.md is out of date: not listed {sorted(present - listed)}, "
                               f"listed but absent {sorted(listed - present)}")


_SHELL_FENCE = re.compile(r"^```(?:bash|sh|shell)[^\n]*\n(.*?)^```", re.S | re.M)


def shell_commands(markdown: str) -> list[tuple[str, list[str]]]:
    """(command name, its --flags) for every ``python <script>.py`` or ``noisynn <name>`` call in the
    ```bash blocks (continuation lines joined, comments dropped); the name is the registry's
    (``thermal_noise_simulation.py`` -> ``sweep``). Flags before the script (a launcher's) are not its."""
    scripts = {v: k for k, v in _generator().ROOT_SCRIPTS.items()}
    found = []
    for block in _SHELL_FENCE.findall(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            words = line.split("#", 1)[0].split()
            for i, word in enumerate(words):
                if word.endswith(".py") and (ROOT / word).is_file() and "/" not in word:
                    name, rest = scripts.get(word, word[:-3]), words[i + 1:]
                elif word == "noisynn" and i + 1 < len(words) and not words[i + 1].startswith("-"):
                    name, rest = words[i + 1], words[i + 2:]
                else:
                    continue
                flags = []
                for w in rest:
                    if w in (";", "|", "&&", "||"):
                        break
                    if w.startswith("--"):
                        flags.append(w.split("=", 1)[0])
                found.append((name, flags))
                break
    return found


def test_shell_command_finder_maps_scripts_and_skips_launcher_flags():
    text = ("```bash\naccelerate launch --num_processes 2 thermal_noise_simulation.py --n_trials 4 \\\n"
            "    --out runs/x   # --not_a_flag\nnoisynn ui --port 8000 && ls --all\n```\n"
            "python layer_sensitivity.py --mode groups\n")
    assert shell_commands(text) == [("sweep", ["--n_trials", "--out"]), ("ui", ["--port"])]


def test_every_flag_in_the_docs_shell_examples_exists():
    from noisynn import registry

    known = {**registry.EXPERIMENTS, **registry.TOOLS}
    wrong = []
    calls = [(page, c) for page in DOC_PAGES for c in shell_commands(page.read_text(encoding="utf-8"))]
    assert len(calls) >= 15
    for page, (name, flags) in calls:
        where = page.relative_to(ROOT).as_posix()
        if name not in known:
            wrong.append(f"{where}: unknown command {name}")
            continue
        options = registry.parser(name)._option_string_actions
        wrong += [f"{where}: {name} {f}" for f in flags if f not in options]
    assert not wrong, "shell examples in the docs use flags the parsers lack:\n" + "\n".join(wrong)


# Flags of other programs (pip, accelerate, torchrun, pytest, mkdocs) and the original toolkit's one
# removed flag, which the prose names on purpose.
FOREIGN_FLAGS = {"--no-deps", "--cpu", "--num_processes", "--nproc_per_node", "--multi_gpu", "--collect-only",
                 "--strict", "--perplexity_threshold"}


def test_every_flag_named_in_the_docs_prose_exists_in_some_parser():
    from noisynn import registry

    known = set(FOREIGN_FLAGS)
    for name in [*registry.EXPERIMENTS, *registry.TOOLS]:
        known |= set(registry.parser(name)._option_string_actions)
    unknown = []
    for page in DOC_PAGES:
        if page.name == "cli.md":  # generated from the parsers themselves
            continue
        prose = _FENCE.sub("", page.read_text(encoding="utf-8"))
        for span in _CODE_SPAN.findall(prose):
            unknown += [f"{page.relative_to(ROOT).as_posix()}: {f} (in `{span}`)"
                        for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", span) if f not in known]
    assert not unknown, "the docs name flags no parser has:\n" + "\n".join(unknown)
