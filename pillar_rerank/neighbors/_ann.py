"""Approximate inner-product indexes (FAISS IVF-Flat and HNSW-Flat) for very large galleries.

Only index construction and search live here; :func:`~pillar_rerank.neighbors.topk_search`
validates inputs, chooses the device, re-searches rows the index could not fill and fixes the
tie order, exactly as for its exact search.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from pillar_rerank._validation import check_int
from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.utils.blocks import block_rows, iter_blocks

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "ivf", "hnsw")
INDEX_PARAMS = {
    "flat": {},
    "ivf": {"nlist": None, "nprobe": 32, "train_size": None, "seed": 0},
    "hnsw": {"M": 32, "ef_construction": 64, "ef_search": 128},
}
_MIN_POINTS_PER_CENTROID = 39  # below this FAISS's k-means warns and clusters poorly


def check_index(index: str, index_params: dict | None, *, owner: str = "topk_search") -> dict[str, Any]:
    """Validate an index choice and fill its parameters' defaults (unknown keys are an error)."""
    if index not in INDEX_TYPES:
        raise InvalidParameterError(
            f"The 'index' parameter of {owner} must be one of {', '.join(map(repr, INDEX_TYPES))}; "
            f"got {index!r}.")
    params = dict(index_params or {})
    unknown = sorted(set(params) - set(INDEX_PARAMS[index]))
    if unknown:
        allowed = ", ".join(INDEX_PARAMS[index]) or "none"
        raise InvalidParameterError(
            f"index_params of {owner}: unknown key(s) {', '.join(map(repr, unknown))} for index={index!r}; "
            f"allowed: {allowed}.")
    out = {**INDEX_PARAMS[index], **params}
    for key, value in out.items():
        if value is not None:
            low = 0 if key == "seed" else 1
            out[key] = check_int(value, name=f"index_params[{key!r}]", owner=owner, low=low)
    return out


def ivf_nlist(n_gallery: int, requested: int | None = None) -> int:
    """IVF list count: ``requested`` or about 4 * sqrt(n), with >= 39 training points per list."""
    nlist = requested if requested is not None else int(round(4 * math.sqrt(n_gallery)))
    return int(max(1, min(nlist, n_gallery // _MIN_POINTS_PER_CENTROID)))


def build_index(gallery: np.ndarray, index: str, params: dict[str, Any]) -> Any:
    """A trained CPU FAISS index over ``gallery`` (float32, contiguous) with inner-product metric.

    Notes
    -----
    IVF: ``IndexIVFFlat`` over an ``IndexFlatIP`` quantizer with ``nlist`` lists (default about
    4 * sqrt(n_gallery)), trained by k-means on a seeded random sample of ``train_size`` rows
    (default 40 * nlist, just above FAISS's 39 points per centroid; spherical k-means, whose
    unit-norm centroids keep inner-product lists balanced), so the training sample
    grows with sqrt(n_gallery), not with the gallery. HNSW: ``IndexHNSWFlat(d, M,
    METRIC_INNER_PRODUCT)``; its multithreaded construction is not bit-for-bit deterministic,
    IVF with a fixed seed is. Both hold a float32 copy of the gallery.
    """
    import faiss

    n, d = gallery.shape
    if index == "ivf":
        nlist = ivf_nlist(n, params["nlist"])
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = int(params["seed"])
        ivf.cp.spherical = True  # unit-norm centroids: plain k-means + IP lets long centroids take most items
        train_size = min(n, params["train_size"] or 40 * nlist)
        rng = np.random.default_rng(params["seed"])
        sample = np.sort(rng.choice(n, size=train_size, replace=False)) if train_size < n else slice(None)
        ivf.train(np.ascontiguousarray(gallery[sample]))
        ivf.add(gallery)
        ivf.nprobe = int(min(params["nprobe"], nlist))
        return ivf
    if index == "hnsw":
        hnsw = faiss.IndexHNSWFlat(d, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = int(params["ef_construction"])
        hnsw.add(gallery)
        return hnsw
    raise InvalidParameterError(f"build_index: no approximate index {index!r}.")  # pragma: no cover


def to_gpu(cpu_index: Any, index: str, params: dict[str, Any], gpu_res: Any, device: int) -> Any:
    """Move an IVF index to the GPU (FAISS has no GPU HNSW: that stays on CPU, with a log line)."""
    if index != "ivf":
        logger.info("topk_search: FAISS has no GPU HNSW index; searching the HNSW graph on CPU.")
        return cpu_index
    import faiss

    gpu_index = faiss.index_cpu_to_gpu(gpu_res, device, cpu_index)
    if hasattr(gpu_index, "nprobe"):
        gpu_index.nprobe = cpu_index.nprobe
    return gpu_index


def search_index(faiss_index: Any, queries: np.ndarray, k: int, index: str, params: dict[str, Any],
                 *, budget_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Search ``queries`` in blocks; rows the index could not fill hold id -1 (value -inf)."""
    n_q, d = queries.shape
    values = np.empty((n_q, k), dtype=np.float32)
    ids = np.empty((n_q, k), dtype=np.int64)
    ef = max(int(params.get("ef_search", 0)), k)
    if index == "hnsw":
        faiss_index.hnsw.efSearch = ef
    step = block_rows(d + 3 * k, bytes_per_item=4 * 4, budget_bytes=budget_bytes)
    for rows in iter_blocks(n_q, step):
        v, i = faiss_index.search(np.ascontiguousarray(queries[rows]), k)
        values[rows], ids[rows] = v, i
    values[ids < 0] = -np.inf
    return values, ids


__all__ = ["INDEX_PARAMS", "INDEX_TYPES", "build_index", "check_index", "ivf_nlist", "search_index", "to_gpu"]
