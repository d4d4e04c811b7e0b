"""Training text: the embedded training split, a text file, or text the clean model writes itself."""

from __future__ import annotations

import logging

import torch

from ...corpus import SEPARATOR, embedded_split, load_text
from ...errors import NoisyNNError
from ...evaluation import tokenize

log = logging.getLogger(__name__)


def check_disjoint(train_text: str, eval_text: str, min_chars: int = 40) -> None:
    """Refuse training text that contains any paragraph (>= ``min_chars``) of the evaluation text."""
    for para in eval_text.split(SEPARATOR):
        para = para.strip()
        if len(para) >= min_chars and para[:200] in train_text:
            raise NoisyNNError(f"the training text contains evaluation text ({para[:60]!r}...); "
                               "train and evaluate on disjoint texts")


def training_chunks(tokenizer, text: str, n: int, seq_len: int) -> torch.Tensor:
    """The first ``n`` consecutive, non-overlapping windows of ``seq_len`` tokens of ``text``: (n', seq_len)."""
    need = n * seq_len
    chars = need * 8 + 1000  # ~4.5 characters per token here; generous so one pass suffices
    ids = tokenize(tokenizer, text[:chars])
    usable = ids.numel() // seq_len
    if usable == 0:
        raise NoisyNNError(f"the training text has {ids.numel()} tokens, fewer than --seq_len {seq_len}")
    if usable < n:
        log.warning("training text gives %d windows of %d tokens, fewer than --max_samples %d", usable, seq_len, n)
    n = min(n, usable)
    return ids[: n * seq_len].view(n, seq_len).clone()



def load_training_text(path: str | None, eval_text) -> tuple[str, dict]:
    """The training text (``path``, or the embedded training split) and what run.json records about it;
    refuses overlap with the evaluation text."""
    if path:
        text = load_text(path)
    else:
        text = load_text(split="train")
        if eval_text.info.get("source") == "embedded":
            # the embedded splits are disjoint by construction (a prefix / the rest of one fixed order); check it
            overlap = {t for t, _ in embedded_split("eval")} & {t for t, _ in embedded_split("train")}
            if overlap:
                raise NoisyNNError(f"embedded train and eval splits share articles: {sorted(overlap)[:3]}")
    check_disjoint(text.text, eval_text.text)
    return text.text, text.info

