"""Pillar selection and pillar-space lists (LeaPRR §4-§5, §7.3), batched over queries.

:class:`ListBuilder` runs the neighbour search of a retrieval set once and then turns any batch
of queries into :class:`~pillar_rerank.lists.contract.QueryLists`: pillar vectors of the query and its
candidates, targets, neighbour-overlap adjacency and candidate ids, for image queries, text
queries, and the "mapped" lists of the structure-alignment loss. One generic code path serves
both directions; a direction is described by a :class:`_Side` (which lists and which score
tables play the roles of "query modality" A and "gallery modality" B).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from pillar_rerank._validation import check_k
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.lists.contract import QueryLists, check_query_ids, concat_lists
from pillar_rerank.lists.graph import overlap_adjacency
from pillar_rerank.neighbors import (
    IntraModalScores,
    NeighborLists,
    PairScores,
    build_neighbor_lists,
    cross_modal_scores,
    intra_modal_source,
    neighbor_memory_plan,
)
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES

logger = logging.getLogger(__name__)

REFERENCE_LIST_LEN = {"image": 32, "text": 8}  # the reference's fixed threshold denominators


@dataclass(frozen=True)
class _Side:
    """One query direction: A = the query modality, B = the gallery modality."""

    own_ids: torch.Tensor        # (n_A, R) A -> A list (intra; the query at rank 0)
    own_values: torch.Tensor
    cross_ids: torch.Tensor      # (n_A, R) A -> B list (the initial ranking)
    cross_values: torch.Tensor
    back_ids: torch.Tensor       # (n_B, R) B -> A list (graph sets of candidates, modality A)
    gallery_own_ids: torch.Tensor  # (n_B, R) B -> B list (graph sets of candidates, modality B)
    phi_ba: PairScores           # φ oriented (B, A): candidate x query-modality pillars
    pi_b: PairScores             # π of the gallery modality
    image_of_a: torch.Tensor     # image id of every A item (identity for images)
    image_of_b: torch.Tensor
    n_nodes: int
    threshold: float | None


def _tensor(a: np.ndarray, dtype: type | None = None) -> torch.Tensor:
    a = np.ascontiguousarray(a, dtype=dtype)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


class ListBuilder:
    """Builds LeaPRR's per-query inputs from a retrieval set.

    Use :meth:`from_data`; the constructor only stores its arguments.

    Parameters
    ----------
    neighbors : NeighborLists
    phi_i2t, phi_t2i : PairScores of shape (n_images, n_texts)
        φ used by image-query lists (and i2t-mapped lists) and by text-query lists (and
        t2i-mapped lists); they differ only when ``RetrievalSet.t2i_scores`` is set.
    intra : IntraModalScores
    txt_to_img : ndarray of shape (n_texts,)
    config : LeaPRRConfig
    captions_indptr, captions_indices : ndarray
        CSR image -> captions layout (``Relevance.indptr`` / ``indices``).
    list_batch : dict, optional
        Queries per batch of :meth:`build_all`, ``{"image": .., "text": ..}`` (set from
        ``max_memory`` by :meth:`from_data`; 4096 each by default).

    Notes
    -----
    Layout (§5.1), with the query's pillars I_1..I_L (images) and T_1..T_L (texts), ranked:

    ==================  ===========================================
    image query I       [π(I, I_1..I_L) ‖ φ(I, T_1..T_L)]
    candidate text t    [φ(I_1..I_L, t) ‖ π(t, T_1..T_L)]
    text query T        [π(T, T_1..T_L) ‖ φ(I_1..I_L, T)]
    candidate image J   [φ(J, T_1..T_L) ‖ π(J, I_1..I_L)]
    ==================  ===========================================

    The query sits at rank 0 of its own intra-modal list, so column 0 of a candidate row is its
    original score φ(query, candidate). Column 0 of the query row is π(query, query): 1 for
    embedding cosines, the diagonal for given matrices, |e|² (1 when exact) for the second-order
    estimate. It is left as computed: when φ is on another scale (e.g. raw logits > 1) it can be
    smaller than the candidates' column 0; the builder never rescales inputs, and the model's
    hinge floor (the minimum of column 0) is then set by the query row.
    """

    def __init__(self, *, neighbors: NeighborLists, phi_i2t: PairScores, phi_t2i: PairScores,
                 intra: IntraModalScores, txt_to_img: np.ndarray, config: LeaPRRConfig,
                 captions_indptr: np.ndarray, captions_indices: np.ndarray,
                 list_batch: dict[str, int] | None = None) -> None:
        self.neighbors = neighbors
        self.list_batch = dict(list_batch or {"image": 4096, "text": 4096})
        self.phi_i2t = phi_i2t
        self.phi_t2i = phi_t2i
        self.intra = intra
        self.config = config
        self._txt_to_img = _tensor(txt_to_img, np.int64)
        self._indptr = _tensor(captions_indptr, np.int64)
        self._indices = _tensor(captions_indices, np.int64)
        self._image_side, self._text_side = self._sides()

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_data(cls, data: RetrievalSet, config: LeaPRRConfig, *, neighbors: NeighborLists | None = None,
                  device: str | torch.device | None = None, budget_bytes: int = DEFAULT_BLOCK_BYTES,
                  power_iterations: int = 1, max_memory: str | int | None = None,
                  index: str | None = None, index_params: dict | None = None) -> ListBuilder:
        """Search the neighbours of ``data`` once and return a builder for its lists.

        Parameters
        ----------
        data : RetrievalSet
        config : LeaPRRConfig
            Uses ``n_pillars``, ``list_len_i2t``, ``list_len_t2i``, ``graph_neighbors``,
            ``graph_coef``, ``reference_thresholds``, ``intra_source``, ``intra_rank`` and
            ``seed`` (the last two for the second-order estimate).
        neighbors : NeighborLists, optional
            Pre-computed lists (deep enough for the config); searched here otherwise.
        device : str or None, default=None
            Device of the FAISS / torch searches on embeddings. Lists are built on CPU.
        budget_bytes : int, default=256 MiB
            Working memory per block of the searches.
        power_iterations : int, default=1
            Subspace iterations of the second-order estimate.
        max_memory : str or int, optional
            One budget (e.g. ``"4GB"``) for what input building allocates on top of ``data``:
            it sets the search and second-order block sizes (replacing ``budget_bytes``) and the
            list batch of :meth:`build_all` (``plan_input_memory``). Too small a budget for the
            lists and copies that scale with ``n_images + n_texts`` is an error.
        index : {"flat", "ivf", "hnsw"}, optional
            FAISS index of the embedding searches; default ``config.neighbor_index``. See
            ``topk_search``.
        index_params : dict, optional
            Parameters of the approximate index; default ``config.neighbor_index_params``.
        """
        config = config.validate()
        L, C = config.n_pillars, config.graph_neighbors
        k_i, k_t = config.list_len_i2t - 1, config.list_len_t2i - 1
        n_img, n_txt = data.n_images, data.n_texts
        smaller = min(n_img, n_txt)
        for value, name, gallery in ((L, "n_pillars", smaller), (C, "graph_neighbors", smaller),
                                     (k_i, "list_len_i2t - 1", n_txt), (k_t, "list_len_t2i - 1", n_img)):
            check_k(value, n_gallery=gallery, name=name, owner="LeaPRRConfig")
        depth = {"i2t": max(L, k_i, C), "t2i": max(L, k_t, C), "i2i": max(L, C), "t2t": max(L, C)}
        second_order_rank = config.intra_rank
        index = index if index is not None else config.neighbor_index
        if index_params is None:
            index_params = config.neighbor_index_params
        list_batch = None
        if max_memory is not None:
            resolved = (neighbors.source if neighbors is not None
                        else intra_modal_source(data, config.intra_source))
            plan = neighbor_memory_plan(
                data, depth, max_memory, intra_source=resolved, second_order_rank=second_order_rank,
                index=index, index_params=index_params,
                list_shape={"n_pillars": L, "list_len_i2t": config.list_len_i2t,
                            "list_len_t2i": config.list_len_t2i, "graph_neighbors": C})
            budget_bytes, list_batch = plan.block_bytes, plan.list_batch
            logger.info("%s: max_memory %d MiB -> blocks of %d MiB, list batches %s",
                        data.name, plan.max_memory >> 20, budget_bytes >> 20, list_batch)
        if neighbors is None:
            intra = IntraModalScores.from_data(data, config.intra_source, rank=second_order_rank,
                                               power_iterations=power_iterations, seed=config.seed,
                                               budget_bytes=budget_bytes)
            neighbors = build_neighbor_lists(data, depth, intra=intra, device=device,
                                             budget_bytes=budget_bytes, index=index,
                                             index_params=index_params)
        else:
            short = {d: neighbors.depth(d) for d in depth if neighbors.depth(d) < depth[d]}
            if short:
                raise InvalidInputError(
                    f"neighbors: lists too short for the config (need {depth}); got {short}.")
            rows = (neighbors.i2t.ids.shape[0], neighbors.t2i.ids.shape[0])
            if rows != (n_img, n_txt):
                raise InvalidInputError(f"neighbors: built for {rows[0]} images x {rows[1]} texts; "
                                        f"the data has {n_img} x {n_txt}.")
            if config.intra_source not in ("auto", neighbors.source):
                raise InvalidParameterError(f"neighbors were built with intra source {neighbors.source!r}, "
                                            f"but the config asks for {config.intra_source!r}.")
            intra = IntraModalScores.from_data(data, neighbors.source, rank=second_order_rank,
                                               power_iterations=power_iterations, seed=config.seed,
                                               budget_bytes=budget_bytes)
        return cls.from_neighbors(data, config, neighbors, intra=intra, list_batch=list_batch)

    @classmethod
    def from_neighbors(cls, data: RetrievalSet, config: LeaPRRConfig, neighbors: NeighborLists, *,
                       intra: IntraModalScores | None = None,
                       list_batch: dict[str, int] | None = None) -> ListBuilder:
        """A builder over already searched ``neighbors`` of ``data`` (no search).

        ``intra`` defaults to the intra-modal scores of ``neighbors.source`` read from ``data``
        (pass it for the second-order estimate, whose profiles are not in ``data``).
        """
        if intra is None:
            intra = IntraModalScores.from_data(data, neighbors.source)
        phi_i2t, phi_t2i = cross_modal_scores(data)
        rel = data.relevance
        return cls(neighbors=neighbors, phi_i2t=phi_i2t, phi_t2i=phi_t2i, intra=intra,
                   txt_to_img=rel.txt_to_img, config=config, captions_indptr=rel.indptr,
                   captions_indices=rel.indices, list_batch=list_batch)

    def _sides(self) -> tuple[_Side, _Side]:
        nb, cfg = self.neighbors, self.config
        ref = cfg.reference_thresholds
        i2t, t2i, i2i, t2t = (tuple(map(_tensor, getattr(nb, d))) for d in ("i2t", "t2i", "i2i", "t2t"))
        images = torch.arange(self.n_images)
        image_side = _Side(
            own_ids=i2i[1], own_values=i2i[0], cross_ids=i2t[1], cross_values=i2t[0],
            back_ids=t2i[1], gallery_own_ids=t2t[1], phi_ba=self.phi_i2t.T, pi_b=self.intra.text,
            image_of_a=images, image_of_b=self._txt_to_img, n_nodes=cfg.list_len_i2t,
            threshold=cfg.graph_coef / REFERENCE_LIST_LEN["image"] if ref else None)
        text_side = _Side(
            own_ids=t2t[1], own_values=t2t[0], cross_ids=t2i[1], cross_values=t2i[0],
            back_ids=i2t[1], gallery_own_ids=i2i[1], phi_ba=self.phi_t2i, pi_b=self.intra.image,
            image_of_a=self._txt_to_img, image_of_b=images, n_nodes=cfg.list_len_t2i,
            threshold=cfg.graph_coef / REFERENCE_LIST_LEN["text"] if ref else None)
        return image_side, text_side

    # ---------------------------------------------------------------- properties
    @property
    def n_images(self) -> int:
        return int(self.neighbors.i2t.ids.shape[0])

    @property
    def n_texts(self) -> int:
        return int(self.neighbors.t2i.ids.shape[0])

    @property
    def txt_to_img(self) -> torch.Tensor:
        """Image id of every caption, LongTensor of shape (n_texts,)."""
        return self._txt_to_img

    @property
    def intra_source(self) -> str:
        return self.neighbors.source

    # ---------------------------------------------------------------- generic pieces
    def _query_rows(self, side: _Side, queries: torch.Tensor) -> torch.Tensor:
        """(q, 1, 2L): [π(query, own pillars) ‖ φ(query, other pillars)], read off the lists."""
        L = self.config.n_pillars
        return torch.cat([side.own_values[queries, :L], side.cross_values[queries, :L]], 1).unsqueeze(1)

    def _candidate_rows(self, side: _Side, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(q, m, 2L): [φ(candidate, own pillars) ‖ π(candidate, other pillars)] of any B items."""
        L = self.config.n_pillars
        own_pillars = side.own_ids[queries, :L]
        other_pillars = side.cross_ids[queries, :L]
        return torch.cat([side.phi_ba.block(candidates, own_pillars),
                          side.pi_b.block(candidates, other_pillars)], dim=2)

    def _candidates(self, side: _Side, queries: torch.Tensor) -> torch.Tensor:
        return side.cross_ids[queries, :side.n_nodes - 1]

    def _targets(self, side: _Side, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        match = side.image_of_b[candidates] == side.image_of_a[queries].unsqueeze(1)
        return torch.cat([torch.ones(queries.shape[0], 1, dtype=torch.bool), match], dim=1)

    def _adjacency(self, side: _Side, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        C = self.config.graph_neighbors
        # Node sets per modality: the query's own lists, then each candidate's lists.
        sets_b = torch.cat([side.cross_ids[queries, :C, None].transpose(1, 2),
                            side.gallery_own_ids[candidates, :C]], 1)
        sets_a = torch.cat([side.own_ids[queries, :C, None].transpose(1, 2),
                            side.back_ids[candidates, :C]], 1)
        return overlap_adjacency(sets_a, sets_b, coef=self.config.graph_coef, threshold=side.threshold)

    def _lists(self, side: _Side, queries: torch.Tensor) -> QueryLists:
        unique, inverse = torch.unique(queries, return_inverse=True)
        cands = self._candidates(side, unique)
        features = torch.cat([self._query_rows(side, unique), self._candidate_rows(side, unique, cands)], 1)
        out = QueryLists(features=features, targets=self._targets(side, unique, cands),
                         adjacency=self._adjacency(side, unique, cands), candidates=cands, query_ids=unique)
        same = unique.shape[0] == queries.shape[0] and bool((unique == queries).all())
        return out if same else out[inverse]

    # ---------------------------------------------------------------- public lists
    def image_lists(self, image_ids: torch.Tensor) -> QueryLists:
        """Lists of image queries: n_nodes = list_len_i2t, candidates are text ids.

        Each distinct image of the batch is computed once (a batch of captions' images repeats
        them).
        """
        return self._lists(self._image_side, check_query_ids(image_ids, self.n_images, "image_ids"))

    def text_lists(self, text_ids: torch.Tensor) -> QueryLists:
        """Lists of text queries: n_nodes = list_len_t2i, candidates are image ids."""
        return self._lists(self._text_side, check_query_ids(text_ids, self.n_texts, "text_ids"))

    def random_captions(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One caption of each image drawn uniformly at random (any number of captions per image)."""
        counts = (self._indptr[1:] - self._indptr[:-1])[images]
        u = torch.rand(images.shape, generator=generator, dtype=torch.float64)
        offset = (u * counts).to(torch.int64).clamp_max_(counts - 1)
        return self._indices[self._indptr[images] + offset]

    def mapped_lists(self, text_ids: torch.Tensor, generator: torch.Generator, *,
                     image_lists: QueryLists | None = None,
                     text_lists: QueryLists | None = None) -> tuple[QueryLists, QueryLists]:
        """The structure-alignment lists (§7.3) of a batch of captions: ``(t2i_map, i2t_map)``.

        Parameters
        ----------
        text_ids : LongTensor of shape (q,)
        generator : torch.Generator
            Draws the caption that stands in for each candidate image of ``i2t_map``.
        image_lists, text_lists : QueryLists, optional
            ``image_lists(txt_to_img[text_ids])`` and ``text_lists(text_ids)`` when the caller
            already built them; their adjacency and targets are reused instead of recomputed.

        Returns
        -------
        t2i_map : QueryLists, n_nodes = list_len_i2t
            Image query I = txt_to_img[j] seen from caption j: query row = caption j's text-query
            row, candidates = the images of I's candidate texts (repeats allowed), vectors
            w.r.t. caption j's pillars. Adjacency and targets are those of I's list. To be scored
            by the t2i network.
        i2t_map : QueryLists, n_nodes = list_len_t2i
            Text query j seen from its image I: query row = I's image-query row, each candidate
            image replaced by one of its captions drawn with ``generator``, vectors w.r.t. I's
            pillars. Adjacency and targets are those of j's list. To be scored by the i2t network.

        Notes
        -----
        Feature values come from the φ table of the network that scores the list (t2i_map: the
        t2i scores; i2t_map: the i2t scores), which differ only with direction-specific scores.
        """
        texts = check_query_ids(text_ids, self.n_texts, "text_ids")
        images = self._txt_to_img[texts]
        img_side, txt_side = self._image_side, self._text_side
        if image_lists is None or not torch.equal(image_lists.query_ids, images):
            image_lists = self._lists(img_side, images)
        if text_lists is None or not torch.equal(text_lists.query_ids, texts):
            text_lists = self._lists(txt_side, texts)

        mapped_images = self._txt_to_img[image_lists.candidates]
        t2i_features = torch.cat([self._query_rows(txt_side, texts),
                                  self._candidate_rows(txt_side, texts, mapped_images)], 1)
        t2i_map = QueryLists(features=t2i_features, targets=image_lists.targets,
                             adjacency=image_lists.adjacency, candidates=mapped_images, query_ids=texts)

        captions = self.random_captions(text_lists.candidates, generator)
        i2t_features = torch.cat([self._query_rows(img_side, images),
                                  self._candidate_rows(img_side, images, captions)], 1)
        i2t_map = QueryLists(features=i2t_features, targets=text_lists.targets,
                             adjacency=text_lists.adjacency, candidates=captions, query_ids=images)
        return t2i_map, i2t_map

    def build_all(self, *, batch_size: int | None = None) -> tuple[QueryLists, QueryLists]:
        """Lists of every image query and every text query, built in batches.

        ``batch_size`` defaults to ``self.list_batch`` (from ``max_memory``, else 4096). The
        result holds every list; for sets whose lists do not fit in memory, write them to disk
        with :func:`pillar_rerank.lists.build_cache` instead.
        """
        parts = []
        for kind, fn, n in (("image", self.image_lists, self.n_images),
                            ("text", self.text_lists, self.n_texts)):
            step = batch_size or self.list_batch.get(kind, 4096)
            chunks = [fn(torch.arange(s, min(n, s + step))) for s in range(0, n, step)]
            parts.append(concat_lists(chunks))
        return parts[0], parts[1]

    def __repr__(self) -> str:
        c = self.config
        return (f"ListBuilder(n_images={self.n_images}, n_texts={self.n_texts}, n_pillars={c.n_pillars}, "
                f"list_len_i2t={c.list_len_i2t}, list_len_t2i={c.list_len_t2i}, intra={self.intra_source!r})")


__all__ = ["ListBuilder"]
