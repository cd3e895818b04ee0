"""Top-k kernels: blockwise matrix top-k, FAISS / torch inner-product search, merges."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import torch

from pillar_rerank._validation import check_float_matrix, check_k
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError
from pillar_rerank.typing import WITH_FAISS, faiss_num_gpus
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES, block_rows, iter_blocks
from pillar_rerank.utils.device import resolve_device

logger = logging.getLogger(__name__)


class TopK(NamedTuple):
    """Top-k lists: ``values`` float32 and ``ids`` int64, both of shape (n_queries, k)."""

    values: np.ndarray
    ids: np.ndarray



def _stable_topk(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each row of ``block``: descending, ties broken by the lower column."""
    width = block.shape[1]
    if k < width:
        vals, pos = torch.topk(block, k + 1, dim=1)
        tied = vals[:, k - 1] == vals[:, k]
        vals, pos = vals[:, :k].contiguous(), pos[:, :k].contiguous()
        if bool(tied.any()):
            # The k-th value is shared with items left out: take the lowest-index ones of them.
            rows = tied.nonzero().squeeze(1)
            sub = block[rows]
            thr = vals[rows, k - 1:k]
            above = sub > thr
            equal = sub == thr
            need = k - above.sum(1, keepdim=True)
            take = above | (equal & (equal.cumsum(1) <= need))
            picked = take.nonzero()[:, 1].view(-1, k)
            vals[rows] = sub.gather(1, picked)
            pos[rows] = picked
    else:
        pos = torch.arange(width, device=block.device).expand(block.shape[0], width).contiguous()
        vals = block
    pos, order = pos.sort(dim=1)
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    return vals, pos.gather(1, order)


def merge_topk(values_a: torch.Tensor, ids_a: torch.Tensor, values_b: torch.Tensor,
               ids_b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two per-row candidate lists into one top-``k`` (descending, ties by lower id)."""
    vals = torch.cat([values_a, values_b], dim=1)
    ids = torch.cat([ids_a, ids_b], dim=1)
    ids, order = ids.sort(dim=1)
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    return vals[:, :k], ids.gather(1, order)[:, :k]


def topk_rows(scores: Any, k: int, *, axis: int = 1, budget_bytes: int = DEFAULT_BLOCK_BYTES,
              name: str = "scores") -> TopK:
    """Top-``k`` of every row (``axis=1``) or every column (``axis=0``) of a score matrix.

    Parameters
    ----------
    scores : array-like of shape (n_queries, n_gallery)
        Dense or memory-mapped float matrix, higher is better. Never modified or copied whole.
    k : int
        Neighbours per query, in ``[1, n_gallery]``; a larger ``k`` is an error, never clipped.
    axis : {1, 0}, default=1
        1 ranks each row over the columns; 0 ranks each column over the rows (the result has one
        row per column of ``scores``).
    budget_bytes : int, default=256 MiB
        Working memory per block (float32 copy of the block).
    name : str, default="scores"
        Name used in error messages.

    Returns
    -------
    TopK
        ``values`` float32 and ``ids`` int64 of shape (n_queries, k), descending, ties broken by
        the lower gallery index.
    """
    if axis not in (0, 1):
        raise InvalidParameterError(f"The 'axis' parameter of topk_rows must be 0 or 1; got {axis!r}.")
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    if not isinstance(scores, np.ndarray) or scores.ndim != 2:
        raise InvalidInputError(f"{name}: expected a 2-D float array; got {type(scores).__name__} "
                                f"of shape {getattr(scores, 'shape', None)}.")
    n_query, n_gallery = scores.shape if axis == 1 else scores.shape[::-1]
    k = check_k(k, n_gallery=n_gallery, owner="topk_rows")
    values = np.empty((n_query, k), dtype=np.float32)
    ids = np.empty((n_query, k), dtype=np.int64)
    step = block_rows(n_gallery, bytes_per_item=12, budget_bytes=budget_bytes)
    for rows in iter_blocks(n_query, step):
        raw = scores[rows] if axis == 1 else scores[:, rows].T
        block = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
        if not bool(torch.isfinite(block).all()):
            bad = (~torch.isfinite(block)).nonzero()[0]
            where = (rows.start + int(bad[0]), int(bad[1]))
            raise InvalidInputError(f"{name}: expected finite values; found NaN/inf (first at "
                                    f"{where if axis == 1 else where[::-1]}).")
        v, i = _stable_topk(block, k)
        values[rows], ids[rows] = v.numpy(), i.numpy()
    return TopK(values, ids)


def _as_float32(x: Any, *, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = check_float_matrix(x, name=name)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _search_device(device: str | torch.device | None) -> torch.device:
    """CPU unless a GPU is both wanted (explicitly or by ``None``) and usable."""
    if device is None:
        if faiss_num_gpus() > 0 or torch.cuda.is_available():
            return resolve_device(None)
        return torch.device("cpu")
    return resolve_device(device)


def topk_search(queries: Any, gallery: Any, k: int, *, device: str | torch.device | None = None,
                budget_bytes: int = DEFAULT_BLOCK_BYTES, backend: str = "auto") -> TopK:
    """Exact maximum-inner-product search of every query over the gallery, in blocks.

    Parameters
    ----------
    queries : array-like of shape (n_queries, d)
    gallery : array-like of shape (n_gallery, d)
        Both are converted to contiguous float32 once, at entry.
    k : int
        Neighbours per query, in ``[1, n_gallery]`` (never clipped).
    device : str or None, default=None
        None: a GPU when one is usable, else CPU. An explicit ``"cuda"`` without a GPU is an error.
    budget_bytes : int, default=256 MiB
        Bounds the query x gallery-block tile (and the gallery block itself).
    backend : {"auto", "faiss", "torch"}, default="auto"
        "auto" uses FAISS (GPU index when ``faiss_num_gpus() > 0`` and the device is CUDA, CPU
        otherwise); when the device is CUDA but FAISS has no GPU, torch matmuls on that device.
        "torch" forces blocked torch matmuls (exact tie order).

    Returns
    -------
    TopK
        Inner products and gallery ids of shape (n_queries, k), descending.

    Notes
    -----
    The gallery is streamed in blocks; each block's top-k is merged into a running top-k
    (ids shifted by the block offset), so memory is O(n_queries * k + block), as in
    ``faiss.contrib.exhaustive_search.knn_ground_truth``.
    """
    if backend not in ("auto", "faiss", "torch"):
        raise InvalidParameterError(
            "The 'backend' parameter of topk_search must be one of 'auto', 'faiss', 'torch'; "
            f"got {backend!r}.")
    xq = _as_float32(queries, name="queries")
    xb = _as_float32(gallery, name="gallery")
    if xq.shape[1] != xb.shape[1]:
        raise InvalidInputError(
            "topk_search: queries and gallery must have the same dimension; "
            f"got {xq.shape[1]} and {xb.shape[1]}.")
    k = check_k(k, n_gallery=xb.shape[0], owner="topk_search")
    dev = _search_device(device)
    use_faiss = backend != "torch" and WITH_FAISS and (dev.type == "cpu" or faiss_num_gpus() > 0)
    if backend == "faiss" and not use_faiss:
        raise InvalidParameterError(f"topk_search: backend='faiss' cannot run on {dev} "
                                    "(faiss missing or without GPU support).")
    d = xq.shape[1]
    g_step = block_rows(d, budget_bytes=budget_bytes, minimum=k)
    q_step = block_rows(min(g_step, xb.shape[0]), budget_bytes=budget_bytes)
    values = np.empty((xq.shape[0], k), dtype=np.float32)
    ids = np.empty((xq.shape[0], k), dtype=np.int64)
    gpu_res = None
    if use_faiss and dev.type == "cuda":
        import faiss

        gpu_res = faiss.StandardGpuResources()
    logger.debug("topk_search: %d x %d (d=%d, k=%d) on %s with %s", xq.shape[0], xb.shape[0], d, k,
                 dev, "faiss" if use_faiss else "torch")
    gallery_t = None
    for q_rows in iter_blocks(xq.shape[0], q_step):
        best_v = best_i = None
        q_block = xq[q_rows]
        q_t = None if use_faiss else torch.from_numpy(q_block).to(dev)
        for g_rows in iter_blocks(xb.shape[0], g_step):
            kk = min(k, g_rows.stop - g_rows.start)
            if use_faiss:
                v, i = _faiss_knn(q_block, xb[g_rows], kk, gpu_res, dev)
                v, i = torch.from_numpy(v), torch.from_numpy(i)
            else:
                gallery_t = torch.from_numpy(xb[g_rows]).to(dev)
                v, i = _stable_topk(q_t @ gallery_t.T, kk)
            i = i + g_rows.start
            if best_v is None:
                best_v, best_i = v, i
            else:
                best_v, best_i = merge_topk(best_v, best_i, v, i, k)
        if use_faiss:
            # Fix FAISS's arbitrary order among equal scores inside the kept set.
            best_v, best_i = merge_topk(best_v, best_i, best_v[:, :0], best_i[:, :0], k)
        values[q_rows] = best_v.cpu().numpy()
        ids[q_rows] = best_i.cpu().numpy()
    return TopK(values, ids)


def _faiss_knn(xq: np.ndarray, xb: np.ndarray, k: int, gpu_res: Any, dev: torch.device):
    import faiss

    if gpu_res is not None:
        return faiss.knn_gpu(gpu_res, xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT,
                             device=dev.index or 0)
    return faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)


def force_self_first(top: TopK, self_values: np.ndarray) -> TopK:
    """Put query ``i`` at rank 0 of row ``i`` of an intra-modal list (with ``self_values[i]``).

    Where the query was already listed it moves to the front; otherwise it is inserted and the
    last entry drops out. The other entries keep their order. Duplicated vectors therefore never
    push the query out of its own rank 0.
    """
    ids = torch.from_numpy(top.ids)
    vals = torch.from_numpy(top.values)
    n, k = ids.shape
    me = torch.arange(n, dtype=torch.int64).unsqueeze(1)
    is_self = ids == me
    order = is_self.to(torch.int8).argsort(dim=1, stable=True)  # self (if any) moves to the end
    rest_ids = ids.gather(1, order)[:, :k - 1]
    rest_vals = vals.gather(1, order)[:, :k - 1]
    out_ids = torch.cat([me, rest_ids], dim=1)
    first = torch.as_tensor(np.asarray(self_values, dtype=np.float32)).view(n, 1)
    out_vals = torch.cat([first, rest_vals], dim=1)
    return TopK(out_vals.numpy(), out_ids.numpy())
