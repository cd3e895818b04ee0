"""Shared type aliases and the one place optional dependencies are detected."""

from __future__ import annotations

import importlib.util
from os import PathLike
from typing import Union

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]
PathLikeStr = Union[str, "PathLike[str]"]

WITH_FAISS: bool = importlib.util.find_spec("faiss") is not None
WITH_PYG: bool = importlib.util.find_spec("torch_geometric") is not None


def faiss_num_gpus() -> int:
    """Number of GPUs FAISS can use (0 without faiss or without a GPU build)."""
    if not WITH_FAISS:
        return 0
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0
