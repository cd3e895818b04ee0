"""A fitted LeaPRR network from saved weights: shape and value checks, reference-code import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pillar_rerank.checkpoint import check_weights_match_config
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InputFileError, InvalidParameterError
from pillar_rerank.model.network import MutualRerankNetwork
from pillar_rerank.typing import PathLikeStr
from pillar_rerank.utils.device import resolve_device


def network_from_state(cfg: LeaPRRConfig, state: dict[str, torch.Tensor], *,
                       source: str) -> MutualRerankNetwork:
    """The network of ``cfg`` with weights ``state`` (checked: names, shapes, finite values)."""
    # shapes first, allocating nothing: a forged or mistaken size is refused before a model of
    # that size is built (and one too large for this machine is refused outright)
    check_weights_match_config(cfg, {k: tuple(v.shape) for k, v in state.items()}, source=source)
    bad_values = sorted(
        k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()
    )
    if bad_values:
        raise CheckpointError(
            f"{source}: {len(bad_values)} weight tensor(s) hold NaN or inf (first: {bad_values[0]!r}); "
            "the model is unusable (a diverged training run?)."
        )
    model = MutualRerankNetwork.from_config(cfg)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    return model.to(resolve_device(cfg.device)).eval()



def read_reference_checkpoint(path: PathLikeStr, config: LeaPRRConfig | None = None, **fields: Any
                              ) -> tuple[LeaPRRConfig, dict[str, torch.Tensor]]:
    """Config and state dict of a checkpoint of the original LeaPRR code (``checkpoint_best.pth``).

    Read with ``torch.load(weights_only=True)``. The sizes the weights tell (``n_pillars``,
    ``embed_dim``, ``depth``, ``mlp_ratio``, ``qkv_bias``) are inferred from the tensor shapes and
    must agree with ``config`` and ``fields`` (single config fields on top of ``config`` or the
    paper's defaults), which supply the rest. ``num_heads`` never shows in the shapes: without it
    the paper's 24 is used when it divides ``embed_dim``, else it must be given.
    """
    from pillar_rerank.model.reference import convert_reference_state_dict, unwrap_state_dict

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"reference checkpoint ({p}): file not found (or not a regular file).")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise InputFileError(f"reference checkpoint ({p}): cannot be read ({exc}).") from exc
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, or unsafe content
        raise CheckpointError(
            f"reference checkpoint ({p}): cannot be read safely (weights_only=True): {exc}"
        ) from exc
    state, inferred = convert_reference_state_dict(unwrap_state_dict(obj, source=str(p)), source=str(p))
    given = {k: getattr(config, k) for k in inferred} if config is not None else {}
    given.update({k: v for k, v in fields.items() if k in inferred})
    for k, value in given.items():
        if value != inferred[k]:
            raise CheckpointError(
                f"reference checkpoint ({p}): config has {k}={value!r} but the weights imply {inferred[k]!r}."
            )
    base = config if config is not None else LeaPRRConfig()
    if config is None and "num_heads" not in fields and inferred["embed_dim"] % base.num_heads:
        raise CheckpointError(
            f"reference checkpoint ({p}): the number of attention heads does not show in the weights "
            f"and the paper's {base.num_heads} does not divide embed_dim={inferred['embed_dim']}; "
            "give it (rerank import-reference --num-heads N, or num_heads=N): the reference's --num_heads."
        )
    try:
        cfg = base.replace(**{**fields, **inferred, "reference_thresholds": True})
    except (TypeError, InvalidParameterError) as exc:
        raise InvalidParameterError(f"reference checkpoint ({p}): {exc}") from exc
    return cfg, state


__all__ = ["network_from_state", "read_reference_checkpoint"]
