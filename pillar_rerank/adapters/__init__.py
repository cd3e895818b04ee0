"""Adapters: losses and backbone trainers from related work whose scores feed the re-ranker.

Composition follows pytorch-metric-learning: ``distances`` score pairs, ``miners`` choose the
negatives, ``losses`` hold the formulas, ``reducers`` turn per-tuple values into a scalar. The
trainers (``TwoTowerTrainer``, ``SelfAlignTrainer``, ``ShrinkTrainer``) train heads over frozen
features and end with ``export_scores(out_dir, data)``, which writes ``sims.npy`` and
``txt2img.npy`` in the format ``rerank fit/apply/eval`` read.
"""

from pillar_rerank.adapters.distances import (
    BaseDistance,
    CosineSimilarity,
    DotProductSimilarity,
    LateInteractionSimilarity,
)
from pillar_rerank.adapters.features import FeatureSet, load_feature_set
from pillar_rerank.adapters.heads import IdentityHead, LinearHead, MLPHead, TokenHead, make_head
from pillar_rerank.adapters.losses import LOSSES, get_loss
from pillar_rerank.adapters.miners import AllNegativesMiner, BaseMiner, HardestNegativeMiner
from pillar_rerank.adapters.reducers import BaseReducer, MeanReducer, SumReducer
from pillar_rerank.adapters.trainers import (
    BaseTrainer,
    SelfAlignTrainer,
    ShrinkTrainer,
    TwoTowerTrainer,
    load_trainer,
)

__all__ = [
    "LOSSES",
    "AllNegativesMiner",
    "BaseDistance",
    "BaseMiner",
    "BaseReducer",
    "BaseTrainer",
    "CosineSimilarity",
    "DotProductSimilarity",
    "FeatureSet",
    "HardestNegativeMiner",
    "IdentityHead",
    "LateInteractionSimilarity",
    "LinearHead",
    "MLPHead",
    "MeanReducer",
    "SelfAlignTrainer",
    "ShrinkTrainer",
    "SumReducer",
    "TokenHead",
    "TwoTowerTrainer",
    "get_loss",
    "load_feature_set",
    "load_trainer",
    "make_head",
]
