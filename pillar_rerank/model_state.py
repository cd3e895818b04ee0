"""A fitted LeaPRR network from saved weights: shape and value checks, reference-code import."""

from __future__ import annotations

from pathlib import Path

import torch

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InputFileError
from pillar_rerank.model.network import MutualRerankNetwork
from pillar_rerank.typing import PathLikeStr
from pillar_rerank.utils.device import resolve_device


def network_from_state(cfg: LeaPRRConfig, state: dict[str, torch.Tensor], *,
                       source: str) -> MutualRerankNetwork:
    """The network of ``cfg`` with weights ``state`` (checked: names, shapes, finite values)."""
    model = MutualRerankNetwork.from_config(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    bad = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or extra or bad:
        first = (
            f"missing {missing[0]!r}"
            if missing
            else f"unexpected {extra[0]!r}"
            if extra
            else f"{bad[0]!r} has shape {tuple(state[bad[0]].shape)}, the config needs "
            f"{tuple(expected[bad[0]].shape)}"
        )
        raise CheckpointError(
            f"{source}: the weights do not match the config (embed_dim={cfg.embed_dim}, "
            f"depth={cfg.depth}, "
            f"n_pillars={cfg.n_pillars}, anchor={cfg.anchor!r}): {len(missing)} missing, {len(extra)} "
            f"unexpected, {len(bad)} mis-shaped tensors ({first})."
        )
    bad_values = sorted(
        k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()
    )
    if bad_values:
        raise CheckpointError(
            f"{source}: {len(bad_values)} weight tensor(s) hold NaN or inf (first: {bad_values[0]!r}); "
            "the model is unusable (a diverged training run?)."
        )
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    return model.to(resolve_device(cfg.device)).eval()



def read_reference_checkpoint(path: PathLikeStr, config: LeaPRRConfig | None = None
                              ) -> tuple[LeaPRRConfig, dict[str, torch.Tensor]]:
    """Config and state dict of a checkpoint of the original LeaPRR code (``checkpoint_best.pth``).

    Read with ``torch.load(weights_only=True)``; sizes are inferred from the tensor shapes and
    must agree with ``config``, which supplies the rest (default: the paper's).
    """
    from pillar_rerank.model.reference import convert_reference_state_dict, unwrap_state_dict

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"reference checkpoint ({p}): file not found.")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable, truncated or unsafe content
        raise CheckpointError(
            f"reference checkpoint ({p}): cannot be read safely (weights_only=True): {exc}"
        ) from exc
    state, inferred = convert_reference_state_dict(unwrap_state_dict(obj, source=str(p)), source=str(p))
    base = config if config is not None else LeaPRRConfig()
    if config is not None:
        clash = {k: (getattr(config, k), v) for k, v in inferred.items() if getattr(config, k) != v}
        if clash:
            k, (given, found) = next(iter(clash.items()))
            raise CheckpointError(
                f"reference checkpoint ({p}): config has {k}={given!r} but the weights imply {found!r}."
            )
    cfg = base.replace(**inferred, reference_thresholds=True)
    return cfg, state


__all__ = ["network_from_state", "read_reference_checkpoint"]
