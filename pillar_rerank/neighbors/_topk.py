"""Top-k kernels: blockwise matrix top-k, FAISS / torch inner-product search, merges.

Slightly over ~400 lines: every top-k search path (torch tiles, FAISS, merges, stable tie order)
kept beside the tie rule they share.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from pillar_rerank._validation import check_float_matrix, check_k
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError
from pillar_rerank.neighbors._ann import build_index, check_index, search_index, to_gpu
from pillar_rerank.typing import WITH_FAISS, faiss_num_gpus
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES, block_rows, iter_blocks
from pillar_rerank.utils.device import resolve_device

logger = logging.getLogger(__name__)


class TopK(NamedTuple):
    """Top-k lists: ``values`` float32 and ``ids`` int64, both of shape (n_queries, k)."""

    values: np.ndarray
    ids: np.ndarray


def _order_rows(vals: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by descending value, ties by the lower position (two stable sorts)."""
    pos, order = pos.sort(dim=1)
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    return vals, pos.gather(1, order)


def _stable_topk(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each row of ``block``: descending, ties broken by the lower column.

    ``torch.topk`` returns each row sorted by value; only rows where it had to choose among equal
    values (at the k-th place, or two equal values inside the list) are re-selected and re-sorted
    by the rule, so distinct-valued rows cost one ``torch.topk`` and no sort.
    """
    width = block.shape[1]
    if k >= width:
        pos = torch.arange(width, device=block.device).expand(block.shape[0], width).contiguous()
        return _order_rows(block, pos)
    vals, pos = torch.topk(block, k + 1, dim=1)
    tied = vals[:, k - 1] == vals[:, k]
    vals, pos = vals[:, :k].contiguous(), pos[:, :k].contiguous()
    if bool(tied.any()):
        # The k-th value is shared with items left out: take the lowest-index ones of them.
        # Tied rows go in chunks of 1/16 of the block, so the copies, masks and counts
        # (about 30 bytes per entry) add at most ~2 bytes per entry of the block:
        # low-precision scores (float16) tie at the k-th value in most rows.
        tied_rows = tied.nonzero().squeeze(1)
        chunk = max(1, block.shape[0] // 16)
        for start in range(0, tied_rows.shape[0], chunk):
            rows = tied_rows[start:start + chunk]
            sub = block[rows]
            thr = vals[rows, k - 1:k]
            above = sub > thr
            equal = sub == thr
            need = k - above.sum(1, keepdim=True)
            take = above | (equal & (equal.cumsum(1, dtype=torch.int32) <= need))
            picked = take.nonzero()[:, 1].view(-1, k)
            vals[rows] = sub.gather(1, picked)
            pos[rows] = picked
    # rows still to order: re-selected ones (column order) and rows with equal values inside
    unordered = tied
    if k > 1:
        unordered = unordered | (vals[:, 1:] == vals[:, :-1]).any(1)
    if bool(unordered.any()):
        rows = unordered.nonzero().squeeze(1)
        vals[rows], pos[rows] = _order_rows(vals[rows], pos[rows])
    return vals, pos


def merge_topk(values_a: torch.Tensor, ids_a: torch.Tensor, values_b: torch.Tensor,
               ids_b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two per-row candidate lists into one top-``k`` (descending, ties by lower id)."""
    vals = torch.cat([values_a, values_b], dim=1)
    ids = torch.cat([ids_a, ids_b], dim=1)
    vals, ids = _order_rows(vals, ids)
    return vals[:, :k], ids[:, :k]


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

    Notes
    -----
    Column top-k (``axis=0``) of a memory map is computed in **one sequential pass over row
    blocks** with a running per-column top-k, so a matrix larger than memory is read once from
    disk; slicing column blocks instead would read every page of the file once per block. For
    in-memory arrays, column blocks are cheaper (no merges) and are used.
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
    if axis == 0 and isinstance(scores, np.memmap):
        return _column_topk_streamed(scores, k, budget_bytes=budget_bytes, name=name)
    values = np.empty((n_query, k), dtype=np.float32)
    ids = np.empty((n_query, k), dtype=np.int64)
    step = block_rows(n_gallery, bytes_per_item=12, budget_bytes=budget_bytes)
    for rows in iter_blocks(n_query, step):
        raw = scores[rows] if axis == 1 else scores[:, rows].T
        block = _finite_block(raw, name=name, offset=(rows.start, 0), transposed=axis == 0)
        v, i = _stable_topk(block, k)
        values[rows], ids[rows] = v.numpy(), i.numpy()
    return TopK(values, ids)


def _finite_block(raw: np.ndarray, *, name: str, offset: tuple[int, int], transposed: bool) -> torch.Tensor:
    # copyto casts in small buffered chunks (converting a float16 memory map with
    # np.ascontiguousarray goes through whole-block temporaries)
    arr = np.empty(raw.shape, dtype=np.float32)
    np.copyto(arr, raw, casting="same_kind")
    # np.isfinite over row chunks: torch.isfinite would allocate a float copy (abs) of the block
    step = max(1, 2**22 // max(1, arr.shape[1]))
    for start in range(0, arr.shape[0], step):
        finite = np.isfinite(arr[start:start + step])
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            where = (offset[0] + start + int(r), offset[1] + int(c))
            raise InvalidInputError(f"{name}: expected finite values; found NaN/inf (first at "
                                    f"{where[::-1] if transposed else where}).")
    return torch.from_numpy(arr)


def _column_topk_streamed(scores: np.ndarray, k: int, *, budget_bytes: int, name: str) -> TopK:
    """Top-``k`` of every column from one pass over row blocks, merged into a running top-k."""
    n_rows, n_cols = scores.shape
    # float32 copy + its transposed copy + top-k buffers per element of the block
    step = block_rows(n_cols, bytes_per_item=12, budget_bytes=budget_bytes, minimum=min(k, n_rows))
    # merges run over column chunks so their temporaries (about 36 bytes per candidate) stay
    # within a quarter of the budget instead of scaling with n_cols * k
    merge_step = block_rows(2 * k, bytes_per_item=36, budget_bytes=max(1, budget_bytes // 4))
    best_v = best_i = None
    for rows in iter_blocks(n_rows, step):
        block = _finite_block(scores[rows], name=name, offset=(rows.start, 0), transposed=False)
        v, i = _stable_topk(block.T.contiguous(), min(k, rows.stop - rows.start))
        del block
        i += rows.start
        if best_v is None:  # the first block has >= k rows (step >= k), so k per column
            best_v, best_i = v, i
            continue
        for cols in iter_blocks(n_cols, merge_step):
            best_v[cols], best_i[cols] = merge_topk(best_v[cols], best_i[cols], v[cols], i[cols], k)
    return TopK(best_v.numpy(), best_i.numpy())


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


def search_backend(device: str | torch.device | None, backend: str = "auto",
                   index: str = "flat") -> tuple[torch.device, bool]:
    """The device of a search and whether FAISS runs it (else torch tiles), as in :func:`topk_search`.

    Exact search on CPU runs as torch tiles (near the bare matmul time, exact tie order); FAISS
    serves the GPU (when it has one), approximate indexes and ``backend="faiss"``.
    """
    dev = _search_device(device)
    faiss_ok = WITH_FAISS and (dev.type == "cpu" or faiss_num_gpus() > 0)
    auto_faiss = backend == "auto" and (index != "flat" or dev.type == "cuda")
    return dev, faiss_ok and (backend == "faiss" or auto_faiss)


def _gpu_resources() -> Any:
    """FAISS GPU resources, created on first use only (never at import)."""
    import faiss

    return faiss.StandardGpuResources()


def topk_search(queries: Any, gallery: Any, k: int, *, device: str | torch.device | None = None,
                budget_bytes: int = DEFAULT_BLOCK_BYTES, backend: str = "auto", index: str = "flat",
                index_params: dict | None = None,
                tile_transform: Callable[[torch.Tensor, slice, slice], None] | None = None) -> TopK:
    """Maximum-inner-product search of every query over the gallery, in blocks.

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
        "auto": exact search on CPU as blocked torch matmuls, each tile's top-k taken in place
        (near the bare matmul time; exact tie order); on CUDA, FAISS's GPU search when
        ``faiss_num_gpus() > 0``, else torch matmuls on that device; approximate indexes with
        FAISS. "faiss" forces FAISS; "torch" forces torch matmuls (``index="flat"`` only).
    index : {"flat", "ivf", "hnsw"}, default="flat"
        "flat" is the exact search. "ivf" (``IndexIVFFlat``) and "hnsw" (``IndexHNSWFlat``) are
        approximate inner-product indexes for very large galleries; measure what they cost in
        recall with :func:`recall_against_exact`.
    index_params : dict, optional
        "ivf": ``nlist`` (default about 4 * sqrt(n_gallery)), ``nprobe`` (32), ``train_size``
        (40 * nlist), ``seed`` (0). "hnsw": ``M`` (32), ``ef_construction`` (64), ``ef_search``
        (128, raised to ``k`` when smaller). Unknown keys are an error.
    tile_transform : callable, optional
        ``tile_transform(tile, query_rows, gallery_rows)`` changes every score tile in place
        before its top-k (a normaliser's element-wise form): the search then ranks the
        transformed scores. Exact torch search only (``index="flat"``, not FAISS).

    Returns
    -------
    TopK
        Inner products and gallery ids of shape (n_queries, k), descending.

    Notes
    -----
    Exact search scores tiles of (query rows x whole gallery) into one reused buffer (half of
    ``budget_bytes``) and keeps each row's top-k; when fewer than 256 whole gallery rows fit, the
    gallery is split into blocks whose top-k lists are merged into a running top-k (ids shifted by
    the block offset), as in ``faiss.contrib.exhaustive_search.knn_ground_truth``. Memory is
    O(n_queries * k + budget). The torch and FAISS paths compute the inner products with different
    BLAS kernels, so their float32 scores can differ in the last bits: on synthetic d=1024
    embeddings, 0.1-0.4 % of the rows ordered two entries whose exact (float64) scores were
    within 3e-7 of each other differently. With exactly representable scores both give the
    same lists except where FAISS breaks ties at the k-th place against the rule.

    Approximate indexes hold a float32 copy of the whole gallery (HNSW also its graph, about
    ``2 * M * 4`` bytes per item) and search queries in blocks. A query whose index search
    returns fewer than ``k`` results (an IVF probe of nearly empty lists) is searched again
    exactly, so every row always holds ``k`` valid ids. On a GPU, IVF runs as a FAISS GPU index;
    FAISS has no GPU HNSW, so HNSW searches on CPU.
    """
    if backend not in ("auto", "faiss", "torch"):
        raise InvalidParameterError(
            "The 'backend' parameter of topk_search must be one of 'auto', 'faiss', 'torch'; "
            f"got {backend!r}.")
    params = check_index(index, index_params)
    xq = _as_float32(queries, name="queries")
    xb = _as_float32(gallery, name="gallery")
    if xq.shape[1] != xb.shape[1]:
        raise InvalidInputError(
            "topk_search: queries and gallery must have the same dimension; "
            f"got {xq.shape[1]} and {xb.shape[1]}.")
    k = check_k(k, n_gallery=xb.shape[0], owner="topk_search")
    if tile_transform is not None:
        if backend == "faiss" or index != "flat":
            raise InvalidParameterError("topk_search: a tile_transform needs the exact torch search "
                                        "(backend 'auto' or 'torch', index='flat').")
        backend = "torch"
    dev, use_faiss = search_backend(device, backend, index)
    if backend == "faiss" and not use_faiss:
        raise InvalidParameterError(f"topk_search: backend='faiss' cannot run on {dev} "
                                    "(faiss missing or without GPU support).")
    if index != "flat" and not use_faiss:
        raise InvalidParameterError(
            f"topk_search: index={index!r} needs FAISS on {dev} (faiss missing, without GPU support, "
            "or backend='torch'); use index='flat'.")
    gpu_res = _gpu_resources() if use_faiss and dev.type == "cuda" else None
    logger.debug("topk_search: %d x %d (d=%d, k=%d) on %s with %s, index=%s", xq.shape[0], xb.shape[0],
                 xq.shape[1], k, dev, "faiss" if use_faiss else "torch", index)
    if index == "flat":
        values, ids = _exact_search(xq, xb, k, dev=dev, use_faiss=use_faiss, gpu_res=gpu_res,
                                    budget_bytes=budget_bytes, tile_transform=tile_transform)
    else:
        values, ids = _index_search(xq, xb, k, index=index, params=params, dev=dev, gpu_res=gpu_res,
                                    budget_bytes=budget_bytes)
    if use_faiss:
        # Fix FAISS's arbitrary order among equal scores inside the kept set.
        for rows in iter_blocks(xq.shape[0], block_rows(k, bytes_per_item=64, budget_bytes=budget_bytes)):
            v, i = torch.from_numpy(values[rows]), torch.from_numpy(ids[rows])
            v, i = merge_topk(v, i, v[:, :0], i[:, :0], k)
            values[rows], ids[rows] = v.numpy(), i.numpy()
    return TopK(values, ids)


# Query rows per tile below which the torch search splits the gallery into blocks (and merges)
# instead of scoring whole gallery rows: narrower tiles make the matmul inefficient.
_MIN_TILE_ROWS = 256


def _blocked_search(n_q: int, n_g: int, k: int, q_step: int, g_step: int,
                    block_topk: Any) -> tuple[np.ndarray, np.ndarray]:
    """Run ``block_topk(query_rows, gallery_rows, kk)`` over all blocks, merging each query
    block's gallery-block lists (local ids, shifted here) into a running top-``k``."""
    values = np.empty((n_q, k), dtype=np.float32)
    ids = np.empty((n_q, k), dtype=np.int64)
    for q_rows in iter_blocks(n_q, q_step):
        best_v = best_i = None
        for g_rows in iter_blocks(n_g, g_step):
            v, i = block_topk(q_rows, g_rows, min(k, g_rows.stop - g_rows.start))
            i = i + g_rows.start
            best_v, best_i = (v, i) if best_v is None else merge_topk(best_v, best_i, v, i, k)
        values[q_rows] = best_v.cpu().numpy()
        ids[q_rows] = best_i.cpu().numpy()
    return values, ids


def _exact_search(xq: np.ndarray, xb: np.ndarray, k: int, *, dev: torch.device, use_faiss: bool,
                  gpu_res: Any, budget_bytes: int,
                  tile_transform: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    if not use_faiss:
        return _torch_exact_search(xq, xb, k, dev=dev, budget_bytes=budget_bytes,
                                   tile_transform=tile_transform)
    g_step = block_rows(xq.shape[1], budget_bytes=budget_bytes, minimum=k)
    q_step = block_rows(min(g_step, xb.shape[0]), budget_bytes=budget_bytes)

    def block_topk(q_rows: slice, g_rows: slice, kk: int):
        v, i = _faiss_knn(xq[q_rows], xb[g_rows], kk, gpu_res, dev)
        return torch.from_numpy(v), torch.from_numpy(i)

    return _blocked_search(xq.shape[0], xb.shape[0], k, q_step, g_step, block_topk)


def search_tiles(n_queries: int, n_gallery: int, k: int, budget_bytes: int) -> tuple[int, int]:
    """(query rows, gallery columns) of one score tile of the torch search under ``budget_bytes``.

    The tile (float32) takes half the budget; the other half is for :func:`_stable_topk`'s
    tie-breaking copies (at most ~2 bytes per tile entry) and the top-k buffers. Whole gallery
    rows when at least ``_MIN_TILE_ROWS`` of them fit (one top-k per query, no merges), else
    gallery blocks whose top-k lists are merged into a running one.
    """
    tile = max(1, budget_bytes // 2 // 4)
    rows = min(n_queries, _MIN_TILE_ROWS)
    cols = n_gallery if rows * n_gallery <= tile else max(min(k, n_gallery), tile // rows)
    return max(1, min(n_queries, tile // cols)), cols


def _torch_exact_search(xq: np.ndarray, xb: np.ndarray, k: int, *, dev: torch.device,
                        budget_bytes: int,
                        tile_transform: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact search as blocked torch matmuls into one reused tile, each followed by its top-k.

    Per tile: one matmul written in place (``out=``, no allocation), ``torch.topk`` of its rows
    with the ties rule of :func:`_stable_topk`, and a merge only when the gallery is split.
    """
    n_q, n_g = xq.shape[0], xb.shape[0]
    q_step, g_step = search_tiles(n_q, n_g, k, budget_bytes)
    gallery = torch.from_numpy(xb).to(dev)
    tile = torch.empty(q_step * g_step, dtype=torch.float32, device=dev)

    def block_topk(q_rows: slice, g_rows: slice, kk: int):
        queries = torch.from_numpy(xq[q_rows]).to(dev)
        out = tile[:queries.shape[0] * (g_rows.stop - g_rows.start)].view(queries.shape[0], -1)
        torch.matmul(queries, gallery[g_rows].T, out=out)
        if tile_transform is not None:
            tile_transform(out, q_rows, g_rows)
        return _stable_topk(out, kk)

    return _blocked_search(n_q, n_g, k, q_step, g_step, block_topk)


def _index_search(xq: np.ndarray, xb: np.ndarray, k: int, *, index: str, params: dict[str, Any],
                  dev: torch.device, gpu_res: Any, budget_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    cpu_index = build_index(xb, index, params)
    faiss_index = cpu_index if gpu_res is None else to_gpu(cpu_index, index, params, gpu_res, dev.index or 0)
    values, ids = search_index(faiss_index, xq, k, index, params, budget_bytes=budget_bytes)
    del faiss_index, cpu_index
    short = np.flatnonzero((ids < 0).any(axis=1))
    if short.size:
        logger.info("topk_search: %d of %d queries got fewer than k=%d results from the %s index; "
                    "searching them exactly.", short.size, xq.shape[0], k, index)
        v, i = _exact_search(np.ascontiguousarray(xq[short]), xb, k, dev=dev, use_faiss=True,
                             gpu_res=gpu_res, budget_bytes=budget_bytes)
        values[short], ids[short] = v, i
    return values, ids


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
