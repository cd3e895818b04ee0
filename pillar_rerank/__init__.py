"""pillar_rerank: re-rank any cross-modal retrieval system's image-text scores.

Everything a user needs is here::

    from pillar_rerank import LeaPRRConfig, PillarReranker, evaluate, load_retrieval_set

The data contract, the config and the exceptions are imported with the package (numpy only);
the estimators, metrics and baselines on first use, so ``import pillar_rerank`` stays fast and
loads neither torch nor torch-geometric.
"""

from __future__ import annotations

import importlib
from typing import Any

from pillar_rerank._version import __version__
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import (
    CheckpointError,
    InputFileError,
    InvalidInputError,
    InvalidParameterError,
    NotFittedError,
    PillarRerankError,
)
from pillar_rerank.inputs import Relevance, RetrievalSet, load_retrieval_set

_LAZY = {
    "PillarReranker": "pillar_rerank.reranker",
    "evaluate": "pillar_rerank.metrics",
    "get_baseline": "pillar_rerank.baselines",
    "apply_both": "pillar_rerank.baselines",
    "bank_from_embeddings": "pillar_rerank.baselines",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pillar_rerank' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CheckpointError",
    "InputFileError",
    "InvalidInputError",
    "InvalidParameterError",
    "LeaPRRConfig",
    "NotFittedError",
    "PillarRerankError",
    "PillarReranker",
    "Relevance",
    "RetrievalSet",
    "__version__",
    "apply_both",
    "bank_from_embeddings",
    "evaluate",
    "get_baseline",
    "load_retrieval_set",
]
