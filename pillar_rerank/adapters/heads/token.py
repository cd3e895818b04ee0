"""Token-level heads: a per-token projection with optional self-attention and Inflate codes.

Inflate & Shrink (Liu, Yu, Li, EMNLP 2021) appends learnable codes to each token sequence
(:class:`InflateCodes`); scoring such token sets is
:class:`~pillar_rerank.adapters.distances.LateInteractionSimilarity`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pillar_rerank.exceptions import InvalidParameterError


class InflateCodes(torch.nn.Module):
    """``num_codes`` learnable code vectors appended after a token sequence (one table per modality).

    Parameters
    ----------
    num_codes : int, default=32
    dim : int, default=768
    """

    def __init__(self, num_codes: int = 32, dim: int = 768) -> None:
        super().__init__()
        self.num_codes, self.dim = int(num_codes), int(dim)
        self.codes = torch.nn.Embedding(self.num_codes, self.dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.codes.reset_parameters()

    def append(
        self, tokens: Tensor, mask: Tensor | None = None, norm: torch.nn.Module | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(tokens [B, N, dim], mask [B, N]) -> ([B, N + k, dim], [B, N + k])``; codes always valid."""
        b, n, _ = tokens.shape
        codes = self.codes.weight.to(tokens.dtype)
        if norm is not None:
            codes = norm(codes)
        out = torch.cat([tokens, codes[None].expand(b, -1, -1)], dim=1)
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=tokens.device)
        code_mask = torch.ones(b, self.num_codes, dtype=torch.bool, device=tokens.device)
        return out, torch.cat([mask.to(torch.bool), code_mask], dim=1)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.append(tokens, mask)

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, dim={self.dim}"


class TokenHead(torch.nn.Module):
    """Token-level head: per-token projection, optional self-attention layers, optional codes.

    ``forward(tokens [B, N, in_dim], mask [B, N]) -> (tokens [B, N', out_dim], mask [B, N'])``
    where ``N' = N + num_codes``. Outputs are unit-length per token when ``normalize``.

    Parameters
    ----------
    in_dim, out_dim : int
    context_layers : int, default=0
        Transformer encoder layers over the projected tokens (and codes); padded positions are
        masked as attention keys.
    num_codes : int, default=0
        Inflate & Shrink's learnable codes appended after the tokens; needs ``context_layers >= 1``
        (without interaction a code is a constant that cannot depend on the item).
    num_heads : int, default=4
    normalize : bool, default=True
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        context_layers: int = 0,
        num_codes: int = 0,
        num_heads: int = 4,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if num_codes > 0 and context_layers < 1:
            raise InvalidParameterError(
                "TokenHead: num_codes > 0 needs context_layers >= 1 (codes only carry "
                "information through self-attention)."
            )
        if context_layers > 0 and out_dim % num_heads:
            raise InvalidParameterError(
                f"TokenHead: out_dim={out_dim} must be divisible by num_heads={num_heads}."
            )
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.context_layers, self.num_codes, self.num_heads = (
            int(context_layers),
            int(num_codes),
            int(num_heads),
        )
        self.normalize = normalize
        self.proj = torch.nn.Linear(self.in_dim, self.out_dim)
        self.norm = torch.nn.LayerNorm(self.out_dim)
        self.encoder = None
        if self.context_layers:
            layer = torch.nn.TransformerEncoderLayer(
                self.out_dim, self.num_heads, 2 * self.out_dim, dropout=0.0, batch_first=True
            )
            self.encoder = torch.nn.TransformerEncoder(layer, self.context_layers, enable_nested_tensor=False)
        self.codes = None
        if self.num_codes:
            self.codes = InflateCodes(self.num_codes, self.out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()
        self.norm.reset_parameters()
        if self.encoder is not None:
            for module in self.encoder.modules():
                if module is not self.encoder and hasattr(module, "_reset_parameters"):
                    module._reset_parameters()
                elif isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)):
                    module.reset_parameters()
        if self.codes is not None:
            self.codes.reset_parameters()

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = self.norm(self.proj(tokens))
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if self.codes is not None:
            x, mask = self.codes.append(x, mask)
        if self.encoder is not None:
            x = self.encoder(x, src_key_padding_mask=~mask)
        return (F.normalize(x, dim=-1) if self.normalize else x), mask

    def extra_repr(self) -> str:
        return (
            f"{self.in_dim} -> {self.out_dim}, context_layers={self.context_layers}, "
            f"num_codes={self.num_codes}"
        )
