"""Which (query, negative) tuples count: negative miners over a queries x gallery score matrix.

Conventions: ``scores[q, g]`` scores query ``q`` against gallery item ``g``; query ``q``'s own
positive is ``g = q`` (the diagonal of a training batch); ``pos_mask[q, g]`` marks every gallery
item that is *also* relevant to ``q`` (e.g. another caption of the same image), which is never a
negative. Miners run under ``no_grad`` and return a boolean ``[n_queries, n_gallery]`` mask of the
negatives the loss should use.
"""

from __future__ import annotations

import torch
from torch import Tensor


def negative_mask(n_queries: int, n_gallery: int, pos_mask: Tensor | None, *, device: torch.device) -> Tensor:
    """Boolean mask of admissible negatives: not the diagonal, not in ``pos_mask``."""
    eye = torch.eye(n_queries, n_gallery, dtype=torch.bool, device=device)
    if pos_mask is None:
        return ~eye
    return ~(eye | pos_mask.to(device=device, dtype=torch.bool))


class BaseMiner(torch.nn.Module):
    """``forward(scores, pos_mask=None) -> bool mask [n_queries, n_gallery]`` of used negatives."""

    def forward(self, scores: Tensor, pos_mask: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            neg = negative_mask(scores.shape[0], scores.shape[1], pos_mask, device=scores.device)
            out = self.mine(scores.detach(), neg)
        if out.shape != scores.shape or out.dtype != torch.bool:  # pragma: no cover - developer error
            raise RuntimeError(f"{type(self).__name__} returned a mask of shape {tuple(out.shape)}.")
        return out

    def mine(self, scores: Tensor, negatives: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AllNegativesMiner(BaseMiner):
    """Every admissible negative (VSE0 / summed negatives)."""

    def mine(self, scores: Tensor, negatives: Tensor) -> Tensor:
        return negatives


class HardestNegativeMiner(BaseMiner):
    """The single highest-scoring admissible negative per query (VSE++ "max violation").

    At exact ties the first (lowest-index) tied negative is chosen, so gradients are reproducible.
    Queries without any admissible negative get an all-False row.
    """

    def mine(self, scores: Tensor, negatives: Tensor) -> Tensor:
        masked = scores.masked_fill(~negatives, float("-inf"))
        best = masked.argmax(dim=1)
        out = torch.zeros_like(negatives)
        out[torch.arange(scores.shape[0], device=scores.device), best] = True
        return out & negatives
