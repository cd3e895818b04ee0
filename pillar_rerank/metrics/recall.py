"""Recall@K, RSUM, median and mean rank for both directions."""

from __future__ import annotations

import numpy as np

from pillar_rerank.inputs import Relevance
from pillar_rerank.metrics.ranks import i2t_ranks, t2i_ranks

DEFAULT_KS = (1, 5, 10)


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Percentage of queries whose best positive is within the top ``k`` (0-based ranks)."""
    return float(100.0 * np.mean(ranks < k))


def rank_summary(ranks: np.ndarray, prefix: str, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """R@K for each K, plus 1-based median and mean rank, keyed ``{prefix}_R@K`` etc."""
    out = {f"{prefix}_R@{k}": recall_at_k(ranks, k) for k in ks}
    out[f"{prefix}_medr"] = float(np.floor(np.median(ranks)) + 1)
    out[f"{prefix}_meanr"] = float(np.mean(ranks) + 1)
    return out


def recall_metrics(scores: np.ndarray, relevance: Relevance, ks: tuple[int, ...] = DEFAULT_KS, *,
                   t2i_scores: np.ndarray | None = None) -> dict[str, float]:
    """Both directions' R@K, median/mean rank, and RSUM (sum of the six recalls).

    ``scores`` is image x text; text -> image ranks its columns (or those of ``t2i_scores``, an
    image x text matrix, when a method produced one matrix per direction).
    """
    out = rank_summary(i2t_ranks(scores, relevance), "i2t", ks)
    out.update(rank_summary(t2i_ranks(scores if t2i_scores is None else t2i_scores, relevance), "t2i", ks))
    out["RSUM"] = float(sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks))
    return out


def rsum(scores: np.ndarray, relevance: Relevance) -> float:
    """Sum of i2t and t2i R@1/5/10 (the model-selection criterion)."""
    return recall_metrics(scores, relevance)["RSUM"]
