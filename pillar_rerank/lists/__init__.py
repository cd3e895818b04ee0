"""Per-query lists: the contract, how they are built, and where they are served from.

The pipeline, one module each:

* ``contract``    :class:`QueryLists` (the per-query tensors), :data:`LIST_FIELDS`, the
  :class:`ListSource` protocol the trainer and the inference loop read from;
* ``graph``       neighbour-overlap adjacency of a list (§6.2);
* ``builder``     :class:`ListBuilder`: neighbour search -> pillars -> lists (§4-§5, §7.3);
* ``memory``      :class:`MemoryLists`: a source's lists built once and held in memory;
* ``fingerprint`` :func:`data_fingerprint`, :func:`cache_meta`, :func:`cache_key`;
* ``tensorfile``  the pickle-free lists file format and its checked reader;
* ``cached``      :class:`CachedLists`: lists read from a cache directory, checked on read;
* ``build``       :func:`build_cache`: the resumable, memory-bounded cache writer.

The contract is imported eagerly (torch only; ``model/`` depends on it); everything else on
first use, so ``import pillar_rerank.lists`` does not load faiss.
"""

from __future__ import annotations

import importlib
from typing import Any

from pillar_rerank.lists.contract import LIST_FIELDS, ListSource, QueryLists, check_query_ids, concat_lists

_LAZY = {
    "ListBuilder": "builder", "MemoryLists": "memory", "CachedLists": "cached",
    "is_complete_cache": "cached", "build_cache": "build", "cache_key": "fingerprint",
    "cache_meta": "fingerprint", "data_fingerprint": "fingerprint", "data_digest": "fingerprint",
    "load_lists": "tensorfile", "save_lists": "tensorfile", "overlap_adjacency": "graph",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"pillar_rerank.lists.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'pillar_rerank.lists' has no attribute {name!r}")


__all__ = ["LIST_FIELDS", "ListSource", "QueryLists", "check_query_ids", "concat_lists", *sorted(_LAZY)]
