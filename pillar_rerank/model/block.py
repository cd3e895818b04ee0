"""Pre-norm Transformer block with adjacency-averaged attention."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pillar_rerank.model._init import init_layer_norm, init_linear
from pillar_rerank.model.attention import AdjacencyAveragedAttention


class FeedForward(nn.Module):
    r"""Two-layer MLP :math:`W_2\,\mathrm{GELU}(W_1 x + b_1) + b_2` (exact erf GELU).

    Shapes
    ------
    - input: :math:`(*, D)`; output: :math:`(*, D)`
    """

    def __init__(self, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        init_linear(self.fc1, generator)
        init_linear(self.fc2, generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GraphTransformerBlock(nn.Module):
    r"""One neighbour-aware reasoning block (spec §6.3).

    .. math::
        x &\leftarrow x + \mathrm{Attn}_A(\mathrm{LN}_1(x)) \\
        x &\leftarrow x + \mathrm{MLP}(\mathrm{LN}_2(x))

    where :math:`\mathrm{Attn}_A` is :class:`AdjacencyAveragedAttention` (``attention="dense"``,
    the paper's) or :class:`SparseAdjacencyAttention` (``attention="sparse"``).

    Parameters
    ----------
    embed_dim : int
    num_heads : int
    mlp_ratio : float, default=4.0
        Hidden size of the MLP is ``int(embed_dim * mlp_ratio)``.
    qkv_bias : bool, default=True
    attention : {"dense", "sparse"}, default="dense"

    Shapes
    ------
    - input: x :math:`(n_{queries}, n_{nodes}, D)`, adjacency :math:`(n_{queries}, n_{nodes}, n_{nodes})`
    - output: :math:`(n_{queries}, n_{nodes}, D)`
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        attention: str = "dense",
    ) -> None:
        super().__init__()
        if attention not in ("dense", "sparse"):
            raise ValueError(
                f"GraphTransformerBlock: attention must be 'dense' or 'sparse'; got {attention!r}."
            )
        self.norm1 = nn.LayerNorm(embed_dim)
        if attention == "dense":
            self.attn = AdjacencyAveragedAttention(embed_dim, num_heads, qkv_bias=qkv_bias)
        else:
            from pillar_rerank.model.sparse_attention import SparseAdjacencyAttention

            self.attn = SparseAdjacencyAttention(embed_dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = FeedForward(embed_dim, int(embed_dim * mlp_ratio))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        init_layer_norm(self.norm1)
        init_layer_norm(self.norm2)
        self.attn.reset_parameters(generator)
        self.mlp.reset_parameters(generator)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        # LayerNorm in float32 under any autocast, as CUDA's autocast does (its CPU one would not)
        x = x + self.attn(self.norm1(x.float()), adjacency)
        return x + self.mlp(self.norm2(x.float()))
