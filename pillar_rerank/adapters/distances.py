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

from pillar_rerank.exceptions import InvalidInputError


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
    r"""ColBERT MaxSim with the text as query (Inflate & Shrink's late interaction).

    .. math:: s(I_a, T_b) = \sum_i \max_j \langle t_{b,i}, v_{a,j}\rangle

    ``forward(img_tokens [n_images, m, D], txt_tokens [n_texts, n, D], *, query_mask=None,
    ref_mask=None) -> [n_images, n_texts]``: rows are the images (the matrix's query side).
    Masks (``[n_images, m]`` / ``[n_texts, n]``) mark valid positions: padded image tokens never
    win the max, padded text tokens add nothing; ``None`` counts every position (the reference,
    which does not mask padding). Memory O(n_images * n_texts * m * n); score large galleries in
    blocks of images. At an exact tie of the max over image tokens the whole gradient goes to the
    first tied token (the reference's ``max``), so gradients are reproducible.

    Parameters
    ----------
    n_out : int, optional
        Keep only the first ``n_out`` positions on both sides (the reference's slice; a parity
        switch: it drops image regions beyond ``n_out``).
    normalize : bool, default=False
    """

    def __init__(self, *, n_out: int | None = None, normalize: bool = False) -> None:
        super().__init__(normalize=normalize)
        self.n_out = n_out

    def forward(
        self,
        query: Tensor,
        ref: Tensor | None = None,
        *,
        query_mask: Tensor | None = None,
        ref_mask: Tensor | None = None,
    ) -> Tensor:
        ref = query if ref is None else ref
        if query.ndim != 3 or ref.ndim != 3 or query.shape[2] != ref.shape[2]:
            raise InvalidInputError(
                f"late interaction: expected (n_images, m, D) and (n_texts, n, D); got "
                f"{tuple(query.shape)} and {tuple(ref.shape)}."
            )
        if self.normalize:
            query, ref = F.normalize(query, dim=-1), F.normalize(ref, dim=-1)
        if self.n_out is not None:
            query, ref = query[:, : self.n_out], ref[:, : self.n_out]
            query_mask = None if query_mask is None else query_mask[:, : self.n_out]
            ref_mask = None if ref_mask is None else ref_mask[:, : self.n_out]
        sims = torch.einsum("amd,bnd->abnm", query, ref)
        if query_mask is not None:
            sims = sims.masked_fill(~query_mask.to(sims.device, torch.bool)[:, None, None, :], float("-inf"))
        # max(dim), not amax: at tied image tokens the whole gradient goes to the first (spec 7a.6)
        best = sims.max(dim=-1).values  # [a, b, n]
        if ref_mask is not None:
            best = best.masked_fill(~ref_mask.to(sims.device, torch.bool)[None, :, :], 0.0)
        return best.sum(dim=-1)

    def __repr__(self) -> str:
        return f"LateInteractionSimilarity(n_out={self.n_out}, normalize={self.normalize})"


def selfalign_similarity(
    base_sims: Tensor,
    img_locals_mean: Tensor,
    img_fused: Tensor,
    txt_locals_mean: Tensor,
    txt_fused: Tensor,
    weight: float = 0.5,
) -> Tensor:
    r"""SelfAlign retrieval score
    :math:`s(I,T) + w\langle \bar\ell^v, c^t\rangle + w\langle c^v, \bar\ell^t\rangle`.

    Shapes: base_sims (n_images, n_texts); image terms (n_images, D); text terms (n_texts, D).
    The means of the unit locals are not re-normalised (as in the reference).
    """
    return base_sims + weight * (img_locals_mean @ txt_fused.t()) + weight * (img_fused @ txt_locals_mean.t())
