"""The contract between input building (neighbours -> pillars -> graph) and the model.

A :class:`QueryLists` holds, for a batch of queries of one direction, everything the
graph network and the losses need. Row 0 of every list is the query itself; rows 1.. are its
candidates in initial-rank order. Building code (``builder.py``, ``graph.py``) produces these;
``model/`` and ``losses.py`` consume them and never look at raw scores. A :class:`ListSource`
serves them by query id (the builder, the in-memory source and the on-disk cache all do);
the trainer and the inference loop accept any of them.

This module imports torch only (no faiss): ``model/`` depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import torch

from pillar_rerank.exceptions import InvalidInputError


@dataclass
class QueryLists:
    """Pillar-space lists of a batch of queries (one direction).

    Attributes
    ----------
    features : Tensor of shape (n_queries, n_nodes, 2 * n_pillars), float32
        Pillar vectors. Columns ``[:n_pillars]`` are similarities to the pillars of the query's
        own modality, ``[n_pillars:]`` to the other modality's pillars. Column 0 of a candidate
        row is the original query-candidate score; column 0 of the query row is >= all of them.
    targets : BoolTensor of shape (n_queries, n_nodes)
        True where the row matches the query; row 0 (the query) is always True.
    adjacency : Tensor of shape (n_queries, n_nodes, n_nodes), float32
        Row-normalised, sparsified neighbour-overlap adjacency (diagonal > 0).
    candidates : LongTensor of shape (n_queries, n_nodes - 1)
        Gallery ids of rows 1.. (for mapped lists: the ids of the substituted items).
    query_ids : LongTensor of shape (n_queries,)
        Ids of the queries in their own modality.
    """

    features: torch.Tensor
    targets: torch.Tensor
    adjacency: torch.Tensor
    candidates: torch.Tensor
    query_ids: torch.Tensor

    @property
    def n_queries(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.features.shape[1])

    def to(self, device: torch.device | str) -> QueryLists:
        """Copy every tensor to ``device``."""
        return QueryLists(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __getitem__(self, index) -> QueryLists:
        """Select queries (a slice, index tensor or boolean mask)."""
        return QueryLists(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


#: Field names of :class:`QueryLists`, in order (the on-disk tensor names use them too).
LIST_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(QueryLists))


def concat_lists(parts: list[QueryLists]) -> QueryLists:
    """Concatenate batches of lists along the query axis (one part is returned as is)."""
    if len(parts) == 1:
        return parts[0]
    return QueryLists(**{name: torch.cat([getattr(p, name) for p in parts]) for name in LIST_FIELDS})


def check_query_ids(ids: Any, n: int, name: str) -> torch.Tensor:
    """``ids`` as a 1-D int64 tensor, every id in ``[0, n)``; else InvalidInputError naming ``name``."""
    ids = torch.as_tensor(ids)
    if ids.dim() != 1 or ids.dtype not in (torch.int64, torch.int32):
        raise InvalidInputError(f"{name}: expected a 1-D integer tensor; got {ids.dtype} of shape "
                                f"{tuple(ids.shape)}.")
    ids = ids.to(torch.int64)
    bad = (ids < 0) | (ids >= n)
    if bool(bad.any()):
        raise InvalidInputError(f"{name}: {int(bad.sum())} ids outside [0, {n}) (first: {int(ids[bad][0])}).")
    return ids


@runtime_checkable
class ListSource(Protocol):
    """What the trainer and the inference loop read lists from.

    Implemented by :class:`~pillar_rerank.lists.builder.ListBuilder` (built on demand),
    :class:`~pillar_rerank.lists.memory.MemoryLists` (built once, held in memory) and
    :class:`~pillar_rerank.lists.cached.CachedLists` (read from a cache directory).
    """

    @property
    def n_images(self) -> int: ...

    @property
    def n_texts(self) -> int: ...

    def image_lists(self, image_ids: torch.Tensor) -> QueryLists:
        """Lists of image queries (n_nodes = list_len_i2t; candidates are text ids)."""
        ...

    def text_lists(self, text_ids: torch.Tensor) -> QueryLists:
        """Lists of text queries (n_nodes = list_len_t2i; candidates are image ids)."""
        ...

    def mapped_lists(self, text_ids: torch.Tensor, generator: torch.Generator, *,
                     image_lists: QueryLists | None = None,
                     text_lists: QueryLists | None = None) -> tuple[QueryLists, QueryLists]:
        """The structure-alignment lists ``(t2i_map, i2t_map)`` of a batch of captions."""
        ...
