"""One memory budget for LeaPRR's input building, split into the block sizes of every stage.

``max_memory`` (e.g. ``"4GB"``) bounds what input building allocates **on top of its inputs**
(the embeddings or score matrix it is given, in memory or memory-mapped). :func:`plan_input_memory`
first counts the allocations that grow with ``n_images + n_texts`` (normalised embedding copies,
second-order profiles, the four neighbour lists, an ANN index), then gives what is left to the
streaming stages, which run one after the other: search tiles and matrix row blocks, the
second-order passes, and list-building batches (plus, when writing a cache, the shard buffer).
Nothing here grows with ``n_images x n_texts``; a budget too small for the fixed part is an
error that says how much is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.utils.blocks import parse_bytes

MIN_WORKING_BYTES = 64 * 2**20
MAX_BLOCK_BYTES = 2**30  # larger search tiles no longer speed anything up
SAFETY = 0.8             # allocator slack, library buffers (FAISS heaps, BLAS panels)


def _fmt(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def physical_memory_bytes() -> int | None:
    """Total physical memory of this machine in bytes (None where the OS does not say)."""
    import os

    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return int(pages) * int(page_size) if pages > 0 and page_size > 0 else None


def list_query_bytes(n_nodes: int, n_pillars: int) -> int:
    """Bytes of one stored query list (features, adjacency, targets, candidate and query ids)."""
    return n_nodes * 2 * n_pillars * 4 + n_nodes * n_nodes * 4 + n_nodes + (n_nodes - 1) * 8 + 8


def list_working_bytes(n_nodes: int, n_pillars: int, graph_neighbors: int) -> int:
    """Peak bytes per query while a list is built: concatenation copies of the features and
    adjacency, and the overlap kernel's membership matrix and sort buffers (``graph.py``)."""
    stored = n_nodes * 2 * n_pillars * 4 + n_nodes * n_nodes * 4
    member = n_nodes * (n_nodes * 2 * graph_neighbors) * 4
    sort_buffers = n_nodes * 2 * graph_neighbors * 8 * 4
    return 3 * stored + member + sort_buffers


@dataclass(frozen=True)
class MemoryPlan:
    """Block sizes of every input-building stage under one memory budget.

    Attributes
    ----------
    max_memory : int
        The budget in bytes.
    fixed_bytes : int
        Allocations that scale with ``n_images + n_texts`` (see ``breakdown``).
    block_bytes : int
        Working memory of one streaming block: search tiles (``topk_search``), matrix row blocks
        (``topk_rows``) and second-order passes; pass it as ``budget_bytes``.
    list_batch : dict
        Queries per list-building batch, ``{"image": .., "text": ..}``.
    shard_queries : dict
        Queries per cache shard (held in memory until written), ``{"image": .., "text": ..}``.
    breakdown : dict
        Named parts of ``fixed_bytes``.
    """

    max_memory: int
    fixed_bytes: int
    block_bytes: int
    list_batch: dict[str, int] = field(default_factory=dict)
    shard_queries: dict[str, int] = field(default_factory=dict)
    breakdown: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"max_memory": self.max_memory, "fixed_bytes": self.fixed_bytes,
                "block_bytes": self.block_bytes, "list_batch": dict(self.list_batch),
                "shard_queries": dict(self.shard_queries), "breakdown": dict(self.breakdown)}


def plan_input_memory(max_memory: str | int, *, n_images: int, n_texts: int, dim: int | None,
                      intra_source: str, depths: dict[str, int], n_pillars: int,
                      list_len_i2t: int, list_len_t2i: int, graph_neighbors: int,
                      second_order_rank: int | None = 128, has_scores: bool = False,
                      embeddings_float32: bool = True, index: str = "flat",
                      index_params: dict | None = None) -> MemoryPlan:
    """Split ``max_memory`` into the block sizes of neighbour search and list building.

    Parameters
    ----------
    max_memory : str or int
        Budget such as ``"4GB"`` (see :func:`~pillar_rerank.utils.blocks.parse_bytes`).
    n_images, n_texts : int
    dim : int or None
        Embedding size (None when only a score matrix is given).
    intra_source : {"given", "embeddings", "second_order"}
        The *resolved* intra-modal source.
    depths : dict
        Neighbour-list length per direction (``i2t``, ``t2i``, ``i2i``, ``t2t``).
    n_pillars, list_len_i2t, list_len_t2i, graph_neighbors : int
        The list shape (LeaPRRConfig fields).
    second_order_rank : int or None
        Rank r of the second-order profiles (None: exact, r = min(n_images, n_texts)).
    has_scores : bool
        Whether a score matrix is given (else the second-order source builds one in memory).
    embeddings_float32 : bool
        False when the embeddings must be converted to float32 (a copy is counted).
    index, index_params
        ANN index of the embedding searches ("flat" holds no copy of the gallery).

    Raises
    ------
    InvalidParameterError
        When the fixed part plus a minimal working block does not fit in ``max_memory``.
    """
    budget = parse_bytes(max_memory)
    n_img, n_txt = int(n_images), int(n_texts)
    parts: dict[str, int] = {}
    if dim is not None and not embeddings_float32:
        parts["float32 embedding copies"] = (n_img + n_txt) * dim * 4
    if intra_source == "embeddings":
        parts["normalised embeddings"] = (n_img + n_txt) * int(dim or 0) * 4
    elif intra_source == "second_order":
        r = min(n_img, n_txt) if second_order_rank is None else min(int(second_order_rank), n_img, n_txt)
        # range-finder samples, bases and products of both sides, alive together at the peak
        parts["second-order profiles"] = 5 * (n_img + n_txt) * r * 4
        if not has_scores:
            parts["similarity matrix (no scores given)"] = n_img * n_txt * 4
    rows = {"i2t": n_img, "t2i": n_txt, "i2i": n_img, "t2t": n_txt}
    lists = {d: rows[d] * int(depths[d]) * 12 for d in rows}
    # force_self_first and the column top-k's running merge hold one more list transiently
    parts["neighbour lists"] = sum(lists.values()) + max(lists.values())
    if index != "flat" and (dim is not None or intra_source == "second_order"):
        gallery_dim = int(dim) if dim is not None else int(second_order_rank or min(n_img, n_txt))
        per_item = gallery_dim * 4 + 8
        if index == "hnsw":
            per_item += 2 * int((index_params or {}).get("M", 32)) * 4 * 2
        parts[f"{index} index"] = max(n_img, n_txt) * per_item
    fixed = sum(parts.values())
    free = budget - fixed
    if free < MIN_WORKING_BYTES:
        detail = ", ".join(f"{k} {_fmt(v)}" for k, v in parts.items())
        raise InvalidParameterError(
            f"max_memory={_fmt(budget)} is too small for {n_img} images x {n_txt} texts: input building "
            f"keeps {_fmt(fixed)} ({detail}) plus at least {_fmt(MIN_WORKING_BYTES)} of working blocks; "
            f"raise it to at least {_fmt(fixed + MIN_WORKING_BYTES)}.")
    usable = int(free * SAFETY)
    block = min(MAX_BLOCK_BYTES, usable)
    # While a cache is written, one list batch and the shard being filled coexist: half each.
    list_batch, shard = {}, {}
    for kind, n_nodes, n in (("image", list_len_i2t, n_img), ("text", list_len_t2i, n_txt)):
        work = list_working_bytes(n_nodes, n_pillars, graph_neighbors)
        list_batch[kind] = int(max(1, min(n, (usable // 2) // work)))
        stored = list_query_bytes(n_nodes, n_pillars)
        shard[kind] = int(max(list_batch[kind], min(n, (usable // 2) // stored)))
    return MemoryPlan(max_memory=budget, fixed_bytes=fixed, block_bytes=block, list_batch=list_batch,
                      shard_queries=shard, breakdown=parts)


__all__ = ["MemoryPlan", "list_query_bytes", "list_working_bytes", "plan_input_memory"]
