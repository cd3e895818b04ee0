"""VSE++ triplet ranking loss: triplet hinge + negative miner + reducer.

Faghri et al., "VSE++: Improving Visual-Semantic Embeddings with Hard Negatives", BMVC 2018.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pillar_rerank.adapters.distances import BaseDistance, DotProductSimilarity
from pillar_rerank.adapters.losses.base import BaseScoreLoss, check_pos_mask, check_sims, transpose_or_none
from pillar_rerank.adapters.miners import AllNegativesMiner, BaseMiner, HardestNegativeMiner
from pillar_rerank.adapters.reducers import BaseReducer, get_reducer
from pillar_rerank.exceptions import InvalidParameterError

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


def triplet_loss(
    sims: Tensor,
    margin: float = 0.2,
    hardest: bool = True,
    reduction: str = "mean",
    pos_mask: Tensor | None = None,
) -> Tensor:
    r"""Bidirectional triplet ranking loss over a batch score matrix.

    .. math::
        L = \operatorname{reduce}\big(\{\ell(S)_i\}_i \cup \{\ell(S^\top)_j\}_j\big),\quad
        \ell(S)_q = \sum_{g \in N(q)} [m + S_{qg} - S_{qq}]_+

    where :math:`N(q)` is the hardest admissible negative (``hardest=True``, VSE++) or all of them
    (VSE0). ``reduction="mean"`` averages the 2B per-query terms (= the mean of the two directions'
    means, Listwise-ITR's pairwise part); ``"sum"`` sums them (VSE++ and SelfAlign).

    Parameters
    ----------
    sims : Tensor of shape (B, B)
        ``sims[i, j]`` scores image ``i`` against text ``j``; positives on the diagonal.
    margin : float, default=0.2
    hardest : bool, default=True
    reduction : {"mean", "sum"}, default="mean"
    pos_mask : bool Tensor of shape (B, B), optional
        Further positives (e.g. two captions of the same image in the batch), never negatives.

    Notes
    -----
    The references count a duplicate image in a batch as a negative of itself (identity
    positives only); pass ``pos_mask=None`` for that behaviour. At exact ties the hardest
    negative is the lowest-index one.
    """
    sims = check_sims(sims)
    pos_mask = check_pos_mask(pos_mask, sims)
    miner = HardestNegativeMiner() if hardest else AllNegativesMiner()
    per_query = torch.cat(
        [
            directional_triplet(sims, pos_mask, margin=margin, miner=miner),
            directional_triplet(
                sims.transpose(0, 1), transpose_or_none(pos_mask), margin=margin, miner=miner
            ),
        ]
    )
    return get_reducer(reduction)(per_query)


class TripletLoss(BaseScoreLoss):
    """Composable triplet loss (``distance``, ``miner``, ``reducer`` objects); see :func:`triplet_loss`.

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

    def __init__(
        self,
        *,
        margin: float = 0.2,
        miner: BaseMiner | None = None,
        reducer: BaseReducer | str | None = None,
        distance: BaseDistance | None = None,
    ) -> None:
        super().__init__()
        if not margin >= 0:
            raise InvalidParameterError(
                f"The 'margin' parameter of {type(self).__name__} must be a float "
                f">= 0; got {margin!r} instead."
            )
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

    def _repr_params(self) -> dict:
        return {"margin": self.margin}


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
