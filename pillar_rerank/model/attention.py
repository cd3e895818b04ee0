"""Multi-head self-attention whose attention matrix is averaged with the graph adjacency."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pillar_rerank.model._init import init_linear


class AdjacencyAveragedAttention(nn.Module):
    r"""Dense multi-head attention averaged with a fixed adjacency (the paper's operator).

    Per head :math:`h` with head size :math:`d_h = D / H`:

    .. math::
        P_h = \tfrac12\Big(\mathrm{softmax}\big(Q_h K_h^\top / \sqrt{d_h}\big) + A\Big),
        \qquad \mathrm{out} = W_o\,[P_1 V_1 \,\|\, \dots \,\|\, P_H V_H] + b_o

    where :math:`[Q\,\|\,K\,\|\,V] = W_{qkv} x + b_{qkv}` (one Linear(D, 3D), output laid out as
    (3, heads, head_dim)) and :math:`A` is the row-normalised neighbour-overlap adjacency,
    broadcast to every head. Rows of :math:`P_h` still sum to one
    (Qu et al., SIGIR 2023, https://arxiv.org/abs/2304.12570; spec §6.3).

    Parameters
    ----------
    embed_dim : int
        D.
    num_heads : int
        H; must divide D.
    qkv_bias : bool, default=True
        Bias of the qkv projection (the output projection always has one).

    Shapes
    ------
    - input: x :math:`(n_{queries}, n_{nodes}, D)`, adjacency :math:`(n_{queries}, n_{nodes}, n_{nodes})`
    - output: :math:`(n_{queries}, n_{nodes}, D)`
    """

    def __init__(self, embed_dim: int, num_heads: int, *, qkv_bias: bool = True) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"{type(self).__name__}: embed_dim={embed_dim} must be divisible by num_heads={num_heads}."
            )
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(self.embed_dim, 3 * self.embed_dim, bias=qkv_bias)
        self.proj = nn.Linear(self.embed_dim, self.embed_dim, bias=True)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        init_linear(self.qkv, generator)
        init_linear(self.proj, generator)

    def _split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q_, n, _ = x.shape
        qkv = self.qkv(x).reshape(q_, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each (n_queries, H, n_nodes, d_h)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        q_, n, d = x.shape
        q, k, v = self._split_heads(x)
        # the softmax in float32 under any autocast, as CUDA's autocast does (its CPU one would not)
        attn = torch.softmax(((q @ k.transpose(-2, -1)) * self.scale).float(), dim=-1)
        attn = (attn + adjacency.unsqueeze(1).to(attn.dtype)) * 0.5
        out = (attn @ v).transpose(1, 2).reshape(q_, n, d)
        return self.proj(out)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
