"""Training text: the embedded training split, a text file, or text the clean model writes itself."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch

from ...corpus import SEPARATOR, embedded_split, load_text
from ...errors import NoisyNNError
from ...evaluation import decode, tokenize
from ...seeding import derive_seed

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



# ---------------------------------------------------------------------------------------------- self-generated text

def self_prompt(tokenizer) -> str:
    """What each generated window starts from: the BOS token (AFM starts from BOS + an empty string)."""
    return tokenizer.bos_token or tokenizer.eos_token or ""


def read_self_cache(path: Path) -> list[list[list[int]]]:
    """The generated batches in the cache (JSONL, one ``{"batch": b, "ids": [[...], ...]}`` a line);
    a torn last line (a kill mid-write) is dropped, so the batch is generated again."""
    if not path.is_file():
        return []
    batches = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if record.get("batch") != len(batches):
            break
        batches.append(record["ids"])
    return batches


def self_generated_chunks(model, tokenizer, n: int, seq_len: int, path: Path, seed: int, batch: int = 16,
                          temperature: float = 1.0, top_k: int | None = 50, progress=None) -> torch.Tensor:
    """``n`` windows of ``seq_len`` tokens sampled from ``model`` itself: (n, seq_len), cached in ``path``.

    As AFM's ``curate_synthetic_dataset.py`` (IBM/analog-foundation-models at 4f4c505, l. 25-101): start
    from BOS, sample at temperature 1 with top-k 50, ignore EOS, fixed length. Decoding is the toolkit's
    batched KV-cached ``evaluation.decode``; batch b draws from a generator seeded by (seed, b), so a
    killed generation resumes at the first batch missing from the cache with the same tokens.
    """
    prompt = self_prompt(tokenizer)
    start = tokenize(tokenizer, prompt) if prompt else torch.empty(0, dtype=torch.long)
    new = seq_len - start.numel()
    if new < 1:
        raise NoisyNNError(f"--seq_len {seq_len} leaves no room for generated tokens")
    batches = read_self_cache(path)
    total = math.ceil(n / batch)
    if len(batches) < total:
        if batches:
            log.info("resuming self-generated data at batch %d of %d (%s)", len(batches), total, path)
        path.write_text("".join(json.dumps({"batch": b, "ids": ids}) + "\n" for b, ids in enumerate(batches)),
                        encoding="utf-8")  # drops a torn tail
        todo = range(len(batches), total)
        was_training = model.training
        model.eval()
        try:
            for b in progress(todo) if progress else todo:
                rows = min(batch, n - b * batch)
                g = torch.Generator().manual_seed(derive_seed(seed, "self-data", b))
                gen = decode(model, tokenizer, [prompt] * rows, new, greedy=False, temperature=temperature,
                             top_k=top_k, generator=g, stop_at_eos=False)
                ids = torch.cat([start.expand(rows, -1), gen.token_ids], dim=1).tolist()
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"batch": b, "ids": ids}) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                batches.append(ids)
        finally:
            model.train(was_training)
    windows = [row for ids in batches[:total] for row in ids][:n]
    out = torch.tensor(windows, dtype=torch.long)
    if out.shape != (n, seq_len):
        raise NoisyNNError(f"{path} holds windows of another shape {tuple(out.shape)}; remove it or use another --out")
    return out
