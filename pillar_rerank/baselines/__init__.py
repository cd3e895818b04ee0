"""Training-free re-rankers and normalisers behind one interface.

Every method is a :class:`~pillar_rerank.base.BaseReranker`: configured in its constructor,
``fit(bank=...)`` per direction where it needs a bank, ``rerank(scores)`` returning a new float32
matrix of shape (n_queries, n_gallery). :func:`apply_both` runs one in both directions.
Transductive methods (``transductive = True``: they read the other test queries) are listed and
reported apart from the others.
"""

from pillar_rerank.baselines._stream import EmbeddingScores
from pillar_rerank.baselines.bank import Bank, apply_both, bank_from_embeddings, bank_from_scores
from pillar_rerank.baselines.dbnorm import DBNorm
from pillar_rerank.baselines.dsl import DualSoftmax
from pillar_rerank.baselines.gallery_bias import (
    CSLS,
    DN,
    NNN,
    DualBankSinkhorn,
    GalleryBias,
    InvertedSoftmax,
    QBNorm,
    SinkhornNorm,
)
from pillar_rerank.baselines.k_reciprocal import KReciprocal
from pillar_rerank.baselines.mtfn_rr import MTFNRR
from pillar_rerank.baselines.registry import (
    BASELINES,
    baseline_config,
    baseline_name,
    describe,
    from_config,
    get_baseline,
)

__all__ = [
    "BASELINES",
    "CSLS",
    "DN",
    "MTFNRR",
    "NNN",
    "Bank",
    "DBNorm",
    "DualBankSinkhorn",
    "DualSoftmax",
    "EmbeddingScores",
    "GalleryBias",
    "InvertedSoftmax",
    "KReciprocal",
    "QBNorm",
    "SinkhornNorm",
    "apply_both",
    "bank_from_embeddings",
    "bank_from_scores",
    "baseline_config",
    "baseline_name",
    "describe",
    "from_config",
    "get_baseline",
]
