"""The four neighbour lists of a retrieval set (i2t, t2i, i2i, t2t)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pillar_rerank._validation import check_int, check_k
from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.neighbors._ann import check_index
from pillar_rerank.neighbors._intra import DEFAULT_SECOND_ORDER_RANK, IntraModalScores, intra_modal_source
from pillar_rerank.neighbors._joint import joint_topk_search
from pillar_rerank.neighbors._pairs import PairScores
from pillar_rerank.neighbors._topk import TopK, search_backend
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES
from pillar_rerank.utils.memory import MemoryPlan, plan_input_memory

DIRECTIONS = ("i2t", "t2i", "i2i", "t2t")


@dataclass(frozen=True)
class NeighborLists:
    """Top-R neighbour lists of a retrieval set in the four directions.

    Attributes
    ----------
    i2t : TopK of shape (n_images, R_i2t)
        Texts ranked for every image (rows of the i2t scores).
    t2i : TopK of shape (n_texts, R_t2i)
        Images ranked for every text (columns of the t2i scores).
    i2i : TopK of shape (n_images, R_i2i)
        Images ranked for every image by π; the image itself at rank 0.
    t2t : TopK of shape (n_texts, R_t2t)
        Texts ranked for every text by π; the text itself at rank 0.
    source : str
        The resolved intra-modal source ("given", "embeddings" or "second_order").
    """

    i2t: TopK
    t2i: TopK
    i2i: TopK
    t2t: TopK
    source: str

    def depth(self, direction: str) -> int:
        return int(getattr(self, direction).ids.shape[1])


def cross_modal_scores(data: RetrievalSet) -> tuple[PairScores, PairScores]:
    """Random access to φ for the i2t and the t2i direction, both oriented images x texts.

    With a score matrix these read ``data.scores`` and ``data.t2i_scores`` (or ``scores`` again)
    in place; with embeddings only, both are the raw inner product ``image @ text``, or, with a
    ``data.normalization``, that product through each direction's transform (never stored).
    """
    if data.scores is not None:
        t2i = data.t2i_scores if data.t2i_scores is not None else data.scores
        return PairScores(matrix=data.scores), PairScores(matrix=t2i)
    norm = data.normalization
    if norm is not None:
        return (PairScores(left=data.image_embeddings, right=data.text_embeddings, transform=norm.i2t),
                PairScores(left=data.image_embeddings, right=data.text_embeddings, transform=norm.t2i))
    pair = PairScores(left=data.image_embeddings, right=data.text_embeddings)
    return pair, pair


def _depths(depth: int | dict[str, int]) -> dict[str, int]:
    if isinstance(depth, dict):
        unknown = sorted(set(depth) - set(DIRECTIONS))
        missing = sorted(set(DIRECTIONS) - set(depth))
        if unknown or missing:
            raise InvalidParameterError(
                f"depth: expected an int or a dict with keys {', '.join(DIRECTIONS)}; "
                f"got unknown {unknown} / missing {missing}.")
        return {d: check_int(v, name=f"depth[{d!r}]", owner="build_neighbor_lists") for d, v in depth.items()}
    value = check_int(depth, name="depth", owner="build_neighbor_lists")
    return dict.fromkeys(DIRECTIONS, value)


def build_neighbor_lists(data: RetrievalSet, depth: int | dict[str, int], *, intra_source: str = "auto",
                         device: str | torch.device | None = None,
                         budget_bytes: int = DEFAULT_BLOCK_BYTES,
                         intra: IntraModalScores | None = None,
                         second_order_rank: int | None = DEFAULT_SECOND_ORDER_RANK,
                         power_iterations: int = 1, seed: int = 0, index: str = "flat",
                         index_params: dict | None = None,
                         max_memory: str | int | None = None) -> NeighborLists:
    """Top-``depth`` lists i2t, t2i, i2i and t2t of ``data``.

    Parameters
    ----------
    data : RetrievalSet
    depth : int or dict
        R, the list length; one int for all four lists or ``{"i2t": .., "t2i": .., "i2i": ..,
        "t2t": ..}``. Each must fit its gallery (an error otherwise, never clipped).
    intra_source : {"auto", "given", "embeddings", "second_order"}, default="auto"
        See :func:`intra_modal_source`. Ignored when ``intra`` is given.
    device : str or None, default=None
        Device of FAISS / torch searches on embeddings.
    budget_bytes : int, default=256 MiB
        Working memory per block.
    intra : IntraModalScores, optional
        Pre-built π (so a caller that also needs random access builds it once).
    second_order_rank, power_iterations, seed
        Options of :func:`second_order_embeddings`.
    index : {"flat", "ivf", "hnsw"}, default="flat"
        FAISS index of the searches over embeddings (cross-modal from embeddings, intra-modal
        from embeddings or second-order profiles); "flat" is exact. Top-k of score matrices is
        always exact. See :func:`topk_search` and :func:`recall_against_exact`.
    index_params : dict, optional
        Parameters of the approximate index (see :func:`topk_search`).
    max_memory : str or int, optional
        One budget (e.g. ``"4GB"``) for everything this call allocates on top of ``data``; it
        sets the block size of every stage (:func:`~pillar_rerank.utils.memory.plan_input_memory`)
        and replaces ``budget_bytes``.

    Returns
    -------
    NeighborLists
    """
    depths = _depths(depth)
    check_index(index, index_params, owner="build_neighbor_lists")
    if max_memory is not None:
        resolved = intra.source if intra is not None else intra_modal_source(data, intra_source)
        budget_bytes = neighbor_memory_plan(data, depths, max_memory, intra_source=resolved,
                                            second_order_rank=second_order_rank, index=index,
                                            index_params=index_params).block_bytes
    if intra is None:
        intra = IntraModalScores.from_data(data, intra_source, rank=second_order_rank,
                                           power_iterations=power_iterations, seed=seed,
                                           budget_bytes=budget_bytes)
    phi_i2t, phi_t2i = cross_modal_scores(data)
    kw = {"device": device, "budget_bytes": budget_bytes, "index": index, "index_params": index_params}
    k_i2t = check_k(depths["i2t"], n_gallery=data.n_texts, name="depth['i2t']")
    k_t2i = check_k(depths["t2i"], n_gallery=data.n_images, name="depth['t2i']")
    joint = None
    dev, use_faiss = search_backend(device, index=index)
    if phi_i2t is phi_t2i and index == "flat" and dev.type == "cpu" and not use_faiss:
        # embeddings: i2t and t2i are the rows and columns of one product, computed once
        joint = joint_topk_search(phi_i2t.left.numpy(), phi_i2t.right.numpy(), k_i2t, k_t2i,
                                  budget_bytes=budget_bytes)
    i2t, t2i = joint if joint is not None else (phi_i2t.topk(k_i2t, **kw), phi_t2i.T.topk(k_t2i, **kw))
    i2i = intra.topk("image", check_k(depths["i2i"], n_gallery=data.n_images, name="depth['i2i']"), **kw)
    t2t = intra.topk("text", check_k(depths["t2t"], n_gallery=data.n_texts, name="depth['t2t']"), **kw)
    return NeighborLists(i2t=i2t, t2i=t2i, i2i=i2i, t2t=t2t, source=intra.source)


def neighbor_memory_plan(data: RetrievalSet, depths: dict[str, int], max_memory: str | int, *,
                         intra_source: str, second_order_rank: int | None = DEFAULT_SECOND_ORDER_RANK,
                         index: str = "flat", index_params: dict | None = None,
                         list_shape: dict[str, int] | None = None) -> MemoryPlan:
    """The :class:`~pillar_rerank.utils.memory.MemoryPlan` of ``data`` under ``max_memory``.

    ``list_shape`` holds the LeaPRRConfig list fields (``n_pillars``, ``list_len_i2t``,
    ``list_len_t2i``, ``graph_neighbors``) when list building is planned too.
    """
    shape = {"n_pillars": 1, "list_len_i2t": 2, "list_len_t2i": 2, "graph_neighbors": 1, **(list_shape or {})}
    emb = data.image_embeddings
    return plan_input_memory(
        max_memory, n_images=data.n_images, n_texts=data.n_texts,
        dim=None if emb is None else int(emb.shape[1]), intra_source=intra_source, depths=depths,
        second_order_rank=second_order_rank, has_scores=data.scores is not None,
        embeddings_float32=emb is None or (emb.dtype == np.float32
                                           and data.text_embeddings.dtype == np.float32),
        index=index, index_params=index_params, **shape)
