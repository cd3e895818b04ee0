"""Adapter losses (functional kernels and composable modules) and the name registry.

Two-tower losses over a batch score matrix are registered by name for the trainers and the
``rerank train-backbone --loss NAME`` command.
"""

from pillar_rerank.adapters.losses.base import BaseScoreLoss
from pillar_rerank.adapters.losses.inflate_shrink import (
    InflateCodes,
    LpHingeLoss,
    ScoreDistillationLoss,
    late_interaction,
    lp_hinge_triplet_loss,
    score_distillation_loss,
)
from pillar_rerank.adapters.losses.infonce import InfoNCELoss, infonce_loss
from pillar_rerank.adapters.losses.listwise import (
    ListwiseLoss,
    dcg,
    hard_ndcg,
    ideal_dcg,
    pairwise_listwise_loss,
    rsc_relevance,
    smooth_ndcg,
    smooth_ndcg_loss,
    smooth_rank,
)
from pillar_rerank.adapters.losses.selfalign import (
    ContextHead,
    PrototypeBank,
    concept_alignment_loss,
    context_alignment_loss,
    selfalign_similarity,
    sinkhorn_knopp,
)
from pillar_rerank.adapters.losses.vsepp import TripletLoss, VSE0Loss, VSEPPLoss, triplet_loss

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
    "ContextHead",
    "InfoNCELoss",
    "InflateCodes",
    "ListwiseLoss",
    "LpHingeLoss",
    "PrototypeBank",
    "ScoreDistillationLoss",
    "TripletLoss",
    "VSE0Loss",
    "VSEPPLoss",
    "concept_alignment_loss",
    "context_alignment_loss",
    "dcg",
    "get_loss",
    "hard_ndcg",
    "ideal_dcg",
    "infonce_loss",
    "late_interaction",
    "lp_hinge_triplet_loss",
    "pairwise_listwise_loss",
    "rsc_relevance",
    "score_distillation_loss",
    "selfalign_similarity",
    "sinkhorn_knopp",
    "smooth_ndcg",
    "smooth_ndcg_loss",
    "smooth_rank",
    "triplet_loss",
]
