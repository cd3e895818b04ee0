"""What makes two sets of built lists interchangeable: the data fingerprint and the cache meta.

:func:`data_fingerprint` (shapes, dtypes and SHA-256 of sampled or all rows) is the one
fingerprint of a :class:`~pillar_rerank.inputs.RetrievalSet`: the cache key uses it, and so does
the training-resume check (:func:`data_digest`). :func:`cache_meta` adds the list-determining
config fields (``config.lists``) and the neighbour index; :func:`cache_key` hashes it into a
folder name; :func:`check_meta` compares a stored meta with an expected one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.neighbors import intra_modal_source
from pillar_rerank.neighbors._ann import check_index

#: ``config.lists`` fields stored elsewhere in the meta (the index, resolved intra source), only
#: with the second-order source (``intra_rank``), or that act through the data (normalisation).
_NOT_IN_KEY = ("intra_source", "intra_rank", "neighbor_index", "neighbor_index_params", "normalize",
               "normalize_params")
_FINGERPRINT_ROWS = 64


def data_fingerprint(data: RetrievalSet, *, mode: str = "sampled") -> dict[str, Any]:
    """Shapes, dtypes and SHA-256 of ``data``'s arrays (sampled rows, or everything with "full").

    "sampled" hashes 64 evenly spaced rows of every matrix (and the whole caption -> image map):
    cheap on a memory-mapped matrix of many GB, and it catches a different or re-ordered input,
    though not an edit confined to rows it skips. "full" reads everything in row blocks.
    """
    if mode not in ("sampled", "full"):
        raise InvalidParameterError(f"fingerprint: expected 'sampled' or 'full'; got {mode!r}.")
    arrays: dict[str, Any] = {}
    for name in ("scores", "t2i_scores", "image_embeddings", "text_embeddings", "image_image", "text_text"):
        arr = getattr(data, name)
        if arr is None:
            continue
        h = hashlib.sha256()
        n = arr.shape[0]
        if mode == "sampled":
            rows = np.unique(np.linspace(0, n - 1, min(n, _FINGERPRINT_ROWS)).astype(np.int64))
            h.update(np.ascontiguousarray(arr[rows]).tobytes())
        else:
            step = max(1, (64 * 2**20) // max(1, arr.shape[1] * arr.dtype.itemsize))
            for start in range(0, n, step):
                h.update(np.ascontiguousarray(arr[start:start + step]).tobytes())
        arrays[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": h.hexdigest()}
    t2i = np.ascontiguousarray(data.txt_to_img, dtype=np.int64)
    out = {"mode": mode, "n_images": data.n_images, "n_texts": data.n_texts, "arrays": arrays,
           "txt_to_img_sha256": hashlib.sha256(t2i.tobytes()).hexdigest()}
    if data.normalization is not None:  # the scores the lists are built from are the normalised ones
        out["normalization"] = {"name": data.normalization.name, "sha256": data.normalization.digest()}
    return out


def data_digest(data: RetrievalSet) -> str:
    """SHA-256 of :func:`data_fingerprint` (sampled): one string identifying ``data``."""
    return hashlib.sha256(json.dumps(data_fingerprint(data), sort_keys=True).encode()).hexdigest()


def cache_meta(data: RetrievalSet, config: LeaPRRConfig, *, index: str | None = None,
               index_params: dict | None = None, power_iterations: int = 1,
               fingerprint: str = "sampled") -> dict[str, Any]:
    """What determines the cached lists of ``data`` under ``config`` (compared on load).

    The intra-modal source is stored resolved; the second-order fields (``intra_rank``, ``seed``,
    ``power_iterations``) only when that source is used, so changing the training seed does not
    invalidate lists that do not depend on it.
    """
    config = config.validate()
    lists = config.lists
    index = index if index is not None else lists.neighbor_index
    if index_params is None:
        index_params = lists.neighbor_index_params
    params = check_index(index, index_params, owner="cache_meta")
    source = intra_modal_source(data, lists.intra_source)
    cfg = {k: v for k, v in dataclasses.asdict(lists).items() if k not in _NOT_IN_KEY}
    cfg["intra_source"] = source
    if source == "second_order":
        cfg.update(intra_rank=lists.intra_rank, seed=config.seed, power_iterations=int(power_iterations))
    return {"config": cfg, "index": index, "index_params": params,
            "data": data_fingerprint(data, mode=fingerprint)}


def cache_key(data: RetrievalSet, config: LeaPRRConfig, *, prefix: str = "lists", **meta_kw: Any) -> str:
    """Folder name ``<prefix>-<16 hex>`` for ``data``'s lists: a hash of :func:`cache_meta`.

    Inputs and settings that give the same lists give the same name; any difference (data,
    list-determining config fields, neighbour index) gives another, so caches of several sides or
    runs can share one root folder.
    """
    meta = cache_meta(data, config, **meta_kw)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=json_default).encode()).hexdigest()
    return f"{prefix}-{digest[:16]}"

def meta_diff(found: Any, expected: Any, prefix: str = "") -> list[str]:
    if isinstance(found, dict) and isinstance(expected, dict):
        out = []
        for key in sorted(set(found) | set(expected), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in found or key not in expected:
                out.append(f"{where}: {found.get(key, '<missing>')!r} in the cache, "
                           f"{expected.get(key, '<missing>')!r} expected")
            else:
                out.extend(meta_diff(found[key], expected[key], where))
        return out
    return [] if found == expected else [f"{prefix}: {found!r} in the cache, {expected!r} expected"]


def check_meta(found: dict, expected: dict | None, *, where: str) -> None:
    if expected is None:
        return
    problems = meta_diff(json.loads(json.dumps(found)), json.loads(json.dumps(expected)))
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{where}: built for other inputs or settings: {'; '.join(problems[:3])}"
                              f"{more}. Rebuild it (build_cache(..., overwrite=True)).")

def json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")



__all__ = ["cache_key", "cache_meta", "check_meta", "data_digest", "data_fingerprint", "json_default",
           "meta_diff"]
