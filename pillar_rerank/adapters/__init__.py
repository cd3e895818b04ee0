"""Adapters: losses and backbone trainers from related work whose scores feed the re-ranker.

Layout follows pytorch-metric-learning: ``distances`` score pairs, ``miners`` choose the
negatives, ``losses`` hold the formulas (one module per loss; not LeaPRR's own
``pillar_rerank.losses``), ``reducers`` turn per-tuple values into a scalar, ``heads`` are the
learnable encoders over frozen features, and ``trainers`` (``TwoTowerTrainer``,
``SelfAlignTrainer``, ``ShrinkTrainer``) put them together. Every trainer takes one
:class:`HeadConfig` and one :class:`TrainingConfig` whole and ends with
``export_scores(out_dir, data)``, which writes ``sims.npy`` and ``txt2img.npy`` in the format
``rerank fit/apply/eval`` read.
"""

from pillar_rerank.adapters.config import HeadConfig, TrainingConfig
from pillar_rerank.adapters.distances import (
    BaseDistance,
    CosineSimilarity,
    DotProductSimilarity,
    LateInteractionSimilarity,
    selfalign_similarity,
)
from pillar_rerank.adapters.features import FeatureSet, load_feature_set
from pillar_rerank.adapters.heads import (
    ContextHead,
    IdentityHead,
    InflateCodes,
    LinearHead,
    MLPHead,
    PrototypeBank,
    TokenHead,
    make_head,
)
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
    "ContextHead",
    "CosineSimilarity",
    "DotProductSimilarity",
    "FeatureSet",
    "HardestNegativeMiner",
    "HeadConfig",
    "IdentityHead",
    "InflateCodes",
    "LateInteractionSimilarity",
    "LinearHead",
    "MLPHead",
    "MeanReducer",
    "PrototypeBank",
    "SelfAlignTrainer",
    "ShrinkTrainer",
    "SumReducer",
    "TokenHead",
    "TrainingConfig",
    "TwoTowerTrainer",
    "get_loss",
    "load_feature_set",
    "load_trainer",
    "make_head",
    "selfalign_similarity",
]
