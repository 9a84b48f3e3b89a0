"""A caption's condition: the text encoder's embeddings and mask, as every backbone hands them over."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Condition:
    """A caption's embeddings (1, L, D) and mask (1, L), True where a token carries the caption.

    The mask is informative for backbones whose network attends to every position (Wan pads the
    caption with zero vectors and attends to all 512), and an input for those that take one
    (Qwen-Image). `caption` is the text it came from ("" for the null condition).
    """

    embeddings: torch.Tensor
    mask: torch.Tensor
    caption: str = ""

    def expand(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embeddings.expand(batch, -1, -1), self.mask.expand(batch, -1)
