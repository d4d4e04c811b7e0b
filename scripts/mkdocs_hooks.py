"""MkDocs hook: serve the repository's images/ folder inside the docs site without copying it.

The pages under docs/ link figures as ``../images/NAME.png`` (right when read on GitHub, where
images/ sits beside docs/). MkDocs only knows files under ``docs_dir``, so with
``--strict`` such a link would be a warning. This hook adds every file of images/ to the
site as ``images/NAME`` and rewrites the links that point into it, so one PNG serves the
README, the repository view and the built site.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def _images_dir(config) -> Path:
    return Path(config["docs_dir"]).resolve().parent / "images"


def on_files(files, config):
    """Add the repository's images/ to the site (as images/<name>), unless docs/ has them."""
    folder = _images_dir(config)
    for path in sorted(folder.glob("*")):
        if path.is_file() and files.get_file_from_path(f"images/{path.name}") is None:
            files.append(File(f"images/{path.name}", str(folder.parent), config["site_dir"],
                              config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    """Rewrite links that leave docs/ for images/ into links to the site's images/ copy."""
    docs = Path(config["docs_dir"]).resolve()
    folder = _images_dir(config)
    page_dir = (docs / page.file.src_path).parent

    def fix(match):
        target = match.group(2)
        if "://" in target or target.startswith(("#", "/")):
            return match.group(0)
        real = (page_dir / target.split("#")[0]).resolve()
        if real.parent != folder:
            return match.group(0)
        virtual = posixpath.relpath(f"images/{real.name}", posixpath.dirname(page.file.src_uri) or ".")
        return f"{match.group(1)}{virtual}{match.group(3)}"

    return _LINK.sub(fix, markdown)
