"""Rank of the best-ranked positive of every query, in row blocks.

Tie rule ("stable"): among items with equal scores, the lower gallery index ranks first. The
rank of a query's true match is therefore

    #{g : s_g > s_p} + #{g : s_g == s_p and g < p}

where ``p`` is the best positive (highest score, lowest index among equal scores). This is
deterministic, independent of sort algorithms, and always lies between the optimistic (the true
match wins every tie) and pessimistic (it loses every tie) ranks.
"""

from __future__ import annotations

import numpy as np

from pillar_rerank.inputs import Relevance
from pillar_rerank.utils.blocks import block_rows, iter_blocks


def best_positive_ranks(
    scores: np.ndarray,
    pos_indptr: np.ndarray,
    pos_indices: np.ndarray,
    *,
    budget_bytes: int = 128 * 2**20,
) -> np.ndarray:
    """0-based rank of each query's best positive.

    Parameters
    ----------
    scores : array-like of shape (n_queries, n_gallery)
        Higher is better. Any 2-D array supporting row slicing (memory maps included).
    pos_indptr, pos_indices : ndarray
        CSR positives per query: the positives of query ``q`` are
        ``pos_indices[pos_indptr[q]:pos_indptr[q + 1]]``, sorted ascending. Every query needs at
        least one positive.

    Returns
    -------
    ranks : ndarray of shape (n_queries,), int64
    """
    n_q, n_g = scores.shape
    ranks = np.empty(n_q, dtype=np.int64)
    counts = np.diff(pos_indptr)
    gallery_ids = np.arange(n_g)
    for rows in iter_blocks(n_q, block_rows(n_g, bytes_per_item=12, budget_bytes=budget_bytes)):
        block = np.asarray(scores[rows], dtype=np.float64)
        lo, hi = pos_indptr[rows.start], pos_indptr[rows.stop]
        cols = pos_indices[lo:hi]
        owner = np.repeat(np.arange(rows.stop - rows.start), counts[rows])
        vals = block[owner, cols]
        starts = pos_indptr[rows.start:rows.stop] - lo
        best = np.maximum.reduceat(vals, starts)
        # lowest-index positive among those reaching the best score
        is_best = vals == best[owner]
        first = np.full(rows.stop - rows.start, n_g, dtype=np.int64)
        np.minimum.at(first, owner[is_best], cols[is_best])
        higher = (block > best[:, None]).sum(axis=1)
        tied_before = ((block == best[:, None]) & (gallery_ids[None, :] < first[:, None])).sum(axis=1)
        ranks[rows] = higher + tied_before
    return ranks


def i2t_ranks(scores: np.ndarray, relevance: Relevance, **kw) -> np.ndarray:
    """Image -> text: rank of the best of each image's captions."""
    return best_positive_ranks(scores, relevance.indptr, relevance.indices, **kw)


def t2i_ranks(scores: np.ndarray, relevance: Relevance, **kw) -> np.ndarray:
    """Text -> image: rank of each caption's image, computed on the transposed matrix."""
    indptr = np.arange(relevance.n_texts + 1, dtype=np.int64)
    return best_positive_ranks(_Transposed(scores), indptr, relevance.txt_to_img, **kw)


class _Transposed:
    """Row-sliceable transposed view of a (possibly memory-mapped) matrix, read in column blocks."""

    def __init__(self, matrix: np.ndarray) -> None:
        self._m = matrix
        self.shape = (matrix.shape[1], matrix.shape[0])

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.asarray(self._m[:, rows]).T
