"""Precomputed features for backbone training: the trainers' input container and its loader.

Features are frozen encoder outputs: one vector per item ``(n, d)`` or token-level ``(n, N, d)``
with per-item lengths. The caption -> image map is the toolkit's :class:`Relevance`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pillar_rerank._validation import check_finite
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import Relevance
from pillar_rerank.io import load_array
from pillar_rerank.typing import PathLikeStr


def _check_features(
    arr: np.ndarray, *, name: str, rows: int, rows_name: str, source: str | None
) -> np.ndarray:
    where = f"{name} ({source})" if source else name
    arr = np.asarray(arr)
    if arr.dtype.kind != "f":
        raise InvalidInputError(
            f"{where}: expected a float16/float32/float64 array; got dtype {arr.dtype!s}."
        )
    if arr.ndim not in (2, 3):
        raise InvalidInputError(
            f"{where}: expected shape (n, d) or token-level (n, n_tokens, d); got shape {arr.shape}."
        )
    if arr.shape[0] != rows:
        raise InvalidInputError(
            f"{where}: expected {rows_name}={rows} rows; got {arr.shape[0]} (shape {arr.shape})."
        )
    if arr.size == 0:
        raise InvalidInputError(f"{where}: expected a non-empty array; got shape {arr.shape}.")
    check_finite(arr, name=name, source=source)
    return arr


def _check_lengths(lengths: np.ndarray | None, features: np.ndarray, *, name: str) -> np.ndarray | None:
    if features.ndim == 2:
        if lengths is not None:
            raise InvalidInputError(
                f"{name}: lengths were given but the features are not token-level (n, N, d)."
            )
        return None
    n, n_tokens = features.shape[:2]
    if lengths is None:
        return np.full(n, n_tokens, dtype=np.int64)
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu" or lengths.shape != (n,):
        raise InvalidInputError(
            f"{name}: expected an int array of shape ({n},); got {lengths.dtype!s} {lengths.shape}."
        )
    bad = np.flatnonzero((lengths < 1) | (lengths > n_tokens))
    if bad.size:
        raise InvalidInputError(
            f"{name}: {bad.size} lengths outside [1, {n_tokens}] "
            f"(first: item {bad[0]} has length {lengths[bad[0]]})."
        )
    return lengths.astype(np.int64)


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Frozen features of one side (train, dev or export) plus its caption -> image map.

    Parameters
    ----------
    image_features : ndarray of shape (n_images, d_img) or (n_images, n_regions, d_img)
    text_features : ndarray of shape (n_texts, d_txt) or (n_texts, n_words, d_txt)
    relevance : Relevance
    image_lengths, text_lengths : int ndarray of shape (n_images,) / (n_texts,), optional
        Valid tokens per item for token-level features (default: all).
    caption_table : ndarray of shape (n_texts, E), optional
        Frozen caption embeddings for listwise RSC relevance (default: the text features when
        they are one vector per caption).
    name : str
    """

    image_features: np.ndarray
    text_features: np.ndarray
    relevance: Relevance
    image_lengths: np.ndarray | None = None
    text_lengths: np.ndarray | None = None
    caption_table: np.ndarray | None = None
    name: str = "features"

    def __post_init__(self) -> None:
        if not isinstance(self.relevance, Relevance):
            raise TypeError(
                f"{self.name}: relevance must be a Relevance; got {type(self.relevance).__name__}."
            )
        img = _check_features(
            self.image_features,
            name=f"{self.name} image features",
            rows=self.relevance.n_images,
            rows_name="n_images (from the caption map)",
            source=None,
        )
        txt = _check_features(
            self.text_features,
            name=f"{self.name} text features",
            rows=self.relevance.n_texts,
            rows_name="n_texts (entries of the caption map)",
            source=None,
        )
        object.__setattr__(
            self, "image_lengths", _check_lengths(self.image_lengths, img, name=f"{self.name} image lengths")
        )
        object.__setattr__(
            self, "text_lengths", _check_lengths(self.text_lengths, txt, name=f"{self.name} text lengths")
        )
        if self.caption_table is not None:
            table = np.asarray(self.caption_table)
            if table.ndim != 2:
                raise InvalidInputError(
                    f"{self.name} caption table: expected shape (n_texts, E); got {table.shape}."
                )
            _check_features(
                table,
                name=f"{self.name} caption table",
                rows=self.relevance.n_texts,
                rows_name="n_texts",
                source=None,
            )

    @property
    def n_images(self) -> int:
        return self.relevance.n_images

    @property
    def n_texts(self) -> int:
        return self.relevance.n_texts

    @property
    def token_level(self) -> bool:
        return np.ndim(self.image_features) == 3

    def relevance_table(self) -> np.ndarray | None:
        """The frozen caption table for RSC relevance (``caption_table`` or vector text features)."""
        if self.caption_table is not None:
            return np.asarray(self.caption_table)
        if np.ndim(self.text_features) == 2:
            return np.asarray(self.text_features)
        return None


def load_feature_set(
    *,
    image_features: PathLikeStr,
    text_features: PathLikeStr,
    txt2img: PathLikeStr | None = None,
    captions_per_image: int | None = None,
    image_lengths: PathLikeStr | None = None,
    text_lengths: PathLikeStr | None = None,
    caption_table: PathLikeStr | None = None,
    name: str = "features",
) -> FeatureSet:
    """Load a :class:`FeatureSet` from ``.npy`` files (never unpickling), naming the file in errors."""
    img = load_array(image_features, name="image features", mmap=True)
    txt = load_array(text_features, name="text features", mmap=True)
    for arr, label, path in ((img, "image features", image_features), (txt, "text features", text_features)):
        if arr.ndim not in (2, 3) or arr.dtype.kind != "f":
            raise InvalidInputError(
                f"{label} ({path}): expected a float array of shape (n, d) or (n, N, d); "
                f"got {arr.dtype!s} {arr.shape}."
            )
    t2i = load_array(txt2img, name="txt2img") if txt2img is not None else None
    if t2i is not None and t2i.ndim == 1 and t2i.shape[0] != txt.shape[0]:
        raise InvalidInputError(
            f"txt2img ({txt2img}): expected one entry per caption of the text features "
            f"({text_features}: n_texts={txt.shape[0]}); got {t2i.shape[0]}."
        )
    rel = Relevance.from_arguments(
        n_images=img.shape[0],
        n_texts=txt.shape[0],
        txt_to_img=t2i,
        captions_per_image=captions_per_image,
        source=str(txt2img) if txt2img is not None else None,
    )

    def opt(path, label, mmap=False):
        return None if path is None else load_array(path, name=label, mmap=mmap)

    try:
        return FeatureSet(
            image_features=img,
            text_features=txt,
            relevance=rel,
            image_lengths=opt(image_lengths, "image lengths"),
            text_lengths=opt(text_lengths, "text lengths"),
            caption_table=opt(caption_table, "caption table", mmap=True),
            name=name,
        )
    except InvalidInputError as exc:
        files = f"image features {image_features}, text features {text_features}"
        raise type(exc)(f"{exc} [{files}]") from exc
