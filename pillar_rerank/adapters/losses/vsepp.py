"""VSE++ triplet ranking loss: triplet hinge + negative miner + reducer.

Faghri et al., "VSE++: Improving Visual-Semantic Embeddings with Hard Negatives", BMVC 2018.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from pillar_rerank._validation import Interval
from pillar_rerank.adapters.distances import BaseDistance, DotProductSimilarity
from pillar_rerank.adapters.losses.base import BaseScoreLoss, transpose_or_none
from pillar_rerank.adapters.miners import AllNegativesMiner, BaseMiner, HardestNegativeMiner
from pillar_rerank.adapters.reducers import BaseReducer, get_reducer

_SIMILARITY = DotProductSimilarity()


def directional_triplet(
    scores: Tensor,
    pos_mask: Tensor | None,
    *,
    margin: float,
    miner: BaseMiner,
    distance: BaseDistance = _SIMILARITY,
) -> Tensor:
    """Per-query triplet loss of one direction.

    ``scores`` is queries x gallery with each query's positive on the diagonal. For query ``q``:
    ``sum over mined negatives g of [margin + (s_qg - s_qq)]_+`` (one term with the hardest miner).

    Returns
    -------
    Tensor of shape (n_queries,)
    """
    positive = scores.diagonal()
    used = miner(scores, pos_mask)
    hinge = (margin + distance.margin(positive[:, None], scores)).clamp(min=0)
    return hinge.masked_fill(~used, 0.0).sum(dim=1)


class TripletLoss(BaseScoreLoss):
    r"""Bidirectional triplet ranking loss over a batch score matrix: distance + miner + reducer.

    .. math::
        L = \operatorname{reduce}\big(\{\ell(S)_i\}_i \cup \{\ell(S^\top)_j\}_j\big),\quad
        \ell(S)_q = \sum_{g \in N(q)} [m + S_{qg} - S_{qq}]_+

    where :math:`N(q)` is the set the miner returns: the hardest admissible negative
    (:class:`HardestNegativeMiner`, VSE++) or all of them (:class:`AllNegativesMiner`, VSE0). The
    mean reducer averages the 2B per-query terms (= the mean of the two directions' means,
    Listwise-ITR's pairwise part); the sum reducer sums them (VSE++ and SelfAlign).

    ``forward(sims, *, pos_mask=None)``: ``sims[i, j]`` scores image ``i`` against text ``j``,
    positives on the diagonal; ``pos_mask`` marks further positives (e.g. two captions of the
    same image in the batch), never negatives. The references count a duplicate image in a batch
    as a negative of itself; pass ``pos_mask=None`` for that. At exact ties the hardest negative
    is the lowest-index one.

    Parameters
    ----------
    margin : float, default=0.2
    miner : BaseMiner, optional
        Default :class:`HardestNegativeMiner`.
    reducer : BaseReducer or {"mean", "sum"}, optional
        Default from :meth:`get_default_reducer`.
    distance : BaseDistance, optional
        Only its ``margin`` convention is used (scores come precomputed).
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {"margin": Interval(float, 0.0)}

    def __init__(
        self,
        *,
        margin: float = 0.2,
        miner: BaseMiner | None = None,
        reducer: BaseReducer | str | None = None,
        distance: BaseDistance | None = None,
    ) -> None:
        super().__init__()
        self.margin = margin
        self._check_params()
        self.margin = float(margin)
        self.miner = miner if miner is not None else HardestNegativeMiner()
        self.reducer = get_reducer(reducer) if reducer is not None else self.get_default_reducer()
        self.distance = distance if distance is not None else DotProductSimilarity()

    def get_default_reducer(self) -> BaseReducer:
        return get_reducer("mean")

    def compute_loss(self, sims: Tensor, *, pos_mask: Tensor | None, **batch) -> Tensor:
        i2t = directional_triplet(
            sims, pos_mask, margin=self.margin, miner=self.miner, distance=self.distance
        )
        t2i = directional_triplet(
            sims.transpose(0, 1),
            transpose_or_none(pos_mask),
            margin=self.margin,
            miner=self.miner,
            distance=self.distance,
        )
        self.last_stats = {"i2t": float(i2t.detach().mean()), "t2i": float(t2i.detach().mean())}
        return self.reducer(torch.cat([i2t, t2i]))


class VSEPPLoss(TripletLoss):
    """VSE++: hardest negative, summed over the batch (the paper's and SelfAlign's setting)."""

    def __init__(self, *, margin: float = 0.2, reducer: BaseReducer | str | None = None) -> None:
        super().__init__(margin=margin, miner=HardestNegativeMiner(), reducer=reducer)

    def get_default_reducer(self) -> BaseReducer:
        return get_reducer("sum")


class VSE0Loss(TripletLoss):
    """VSE0: all negatives, summed."""

    def __init__(self, *, margin: float = 0.2, reducer: BaseReducer | str | None = None) -> None:
        super().__init__(margin=margin, miner=AllNegativesMiner(), reducer=reducer)

    def get_default_reducer(self) -> BaseReducer:
        return get_reducer("sum")
