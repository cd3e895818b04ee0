"""Encoder heads trained over frozen features, and the registry the trainers build them from.

Every head maps one modality's features into the joint space and L2-normalises over the
*feature* axis (SelfAlign's CAMERA/VSRN code normalises ``[B, N, D]`` tensors over the token
axis by mistake; no head here does). Construction follows a fixed order: store the sizes, build
the children, then ``reset_parameters()``, so a seed gives a reproducible initialisation.

* :mod:`.vector`: ``IdentityHead``, ``LinearHead``, ``MLPHead`` (one vector per item);
* :mod:`.token`: ``TokenHead`` and Inflate & Shrink's ``InflateCodes`` (token sets);
* :mod:`.context`: SelfAlign's ``ContextHead`` and ``PrototypeBank``.
"""

from __future__ import annotations

import torch

from pillar_rerank.adapters.config import HEAD_KINDS as HEADS
from pillar_rerank.adapters.heads.context import ContextHead, PrototypeBank
from pillar_rerank.adapters.heads.token import InflateCodes, TokenHead
from pillar_rerank.adapters.heads.vector import IdentityHead, LinearHead, MLPHead
from pillar_rerank.exceptions import InvalidParameterError


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


__all__ = [
    "HEADS",
    "ContextHead",
    "IdentityHead",
    "InflateCodes",
    "LinearHead",
    "MLPHead",
    "PrototypeBank",
    "TokenHead",
    "make_head",
]
