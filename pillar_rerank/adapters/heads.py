"""Encoder heads trained on top of frozen features: identity, linear, MLP and token-level.

Every head maps features of one modality into the joint space and L2-normalises over the
*feature* axis (SelfAlign's CAMERA/VSRN code normalises ``[B, N, D]`` tensors over the token
axis by mistake; no head here does). Construction follows a fixed order: store the sizes, build
the children, then ``reset_parameters()``, so a seed gives a reproducible initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pillar_rerank.exceptions import InvalidParameterError


class IdentityHead(torch.nn.Module):
    """No parameters: the (optionally normalised) input features. ``out_dim == in_dim``."""

    def __init__(self, in_dim: int, *, normalize: bool = True) -> None:
        super().__init__()
        self.in_dim = self.out_dim = int(in_dim)
        self.normalize = normalize

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.normalize else x

    def extra_repr(self) -> str:
        return f"{self.in_dim}, normalize={self.normalize}"


class LinearHead(torch.nn.Module):
    """``norm(W x + b)``. Shapes: (..., in_dim) -> (..., out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, *, bias: bool = True, normalize: bool = True) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.normalize = int(in_dim), int(out_dim), normalize
        self.fc = torch.nn.Linear(self.in_dim, self.out_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        out = self.fc(x)
        return F.normalize(out, dim=-1) if self.normalize else out

    def extra_repr(self) -> str:
        return f"{self.in_dim} -> {self.out_dim}, normalize={self.normalize}"


class MLPHead(torch.nn.Module):
    """Two-layer MLP with a linear shortcut (VSE-infinity style): ``norm(MLP(x) + W_s x)``.

    Parameters
    ----------
    in_dim, out_dim : int
    hidden_dim : int, optional
        Default ``out_dim``.
    dropout : float, default=0.1
    normalize : bool, default=True
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int | None = None,
        dropout: float = 0.1,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.hidden_dim = int(hidden_dim or out_dim)
        self.dropout, self.normalize = float(dropout), normalize
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(self.in_dim, self.hidden_dim),
            torch.nn.LayerNorm(self.hidden_dim),
            torch.nn.GELU(),
            torch.nn.Dropout(self.dropout),
            torch.nn.Linear(self.hidden_dim, self.out_dim),
        )
        self.shortcut = torch.nn.Linear(self.in_dim, self.out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.mlp:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        self.shortcut.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        out = self.mlp(x) + self.shortcut(x)
        return F.normalize(out, dim=-1) if self.normalize else out

    def extra_repr(self) -> str:
        return f"{self.in_dim} -> {self.hidden_dim} -> {self.out_dim}, dropout={self.dropout}"


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
            from pillar_rerank.adapters.losses.inflate_shrink import InflateCodes

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


HEADS = ("identity", "linear", "mlp", "token")


def make_head(kind: str, in_dim: int, out_dim: int, **kwargs) -> torch.nn.Module:
    """Build a head by name (``"identity"``, ``"linear"``, ``"mlp"``, ``"token"``)."""
    if kind == "identity":
        if in_dim != out_dim:
            raise InvalidParameterError(f"identity head: in_dim={in_dim} must equal embed_dim={out_dim}.")
        return IdentityHead(in_dim)
    if kind == "linear":
        return LinearHead(in_dim, out_dim)
    if kind == "mlp":
        return MLPHead(in_dim, out_dim, **kwargs)
    if kind == "token":
        return TokenHead(in_dim, out_dim, **kwargs)
    raise InvalidParameterError(f"Unknown head {kind!r}; expected one of {', '.join(HEADS)}.")
