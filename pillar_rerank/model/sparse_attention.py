"""Edge-restricted variant of the adjacency-averaged attention (torch-geometric message passing)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax as segment_softmax

from pillar_rerank.model.attention import AdjacencyAveragedAttention


def dense_to_edges(adjacency: Tensor) -> tuple[Tensor, Tensor]:
    """Disjoint-union edge list of a batch of dense adjacencies.

    Node ``i`` of graph ``b`` gets the global id ``b * n_nodes + i``; an edge ``j -> i`` exists
    where ``adjacency[b, i, j] > 0`` (row ``i`` attends to column ``j``).

    Returns
    -------
    edge_index : LongTensor of shape (2, n_edges)
        Source (``j``) and target (``i``) global node ids.
    edge_weight : Tensor of shape (n_edges,)
        ``adjacency[b, i, j]``.
    """
    n = adjacency.shape[1]
    b, i, j = torch.nonzero(adjacency > 0, as_tuple=True)  # host sync: number of edges
    edge_index = torch.stack([b * n + j, b * n + i])
    return edge_index, adjacency[b, i, j]


class SparseAdjacencyAttention(MessagePassing):
    r"""Adjacency-averaged attention restricted to the graph's edges.

    With :math:`\mathcal{N}(i) = \{j : A_{ij} > 0\}` (always containing :math:`i`):

    .. math::
        \alpha^{h}_{ij} = \mathrm{softmax}_{j\in\mathcal{N}(i)}
            \big(q^{h}_i \cdot k^{h}_j / \sqrt{d_h}\big), \qquad
        \mathrm{out}_i = W_o\Big[\textstyle\sum_{j\in\mathcal{N}(i)}
            \tfrac12(\alpha^{h}_{ij} + A_{ij})\, v^{h}_j\Big]_{h=1..H} + b_o

    This is a **different operator** from :class:`AdjacencyAveragedAttention`: the learned
    softmax only spans the sparsified neighbourhood instead of the whole list, so its cost grows
    with the number of edges rather than :math:`n_{nodes}^2` (useful for long candidate lists).
    It has the same parameters (``qkv``, ``proj``), so weights transfer between the two; scores
    differ unless every adjacency entry is non-zero.

    Parameters
    ----------
    embed_dim : int
    num_heads : int
    qkv_bias : bool, default=True

    Shapes
    ------
    - input: x :math:`(n_{queries}, n_{nodes}, D)`, adjacency :math:`(n_{queries}, n_{nodes}, n_{nodes})`
    - output: :math:`(n_{queries}, n_{nodes}, D)`

    Notes
    -----
    The batch is treated as one disjoint-union graph; building its edge list needs one host
    synchronisation (``nonzero``).
    """

    def __init__(self, embed_dim: int, num_heads: int, *, qkv_bias: bool = True) -> None:
        super().__init__(aggr="add", node_dim=0)
        # Re-use the dense layer's parameters and initialisation.
        dense = AdjacencyAveragedAttention(embed_dim, num_heads, qkv_bias=qkv_bias)
        self.embed_dim, self.num_heads, self.head_dim = dense.embed_dim, dense.num_heads, dense.head_dim
        self.scale = dense.scale
        self.qkv = dense.qkv
        self.proj = dense.proj

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        from pillar_rerank.model._init import init_linear

        init_linear(self.qkv, generator)
        init_linear(self.proj, generator)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:  # type: ignore[override]
        q_, n, d = x.shape
        qkv = self.qkv(x.reshape(q_ * n, d)).reshape(q_ * n, 3, self.num_heads, self.head_dim)
        edge_index, edge_weight = dense_to_edges(adjacency)
        out = self.propagate(
            edge_index,
            q=qkv[:, 0],
            k=qkv[:, 1],
            v=qkv[:, 2],
            edge_weight=edge_weight.to(x.dtype),
            size=(q_ * n, q_ * n),
        )
        return self.proj(out.reshape(q_, n, d))

    def message(
        self,
        q_i: Tensor,
        k_j: Tensor,
        v_j: Tensor,
        edge_weight: Tensor,
        index: Tensor,
        ptr: Tensor | None,
        size_i: int | None,
    ) -> Tensor:
        logits = (q_i * k_j).sum(dim=-1) * self.scale  # (n_edges, H)
        alpha = segment_softmax(logits.float(), index, ptr, size_i)  # float32 under any autocast
        weight = 0.5 * (alpha + edge_weight.unsqueeze(-1))
        return weight.unsqueeze(-1) * v_j

    def __repr__(self) -> str:
        return f"{type(self).__name__}(embed_dim={self.embed_dim}, num_heads={self.num_heads})"
