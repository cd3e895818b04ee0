"""The lists file format: pickle-free, versioned safetensors files and a reader that checks them.

A **lists file** (:func:`save_lists` / :func:`load_lists`) is one safetensors file holding named
:class:`~pillar_rerank.lists.contract.QueryLists` (tensors ``{key}.{field}``) and, in the
safetensors header, the format name and version, the package version and a JSON ``meta``.
:class:`TensorFile` reads any such file through its header and read-only memory maps: the header
is checked on open (format, version, every tensor's bytes inside the file), and
:func:`check_lists` checks the values that are read (finite features and adjacency, ids in
range), so a tampered or damaged file gives a :class:`~pillar_rerank.exceptions.CheckpointError`
instead of NaN scores or an IndexError.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from pillar_rerank._version import __version__
from pillar_rerank.exceptions import CheckpointError, InputFileError, InvalidInputError, InvalidParameterError
from pillar_rerank.io import atomic_path
from pillar_rerank.lists.contract import LIST_FIELDS, QueryLists
from pillar_rerank.lists.fingerprint import check_meta, json_default
from pillar_rerank.typing import PathLikeStr

FORMAT = "pillar-rerank/lists-cache"
FORMAT_VERSION = 1
_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT = (torch.int32, torch.int64)
_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "BOOL": np.bool_, "U8": np.uint8}

def save_lists(path: PathLikeStr, lists: dict[str, QueryLists], meta: dict[str, Any] | None = None) -> Path:
    """Write named :class:`QueryLists` to one safetensors file, atomically.

    Parameters
    ----------
    path : path
        Target file (replaced if it exists).
    lists : dict of str to QueryLists
        e.g. ``{"image": ..., "text": ...}``; keys must not contain ".".
    meta : dict, optional
        JSON-serialisable description, stored in the header and checked by :func:`load_lists`.
    """
    tensors: dict[str, torch.Tensor] = {}
    for key, value in lists.items():
        if "." in key or not key:
            raise InvalidParameterError(f"save_lists: list names must be non-empty without '.'; got {key!r}.")
        if not isinstance(value, QueryLists):
            raise InvalidInputError(f"save_lists: {key!r} must be a QueryLists; got {type(value).__name__}.")
        for name in LIST_FIELDS:
            tensors[f"{key}.{name}"] = getattr(value, name).detach().cpu().contiguous()
    return save_tensors(path, tensors, {"kind": "lists", "keys": sorted(lists), "meta": meta or {}})


def load_lists(path: PathLikeStr, expected_meta: dict[str, Any] | None = None, *,
               mmap: bool = False) -> dict[str, QueryLists]:
    """Read a file written by :func:`save_lists`, checking format, version and ``expected_meta``.

    ``mmap=True`` returns tensors over read-only memory maps of the file (no copy; do not write
    to them).
    """
    file = TensorFile(path)
    header = file.header_meta
    if header.get("kind") != "lists":
        raise CheckpointError(f"lists file ({path}): holds {header.get('kind')!r}, not lists.")
    check_meta(header.get("meta", {}), expected_meta, where=f"lists file ({path})")
    out = {}
    for key in header.get("keys", []):
        lists = QueryLists(**{name: file.tensor(f"{key}.{name}", copy=not mmap) for name in LIST_FIELDS})
        out[key] = check_lists(lists, where=f"lists file ({path}), {key!r}")
    return out


def save_tensors(path: PathLikeStr, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    target = Path(path)
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "package_version": __version__,
              "meta": json.dumps(meta, sort_keys=True, default=json_default)}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return target

class TensorFile:
    """A safetensors file read through its header and read-only memory maps (no pickle, no copy)."""

    def __init__(self, path: PathLikeStr) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError(f"cache file ({self.path}): file not found.")
        size = self.path.stat().st_size
        try:
            with open(self.path, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if n <= 0 or 8 + n > size or n > 100 * 2**20:
                    raise ValueError(f"header length {n} does not fit a {size}-byte file")
                header = json.loads(fh.read(n))
            meta = header.pop("__metadata__")
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            version = int(meta.get("format_version", -1))
            self.header_meta = json.loads(meta["meta"])
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cache file ({self.path}): not a valid pillar-rerank safetensors file "
                                  f"({exc}).") from exc
        if version != FORMAT_VERSION:
            raise CheckpointError(f"cache file ({self.path}): format version {version}; this pillar-rerank "
                                  f"({__version__}) reads version {FORMAT_VERSION}. Rebuild the cache.")
        self.package_version = meta.get("package_version")
        self._data_start = 8 + n
        self._data_size = size - 8 - n
        self._entries = header
        for name, entry in header.items():
            self._spec(name, entry)

    def _spec(self, name: str, entry: Any) -> tuple[np.dtype, tuple[int, ...], int]:
        try:
            dtype = np.dtype(_DTYPES[entry["dtype"]])
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"cache file ({self.path}): bad header entry for {name!r} "
                                  f"({exc}).") from exc
        if min(shape, default=0) < 0 or end - begin != int(np.prod(shape)) * dtype.itemsize \
                or begin < 0 or end > self._data_size:
            raise CheckpointError(f"cache file ({self.path}): tensor {name!r} of shape {shape} does not fit "
                                  f"its bytes [{begin}, {end}) of {self._data_size} (truncated or corrupt "
                                  "file).")
        return dtype, shape, begin

    def names(self) -> list[str]:
        return list(self._entries)

    def array(self, name: str) -> np.ndarray:
        if name not in self._entries:
            raise CheckpointError(f"cache file ({self.path}): tensor {name!r} is missing.")
        dtype, shape, begin = self._spec(name, self._entries[name])
        if int(np.prod(shape)) == 0:
            return np.empty(shape, dtype=dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self._data_start + begin, shape=shape)

    def tensor(self, name: str, *, copy: bool = True) -> torch.Tensor:
        arr = self.array(name)
        if copy:
            return torch.from_numpy(np.array(arr))
        with _quiet_readonly():
            return torch.from_numpy(arr)


@contextlib.contextmanager
def _quiet_readonly():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        yield


def check_lists(lists: QueryLists, *, where: str, n_gallery: int | None = None,
                n_queries: int | None = None, query_ids: torch.Tensor | None = None) -> QueryLists:
    """Check lists read from a file; returns them unchanged, else raises CheckpointError.

    Cheap (one pass over what was read): shapes agree with each other, features and adjacency
    are finite, candidate ids lie in ``[0, n_gallery)`` and query ids in ``[0, n_queries)``
    (when given), and the query ids are the ones asked for (``query_ids``).
    """
    q, m = lists.features.shape[:2] if lists.features.dim() == 3 else (-1, -1)
    shapes = {"features": (q, m, lists.features.shape[-1]), "targets": (q, m), "adjacency": (q, m, m),
              "candidates": (q, m - 1), "query_ids": (q,)}
    kinds = {"features": _FLOAT, "targets": (torch.bool,), "adjacency": _FLOAT, "candidates": _INT,
             "query_ids": _INT}
    problem = None
    for name in LIST_FIELDS:
        value = getattr(lists, name)
        if q < 0 or tuple(value.shape) != shapes[name] or value.dtype not in kinds[name]:
            problem = (f"{name} has shape {tuple(value.shape)} and dtype {value.dtype}, inconsistent "
                       "with the others")
            break
    if problem is None:
        for name in ("features", "adjacency"):
            finite = torch.isfinite(getattr(lists, name))
            if not bool(finite.all()):
                problem = f"{int((~finite).sum())} NaN or inf values in {name}"
                break
    if problem is None:
        for name, n in (("candidates", n_gallery), ("query_ids", n_queries)):
            ids = getattr(lists, name)
            bad = (ids < 0) if n is None else (ids < 0) | (ids >= n)
            if bool(bad.any()):
                span = "[0, inf)" if n is None else f"[0, {n})"
                problem = f"{int(bad.sum())} {name} outside {span} (first: {int(ids[bad][0])})"
                break
    if problem is None and query_ids is not None and not torch.equal(lists.query_ids, query_ids):
        problem = "the stored query ids are not the rows asked for"
    if problem is not None:
        raise CheckpointError(f"{where}: {problem}; the file is corrupt or was modified. Rebuild it: "
                              "delete it (or its cache folder) and build it again.")
    return lists


__all__ = ["FORMAT", "FORMAT_VERSION", "TensorFile", "check_lists", "load_lists", "save_lists",
           "save_tensors"]
