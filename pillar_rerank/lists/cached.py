"""Lists served from a cache directory written by :func:`~pillar_rerank.lists.build.build_cache`.

A cache directory holds ``neighbors.safetensors`` (the four top-R lists, the caption -> image
map, and the second-order profiles when that is the intra-modal source), image- and text-query
list shards ``image-00000.safetensors``, ..., each covering a contiguous range of query ids, and
``manifest.json`` (format, version, package version, the meta that determines the lists, and
every file's size and SHA-256). Opening one checks the manifest, every file's size, every
tensor's header and shape against the meta, and, when given, the expected meta; every read
checks the values it returns (:func:`~pillar_rerank.lists.tensorfile.check_lists`), raising
:class:`~pillar_rerank.exceptions.CheckpointError` naming what differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pillar_rerank._version import __version__
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.io import load_json, sha256_file
from pillar_rerank.lists.builder import ListBuilder
from pillar_rerank.lists.contract import LIST_FIELDS, QueryLists, check_query_ids
from pillar_rerank.lists.fingerprint import check_meta
from pillar_rerank.lists.tensorfile import FORMAT, FORMAT_VERSION, TensorFile, check_lists, save_tensors
from pillar_rerank.neighbors import DIRECTIONS, IntraModalScores, NeighborLists, PairScores, TopK
from pillar_rerank.typing import PathLikeStr

MANIFEST = "manifest.json"
NEIGHBORS_FILE = "neighbors.safetensors"


def is_complete_cache(path: PathLikeStr) -> bool:
    """Whether ``path`` holds a finished cache (its manifest says complete; files not checked)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT and bool(manifest.get("complete"))

def save_neighbors(path: Path, builder: ListBuilder, txt_to_img: np.ndarray, meta: dict) -> None:
    tensors = {}
    for d in DIRECTIONS:
        top = getattr(builder.neighbors, d)
        tensors[f"{d}.values"] = torch.from_numpy(np.ascontiguousarray(top.values, dtype=np.float32))
        tensors[f"{d}.ids"] = torch.from_numpy(np.ascontiguousarray(top.ids, dtype=np.int64))
    tensors["txt_to_img"] = torch.from_numpy(np.array(txt_to_img, dtype=np.int64))
    if builder.intra_source == "second_order":
        tensors["intra.image"] = builder.intra.image.left.contiguous()
        tensors["intra.text"] = builder.intra.text.left.contiguous()
    save_tensors(path, tensors, {"kind": "neighbors", "source": builder.intra_source, "meta": meta})


class CachedLists:
    """Lists served from a cache directory written by :func:`build_cache`.

    A :class:`~pillar_rerank.lists.contract.ListSource`, like
    :class:`~pillar_rerank.lists.builder.ListBuilder`: ``image_lists(ids)``, ``text_lists(ids)``,
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
        check_meta(self.meta, expected_meta, where=where)
        self.manifest = manifest
        self.data = data
        nb = TensorFile(self.path / NEIGHBORS_FILE)
        self._nb_file = nb
        self.intra_source = nb.header_meta["source"]
        self._txt_to_img = nb.tensor("txt_to_img")
        t2i = self._txt_to_img
        if tuple(t2i.shape) != (self.n_texts,) or (t2i.numel() and (int(t2i.min()) < 0
                                                               or int(t2i.max()) >= self.n_images)):
            raise CheckpointError(f"{where}: the caption -> image map in {NEIGHBORS_FILE} does not fit "
                                  f"{self.n_images} images x {self.n_texts} texts (corrupt or modified); "
                                  "rebuild it: delete the folder and build it again.")
        self._shards: dict[str, list[tuple[int, int, TensorFile]]] = {"image": [], "text": []}
        for name, rec in sorted(files.items()):
            if rec.get("kind") in self._shards:
                file = TensorFile(self.path / name)
                self._check_shapes(file, rec, where=f"{where}, {name}")
                self._shards[rec["kind"]].append((rec["start"], rec["stop"], file))
        for kind, n in (("image", self.n_images), ("text", self.n_texts)):
            spans = self._shards[kind]
            starts, stops = [s for s, _, _ in spans], [e for _, e, _ in spans]
            if not spans or starts != [0] + stops[:-1] or stops[-1] != n:
                raise CheckpointError(f"{where}: the {kind} shards do not cover queries 0..{n} contiguously.")
        self._starts = {k: np.array([s for s, _, _ in v], dtype=np.int64) for k, v in self._shards.items()}
        self._builder: ListBuilder | None = None

    def _check_shapes(self, file: TensorFile, rec: dict, *, where: str) -> None:
        """Every tensor of a shard has the shape the meta and its query range imply."""
        cfg, kind = self.meta["config"], rec["kind"]
        n, m = rec["stop"] - rec["start"], cfg["list_len_i2t" if kind == "image" else "list_len_t2i"]
        want = {"features": (n, m, 2 * cfg["n_pillars"]), "targets": (n, m), "adjacency": (n, m, m),
                "candidates": (n, m - 1), "query_ids": (n,)}
        for name, shape in want.items():
            got = tuple(file.array(f"{kind}.{name}").shape)
            if got != shape:
                raise CheckpointError(f"{where}: tensor {kind}.{name} has shape {got}, the manifest implies "
                                      f"{shape} (corrupt or modified); rebuild the cache: delete its folder "
                                      "and build it again.")

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
        return NeighborPieces(self.path / NEIGHBORS_FILE).neighbors

    # ------------------------------------------------------------------ lists
    def _gather(self, kind: str, ids: Any, n: int, n_gallery: int) -> QueryLists:
        idx_t = check_query_ids(ids, n, f"{kind}_ids")
        idx = idx_t.numpy()
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
        lists = QueryLists(**{name: torch.from_numpy(arr) for name, arr in out.items()})
        return check_lists(lists, where=f"cache ({self.path}), {kind}-query lists", n_gallery=n_gallery,
                           query_ids=idx_t)

    def image_lists(self, image_ids: Any) -> QueryLists:
        """Stored lists of image queries (same values as ``ListBuilder.image_lists``)."""
        return self._gather("image", image_ids, self.n_images, self.n_texts)

    def text_lists(self, text_ids: Any) -> QueryLists:
        """Stored lists of text queries (same values as ``ListBuilder.text_lists``)."""
        return self._gather("text", text_ids, self.n_texts, self.n_images)

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
            pieces = NeighborPieces(self.path / NEIGHBORS_FILE)
            config = LeaPRRConfig(**{k: v for k, v in self.meta["config"].items()
                                     if k in LeaPRRConfig.__dataclass_fields__})
            self._builder = ListBuilder.from_neighbors(self.data, config, pieces.neighbors,
                                                       intra=pieces.intra)
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

class NeighborPieces:
    """The neighbour file of a cache: top-R lists and second-order profiles, checked on read."""

    def __init__(self, path: Path) -> None:
        file = TensorFile(path)
        tops = {}
        t2i = file.array("txt_to_img")
        n_images, n_texts = int(file.array("i2t.ids").shape[0]), int(t2i.shape[0])
        gallery = {"i2t": n_texts, "t2i": n_images, "i2i": n_images, "t2t": n_texts}
        for d in DIRECTIONS:
            values, ids = np.array(file.array(f"{d}.values")), np.array(file.array(f"{d}.ids"))
            if not np.isfinite(values).all() or ids.size and (ids.min() < 0 or ids.max() >= gallery[d]):
                raise CheckpointError(f"cache file ({path}): the {d} neighbour lists hold NaN/inf scores or "
                                      f"ids outside [0, {gallery[d]}); the file is corrupt or was modified. "
                                      "Rebuild the cache: delete its folder and build it again.")
            tops[d] = TopK(values, ids)
        self.neighbors = NeighborLists(**tops, source=file.header_meta["source"])
        self.intra = None
        if self.neighbors.source == "second_order":
            img, txt = file.tensor("intra.image"), file.tensor("intra.text")
            if not (torch.isfinite(img).all() and torch.isfinite(txt).all()):
                raise CheckpointError(f"cache file ({path}): the second-order profiles hold NaN or inf; "
                                      "the file is corrupt or was modified. Rebuild the cache: delete its "
                                      "folder and build it again.")
            self.intra = IntraModalScores(PairScores(left=img, right=img), PairScores(left=txt, right=txt),
                                          "second_order")


__all__ = ["MANIFEST", "NEIGHBORS_FILE", "CachedLists", "NeighborPieces", "is_complete_cache",
           "save_neighbors"]
