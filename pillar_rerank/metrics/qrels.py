"""Per-query judgements in CSR form: positive sets and graded gains.

:class:`Qrels` holds, for every query of one direction, the gallery items that are relevant and
optionally a graded gain for each (e.g. CxC human ratings 0-5). It is the ground truth of the
extended metrics (mAP@R, R-Precision, NDCG@k); recall uses :class:`~pillar_rerank.inputs.Relevance`.

A query with no entry (an empty row) has no judgement and is left out of the metric's average,
as in ECCV Caption, where only the images and captions that were annotated are evaluated.

File format (``.npz``, loaded with ``allow_pickle=False``): ``indptr`` (int, shape
``(n_queries + 1,)``), ``indices`` (int, gallery ids) and optionally ``gains`` (float, same
length as ``indices``), plus ``n_gallery`` (a 0-d int). Write one with :meth:`Qrels.save`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pillar_rerank._validation import check_int
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import Relevance
from pillar_rerank.io import atomic_path, check_output_path, load_npz
from pillar_rerank.typing import PathLikeStr

_NPZ_KEYS = {"indptr", "indices", "gains", "n_gallery"}


def _int_array(value, *, where: str, ndim: int = 1) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "iu":
        raise InvalidInputError(f"{where}: expected an integer array; got dtype {arr.dtype!s}.")
    if arr.ndim != ndim:
        raise InvalidInputError(f"{where}: expected a {ndim}-D array; got shape {arr.shape}.")
    return arr.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Qrels:
    """Relevant gallery items (and optional gains) of every query, in CSR layout.

    Parameters
    ----------
    indptr : ndarray of shape (n_queries + 1,)
        Row pointers; the judged items of query ``q`` are ``indices[indptr[q]:indptr[q + 1]]``.
    indices : ndarray of shape (nnz,)
        Gallery ids in ``[0, n_gallery)``, unique within a row (sorted on construction).
    n_gallery : int
        Number of gallery items the ids refer to.
    gains : ndarray of shape (nnz,), optional
        Non-negative, finite graded gains; ``None`` means every listed item has gain 1.
    name : str
        Label used in messages.

    Notes
    -----
    Rows are sorted by gallery id on construction; a duplicate id in a row is an error.
    """

    indptr: np.ndarray
    indices: np.ndarray
    n_gallery: int
    gains: np.ndarray | None = None
    name: str = "qrels"

    def __post_init__(self) -> None:
        where = self.name
        n_gallery = check_int(self.n_gallery, name="n_gallery", low=1)
        indptr = _int_array(self.indptr, where=f"{where} indptr")
        indices = _int_array(self.indices, where=f"{where} indices")
        if indptr.shape[0] < 2:
            raise InvalidInputError(
                f"{where} indptr: expected n_queries + 1 >= 2 entries; got {indptr.shape[0]}."
            )
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != indices.shape[0]:
            raise InvalidInputError(
                f"{where} indptr: expected non-decreasing pointers from 0 to "
                f"len(indices)={indices.shape[0]}; "
                f"got indptr[0]={indptr[0]}, indptr[-1]={indptr[-1]}."
            )
        bad = np.flatnonzero((indices < 0) | (indices >= n_gallery))
        if bad.size:
            q = int(np.searchsorted(indptr, bad[0], side="right") - 1)
            raise InvalidInputError(
                f"{where} indices: {bad.size} entries lie outside [0, n_gallery={n_gallery}) "
                f"(first: query {q} -> item {indices[bad[0]]})."
            )
        owner = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
        order = np.lexsort((indices, owner))
        indices = indices[order]
        dup = np.flatnonzero((np.diff(indices) == 0) & (np.diff(owner) == 0))
        if dup.size:
            raise InvalidInputError(
                f"{where} indices: {dup.size} duplicate items within a query "
                f"(first: query {owner[dup[0]]} lists item {indices[dup[0]]} twice)."
            )
        gains = self.gains
        if gains is not None:
            g = np.asarray(gains)
            if g.dtype == object or g.dtype.kind not in "fiu":
                raise InvalidInputError(f"{where} gains: expected a numeric array; got dtype {g.dtype!s}.")
            if g.shape != indices.shape:
                raise InvalidInputError(
                    f"{where} gains: expected one gain per index, shape {indices.shape}; got {g.shape}."
                )
            g = g.astype(np.float64)[order]
            if not np.all(np.isfinite(g)):
                raise InvalidInputError(f"{where} gains: expected finite values; found NaN/inf.")
            if np.any(g < 0):
                raise InvalidInputError(f"{where} gains: expected non-negative gains; got min {g.min()!r}.")
            g.setflags(write=False)
            gains = g
        for arr in (indptr, indices):
            arr.setflags(write=False)
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "n_gallery", n_gallery)
        object.__setattr__(self, "gains", gains)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_lists(cls, lists, n_gallery: int, *, gains=None, name: str = "qrels") -> Qrels:
        """Build from one list of gallery ids per query (and optionally one list of gains)."""
        lengths = np.array([len(x) for x in lists], dtype=np.int64)
        indptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if len(lists) else []
        g = None if gains is None else np.concatenate([np.asarray(x, dtype=np.float64) for x in gains])
        return cls(indptr, np.asarray(indices, dtype=np.int64), n_gallery, gains=g, name=name)

    @classmethod
    def from_pairs(cls, queries, items, n_queries: int, n_gallery: int, *, gains=None,
                   name: str = "qrels") -> Qrels:
        """Build from parallel arrays of (query, item[, gain]) pairs."""
        q = _int_array(queries, where=f"{name} queries")
        it = _int_array(items, where=f"{name} items")
        if q.shape != it.shape:
            raise InvalidInputError(
                f"{name}: queries and items differ in length ({q.shape[0]} vs {it.shape[0]})."
            )
        n_queries = check_int(n_queries, name="n_queries", low=1)
        bad = np.flatnonzero((q < 0) | (q >= n_queries))
        if bad.size:
            raise InvalidInputError(
                f"{name}: {bad.size} pairs name a query outside [0, n_queries={n_queries}) "
                f"(first: {q[bad[0]]})."
            )
        order = np.lexsort((it, q))
        indptr = np.zeros(n_queries + 1, dtype=np.int64)
        np.cumsum(np.bincount(q, minlength=n_queries), out=indptr[1:])
        g = None if gains is None else np.asarray(gains)[order]
        return cls(indptr, it[order], n_gallery, gains=g, name=name)

    @classmethod
    def from_relevance(cls, relevance: Relevance, direction: str) -> Qrels:
        """The original ground truth as positive sets: ``"i2t"`` image -> its captions, ``"t2i"``
        caption -> its image."""
        if direction == "i2t":
            return cls(relevance.indptr, relevance.indices, relevance.n_texts, name="i2t positives")
        if direction == "t2i":
            return cls(np.arange(relevance.n_texts + 1), relevance.txt_to_img, relevance.n_images,
                       name="t2i positives")
        raise InvalidInputError(f"direction: expected 'i2t' or 't2i'; got {direction!r}.")

    # ------------------------------------------------------------------ properties
    @property
    def n_queries(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def counts(self) -> np.ndarray:
        """Number of judged items per query."""
        return np.diff(self.indptr)

    @property
    def effective_gains(self) -> np.ndarray:
        """Gains, or ones when the judgements are binary."""
        return np.ones(self.indices.shape[0]) if self.gains is None else self.gains

    def check_against(self, n_queries: int, n_gallery: int, *, what: str) -> Qrels:
        """Raise unless this matches a ``(n_queries, n_gallery)`` score matrix."""
        if self.n_queries != n_queries or self.n_gallery != n_gallery:
            raise InvalidInputError(
                f"{self.name}: {what} expects {n_queries} queries x {n_gallery} gallery items; "
                f"got judgements for {self.n_queries} queries x {self.n_gallery} items."
            )
        return self

    def subset(self, queries: np.ndarray, gallery: np.ndarray) -> Qrels:
        """Restrict to ``queries`` (in order) and to ``gallery`` items, renumbered in that order."""
        queries = np.asarray(queries, dtype=np.int64)
        remap = np.full(self.n_gallery, -1, dtype=np.int64)
        remap[np.asarray(gallery, dtype=np.int64)] = np.arange(len(gallery))
        starts, stops = self.indptr[queries], self.indptr[queries + 1]
        lengths = stops - starts
        take = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(
            lengths.sum())
        new_ids = remap[self.indices[take]]
        keep = new_ids >= 0
        owner = np.repeat(np.arange(len(queries)), lengths)[keep]
        indptr = np.zeros(len(queries) + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=len(queries)), out=indptr[1:])
        gains = None if self.gains is None else self.gains[take][keep]
        return Qrels(indptr, new_ids[keep], max(1, len(gallery)), gains=gains, name=self.name)

    # ------------------------------------------------------------------ files
    def save(self, path: PathLikeStr, *, overwrite: bool = False) -> Path:
        """Write as ``.npz`` (indptr, indices, n_gallery[, gains]) atomically."""
        out = check_output_path(path, overwrite=overwrite, name=self.name)
        arrays = {"indptr": self.indptr, "indices": self.indices, "n_gallery": np.int64(self.n_gallery)}
        if self.gains is not None:
            arrays["gains"] = self.gains
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return out

    @classmethod
    def load(cls, path: PathLikeStr, *, name: str = "qrels") -> Qrels:
        """Read a ``.npz`` written by :meth:`save` (never unpickling)."""
        p = Path(path)
        data = load_npz(p, name=name, required={"indptr", "indices", "n_gallery"}, allowed=_NPZ_KEYS)
        n_gallery = np.asarray(data["n_gallery"])
        if n_gallery.shape != () or n_gallery.dtype.kind not in "iu":
            raise InvalidInputError(f"{name} ({p}): n_gallery must be a 0-d integer; got {n_gallery!r}.")
        return cls(data["indptr"], data["indices"], int(n_gallery), gains=data.get("gains"),
                   name=f"{name} ({p})")


def graded_from_pairs(images, texts, gains, n_images: int, n_texts: int, *, name: str = "graded"
                      ) -> dict[str, Qrels]:
    """Both directions' graded judgements from (image, text, gain) triples.

    Returns ``{"i2t": Qrels (n_images x n_texts), "t2i": Qrels (n_texts x n_images)}``.
    """
    gains = np.asarray(gains)
    return {
        "i2t": Qrels.from_pairs(images, texts, n_images, n_texts, gains=gains, name=f"{name} i2t"),
        "t2i": Qrels.from_pairs(texts, images, n_texts, n_images, gains=gains, name=f"{name} t2i"),
    }


def save_graded_pairs(path: PathLikeStr, images, texts, gains, *, overwrite: bool = False) -> Path:
    """Write graded judgements as ``.npz`` with int arrays ``image``, ``text`` and float ``gain``."""
    out = check_output_path(path, overwrite=overwrite, name="graded")
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, image=np.asarray(images, dtype=np.int64), text=np.asarray(texts, dtype=np.int64),
                 gain=np.asarray(gains, dtype=np.float64))
    return out


def load_graded_pairs(path: PathLikeStr, n_images: int, n_texts: int, *, name: str = "graded"
                      ) -> dict[str, Qrels]:
    """Read a ``.npz`` of (image, text, gain) triples (see :func:`save_graded_pairs`) for both directions."""
    p = Path(path)
    data = load_npz(p, name=name, required={"image", "text", "gain"}, allowed={"image", "text", "gain"})
    images, texts, gains = data["image"], data["text"], data["gain"]
    if not (images.shape == texts.shape == gains.shape) or images.ndim != 1:
        raise InvalidInputError(
            f"{name} ({p}): image, text and gain must be 1-D of equal length; got shapes "
            f"{images.shape}, {texts.shape}, {gains.shape}."
        )
    for arr, label, n in ((images, "image", n_images), (texts, "text", n_texts)):
        if arr.dtype.kind not in "iu":
            raise InvalidInputError(f"{name} ({p}): {label} must be integers; got dtype {arr.dtype!s}.")
        bad = np.flatnonzero((arr < 0) | (arr >= n))
        if bad.size:
            raise InvalidInputError(
                f"{name} ({p}): {bad.size} {label} ids outside [0, {n}) "
                f"(first: pair {bad[0]} -> {arr[bad[0]]})."
            )
    return graded_from_pairs(images, texts, gains, n_images, n_texts, name=f"{name} ({p})")
