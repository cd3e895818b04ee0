"""Retrieval metrics: recall@K, RSUM, ranks, mAP@R, R-Precision, NDCG@K, the k-fold protocol.

Use :func:`evaluate` with metric names (``"i2t_R@5"``, ``"t2i_mAP@R"``, ``"i2t_NDCG@10"``,
``"RSUM"``); the per-metric functions return per-query values.
"""

from pillar_rerank.metrics.evaluate import (
    DEFAULT_METRICS,
    MEASURES,
    evaluate,
    parse_metric,
    supported_metrics,
)
from pillar_rerank.metrics.folds import average_over_folds, fold_image_blocks
from pillar_rerank.metrics.map_at_r import map_at_r, map_at_r_and_r_precision, r_precision
from pillar_rerank.metrics.ndcg import ndcg_at_k
from pillar_rerank.metrics.qrels import Qrels
from pillar_rerank.metrics.ranks import best_positive_ranks, i2t_ranks, item_ranks, t2i_ranks
from pillar_rerank.metrics.recall import recall_at_k, recall_metrics, rsum

__all__ = [
    "DEFAULT_METRICS",
    "MEASURES",
    "Qrels",
    "average_over_folds",
    "best_positive_ranks",
    "evaluate",
    "fold_image_blocks",
    "i2t_ranks",
    "item_ranks",
    "map_at_r",
    "map_at_r_and_r_precision",
    "ndcg_at_k",
    "parse_metric",
    "r_precision",
    "recall_at_k",
    "recall_metrics",
    "rsum",
    "supported_metrics",
    "t2i_ranks",
]
