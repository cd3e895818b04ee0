"""Partial re-ranking results (shards) and the step that merges them into one score matrix.

LeaPRR re-scores, for every image query, the entries ``(i, candidates of i)`` of the i2t matrix
and, for every text query, the entries ``(candidates of j, j)`` of the t2i matrix; the result is
``S_final = (S_i2t' + S_t2i') / 2`` (spec §6.4). Both overwrites are local, so the queries can be
split into contiguous shares re-ranked on different machines: a shard stores the entries it
touched and their new values, and :func:`merge_shards` applies them to the base matrices
(:func:`direction_matrices` keeps one matrix per direction instead of their mean).

Shard file (``.npz``, no pickle): ``format_version``, ``index``, ``count``, ``n_images``,
``n_texts``, ``model_digest`` (SHA-256 of the model's weights) and, per direction ``d`` in
``i2t``/``t2i``, ``{d}_rows``, ``{d}_cols`` (int64) and ``{d}_values`` (float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pillar_rerank.exceptions import CheckpointError, InvalidInputError
from pillar_rerank.io import atomic_path, check_output_path
from pillar_rerank.typing import PathLikeStr
from pillar_rerank.utils.blocks import block_rows, iter_blocks

SHARD_FORMAT_VERSION = 1


def shard_range(n: int, index: int, count: int) -> slice:
    """Contiguous share ``index`` of ``count`` of ``range(n)`` (sizes differ by at most one)."""
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
        raise InvalidInputError(f"shard: expected 0 <= index < count; got index={index!r}, count={count!r}.")
    return slice(index * n // count, (index + 1) * n // count)


@dataclass(frozen=True)
class ShardResult:
    """New scores of one share of the queries (see module docstring for the fields)."""

    index: int
    count: int
    n_images: int
    n_texts: int
    model_digest: str
    i2t_rows: np.ndarray
    i2t_cols: np.ndarray
    i2t_values: np.ndarray
    t2i_rows: np.ndarray
    t2i_cols: np.ndarray
    t2i_values: np.ndarray

    def save(self, path: PathLikeStr, *, overwrite: bool = False, inputs=()) -> Path:
        """Write the shard as ``.npz`` atomically."""
        out = check_output_path(path, inputs=inputs, overwrite=overwrite, name="shard")
        arrays = {
            "format_version": np.int64(SHARD_FORMAT_VERSION),
            "index": np.int64(self.index),
            "count": np.int64(self.count),
            "n_images": np.int64(self.n_images),
            "n_texts": np.int64(self.n_texts),
            "model_digest": np.str_(self.model_digest),
        }
        for d in ("i2t", "t2i"):
            arrays[f"{d}_rows"] = np.asarray(getattr(self, f"{d}_rows"), dtype=np.int64)
            arrays[f"{d}_cols"] = np.asarray(getattr(self, f"{d}_cols"), dtype=np.int64)
            arrays[f"{d}_values"] = np.asarray(getattr(self, f"{d}_values"), dtype=np.float32)
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return out

    @classmethod
    def load(cls, path: PathLikeStr) -> ShardResult:
        """Read a shard file, never unpickling; every field's type and shape is checked.

        A damaged file raises CheckpointError; the values against the problem size are checked by
        :func:`check_shard_set` (called by every merge).
        """
        from pillar_rerank.io import load_npz

        p = Path(path)
        try:
            data = load_npz(p, name="shard", required=set(_FIELDS), allowed=set(_FIELDS))
        except InvalidInputError as exc:
            raise CheckpointError(str(exc)) from exc
        where = f"shard ({p})"
        scalars = {}
        for key in ("format_version", "index", "count", "n_images", "n_texts"):
            value = data[key]
            if value.ndim != 0 or value.dtype.kind not in "iu":
                raise CheckpointError(
                    f"{where}: {key} must be one integer; got dtype {value.dtype}, shape {value.shape}."
                )
            scalars[key] = int(value)
        if scalars["format_version"] != SHARD_FORMAT_VERSION:
            raise CheckpointError(f"{where}: format version {scalars['format_version']} is not supported.")
        digest = data["model_digest"]
        if digest.ndim != 0 or digest.dtype.kind != "U":
            raise CheckpointError(f"{where}: model_digest must be one string; got dtype {digest.dtype}.")
        for d in ("i2t", "t2i"):
            n = data[f"{d}_rows"].shape
            if data[f"{d}_cols"].shape != n or data[f"{d}_values"].shape != n:
                raise CheckpointError(f"{where}: {d} rows/cols/values have different lengths.")
        del scalars["format_version"]
        arrays = {f"{d}_{f}": data[f"{d}_{f}"] for d in ("i2t", "t2i") for f in ("rows", "cols", "values")}
        return cls(model_digest=str(digest), **scalars, **arrays)


_FIELDS = ("format_version", "index", "count", "n_images", "n_texts", "model_digest",
           *(f"{d}_{f}" for d in ("i2t", "t2i") for f in ("rows", "cols", "values")))


def check_shard(shard: ShardResult, *, n_images: int, n_texts: int, name: str) -> None:
    """One shard's header and entries against the problem size (CheckpointError, exit 2).

    ``count`` is at most ``max(n_images, n_texts)`` (a larger split has shards without queries, and
    a forged count must not size any allocation); ``index`` lies in ``[0, count)``; every entry
    lies in the matrix, belongs to one of the shard's own queries (i2t rows / t2i columns in its
    share), appears once, and has a finite value.
    """
    if (shard.n_images, shard.n_texts) != (n_images, n_texts):
        raise InvalidInputError(
            f"merge: {name} is for a {shard.n_images} x {shard.n_texts} set (n_images x n_texts); the "
            f"base scores are {n_images} x {n_texts}."
        )
    limit = max(n_images, n_texts)
    if not 1 <= shard.count <= limit:
        raise CheckpointError(
            f"merge: {name}: count {shard.count} is not a split of this set (expected 1 to {limit})."
        )
    if not 0 <= shard.index < shard.count:
        raise CheckpointError(f"merge: {name}: index {shard.index} is not in [0, count={shard.count}).")
    size = {"rows": n_images, "cols": n_texts}
    share = {"i2t": ("rows", shard_range(n_images, shard.index, shard.count)),
             "t2i": ("cols", shard_range(n_texts, shard.index, shard.count))}
    for d in ("i2t", "t2i"):
        for f in ("rows", "cols", "values"):
            arr = np.asarray(getattr(shard, f"{d}_{f}"))
            want = "float" if f == "values" else "integer"
            if arr.ndim != 1:
                raise CheckpointError(f"merge: {name}: {d}_{f} must be 1-D; got shape {arr.shape}.")
            if arr.dtype.kind not in ("f" if f == "values" else "iu"):
                raise CheckpointError(f"merge: {name}: {d}_{f} must be {want}; got dtype {arr.dtype}.")
            if f == "values":
                bad = np.flatnonzero(~np.isfinite(arr))
                if bad.size:
                    raise CheckpointError(
                        f"merge: {name}: {d}_values must be finite; {bad.size} are NaN/inf "
                        f"(first at {bad[0]})."
                    )
                continue
            out = np.flatnonzero((arr < 0) | (arr >= size[f]))
            if out.size:
                raise CheckpointError(
                    f"merge: {name}: {d}_{f} must lie in [0, {size[f]}); {out.size} do not "
                    f"(first: {int(arr[out[0]])})."
                )
        field, span = share[d]
        queries = np.asarray(getattr(shard, f"{d}_{field}"))
        outside = np.flatnonzero((queries < span.start) | (queries >= span.stop))
        if outside.size:
            raise CheckpointError(
                f"merge: {name}: {d}_{field} {int(queries[outside[0]])} is not a query of share "
                f"{shard.index}/{shard.count} ([{span.start}, {span.stop})); the shard is damaged or forged."
            )
        keys = np.asarray(getattr(shard, f"{d}_rows"), np.int64) * n_texts + np.asarray(
            getattr(shard, f"{d}_cols"), np.int64)
        if np.unique(keys).size != keys.size:
            raise CheckpointError(f"merge: {name}: {d} holds the same (row, col) entry twice.")


def apply_updates(
    base_i2t: np.ndarray,
    base_t2i: np.ndarray | None,
    shards: list[ShardResult],
    *,
    budget_bytes: int = 256 * 2**20,
    fp16: bool = False,
) -> np.ndarray:
    """``(S_i2t' + S_t2i') / 2`` from the base matrices and the shards' overwrites.

    ``base_t2i`` is the image x text matrix ranked for t2i (``None``: the same as ``base_i2t``).
    Only one output matrix is allocated; the bases are read, never modified. Touched entries are
    computed as ``0.5 * (a + b)`` with ``a``/``b`` the new or base value of each direction, so
    the result does not depend on the order of the shards.

    With ``fp16`` (``LeaPRRConfig.reference_fp16``) the reference's float16 arithmetic is
    reproduced: the bases and the new values are rounded to float16 (its matrices are float16)
    and the mean is taken in numpy float16, ``(a + b) / 2``; the result holds float16 values
    (returned as float32).
    """
    n_img, n_txt = base_i2t.shape
    out = np.empty((n_img, n_txt), dtype=np.float32)

    def mean(a: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        if fp16:
            a16 = a.astype(np.float16)
            return a16.astype(np.float32) if b is None else ((a16 + b.astype(np.float16)) / np.float16(2))
        return a if b is None else 0.5 * (a + b)

    for rows in iter_blocks(n_img, block_rows(n_txt, budget_bytes=budget_bytes)):
        block = np.asarray(base_i2t[rows], dtype=np.float32)
        other = None if base_t2i is None else np.asarray(base_t2i[rows], dtype=np.float32)
        out[rows] = mean(block, other)
    keys, values = {}, {}
    for d in ("i2t", "t2i"):
        r = np.concatenate([getattr(s, f"{d}_rows") for s in shards]).astype(np.int64)
        c = np.concatenate([getattr(s, f"{d}_cols") for s in shards]).astype(np.int64)
        keys[d] = r * n_txt + c
        values[d] = np.concatenate([getattr(s, f"{d}_values") for s in shards]).astype(np.float32)
    touched = np.union1d(keys["i2t"], keys["t2i"])
    if touched.size == 0:
        return out
    rows, cols = touched // n_txt, touched % n_txt
    a = np.asarray(base_i2t[rows, cols], dtype=np.float32)
    b = a.copy() if base_t2i is None else np.asarray(base_t2i[rows, cols], dtype=np.float32)
    a[np.searchsorted(touched, keys["i2t"])] = values["i2t"]
    b[np.searchsorted(touched, keys["t2i"])] = values["t2i"]
    out[rows, cols] = mean(a, b)
    return out


def direction_matrices(
    base_i2t: np.ndarray,
    base_t2i: np.ndarray | None,
    shards: list[ShardResult],
    *,
    budget_bytes: int = 256 * 2**20,
    fp16: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(S_i2t', S_t2i')``: each direction's base with only its own re-scored entries.

    The alternative to :func:`apply_updates`'s mean: image queries are ranked by the first matrix,
    text queries by the second (both image x text), so a normaliser that produced a matrix per
    direction keeps them apart. Each direction's entries are disjoint across shards, so the
    result does not depend on their order. ``fp16`` rounds both results to float16 values.
    """
    n_img, n_txt = base_i2t.shape
    out = []
    for d, base in (("i2t", base_i2t), ("t2i", base_i2t if base_t2i is None else base_t2i)):
        matrix = np.empty((n_img, n_txt), dtype=np.float32)
        for rows in iter_blocks(n_img, block_rows(n_txt, budget_bytes=budget_bytes)):
            matrix[rows] = base[rows]
        r = np.concatenate([getattr(s, f"{d}_rows") for s in shards]).astype(np.int64)
        c = np.concatenate([getattr(s, f"{d}_cols") for s in shards]).astype(np.int64)
        matrix[r, c] = np.concatenate([getattr(s, f"{d}_values") for s in shards]).astype(np.float32)
        if fp16:
            matrix = matrix.astype(np.float16).astype(np.float32)
        out.append(matrix)
    return out[0], out[1]


def check_shard_set(
    shards: list[ShardResult],
    *,
    n_images: int,
    n_texts: int,
    model_digest: str | None = None,
    names: list[str] | None = None,
) -> list[ShardResult]:
    """Every shard of one run exactly once, same model, same problem size; returns them sorted."""
    if not shards:
        raise InvalidInputError("merge: expected at least one shard; got none.")
    names = names or [f"shard {k}" for k in range(len(shards))]
    count = shards[0].count
    digest = model_digest or shards[0].model_digest
    seen: dict[int, str] = {}
    for shard, name in zip(shards, names):
        check_shard(shard, n_images=n_images, n_texts=n_texts, name=name)
        if shard.count != count:
            raise InvalidInputError(
                f"merge: {name} is from a split into {shard.count} shards; others into {count}."
            )
        if shard.model_digest != digest:
            raise CheckpointError(
                f"merge: {name} was produced by a different model (weights digest differs)."
            )
        if shard.index in seen:
            raise InvalidInputError(
                f"merge: shard {shard.index}/{count} given twice ({seen[shard.index]} and {name})."
            )
        seen[shard.index] = name
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise InvalidInputError(
            f"merge: {len(missing)} of {count} shards missing (first: shard {missing[0]}/{count})."
        )
    return sorted(shards, key=lambda s: s.index)


def merge_shards(
    base_scores: np.ndarray,
    shards: list[ShardResult | PathLikeStr],
    *,
    base_t2i_scores: np.ndarray | None = None,
    model_digest: str | None = None,
    fp16: bool = False,
) -> np.ndarray:
    """Join the shards of one re-ranking run into the final image x text matrix.

    Parameters
    ----------
    base_scores : ndarray of shape (n_images, n_texts)
        The matrix the re-ranking started from (after any normaliser).
    shards : list of ShardResult or paths
        Every shard of the run, each exactly once.
    base_t2i_scores : ndarray of shape (n_images, n_texts), optional
        Direction-specific t2i base, when the normaliser produced one.
    model_digest : str, optional
        When given, every shard must come from this model.
    fp16 : bool, default=False
        The model's ``reference_fp16``: float16 score matrices as in the reference
        (:func:`apply_updates`).
    """
    names = [str(s) if not isinstance(s, ShardResult) else f"shard {s.index}" for s in shards]
    loaded = [s if isinstance(s, ShardResult) else ShardResult.load(s) for s in shards]
    n_img, n_txt = base_scores.shape
    loaded = check_shard_set(loaded, n_images=n_img, n_texts=n_txt, model_digest=model_digest, names=names)
    return apply_updates(base_scores, base_t2i_scores, loaded, fp16=fp16)
