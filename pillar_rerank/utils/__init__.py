"""Small shared helpers: device resolution, seeding and block iteration.

The names are loaded on first use, so that importing a light helper (``utils.blocks``, numpy
only) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"block_rows": "blocks", "iter_blocks": "blocks", "resolve_device": "device",
         "check_random_state": "seed", "seed_everything": "seed"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"pillar_rerank.utils.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'pillar_rerank.utils' has no attribute {name!r}")


__all__ = sorted(_LAZY)
