"""Retrieval metrics: recall@K, RSUM, ranks (and the extended metrics)."""

from pillar_rerank.metrics.ranks import best_positive_ranks, i2t_ranks, t2i_ranks
from pillar_rerank.metrics.recall import recall_at_k, recall_metrics, rsum

__all__ = ["best_positive_ranks", "i2t_ranks", "recall_at_k", "recall_metrics", "rsum", "t2i_ranks"]
