"""Recall@K, RSUM, median and mean rank for both directions."""

from __future__ import annotations

import numpy as np

from pillar_rerank._validation import check_float_matrix, check_int
from pillar_rerank.exceptions import InvalidParameterError
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
    image x text matrix, when a method produced one matrix per direction). Both must be finite
    float matrices of shape (n_images, n_texts). A K at or above the gallery size gives 100.
    """
    if not isinstance(relevance, Relevance):
        raise InvalidParameterError(
            f"relevance: expected a Relevance (caption -> image map); got {type(relevance).__name__}."
        )
    shape = (relevance.n_images, relevance.n_texts)
    # NaN compares false and would rank a query's positive first: refuse it instead
    scores = check_float_matrix(scores, name="scores", shape=shape)
    if t2i_scores is not None:
        t2i_scores = check_float_matrix(t2i_scores, name="t2i_scores", shape=shape)
    ks = tuple(check_int(k, name="ks", owner="recall_metrics", low=1) for k in ks)
    out = rank_summary(i2t_ranks(scores, relevance), "i2t", ks)
    out.update(rank_summary(t2i_ranks(scores if t2i_scores is None else t2i_scores, relevance), "t2i", ks))
    out["RSUM"] = float(sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks))
    return out


def rsum(scores: np.ndarray, relevance: Relevance) -> float:
    """Sum of i2t and t2i R@1/5/10 (the model-selection criterion)."""
    return recall_metrics(scores, relevance)["RSUM"]
