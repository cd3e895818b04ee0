"""Adapter losses, each written once as a module, and the name registry of two-tower losses.

These are the backbone-training losses of related work (``pillar_rerank.adapters.losses``); LeaPRR's
own training loss is a different module, ``pillar_rerank.losses``. Score losses derive from
:class:`BaseScoreLoss` (``forward(sims, *, pos_mask=None, **batch)``; checks done once there);
SelfAlign's feature-level losses take features instead of a score matrix. The building blocks
they share (per-direction kernels, NDCG pieces, RSC relevance, Sinkhorn) are plain functions.
Two-tower losses over a batch score matrix are registered by name for the trainers and
``rerank train-backbone --loss NAME``.
"""

from pillar_rerank.adapters.losses.base import BaseScoreLoss
from pillar_rerank.adapters.losses.inflate_shrink import LpHingeLoss, ScoreDistillationLoss
from pillar_rerank.adapters.losses.infonce import InfoNCELoss
from pillar_rerank.adapters.losses.listwise import (
    ListwiseLoss,
    SmoothNDCGLoss,
    dcg,
    hard_ndcg,
    ideal_dcg,
    rsc_relevance,
    smooth_ndcg,
    smooth_rank,
)
from pillar_rerank.adapters.losses.selfalign import ConceptAlignmentLoss, ContextAlignmentLoss, sinkhorn_knopp
from pillar_rerank.adapters.losses.vsepp import TripletLoss, VSE0Loss, VSEPPLoss

#: name -> loss class for two-tower training (``loss_params`` are its keyword arguments)
LOSSES: dict[str, type[BaseScoreLoss]] = {
    "vsepp": VSEPPLoss,
    "vse0": VSE0Loss,
    "triplet": TripletLoss,
    "infonce": InfoNCELoss,
    "listwise": ListwiseLoss,
    "lp_hinge": LpHingeLoss,
}


def get_loss(name: str, params: dict | None = None) -> BaseScoreLoss:
    """Build a registered loss by name; an unknown name lists the valid ones."""
    from pillar_rerank.exceptions import InvalidParameterError

    if name not in LOSSES:
        raise InvalidParameterError(f"Unknown loss {name!r}; expected one of {', '.join(sorted(LOSSES))}.")
    try:
        return LOSSES[name](**(params or {}))
    except TypeError as exc:
        raise InvalidParameterError(f"loss {name!r}: bad parameters {params!r} ({exc}).") from exc


__all__ = [
    "LOSSES",
    "BaseScoreLoss",
    "ConceptAlignmentLoss",
    "ContextAlignmentLoss",
    "InfoNCELoss",
    "ListwiseLoss",
    "LpHingeLoss",
    "ScoreDistillationLoss",
    "SmoothNDCGLoss",
    "TripletLoss",
    "VSE0Loss",
    "VSEPPLoss",
    "dcg",
    "get_loss",
    "hard_ndcg",
    "ideal_dcg",
    "rsc_relevance",
    "sinkhorn_knopp",
    "smooth_ndcg",
    "smooth_rank",
]
