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
    dtype = compare_dtype(scores)
    for rows in iter_blocks(n_q, block_rows(n_g, bytes_per_item=12, budget_bytes=budget_bytes)):
        block = np.asarray(scores[rows], dtype=dtype)
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


def compare_dtype(scores) -> type:
    """The float type in which scores are compared: float32 holds float16/32 exactly, else float64."""
    dtype = getattr(scores, "dtype", np.dtype(np.float64))
    return np.float32 if dtype in (np.float16, np.float32) else np.float64


def item_ranks(
    scores: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    *,
    cutoff: int | np.ndarray | None = None,
    budget_bytes: int = 128 * 2**20,
) -> np.ndarray:
    """0-based rank of every listed item of every query, under the same stable tie rule.

    Parameters
    ----------
    scores : array-like of shape (n_queries, n_gallery)
        Higher is better; row-sliceable (memory maps included).
    indptr, indices : ndarray
        CSR lists of gallery items per query (e.g. positive sets or graded items). Rows may be
        empty.
    cutoff : int or ndarray of shape (n_queries,), optional
        Only ranks below the cutoff are needed (R for mAP@R, k for NDCG@k): items ranked at or
        beyond their query's cutoff are reported as the cutoff itself. Items scoring below the
        query's cutoff-th best score are then settled without comparing them to the gallery.

    Returns
    -------
    ranks : ndarray of shape (len(indices),), int64
        ``ranks[j]`` is the position of item ``indices[j]`` in its query's ranking:
        ``#{g : s_g > s_i} + #{g : s_g == s_i and g < i}`` (capped at the cutoff if given).
    """
    n_q, n_g = scores.shape
    out = np.empty(indices.shape[0], dtype=np.int64)
    counts = np.diff(indptr)
    dtype = compare_dtype(scores)
    if cutoff is not None:
        cutoff = np.clip(np.broadcast_to(np.asarray(cutoff, dtype=np.int64), (n_q,)), 1, n_g)
    # listed items compared at once: a float row copy plus two boolean rows each
    max_items = max(1, budget_bytes // ((np.dtype(dtype).itemsize + 2) * n_g))
    start = 0
    while start < n_q:
        limit = min(n_q, start + block_rows(n_g, bytes_per_item=8, budget_bytes=budget_bytes))
        stop = int(np.searchsorted(indptr, indptr[start] + max_items, side="right")) - 1
        stop = min(max(stop, start + 1), limit)
        block = np.asarray(scores[start:stop], dtype=dtype)
        lo, hi = indptr[start], indptr[stop]
        owner = np.repeat(np.arange(stop - start), counts[start:stop])
        cols = indices[lo:hi]
        if cutoff is None:
            todo = np.arange(hi - lo)
        else:
            c = cutoff[start:stop]
            vals = block[owner, cols]
            # the c-th best score of each row; an item below it has at least c items above it
            c_max = int(c.max()) if c.size else 1
            top = -np.partition(-block, c_max - 1, axis=1)[:, :c_max]
            top.sort(axis=1)
            threshold = top[np.arange(stop - start), c_max - c]
            todo = np.flatnonzero(vals >= threshold[owner])
            out[lo:hi] = c[owner]
        for a in range(0, todo.size, max_items):  # a single query with many items: chunk them
            sel = todo[a:a + max_items]
            ranks = _exact_ranks(block, owner[sel], cols[sel])
            out[lo + sel] = ranks if cutoff is None else np.minimum(ranks, c[owner[sel]])
        start = stop
    return out


def _exact_ranks(block: np.ndarray, owner: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Stable-rule rank of item ``cols[j]`` in row ``owner[j]`` of ``block``."""
    rows = block[owner]
    vals = rows[np.arange(owner.size), cols][:, None]
    ranks = (rows > vals).sum(axis=1)
    ties = rows == vals
    tied = np.flatnonzero(ties.sum(axis=1) > 1)
    if tied.size:
        earlier = np.arange(block.shape[1])[None, :] < cols[tied, None]
        ranks[tied] += (ties[tied] & earlier).sum(axis=1)
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
        self.dtype = getattr(matrix, "dtype", np.dtype(np.float64))

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.asarray(self._m[:, rows]).T
