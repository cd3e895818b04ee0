"""LeaPRR's neural layers, one per file, and the per-direction network.

* :class:`PillarEmbedding`: per-half LayerNorm + projection of pillar vectors.
* :class:`AdjacencyAveragedAttention`: the paper's dense attention averaged with A.
* :class:`SparseAdjacencyAttention`: the edge-restricted torch-geometric variant.
* :class:`GraphTransformerBlock`: pre-norm block (attention + MLP).
* :class:`GraphRerankNetwork`: one direction; :class:`MutualRerankNetwork`: the pair.
"""

from pillar_rerank.model.attention import AdjacencyAveragedAttention
from pillar_rerank.model.block import FeedForward, GraphTransformerBlock
from pillar_rerank.model.network import GraphRerankNetwork, MutualRerankNetwork
from pillar_rerank.model.pillar_embedding import PillarEmbedding
from pillar_rerank.model.sparse_attention import SparseAdjacencyAttention, dense_to_edges

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
