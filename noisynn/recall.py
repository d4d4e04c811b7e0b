"""Long-context recall probe: is a passage stated D tokens earlier copied back when its opening is repeated?

Item k: its needle (24 tokens of the evaluation text, the k-th span of 24 from its start), then D tokens of
filler (the text that follows all the needles, the same for every item: it never contains a needle's span), then
the needle's first 8 tokens again (the cue). The model is scored teacher-forced on the needle's other 16 tokens:
recall accuracy = the share of them that are its argmax prediction; recall NLL = their mean negative
log-likelihood (nats). The answer lies only D + 8 to D + 31 positions back (an induction / copy task), so a
memory that fades with age (analog attention's leaking KV store) shows here as accuracy falling with D.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import NoisyNNError

NEEDLE, CUE = 24, 8


@dataclass(frozen=True)
class RecallItems:
    """``needles`` (n, NEEDLE) token ids; ``filler`` (max distance,) token ids shared by the items."""

    needles: torch.Tensor
    filler: torch.Tensor

    @property
    def n_items(self) -> int:
        return self.needles.shape[0]

    def sequences(self, distance: int) -> torch.Tensor:
        """(n, NEEDLE + distance + NEEDLE): needle, filler, needle (cue + scored tokens)."""
        n = self.n_items
        filler = self.filler[:distance].expand(n, distance)
        return torch.cat([self.needles, filler, self.needles], dim=1)


def recall_items(ids: torch.Tensor, n_items: int, max_distance: int) -> RecallItems:
    """The probe's items from a token stream ``ids`` (1-D): needles from its start, filler after them."""
    ids = ids.reshape(-1)
    need = n_items * NEEDLE + max_distance
    if ids.numel() < need:
        raise NoisyNNError(f"the recall probe needs {need:,} tokens of text ({n_items} needles of {NEEDLE} and "
                           f"{max_distance:,} of filler); the text has {ids.numel():,}: lower --recall_items or "
                           "--recall_distances")
    needles = ids[: n_items * NEEDLE].reshape(n_items, NEEDLE)
    return RecallItems(needles, ids[n_items * NEEDLE: need])


@torch.no_grad()
def recall_scores(model, items: RecallItems, distance: int) -> dict:
    """{recall_acc, recall_nll, n_scored}: the 16 tokens after the cue, teacher-forced, one forward of the batch."""
    seq = items.sequences(distance).to(next(model.parameters()).device)
    start = NEEDLE + distance + CUE  # the first scored position
    logits = model(seq, use_cache=False).logits[:, start - 1: seq.shape[1] - 1].float()
    target = seq[:, start:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    acc = (logits.argmax(-1) == target).float().mean()
    return {"recall_acc": float(acc), "recall_nll": float(nll), "n_scored": int(target.numel())}
