"""How a (query, reference) pair is scored: similarity objects shared by every adapter loss.

Every object maps query vectors ``[n_queries, d]`` and reference vectors ``[n_gallery, d]`` to a
score matrix ``[n_queries, n_gallery]``. ``is_inverted`` says which way is better (``True``: a
similarity, larger is closer), and :meth:`BaseDistance.margin` hides that convention from the
losses, as in pytorch-metric-learning's ``BaseDistance``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class BaseDistance(torch.nn.Module):
    """Base class: ``forward(query, ref)`` -> score matrix; ``margin(pos, neg)`` -> violation."""

    is_inverted: bool = True

    def __init__(self, *, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, query: Tensor, ref: Tensor | None = None) -> Tensor:
        ref = query if ref is None else ref
        if self.normalize:
            query, ref = F.normalize(query, dim=-1), F.normalize(ref, dim=-1)
        return self.compute_mat(query, ref)

    def compute_mat(self, query: Tensor, ref: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def margin(self, positive: Tensor, negative: Tensor) -> Tensor:
        """How much ``negative`` beats ``positive`` (positive when the pair is violated)."""
        return negative - positive if self.is_inverted else positive - negative

    def __repr__(self) -> str:
        return f"{type(self).__name__}(normalize={self.normalize})"


class DotProductSimilarity(BaseDistance):
    """Inner product ``<q, r>`` (higher is closer)."""

    def compute_mat(self, query: Tensor, ref: Tensor) -> Tensor:
        return query @ ref.transpose(-1, -2)


class CosineSimilarity(DotProductSimilarity):
    """Cosine similarity: the inner product of L2-normalised vectors."""

    def __init__(self) -> None:
        super().__init__(normalize=True)

    def __repr__(self) -> str:
        return "CosineSimilarity()"


class LateInteractionSimilarity(BaseDistance):
    """ColBERT MaxSim over token sets (Inflate & Shrink): see
    :func:`pillar_rerank.adapters.losses.inflate_shrink.late_interaction`.

    Inputs are image tokens ``[n_images, m, d]`` (query side of the matrix's rows) and text tokens
    ``[n_texts, n, d]``; masks are passed to :meth:`forward`.
    """

    def forward(
        self,
        query: Tensor,
        ref: Tensor | None = None,
        *,
        query_mask: Tensor | None = None,
        ref_mask: Tensor | None = None,
    ) -> Tensor:
        from pillar_rerank.adapters.losses.inflate_shrink import late_interaction

        ref = query if ref is None else ref
        if self.normalize:
            query, ref = F.normalize(query, dim=-1), F.normalize(ref, dim=-1)
        return late_interaction(query, ref, img_mask=query_mask, txt_mask=ref_mask)
