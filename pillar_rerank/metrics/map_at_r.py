"""mAP@R and R-Precision over given positive sets (ECCV Caption style).

For a query with ``R`` positives and 1-based ranks ``r_1 < r_2 < ... < r_R`` of those positives,

.. math::

    \\text{R-P} = \\frac{|\\{j : r_j \\le R\\}|}{R}, \\qquad
    \\text{mAP@R} = \\frac{1}{R} \\sum_{j : r_j \\le R} \\frac{j}{r_j},

i.e. precision at ``R`` and average precision of the ranking cut at ``R`` (Musgrave et al., "A
Metric Learning Reality Check", ECCV 2020; Chun et al., "ECCV Caption", ECCV 2022). Ranks use the
stable tie rule of :mod:`pillar_rerank.metrics.ranks`.
"""

from __future__ import annotations

import numpy as np

from pillar_rerank.metrics.qrels import Qrels
from pillar_rerank.metrics.ranks import item_ranks


def _positive_part(qrels: Qrels) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) of the items with a positive gain."""
    if qrels.gains is None:
        return qrels.indptr, qrels.indices
    keep = qrels.gains > 0
    owner = np.repeat(np.arange(qrels.n_queries), qrels.counts)[keep]
    indptr = np.zeros(qrels.n_queries + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=qrels.n_queries), out=indptr[1:])
    return indptr, qrels.indices[keep]


def map_at_r_and_r_precision(scores: np.ndarray, qrels: Qrels, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Per-query mAP@R and R-Precision, as fractions in [0, 1].

    Parameters
    ----------
    scores : array-like of shape (n_queries, n_gallery)
        Higher is better (memory maps are read in row blocks).
    qrels : Qrels
        Positive set of each query (items with gain > 0 when graded). Queries without positives
        get NaN and are left out of averages.

    Returns
    -------
    map_at_r, r_precision : ndarray of shape (n_queries,)
    """
    qrels.check_against(*scores.shape, what="mAP@R")
    indptr, indices = _positive_part(qrels)
    n_q = qrels.n_queries
    counts = np.diff(indptr)
    ranks = item_ranks(scores, indptr, indices, cutoff=counts, **kw)  # only ranks < R count
    owner = np.repeat(np.arange(n_q), counts)
    order = np.lexsort((ranks, owner))
    ranks = ranks[order]
    position = np.arange(ranks.shape[0]) - indptr[owner]  # 0-based position among the positives
    r = counts[owner]
    hit = ranks < r
    precision_terms = np.where(hit, (position + 1) / (ranks + 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = np.where(counts > 0, counts, np.nan)
        map_r = np.bincount(owner, weights=precision_terms, minlength=n_q) / denom
        r_prec = np.bincount(owner, weights=hit.astype(np.float64), minlength=n_q) / denom
    return map_r, r_prec


def map_at_r(scores: np.ndarray, qrels: Qrels, **kw) -> np.ndarray:
    """Per-query mAP@R in [0, 1] (NaN where a query has no positive)."""
    return map_at_r_and_r_precision(scores, qrels, **kw)[0]


def r_precision(scores: np.ndarray, qrels: Qrels, **kw) -> np.ndarray:
    """Per-query R-Precision in [0, 1] (NaN where a query has no positive)."""
    return map_at_r_and_r_precision(scores, qrels, **kw)[1]
