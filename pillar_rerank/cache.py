"""On-disk cache of LeaPRR's built inputs: neighbour lists and per-query lists, reused by fit/apply.

Searching neighbours and building pillar-space lists is the costly part of input building; a
cache lets ``fit`` and ``apply`` (and repeated runs) skip it. The format is pickle-free and
versioned:

* a **lists file** (:func:`save_lists` / :func:`load_lists`) is one safetensors file holding
  named :class:`~pillar_rerank.lists.QueryLists` (tensors ``{key}.{field}``) and, in the
  safetensors header, the format name and version, the package version and a JSON ``meta``;
* a **cache directory** (:func:`build_cache` / :class:`CachedLists`) holds ``neighbors.safetensors``
  (the four top-R lists, the caption -> image map, and the second-order profiles when that is
  the intra-modal source), image- and text-query list shards ``image-00000.safetensors``, ...,
  each covering a contiguous range of query ids, and ``manifest.json`` (format, version,
  package version, the meta that determines the lists, and every file's size and SHA-256).

``meta`` (:func:`cache_meta`) is what makes two caches interchangeable: the config fields that
determine the lists, the neighbour index, and a fingerprint of the data (shapes, dtypes and a
hash of sampled rows, or of everything with ``fingerprint="full"``). Opening a cache checks the
format, the files and, when given, the expected meta, raising
:class:`~pillar_rerank.exceptions.CheckpointError` naming what differs. Every file is written
through a temporary file and renamed; the directory is built beside its target (``<path>.partial``)
and renamed into place when complete, and an interrupted build resumes from its finished files.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from pillar_rerank._version import __version__
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InputFileError, InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.io import atomic_path, load_json, save_json, sha256_file
from pillar_rerank.lists import QueryLists
from pillar_rerank.neighbors import (
    DIRECTIONS,
    IntraModalScores,
    NeighborLists,
    PairScores,
    TopK,
    cross_modal_scores,
    intra_modal_source,
    neighbor_memory_plan,
)
from pillar_rerank.neighbors._ann import check_index
from pillar_rerank.pillars import ListBuilder
from pillar_rerank.typing import PathLikeStr

logger = logging.getLogger(__name__)

FORMAT = "pillar-rerank/lists-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
NEIGHBORS_FILE = "neighbors.safetensors"
PROGRESS = "progress.json"
LIST_FIELDS = tuple(f.name for f in fields(QueryLists))
# LeaPRRConfig fields that determine the lists (the model and training fields do not).
LIST_CONFIG_FIELDS = ("n_pillars", "list_len_i2t", "list_len_t2i", "graph_neighbors", "graph_coef",
                      "reference_thresholds")
SECOND_ORDER_FIELDS = ("intra_rank", "seed")
_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "BOOL": np.bool_, "U8": np.uint8}
_FINGERPRINT_ROWS = 64


# ----------------------------------------------------------------------------- meta
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
    return {"mode": mode, "n_images": data.n_images, "n_texts": data.n_texts, "arrays": arrays,
            "txt_to_img_sha256": hashlib.sha256(t2i.tobytes()).hexdigest()}


def cache_meta(data: RetrievalSet, config: LeaPRRConfig, *, index: str | None = None,
               index_params: dict | None = None, power_iterations: int = 1,
               fingerprint: str = "sampled") -> dict[str, Any]:
    """What determines the cached lists of ``data`` under ``config`` (compared on load).

    The intra-modal source is stored resolved; the second-order fields (``intra_rank``, ``seed``,
    ``power_iterations``) only when that source is used, so changing the training seed does not
    invalidate lists that do not depend on it.
    """
    config = config.validate()
    index = index if index is not None else getattr(config, "neighbor_index", "flat")
    if index_params is None:
        index_params = getattr(config, "neighbor_index_params", None)
    params = check_index(index, index_params, owner="cache_meta")
    source = intra_modal_source(data, config.intra_source)
    cfg = {name: getattr(config, name) for name in LIST_CONFIG_FIELDS}
    cfg["intra_source"] = source
    if source == "second_order":
        cfg.update({name: getattr(config, name) for name in SECOND_ORDER_FIELDS})
        cfg["power_iterations"] = int(power_iterations)
    return {"config": cfg, "index": index, "index_params": params,
            "data": data_fingerprint(data, mode=fingerprint)}


def cache_key(data: RetrievalSet, config: LeaPRRConfig, *, prefix: str = "lists", **meta_kw: Any) -> str:
    """Folder name ``<prefix>-<16 hex>`` for ``data``'s lists: a hash of :func:`cache_meta`.

    Inputs and settings that give the same lists give the same name; any difference (data,
    list-determining config fields, neighbour index) gives another, so caches of several sides or
    runs can share one root folder.
    """
    meta = cache_meta(data, config, **meta_kw)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=_json_default).encode()).hexdigest()
    return f"{prefix}-{digest[:16]}"


def is_complete_cache(path: PathLikeStr) -> bool:
    """Whether ``path`` holds a finished cache (its manifest says complete; files not checked)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT and bool(manifest.get("complete"))


def _diff(found: Any, expected: Any, prefix: str = "") -> list[str]:
    if isinstance(found, dict) and isinstance(expected, dict):
        out = []
        for key in sorted(set(found) | set(expected), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in found or key not in expected:
                out.append(f"{where}: {found.get(key, '<missing>')!r} in the cache, "
                           f"{expected.get(key, '<missing>')!r} expected")
            else:
                out.extend(_diff(found[key], expected[key], where))
        return out
    return [] if found == expected else [f"{prefix}: {found!r} in the cache, {expected!r} expected"]


def _check_meta(found: dict, expected: dict | None, *, where: str) -> None:
    if expected is None:
        return
    problems = _diff(json.loads(json.dumps(found)), json.loads(json.dumps(expected)))
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{where}: built for other inputs or settings: {'; '.join(problems[:3])}"
                              f"{more}. Rebuild it (build_cache(..., overwrite=True)).")


# ----------------------------------------------------------------------------- lists files
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
    return _save_tensors(path, tensors, {"kind": "lists", "keys": sorted(lists), "meta": meta or {}})


def load_lists(path: PathLikeStr, expected_meta: dict[str, Any] | None = None, *,
               mmap: bool = False) -> dict[str, QueryLists]:
    """Read a file written by :func:`save_lists`, checking format, version and ``expected_meta``.

    ``mmap=True`` returns tensors over read-only memory maps of the file (no copy; do not write
    to them).
    """
    file = _TensorFile(path)
    header = file.header_meta
    if header.get("kind") != "lists":
        raise CheckpointError(f"lists file ({path}): holds {header.get('kind')!r}, not lists.")
    _check_meta(header.get("meta", {}), expected_meta, where=f"lists file ({path})")
    out = {}
    for key in header.get("keys", []):
        out[key] = QueryLists(**{name: file.tensor(f"{key}.{name}", copy=not mmap) for name in LIST_FIELDS})
    return out


def _save_tensors(path: PathLikeStr, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    target = Path(path)
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "package_version": __version__,
              "meta": json.dumps(meta, sort_keys=True, default=_json_default)}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return target


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


class _TensorFile:
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
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        yield


# ----------------------------------------------------------------------------- cache directory
def _file_record(path: Path, **extra: Any) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}


def _save_neighbors(path: Path, builder: ListBuilder, txt_to_img: np.ndarray, meta: dict) -> None:
    tensors = {}
    for d in DIRECTIONS:
        top = getattr(builder.neighbors, d)
        tensors[f"{d}.values"] = torch.from_numpy(np.ascontiguousarray(top.values, dtype=np.float32))
        tensors[f"{d}.ids"] = torch.from_numpy(np.ascontiguousarray(top.ids, dtype=np.int64))
    tensors["txt_to_img"] = torch.from_numpy(np.array(txt_to_img, dtype=np.int64))
    if builder.intra_source == "second_order":
        tensors["intra.image"] = builder.intra.image.left.contiguous()
        tensors["intra.text"] = builder.intra.text.left.contiguous()
    _save_tensors(path, tensors, {"kind": "neighbors", "source": builder.intra_source, "meta": meta})


class CachedLists:
    """Lists served from a cache directory written by :func:`build_cache`.

    Mirrors :class:`~pillar_rerank.pillars.ListBuilder`: ``image_lists(ids)``, ``text_lists(ids)``,
    ``mapped_lists(text_ids, generator)``, ``n_images``, ``n_texts``, ``txt_to_img``,
    ``intra_source`` and ``neighbors``.

    Parameters
    ----------
    path : path
        The cache directory.
    data : RetrievalSet, optional
        The set the cache was built from; needed only by :meth:`mapped_lists` (see Notes).
    expected_meta : dict, optional
        :func:`cache_meta` of the inputs about to be used; any difference is a CheckpointError.
    verify : {"quick", "full"}, default="quick"
        "quick" checks the manifest, every file's size and every tensor's header; "full" also
        every file's SHA-256 (reads the whole cache once).

    Notes
    -----
    Image- and text-query lists are stored; the structure-alignment ("mapped") lists are not,
    because the i2t mapping draws a fresh random caption per candidate image at every call and
    storing one draw would fix it (and would take about 3x the other lists). They are built on
    the fly from cached pieces: the neighbour lists (and second-order profiles) from the cache,
    the two lists they reuse (adjacency, targets) from the shards, and only the pillar vectors of
    the substituted candidates read from ``data``'s scores or embeddings.
    """

    def __init__(self, path: PathLikeStr, *, data: RetrievalSet | None = None,
                 expected_meta: dict[str, Any] | None = None, verify: str = "quick") -> None:
        if verify not in ("quick", "full"):
            raise InvalidParameterError(f"verify: expected 'quick' or 'full'; got {verify!r}.")
        self.path = Path(path)
        manifest = load_json(self.path / MANIFEST, name="cache manifest")
        where = f"cache ({self.path})"
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(f"{where}: {MANIFEST} is not a pillar-rerank lists cache manifest.")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{where}: format version {manifest.get('format_version')!r}; this "
                                  f"pillar-rerank ({__version__}) reads version {FORMAT_VERSION}. "
                                  "Rebuild it.")
        if not manifest.get("complete"):
            raise CheckpointError(f"{where}: incomplete cache (its build did not finish); rebuild it.")
        files = manifest.get("files", {})
        for name, rec in files.items():
            p = self.path / name
            if not p.is_file():
                raise CheckpointError(f"{where}: file {name} listed in the manifest is missing.")
            if p.stat().st_size != rec["bytes"]:
                raise CheckpointError(f"{where}: {name} has {p.stat().st_size} bytes, the manifest says "
                                      f"{rec['bytes']} (truncated or replaced).")
            if verify == "full" and sha256_file(p) != rec["sha256"]:
                raise CheckpointError(f"{where}: {name} does not match its SHA-256 (corrupt or modified).")
        self.meta = manifest["meta"]
        _check_meta(self.meta, expected_meta, where=where)
        self.manifest = manifest
        self.data = data
        nb = _TensorFile(self.path / NEIGHBORS_FILE)
        self._nb_file = nb
        self.intra_source = nb.header_meta["source"]
        self._txt_to_img = nb.tensor("txt_to_img")
        self._shards: dict[str, list[tuple[int, int, _TensorFile]]] = {"image": [], "text": []}
        for name, rec in sorted(files.items()):
            if rec.get("kind") in self._shards:
                self._shards[rec["kind"]].append((rec["start"], rec["stop"], _TensorFile(self.path / name)))
        for kind, n in (("image", self.n_images), ("text", self.n_texts)):
            spans = self._shards[kind]
            starts, stops = [s for s, _, _ in spans], [e for _, e, _ in spans]
            if not spans or starts != [0] + stops[:-1] or stops[-1] != n:
                raise CheckpointError(f"{where}: the {kind} shards do not cover queries 0..{n} contiguously.")
        self._starts = {k: np.array([s for s, _, _ in v], dtype=np.int64) for k, v in self._shards.items()}
        self._builder: ListBuilder | None = None

    # ------------------------------------------------------------------ properties
    @property
    def n_images(self) -> int:
        return int(self.meta["data"]["n_images"])

    @property
    def n_texts(self) -> int:
        return int(self.meta["data"]["n_texts"])

    @property
    def txt_to_img(self) -> torch.Tensor:
        return self._txt_to_img

    @property
    def neighbors(self) -> NeighborLists:
        """The cached top-R lists in the four directions (read into memory)."""
        return _NeighborPieces(self.path / NEIGHBORS_FILE).neighbors

    # ------------------------------------------------------------------ lists
    def _gather(self, kind: str, ids: Any, n: int) -> QueryLists:
        ids = torch.as_tensor(ids)
        if ids.dim() != 1 or ids.dtype not in (torch.int64, torch.int32):
            raise InvalidInputError(f"{kind}_ids: expected a 1-D integer tensor; got {ids.dtype} of shape "
                                    f"{tuple(ids.shape)}.")
        idx = ids.to(torch.int64).numpy()
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise InvalidInputError(f"{kind}_ids: {int(bad.sum())} ids outside [0, {n}) "
                                    f"(first: {int(idx[bad][0])}).")
        shard_of = np.searchsorted(self._starts[kind], idx, side="right") - 1
        out: dict[str, np.ndarray] = {}
        for s in np.unique(shard_of):
            start, _, file = self._shards[kind][s]
            where = np.flatnonzero(shard_of == s)
            local = idx[where] - start
            for name in LIST_FIELDS:
                src = file.array(f"{kind}.{name}")
                if name not in out:
                    out[name] = np.empty((idx.shape[0], *src.shape[1:]), dtype=src.dtype)
                out[name][where] = src[local]
        if not out:  # no ids: empty lists with the stored trailing shapes
            file = self._shards[kind][0][2]
            out = {name: np.empty((0, *file.array(f"{kind}.{name}").shape[1:]),
                                  dtype=file.array(f"{kind}.{name}").dtype) for name in LIST_FIELDS}
        return QueryLists(**{name: torch.from_numpy(arr) for name, arr in out.items()})

    def image_lists(self, image_ids: Any) -> QueryLists:
        """Stored lists of image queries (same values as ``ListBuilder.image_lists``)."""
        return self._gather("image", image_ids, self.n_images)

    def text_lists(self, text_ids: Any) -> QueryLists:
        """Stored lists of text queries (same values as ``ListBuilder.text_lists``)."""
        return self._gather("text", text_ids, self.n_texts)

    def builder(self) -> ListBuilder:
        """A :class:`ListBuilder` over the cached neighbour lists and ``data`` (no new search)."""
        if self._builder is None:
            if self.data is None:
                raise InvalidParameterError(
                    f"cache ({self.path}): mapped lists need the retrieval set it was built from; "
                    "open it with CachedLists(path, data=...).")
            if (self.data.n_images, self.data.n_texts) != (self.n_images, self.n_texts):
                raise CheckpointError(f"cache ({self.path}): built for {self.n_images} x {self.n_texts}; "
                                      f"data has {self.data.n_images} x {self.data.n_texts}.")
            pieces = _NeighborPieces(self.path / NEIGHBORS_FILE)
            config = LeaPRRConfig(**{k: v for k, v in self.meta["config"].items()
                                     if k in {f.name for f in fields(LeaPRRConfig)}})
            self._builder = _builder_from(self.data, config, pieces.neighbors, pieces.profiles)
        return self._builder

    def mapped_lists(self, text_ids: Any, generator: torch.Generator, *,
                     image_lists: QueryLists | None = None,
                     text_lists: QueryLists | None = None) -> tuple[QueryLists, QueryLists]:
        """``(t2i_map, i2t_map)`` of a batch of captions, as ``ListBuilder.mapped_lists`` (see Notes)."""
        texts = torch.as_tensor(text_ids)
        if image_lists is None:
            image_lists = self.image_lists(self._txt_to_img[texts.to(torch.int64)])
        if text_lists is None:
            text_lists = self.text_lists(texts)
        return self.builder().mapped_lists(texts, generator, image_lists=image_lists, text_lists=text_lists)

    def random_captions(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.builder().random_captions(images, generator)

    def __repr__(self) -> str:
        c = self.meta["config"]
        return (f"CachedLists({str(self.path)!r}, n_images={self.n_images}, n_texts={self.n_texts}, "
                f"n_pillars={c['n_pillars']}, intra={self.intra_source!r}, index={self.meta['index']!r})")


def _builder_from(data: RetrievalSet, config: LeaPRRConfig, neighbors: NeighborLists,
                  profiles: tuple[torch.Tensor, torch.Tensor] | None,
                  list_batch: dict[str, int] | None = None) -> ListBuilder:
    if profiles is not None:
        img, txt = profiles
        intra = IntraModalScores(PairScores(left=img, right=img), PairScores(left=txt, right=txt),
                                 "second_order")
    else:
        intra = IntraModalScores.from_data(data, neighbors.source)
    phi_i2t, phi_t2i = cross_modal_scores(data)
    rel = data.relevance
    return ListBuilder(neighbors=neighbors, phi_i2t=phi_i2t, phi_t2i=phi_t2i, intra=intra,
                       txt_to_img=rel.txt_to_img, config=config, captions_indptr=rel.indptr,
                       captions_indices=rel.indices, list_batch=list_batch)


def _fill_shard(fn, start: int, stop: int, batch: int) -> QueryLists:
    """Lists of queries [start, stop) built in batches into preallocated tensors (no concat copy)."""
    out: dict[str, torch.Tensor] = {}
    for s in range(start, stop, batch):
        part = fn(torch.arange(s, min(stop, s + batch)))
        for name in LIST_FIELDS:
            value = getattr(part, name)
            if name not in out:
                out[name] = torch.empty((stop - start, *value.shape[1:]), dtype=value.dtype)
            out[name][s - start:s - start + value.shape[0]] = value
        del part
    return QueryLists(**out)


def build_cache(data: RetrievalSet, config: LeaPRRConfig, path: PathLikeStr, *,
                max_memory: str | int = "4GB", device: str | torch.device | None = None,
                index: str | None = None, index_params: dict | None = None, power_iterations: int = 1,
                fingerprint: str = "sampled", overwrite: bool = False, shard_queries: int | None = None,
                _crash_after: int | None = None) -> CachedLists:
    """Search, build and write every image- and text-query list of ``data`` under ``max_memory``.

    Parameters
    ----------
    data : RetrievalSet
    config : LeaPRRConfig
    path : path
        Cache directory to create. If it already holds a complete cache with the same
        :func:`cache_meta`, it is reused as is; a different one is an error unless ``overwrite``.
    max_memory : str or int, default="4GB"
        Bound on what building allocates on top of ``data`` (search blocks, list batches and
        the shard being filled; see ``pillar_rerank.utils.memory.plan_input_memory``). Lists are
        written shard by shard, so sets whose lists exceed memory are fine.
    device : str or None, default=None
        Device of the neighbour searches (GPU when available).
    index, index_params
        Neighbour index ("flat" exact, "ivf", "hnsw"); default from the config when it has
        ``neighbor_index``, else "flat".
    power_iterations : int, default=1
        Of the second-order estimate.
    fingerprint : {"sampled", "full"}, default="sampled"
        How the data fingerprint in the meta is computed (:func:`data_fingerprint`).
    overwrite : bool, default=False
        Replace an existing cache built for other inputs or settings.
    shard_queries : int, optional
        Queries per shard file (default: as many as half the working budget holds).

    Returns
    -------
    CachedLists

    Notes
    -----
    The build happens in ``<path>.partial``: neighbour lists first, then one shard file at a time,
    each written atomically and recorded in ``progress.json``. A build interrupted for any reason
    resumes from the finished files (checked by SHA-256) when called again with the same inputs
    and settings, skipping the neighbour search when it was done. The finished directory is
    renamed onto ``path``.
    """
    config = config.validate()
    target = Path(path)
    meta = cache_meta(data, config, index=index, index_params=index_params,
                      power_iterations=power_iterations, fingerprint=fingerprint)
    if (target / MANIFEST).exists():
        try:
            cached = CachedLists(target, data=data, expected_meta=meta)
        except CheckpointError:
            if not overwrite:
                raise
        else:
            logger.info("cache %s: up to date, reused.", target)
            return cached
    elif target.exists() and any(target.iterdir()) and not overwrite:
        raise InputFileError(f"cache ({target}): exists and is not a pillar-rerank cache; "
                             "choose another path or pass overwrite=True.")
    if not target.parent.exists():
        raise InputFileError(f"cache ({target}): folder {target.parent} does not exist.")
    partial = target.with_name(target.name + ".partial")
    done = _resume(partial, meta)
    source = meta["config"]["intra_source"]
    L, C = config.n_pillars, config.graph_neighbors
    depth = {"i2t": max(L, config.list_len_i2t - 1, C), "t2i": max(L, config.list_len_t2i - 1, C),
             "i2i": max(L, C), "t2t": max(L, C)}
    plan = neighbor_memory_plan(
        data, depth, max_memory, intra_source=source, second_order_rank=config.intra_rank,
        index=meta["index"], index_params=meta["index_params"],
        list_shape={"n_pillars": L, "list_len_i2t": config.list_len_i2t,
                    "list_len_t2i": config.list_len_t2i, "graph_neighbors": C})
    written = 0

    def record(name: str, **extra: Any) -> None:
        nonlocal written
        done[name] = _file_record(partial / name, **extra)
        save_json(partial / PROGRESS, {"format": FORMAT, "meta": meta, "files": done}, overwrite=True)
        written += 1
        if _crash_after is not None and written >= _crash_after:
            raise RuntimeError(f"build_cache: simulated crash after {written} files (_crash_after).")

    t_start = time.perf_counter()
    if NEIGHBORS_FILE in done:
        nb = _NeighborPieces(partial / NEIGHBORS_FILE)
        builder = _builder_from(data, config, nb.neighbors, nb.profiles, plan.list_batch)
        logger.info("cache %s: resuming with the neighbour lists already searched.", target)
    else:
        builder = ListBuilder.from_data(data, config, device=device, max_memory=max_memory,
                                        index=meta["index"], index_params=meta["index_params"],
                                        power_iterations=power_iterations)
        _save_neighbors(partial / NEIGHBORS_FILE, builder, data.txt_to_img, meta)
        record(NEIGHBORS_FILE)
    t_lists = time.perf_counter()
    logger.info("cache %s: neighbours ready in %.1f s.", target, t_lists - t_start)
    layout = {NEIGHBORS_FILE}
    for kind, fn, n in (("image", builder.image_lists, data.n_images),
                        ("text", builder.text_lists, data.n_texts)):
        step = shard_queries or plan.shard_queries[kind]
        for number, start in enumerate(range(0, n, step)):
            stop = min(n, start + step)
            name = f"{kind}-{number:05d}.safetensors"
            layout.add(name)
            if name in done and (done[name].get("start"), done[name].get("stop")) == (start, stop):
                continue
            lists = _fill_shard(fn, start, stop, plan.list_batch[kind])
            save_lists(partial / name, {kind: lists}, {"kind": kind, "start": start, "stop": stop})
            del lists
            record(name, kind=kind, start=start, stop=stop)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "complete": True, "meta": meta, "memory_plan": plan.to_dict(),
                "build_seconds": {"neighbors": round(t_lists - t_start, 3),
                                  "lists": round(time.perf_counter() - t_lists, 3)},
                "files": {k: v for k, v in done.items() if k in layout}}
    for stale in set(done) - layout:  # shards of an interrupted build with another shard size
        (partial / stale).unlink(missing_ok=True)
    save_json(partial / MANIFEST, manifest, overwrite=True)
    (partial / PROGRESS).unlink()
    _swap_into_place(partial, target)
    return CachedLists(target, data=data, expected_meta=meta)


class _NeighborPieces:
    """The neighbour file of a cache: top-R lists and second-order profiles."""

    def __init__(self, path: Path) -> None:
        file = _TensorFile(path)
        self.neighbors = NeighborLists(**{d: TopK(np.array(file.array(f"{d}.values")),
                                                  np.array(file.array(f"{d}.ids"))) for d in DIRECTIONS},
                                       source=file.header_meta["source"])
        self.profiles = None
        if self.neighbors.source == "second_order":
            self.profiles = (file.tensor("intra.image"), file.tensor("intra.text"))


def _resume(partial: Path, meta: dict) -> dict[str, dict]:
    """Finished files of an interrupted build with the same meta; a stale partial dir is cleared."""
    if not partial.exists():
        partial.mkdir()
        return {}
    progress_file = partial / PROGRESS
    progress = None
    if progress_file.is_file():
        with contextlib.suppress(InvalidInputError, InputFileError):
            progress = load_json(progress_file, name="cache progress")
    same = (isinstance(progress, dict) and progress.get("format") == FORMAT
            and not _diff(progress.get("meta"), json.loads(json.dumps(meta))))
    if not same:
        ours = (PROGRESS, MANIFEST)
        if any(p.name not in ours and not p.name.endswith(".safetensors") and not p.name.startswith(".")
               for p in partial.iterdir()):
            raise InputFileError(f"cache ({partial}): a folder that is not a partial pillar-rerank cache "
                                 "is in the way; remove it.")
        shutil.rmtree(partial)
        partial.mkdir()
        return {}
    done = {}
    for name, rec in progress.get("files", {}).items():
        p = partial / name
        if p.is_file() and p.stat().st_size == rec.get("bytes") and sha256_file(p) == rec.get("sha256"):
            done[name] = rec
    logger.info("cache %s: resuming; %d finished files kept.", partial, len(done))
    return done


def _swap_into_place(partial: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(partial, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["FORMAT", "FORMAT_VERSION", "CachedLists", "build_cache", "cache_key", "cache_meta",
           "data_fingerprint", "is_complete_cache", "load_lists", "save_lists"]
