"""The contract between input building (neighbours -> pillars -> graph) and the model.

A :class:`QueryLists` holds, for a batch of queries of one direction, everything the
graph network and the losses need. Row 0 of every list is the query itself; rows 1.. are its
candidates in initial-rank order. Building code (``pillars.py``, ``graph.py``) produces these;
``model/`` and ``losses.py`` consume them and never look at raw scores.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


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
