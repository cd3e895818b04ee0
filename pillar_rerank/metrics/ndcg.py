"""NDCG@k with graded relevance (e.g. CxC human ratings 0-5).

.. math::

    \\text{DCG@k} = \\sum_{i=1}^{k} \\frac{g(\\text{rel}_i)}{\\log_2(i + 1)}, \\qquad
    \\text{NDCG@k} = \\frac{\\text{DCG@k}}{\\text{IDCG@k}},

where ``rel_i`` is the gain of the item at 1-based rank ``i`` (0 for unjudged items) and IDCG@k
is the DCG of the judged items sorted by gain. ``gain="linear"`` uses ``g(x) = x`` (trec_eval's
``ndcg_cut``, Järvelin & Kekäläinen 2002); ``gain="exponential"`` uses ``2**x - 1`` (Burges et
al. 2005). Ranks use the stable tie rule of :mod:`pillar_rerank.metrics.ranks`.
"""

from __future__ import annotations

import numpy as np

from pillar_rerank._validation import check_int
from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.metrics.qrels import Qrels
from pillar_rerank.metrics.ranks import item_ranks

GAINS = ("linear", "exponential")


def ndcg_at_k(scores: np.ndarray, qrels: Qrels, k: int, *, gain: str = "linear", **kw) -> np.ndarray:
    """Per-query NDCG@k in [0, 1].

    Parameters
    ----------
    scores : array-like of shape (n_queries, n_gallery)
        Higher is better.
    qrels : Qrels
        Judged items and their gains per query (binary gains of 1 when ``qrels.gains`` is None).
    k : int
        Cut-off, in ``[1, n_gallery]``.
    gain : {"linear", "exponential"}, default="linear"

    Returns
    -------
    ndcg : ndarray of shape (n_queries,)
        NaN where a query has no item with a positive gain (left out of averages).
    """
    qrels.check_against(*scores.shape, what=f"NDCG@{k}")
    k = check_int(k, name="k", owner="NDCG", low=1, high=scores.shape[1], high_name="n_gallery")
    if gain not in GAINS:
        raise InvalidParameterError(f"The 'gain' parameter of NDCG must be one of {GAINS}; got {gain!r}.")
    raw = qrels.effective_gains
    g = raw if gain == "linear" else np.exp2(raw) - 1.0
    keep = g > 0
    n_q = qrels.n_queries
    owner = np.repeat(np.arange(n_q), qrels.counts)[keep]
    g = g[keep]
    indptr = np.zeros(n_q + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n_q), out=indptr[1:])
    ranks = item_ranks(scores, indptr, qrels.indices[keep], cutoff=k, **kw)  # only ranks < k count
    discount_hit = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    dcg = np.bincount(owner, weights=g * discount_hit, minlength=n_q)
    order = np.lexsort((-g, owner))  # gains sorted descending within each query
    ideal_pos = np.arange(g.shape[0]) - indptr[owner]
    ideal = np.where(ideal_pos < k, g[order] / np.log2(ideal_pos + 2.0), 0.0)
    idcg = np.bincount(owner, weights=ideal, minlength=n_q)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / idcg, np.nan)
