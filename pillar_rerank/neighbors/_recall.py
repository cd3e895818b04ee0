"""Recall of an approximate index against exact search, to choose and report ANN settings."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np
import torch

from pillar_rerank._validation import check_int
from pillar_rerank.neighbors._topk import _as_float32, topk_search
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES
from pillar_rerank.utils.seed import check_random_state


class IndexRecall(NamedTuple):
    """Outcome of :func:`recall_against_exact`.

    Attributes
    ----------
    recall : float
        Mean over queries of ``|approx top-k ∩ exact top-k| / k``.
    per_query : ndarray of shape (n_queries,)
        The same fraction per (sampled) query.
    exact_seconds, approx_seconds : float
        Wall time of the exact search and of the approximate one (index building included).
    n_queries : int
        Queries measured.
    """

    recall: float
    per_query: np.ndarray
    exact_seconds: float
    approx_seconds: float
    n_queries: int

    @property
    def speedup(self) -> float:
        """Exact time over approximate time (> 1: the index is faster)."""
        return self.exact_seconds / self.approx_seconds if self.approx_seconds > 0 else float("inf")


def recall_against_exact(queries: Any, gallery: Any, k: int, *, index: str, index_params: dict | None = None,
                         n_queries: int | None = None, seed: int = 0,
                         device: str | torch.device | None = None,
                         budget_bytes: int = DEFAULT_BLOCK_BYTES) -> IndexRecall:
    """Recall@k of an approximate index's lists against exact inner-product search.

    Parameters
    ----------
    queries : array-like of shape (n_queries, d)
    gallery : array-like of shape (n_gallery, d)
    k : int
        List length compared.
    index : {"ivf", "hnsw", "flat"}
        The index measured ("flat" gives recall 1 and is a sanity check).
    index_params : dict, optional
        See :func:`topk_search`.
    n_queries : int, optional
        Measure a seeded random sample of this many queries (the index is still built over the
        whole gallery, so the timing ratio reflects the full build cost over fewer searches).
    seed : int, default=0
        Seed of the query sample.
    device, budget_bytes
        As in :func:`topk_search`.

    Returns
    -------
    IndexRecall

    Notes
    -----
    Recall compares ids: an approximate result that ties the exact k-th score but has another
    id counts as a miss (rare with continuous embeddings).
    """
    xq = _as_float32(queries, name="queries")
    if n_queries is not None and check_int(n_queries, name="n_queries",
                                           owner="recall_against_exact") < len(xq):
        rows = np.sort(check_random_state(seed).choice(len(xq), size=n_queries, replace=False))
        xq = np.ascontiguousarray(xq[rows])
    kw = {"device": device, "budget_bytes": budget_bytes}
    t0 = time.perf_counter()
    exact = topk_search(xq, gallery, k, **kw)
    t1 = time.perf_counter()
    approx = topk_search(xq, gallery, k, index=index, index_params=index_params, **kw)
    t2 = time.perf_counter()
    exact_ids = np.sort(exact.ids, axis=1)
    # membership of each approximate id in the row's sorted exact ids, vectorised over rows
    pos = np.minimum(_row_searchsorted(exact_ids, approx.ids), exact_ids.shape[1] - 1)
    found = np.take_along_axis(exact_ids, pos, 1) == approx.ids
    per_query = found.sum(axis=1) / exact_ids.shape[1]
    return IndexRecall(float(per_query.mean()), per_query, t1 - t0, t2 - t1, int(xq.shape[0]))


def _row_searchsorted(sorted_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.searchsorted`` per row, through one flat search with per-row offsets."""
    n, k = sorted_rows.shape
    span = int(max(sorted_rows.max(), values.max())) + 1
    offset = (np.arange(n, dtype=np.int64) * span)[:, None]
    flat = np.searchsorted((sorted_rows + offset).ravel(), (values + offset).ravel())
    return (flat.reshape(values.shape) - np.arange(n)[:, None] * k).clip(0, k)


__all__ = ["IndexRecall", "recall_against_exact"]
