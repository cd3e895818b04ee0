"""Import state dicts of the original LeaPRR code (LgQu/LeaPRR ``MutualRerankTransformer``).

Reference key names (spec §12): ``model_{i2t,t2i}.`` + ``ln``, ``ln1``, ``topk_proj``,
``feature_align.layers.0``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``.
Modules map **by position**: ``ln`` acts on the first L columns (our ``embed.norm_first``) and
``ln1`` on the last L (``embed.norm_second``), whatever the reference calls the halves (§5.2).
``feature_align`` (the disabled reconstruction head, ``alpha = 0``) is dropped.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from pillar_rerank.exceptions import CheckpointError

_INNER = {
    "ln": "embed.norm_first",
    "ln1": "embed.norm_second",
    "topk_proj": "embed.proj",
}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")
_DIRECTIONS = {"model_i2t": "i2t", "model_t2i": "t2i"}


def unwrap_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensor dict in a loaded checkpoint (flat, or under ``state_dict`` / ``model``)."""
    for _ in range(3):
        if isinstance(obj, dict) and any(
            isinstance(k, str) and k.startswith(("model_i2t.", "module.model_i2t.")) for k in obj
        ):
            break
        if isinstance(obj, dict):
            inner = next((obj[k] for k in ("state_dict", "model", "model_state_dict") if k in obj), None)
            if inner is not None:
                obj = inner
                continue
        raise CheckpointError(
            f"{source}: expected a LeaPRR state dict with 'model_i2t.*' and 'model_t2i.*' keys "
            "(flat or under 'state_dict'/'model')."
        )
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        out[key[len("module.") :] if key.startswith("module.") else key] = value
    return out


def convert_reference_state_dict(
    state: dict[str, torch.Tensor], *, source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map reference keys onto :class:`~pillar_rerank.model.MutualRerankNetwork` keys.

    Returns the converted state dict and the sizes inferred from the tensor shapes
    (``n_pillars``, ``embed_dim``, ``depth``, ``mlp_ratio``, ``qkv_bias``). The number of heads
    cannot be inferred from shapes and must come from the caller's config.
    """
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        prefix, _, inner = key.partition(".")
        direction = _DIRECTIONS.get(prefix)
        if direction is None:
            unknown.append(key)
            continue
        if inner.startswith("feature_align."):
            continue
        head, _, leaf = inner.rpartition(".")
        if head in _INNER and leaf in ("weight", "bias"):
            converted[f"{direction}.{_INNER[head]}.{leaf}"] = value.float()
        elif _BLOCK.match(inner):
            converted[f"{direction}.{inner}"] = value.float()
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} unexpected key(s) for a LeaPRR checkpoint (first: {unknown[0]!r})."
        )
    for direction in ("i2t", "t2i"):
        for need in ("embed.proj.weight", "embed.norm_first.weight", "embed.norm_second.weight"):
            if f"{direction}.{need}" not in converted:
                ref_name = {v: k for k, v in _INNER.items()}[need.rsplit('.', 1)[0]]
                raise CheckpointError(
                    f"{source}: missing model_{direction}.{ref_name}"
                    ".weight (only anchor='both' reference checkpoints are supported)."
                )
    proj = converted["i2t.embed.proj.weight"]
    embed_dim, in_dim = proj.shape
    depth = 1 + max(int(m.group(1)) for k in converted if (m := re.match(r"i2t\.blocks\.(\d+)\.", k)))
    hidden = converted["i2t.blocks.0.mlp.fc1.weight"].shape[0]
    inferred = {
        "n_pillars": int(in_dim // 2),
        "embed_dim": int(embed_dim),
        "depth": int(depth),
        "mlp_ratio": float(hidden / embed_dim),
        "qkv_bias": "i2t.blocks.0.attn.qkv.bias" in converted,
        "anchor": "both",
    }
    return converted, inferred


def to_reference_state_dict(
    state: dict[str, torch.Tensor], *, dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """A :class:`~pillar_rerank.model.MutualRerankNetwork` state dict under the reference's key
    names, with the unused ``feature_align`` head (zeros), as ``checkpoint_best.pth`` holds it.

    The inverse of :func:`convert_reference_state_dict` (values cast to ``dtype``, the
    reference's training precision): what the reference code loads with ``load_state_dict``.
    """
    inverse = {v: k for k, v in _INNER.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        direction, _, inner = key.partition(".")
        head, _, leaf = inner.rpartition(".")
        inner = f"{inverse[head]}.{leaf}" if head in inverse else inner
        out[f"model_{direction}.{inner}"] = value.detach().clone().to(dtype)
    for direction in ("i2t", "t2i"):
        embed_dim, in_dim = state[f"{direction}.embed.proj.weight"].shape
        out[f"model_{direction}.feature_align.layers.0.weight"] = torch.zeros(in_dim, embed_dim, dtype=dtype)
        out[f"model_{direction}.feature_align.layers.0.bias"] = torch.zeros(in_dim, dtype=dtype)
    return out
