"""pillar_rerank: re-rank any cross-modal retrieval system's image-text scores."""

from pillar_rerank._version import __version__
from pillar_rerank.exceptions import (
    CheckpointError,
    InputFileError,
    InvalidInputError,
    InvalidParameterError,
    NotFittedError,
    PillarRerankError,
)
from pillar_rerank.inputs import Relevance, RetrievalSet, load_retrieval_set

__all__ = [
    "CheckpointError",
    "InputFileError",
    "InvalidInputError",
    "InvalidParameterError",
    "NotFittedError",
    "PillarRerankError",
    "Relevance",
    "RetrievalSet",
    "__version__",
    "load_retrieval_set",
]
