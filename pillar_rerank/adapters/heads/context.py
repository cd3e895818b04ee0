"""SelfAlign's learnable heads: the context head (CRA) and the concept prototype bank (LCA).

Zhuang, Yu, Ding, Qu, Hu, "Boosting Image-Text Retrieval via Self-Supervised Alignment" (IEEE TMM
2023); reference code Zjamie813/SelfAlign @ 26343b7 (``camera_SelfAlign``). The losses that use
them are :class:`~pillar_rerank.adapters.losses.selfalign.ConceptAlignmentLoss` and
:class:`~pillar_rerank.adapters.losses.selfalign.ContextAlignmentLoss`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mean(tokens: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over the token axis (valid tokens only when ``mask`` is given); (B, N, D) -> (B, D)."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.device, tokens.dtype)
    return (tokens * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)


class PrototypeBank(torch.nn.Module):
    """K learnable concept prototypes (an ``nn.Linear(dim, K, bias=False)``'s weight).

    Parameters
    ----------
    dim : int
    num_prototypes : int, default=1024
        The reference's ``--local_clu_num``.

    Notes
    -----
    :meth:`normalize_` re-normalises the rows in place (the reference does so at the start of
    every forward); :meth:`freeze_grads` drops the gradients (the epoch-0 freeze of the CAMERA
    tree, SwAV style).
    """

    def __init__(self, dim: int, num_prototypes: int = 1024) -> None:
        super().__init__()
        self.dim, self.num_prototypes = int(dim), int(num_prototypes)
        self.weight = torch.nn.Parameter(torch.empty(self.num_prototypes, self.dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @torch.no_grad()
    def normalize_(self) -> PrototypeBank:
        self.weight.copy_(F.normalize(self.weight, dim=1))
        return self

    def freeze_grads(self) -> None:
        self.weight.grad = None

    def forward(self, features: Tensor) -> Tensor:
        return features @ self.weight.t()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_prototypes={self.num_prototypes}"


class ContextHead(torch.nn.Module):
    r"""SelfAlign's context head: context locals, a global query and a gated fused context vector.

    .. math::
        \ell_n = \mathrm{norm}(\mathrm{ReLU}(\mathrm{BN}(x_n))),\;
        \bar g = \mathrm{mean}_n x_n,\;
        \hat g = \mathrm{ReLU}(\mathrm{BN}(W\bar g)),\;
        g = \mathrm{norm}(\hat g),\;
        \alpha = \sigma(\mathrm{MLP}([\bar g; \hat g])),\;
        c = \mathrm{norm}(\alpha\bar g + (1-\alpha)\hat g)

    Parameters
    ----------
    dim : int
    relu : bool, default=True
        ReLU after the batch norm of both the context locals and the global projection (the
        reference's ``ctx_fc_relu``/``ctx_relu`` switch, which covers both; ``False`` drops both).

    Shapes
    ------
    tokens (B, N, D), mask (B, N) optional -> locals (B, N, D), global_query (B, D), fused (B, D).
    With a mask, batch norm and the mean use valid tokens only (the reference includes padding).
    """

    def __init__(self, dim: int, relu: bool = True) -> None:
        super().__init__()
        self.dim, self.relu = int(dim), bool(relu)
        self.local_norm = torch.nn.BatchNorm1d(self.dim)
        self.global_fc = torch.nn.Linear(self.dim, self.dim)
        self.global_norm = torch.nn.BatchNorm1d(self.dim)
        self.gate = torch.nn.Sequential(
            torch.nn.Linear(2 * self.dim, self.dim), torch.nn.ReLU(), torch.nn.Linear(self.dim, 1)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.local_norm.reset_parameters()
        self.global_fc.reset_parameters()
        self.global_norm.reset_parameters()
        for layer in self.gate:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        act = F.relu if self.relu else (lambda x: x)
        if mask is None:
            flat = self.local_norm(tokens.reshape(-1, self.dim))
            locals_ = F.normalize(act(flat), dim=-1).reshape(tokens.shape)
            mean = tokens.mean(dim=1)
        else:
            mask = mask.to(tokens.device, torch.bool)
            locals_ = tokens.new_zeros(tokens.shape)
            locals_[mask] = F.normalize(act(self.local_norm(tokens[mask])), dim=-1)
            mean = masked_mean(tokens, mask)
        projected = act(self.global_norm(self.global_fc(mean)))
        gate = torch.sigmoid(self.gate(torch.cat([mean, projected], dim=-1)))
        fused = F.normalize(gate * mean + (1.0 - gate) * projected, dim=-1)
        return locals_, F.normalize(projected, dim=-1), fused

    def extra_repr(self) -> str:
        return f"dim={self.dim}, relu={self.relu}"
