"""Vector heads over frozen features (one vector per item): identity, linear and MLP.

Every head maps features of one modality into the joint space and L2-normalises over the
*feature* axis (SelfAlign's CAMERA/VSRN code normalises ``[B, N, D]`` tensors over the token
axis by mistake; no head here does). Construction follows a fixed order: store the sizes, build
the children, then ``reset_parameters()``, so a seed gives a reproducible initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
