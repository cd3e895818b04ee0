"""Initialisation shared by every LeaPRR layer (the reference's scheme)."""

from __future__ import annotations

import torch
from torch import nn

INIT_STD = 0.02


def init_linear(layer: nn.Linear, generator: torch.Generator | None = None) -> None:
    """Weights from N(0, 0.02) truncated at +-2 (effectively untruncated), bias 0."""
    nn.init.trunc_normal_(layer.weight, std=INIT_STD, a=-2.0, b=2.0, generator=generator)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def init_layer_norm(layer: nn.LayerNorm) -> None:
    """Weight 1, bias 0."""
    if layer.weight is not None:
        nn.init.ones_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
