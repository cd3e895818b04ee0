"""LeaPRR's neural layers, one per file, and the per-direction network.

* :class:`PillarEmbedding`: per-half LayerNorm + projection of pillar vectors.
* :class:`AdjacencyAveragedAttention`: the paper's dense attention averaged with A.
* :class:`SparseAdjacencyAttention`: the edge-restricted torch-geometric variant.
* :class:`GraphTransformerBlock`: pre-norm block (attention + MLP).
* :class:`GraphRerankNetwork`: one direction; :class:`MutualRerankNetwork`: the pair.

torch-geometric is imported only when the sparse attention is used (``attention="sparse"``, or
``SparseAdjacencyAttention`` / ``dense_to_edges`` taken from this package): importing it costs
about a second of start-up and a deprecation warning that the dense model does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

from pillar_rerank.model.attention import AdjacencyAveragedAttention
from pillar_rerank.model.block import FeedForward, GraphTransformerBlock
from pillar_rerank.model.network import GraphRerankNetwork, MutualRerankNetwork
from pillar_rerank.model.pillar_embedding import PillarEmbedding

# name -> module, imported on first access (PEP 562)
_LAZY = {
    "SparseAdjacencyAttention": "pillar_rerank.model.sparse_attention",
    "dense_to_edges": "pillar_rerank.model.sparse_attention",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AdjacencyAveragedAttention",
    "FeedForward",
    "GraphRerankNetwork",
    "GraphTransformerBlock",
    "MutualRerankNetwork",
    "PillarEmbedding",
    "SparseAdjacencyAttention",
    "dense_to_edges",
]
