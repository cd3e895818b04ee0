"""Pillar-vector encoder: per-half LayerNorm, then a linear projection to the node embedding."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pillar_rerank.model._init import init_layer_norm, init_linear

ANCHORS = ("both", "intra", "inter")


class PillarEmbedding(nn.Module):
    r"""Encode each list row's pillar vector as a node embedding.

    For a row :math:`x = [x^{(1)} \,\|\, x^{(2)}] \in \mathbb{R}^{2L}` (similarities to the pillars
    of the query's own modality, then to the other modality's pillars):

    .. math::
        h = W \,[\mathrm{LN}_1(x^{(1)}) \,\|\, \mathrm{LN}_2(x^{(2)})] + b

    with a separate affine LayerNorm (eps 1e-5) per half and :math:`W \in \mathbb{R}^{D\times 2L}`
    (Qu et al., SIGIR 2023, https://arxiv.org/abs/2304.12570, §5.3 of the spec).

    Parameters
    ----------
    n_pillars : int
        L, pillars per modality.
    embed_dim : int
        D, node embedding size.
    anchor : {"both", "intra", "inter"}, default="both"
        "both" uses the 2L columns; "intra" only the first half (pillars of the query's own
        modality), "inter" only the second half; a single-half encoder has one LayerNorm over
        its L columns.

    Shapes
    ------
    - input: features :math:`(n_{queries}, n_{nodes}, 2L)`
    - output: :math:`(n_{queries}, n_{nodes}, D)`

    Notes
    -----
    The reference names its first-half LayerNorm ``ln`` and calls that half "inter"; modules
    act by position (spec §5.2), so a reference ``ln`` maps onto ``norm_first``. The reference's
    single-half ablation splits the selected L columns into two L/2 halves again; here a single
    half gets one LayerNorm over its L columns.
    """

    def __init__(self, n_pillars: int, embed_dim: int, *, anchor: str = "both") -> None:
        super().__init__()
        if anchor not in ANCHORS:
            raise ValueError(f"PillarEmbedding: anchor must be one of {ANCHORS}; got {anchor!r}.")
        self.n_pillars = int(n_pillars)
        self.embed_dim = int(embed_dim)
        self.anchor = anchor
        self.norm_first = nn.LayerNorm(self.n_pillars) if anchor in ("both", "intra") else None
        self.norm_second = nn.LayerNorm(self.n_pillars) if anchor in ("both", "inter") else None
        in_dim = 2 * self.n_pillars if anchor == "both" else self.n_pillars
        self.proj = nn.Linear(in_dim, self.embed_dim, bias=True)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for norm in (self.norm_first, self.norm_second):
            if norm is not None:
                init_layer_norm(norm)
        init_linear(self.proj, generator)

    def forward(self, features: Tensor) -> Tensor:
        L = self.n_pillars
        if features.shape[-1] != 2 * L:
            raise ValueError(
                f"PillarEmbedding: expected features with 2 * n_pillars = {2 * L} columns; "
                f"got shape {tuple(features.shape)}."
            )
        parts = []
        if self.norm_first is not None:
            parts.append(self.norm_first(features[..., :L]))
        if self.norm_second is not None:
            parts.append(self.norm_second(features[..., L:]))
        return self.proj(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))

    def extra_repr(self) -> str:
        return f"n_pillars={self.n_pillars}, embed_dim={self.embed_dim}, anchor={self.anchor!r}"
