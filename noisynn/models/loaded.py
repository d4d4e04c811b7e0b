"""LoadedModel: a model, its tokenizer and what was loaded (name, device, dtype, fingerprint)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LoadedModel:
    """A model ready for evaluation, its tokenizer, and what run.json records about it."""

    model: torch.nn.Module
    tokenizer: object
    info: dict = field(default_factory=dict)
    # For a model loaded in a lower precision: parameter name -> (numel, std of the rounding
    # error W_dtype - W_float32). Rounding is itself a perturbation of the weights.
    rounding_std: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
