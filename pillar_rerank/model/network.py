"""The graph reasoning network of one retrieval direction, and the pair LeaPRR trains."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.lists.contract import QueryLists
from pillar_rerank.model.block import GraphTransformerBlock
from pillar_rerank.model.pillar_embedding import PillarEmbedding
from pillar_rerank.utils.memory import physical_memory_bytes

#: float32 copies of the weights training keeps: weights, gradients, SGD momentum, best weights.
TRAINING_COPIES = 4


class GraphRerankNetwork(nn.Module):
    r"""Neighbour-aware graph reasoning over one query's candidate list (one direction).

    .. math::
        x^{(0)} = \mathrm{PillarEmbedding}(X), \quad
        x^{(l)} = \mathrm{Block}_l(x^{(l-1)}, A), \quad
        z = x^{(\mathrm{depth})} / \lVert x^{(\mathrm{depth})} \rVert_2, \quad
        s_k = \langle z_0, z_k \rangle

    Row 0 is the query, so :math:`s_0 = 1` and :math:`s_k` (k >= 1) is candidate k's new score
    (Qu et al., SIGIR 2023, https://arxiv.org/abs/2304.12570; spec §5.3, §6). There is no final
    LayerNorm and no positional embedding.

    Parameters
    ----------
    n_pillars : int
        L; inputs have 2L columns.
    embed_dim : int, default=768
    depth : int, default=2
    num_heads : int, default=24
    mlp_ratio : float, default=4.0
    qkv_bias : bool, default=True
    anchor : {"both", "intra", "inter"}, default="both"
    attention : {"dense", "sparse"}, default="dense"
    reference_fp16 : bool, default=False
        Round the features and the adjacency through float16 on the way in, as the reference
        does (``.half()`` on its inputs; ``LeaPRRConfig.reference_fp16``). Not a parameter: the
        state dict is the same either way.

    Shapes
    ------
    - input: features :math:`(n_{queries}, n_{nodes}, 2L)`, adjacency
      :math:`(n_{queries}, n_{nodes}, n_{nodes})`
    - output: scores :math:`(n_{queries}, n_{nodes})`, self score included in column 0
    """

    def __init__(
        self,
        n_pillars: int,
        *,
        embed_dim: int = 768,
        depth: int = 2,
        num_heads: int = 24,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        anchor: str = "both",
        attention: str = "dense",
        reference_fp16: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"GraphRerankNetwork: depth must be >= 1; got {depth!r}.")
        self.n_pillars = int(n_pillars)
        self.embed_dim, self.depth, self.num_heads = int(embed_dim), int(depth), int(num_heads)
        self.attention = attention
        self.reference_fp16 = bool(reference_fp16)
        self.embed = PillarEmbedding(n_pillars, embed_dim, anchor=anchor)
        self.blocks = nn.ModuleList(
            GraphTransformerBlock(
                embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, attention=attention
            )
            for _ in range(depth)
        )
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        self.embed.reset_parameters(generator)
        for block in self.blocks:
            block.reset_parameters(generator)

    def node_embeddings(self, features: Tensor, adjacency: Tensor) -> Tensor:
        """L2-normalised final node embeddings ``z``, shape (n_queries, n_nodes, D)."""
        x = self.embed(features)
        for block in self.blocks:
            x = block(x, adjacency)
        return F.normalize(x.float(), dim=-1)  # float32 under any autocast, as on CUDA

    def forward(self, features: Tensor, adjacency: Tensor) -> Tensor:
        if self.reference_fp16:
            features = features.to(torch.float16).to(features.dtype)
            adjacency = adjacency.to(torch.float16).to(adjacency.dtype)
        z = self.node_embeddings(features, adjacency)
        return (z[:, :1, :] * z).sum(dim=-1)

    def score_lists(self, lists: QueryLists) -> Tensor:
        """Scores of a :class:`~pillar_rerank.lists.QueryLists` batch, shape (n_queries, n_nodes)."""
        return self(lists.features, lists.adjacency)

    def extra_repr(self) -> str:
        return (
            f"n_pillars={self.n_pillars}, embed_dim={self.embed_dim}, depth={self.depth}, "
            f"num_heads={self.num_heads}, attention={self.attention!r}"
            + (", reference_fp16=True" if self.reference_fp16 else "")
        )


class MutualRerankNetwork(nn.Module):
    """The two direction networks LeaPRR trains jointly: ``i2t`` (image queries) and ``t2i``.

    Same architecture, separate weights (spec §6.1). ``reset_parameters(generator)``
    initialises ``i2t`` first, then ``t2i``, so a seeded generator gives a reproducible model.
    """

    def __init__(self, n_pillars: int, **network_params) -> None:
        super().__init__()
        self.i2t = GraphRerankNetwork(n_pillars, **network_params)
        self.t2i = GraphRerankNetwork(n_pillars, **network_params)

    @classmethod
    def from_config(
        cls, config: LeaPRRConfig, *, generator: torch.Generator | None = None
    ) -> MutualRerankNetwork:
        """Build the pair from a config; with ``generator`` the initialisation is seeded.

        A config whose weights cannot fit in this machine's memory is refused before anything is
        allocated (:func:`check_model_size`).
        """
        check_model_size(config)
        return cls._build(config, generator=generator)

    @classmethod
    def _build(cls, config: LeaPRRConfig, *, generator: torch.Generator | None = None) -> MutualRerankNetwork:
        net = cls(
            config.n_pillars,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            anchor=config.anchor,
            attention=config.attention,
            reference_fp16=config.reference_fp16,
        )
        if generator is not None:
            net.reset_parameters(generator)
        return net

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        self.i2t.reset_parameters(generator)
        self.t2i.reset_parameters(generator)


def parameter_count(config: LeaPRRConfig) -> int:
    """Number of parameters of ``MutualRerankNetwork.from_config(config)``, from the sizes alone.

    Computed without building anything, so that an absurd size (``embed_dim=10**9``) can be
    refused before it is allocated. Per direction: the pillar embedding (one LayerNorm per used
    half, Linear(used columns -> D)) and ``depth`` blocks (two LayerNorms, qkv Linear(D, 3D),
    output Linear(D, D), MLP D -> H -> D with ``H = int(D * mlp_ratio)``).
    """
    n_pillars, d, depth = int(config.n_pillars), int(config.embed_dim), int(config.depth)
    hidden = int(d * config.mlp_ratio)
    halves = 2 if config.anchor == "both" else 1
    embed = halves * 2 * n_pillars + halves * n_pillars * d + d
    attention = d * 3 * d + (3 * d if config.qkv_bias else 0) + d * d + d
    block = 2 * d + attention + 2 * d + d * hidden + hidden + hidden * d + d
    return 2 * (embed + depth * block)


def check_model_size(config: LeaPRRConfig, *, memory_bytes: int | None = None) -> int:
    """Refuse a model whose float32 weights exceed this machine's memory; return their bytes.

    ``memory_bytes`` defaults to the total physical memory (no check where the OS does not say).
    The message names what the weights need, and what training needs on top
    (:data:`TRAINING_COPIES` copies: weights, gradients, momentum, best weights).
    """
    needed = 4 * parameter_count(config)
    limit = physical_memory_bytes() if memory_bytes is None else int(memory_bytes)
    if limit is not None and needed > limit:
        raise InvalidParameterError(
            f"LeaPRRConfig(embed_dim={config.embed_dim}, depth={config.depth}, n_pillars={config.n_pillars}, "
            f"mlp_ratio={config.mlp_ratio}): the model has {parameter_count(config):.3g} parameters, "
            f"{_gib(needed)} of float32 weights ({_gib(TRAINING_COPIES * needed)} to train), more than "
            f"this machine's {_gib(limit)} of memory. Lower --embed-dim / --depth / --n-pillars "
            "(the paper's model: 768 / 2 / 64, 28.6 M parameters, 0.11 GiB)."
        )
    return needed


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def state_shapes(config: LeaPRRConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of ``from_config(config)``'s state dict, allocating nothing.

    Built on PyTorch's ``meta`` device after :func:`check_model_size`, so that weights read from
    a file can be compared with a config before a real model is built.
    """
    check_model_size(config)
    with torch.device("meta"):
        net = MutualRerankNetwork._build(config)
    return {name: tuple(t.shape) for name, t in net.state_dict().items()}
