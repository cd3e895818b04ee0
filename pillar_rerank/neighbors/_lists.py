"""The four neighbour lists of a retrieval set (i2t, t2i, i2i, t2t)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pillar_rerank._validation import check_int, check_k
from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.neighbors._intra import DEFAULT_SECOND_ORDER_RANK, IntraModalScores
from pillar_rerank.neighbors._pairs import PairScores
from pillar_rerank.neighbors._topk import TopK
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES

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
    in place; with embeddings only, both are the raw inner product ``image @ text``.
    """
    if data.scores is not None:
        t2i = data.t2i_scores if data.t2i_scores is not None else data.scores
        return PairScores(matrix=data.scores), PairScores(matrix=t2i)
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
                         power_iterations: int = 1, seed: int = 0) -> NeighborLists:
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

    Returns
    -------
    NeighborLists
    """
    depths = _depths(depth)
    if intra is None:
        intra = IntraModalScores.from_data(data, intra_source, rank=second_order_rank,
                                           power_iterations=power_iterations, seed=seed,
                                           budget_bytes=budget_bytes)
    phi_i2t, phi_t2i = cross_modal_scores(data)
    kw = {"device": device, "budget_bytes": budget_bytes}
    i2t = phi_i2t.topk(check_k(depths["i2t"], n_gallery=data.n_texts, name="depth['i2t']"), **kw)
    t2i = phi_t2i.T.topk(check_k(depths["t2i"], n_gallery=data.n_images, name="depth['t2i']"), **kw)
    i2i = intra.topk("image", check_k(depths["i2i"], n_gallery=data.n_images, name="depth['i2i']"), **kw)
    t2t = intra.topk("text", check_k(depths["t2t"], n_gallery=data.n_texts, name="depth['t2t']"), **kw)
    return NeighborLists(i2t=i2t, t2i=t2i, i2i=i2i, t2t=t2t, source=intra.source)
