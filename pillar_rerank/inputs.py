"""The data contract: a retrieval set and its ground truth.

A retrieval set is an image x text similarity matrix (dense ``.npy``, float16/32/64, possibly
memory-mapped) and/or the two embedding matrices, plus the caption -> image map. The map is
either explicit (``txt_to_img``) or ``captions_per_image=N`` for contiguous blocks; nothing in the
toolkit assumes 5 captions per image or infers grouping from index arithmetic elsewhere.

Ground truth is kept as :class:`Relevance`, a CSR image -> captions layout (``indptr``,
``indices``) plus the caption -> image array, so any and varying numbers of captions work.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pillar_rerank._validation import (
    FLOAT_DTYPES,
    check_finite,
    check_float_matrix,
    check_int,
    check_item_map,
    max_row_norm,
    product_is_finite,
)
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.io import load_array
from pillar_rerank.typing import PathLikeStr
from pillar_rerank.utils.blocks import block_rows, iter_blocks

if TYPE_CHECKING:  # torch-free at import: the transforms are only ever passed in
    from pillar_rerank.score_transform import GalleryTransform, Normalization


@dataclass(frozen=True, eq=False, repr=False)
class Relevance:
    """Caption -> image ground truth of a retrieval set.

    Parameters
    ----------
    txt_to_img : ndarray of shape (n_texts,)
        Image index of every caption.
    n_images : int
        Number of images; every image must have at least one caption.

    Attributes
    ----------
    indptr, indices : ndarray
        CSR layout image -> captions: the captions of image ``i`` are
        ``indices[indptr[i]:indptr[i + 1]]`` in increasing caption order.
    """

    txt_to_img: np.ndarray
    n_images: int
    indptr: np.ndarray = field(init=False, repr=False)
    indices: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n_images = check_int(self.n_images, name="n_images", low=1)
        t2i = check_item_map(self.txt_to_img, n_images=n_images)
        t2i.setflags(write=False)
        order = np.argsort(t2i, kind="stable").astype(np.int64)
        counts = np.bincount(t2i, minlength=n_images)
        indptr = np.zeros(n_images + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        order.setflags(write=False)
        indptr.setflags(write=False)
        object.__setattr__(self, "txt_to_img", t2i)
        object.__setattr__(self, "n_images", n_images)
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", order)

    def __repr__(self) -> str:
        counts = self.captions_per_image
        return (f"Relevance(n_images={self.n_images}, n_texts={self.n_texts}, "
                f"captions_per_image={int(counts.min())}..{int(counts.max())})")

    @classmethod
    def from_captions_per_image(cls, n_images: int, captions_per_image: int) -> Relevance:
        """Contiguous blocks: captions ``N*i .. N*i+N-1`` belong to image ``i``."""
        n_images = check_int(n_images, name="n_images", low=1)
        cpi = check_int(captions_per_image, name="captions_per_image", low=1)
        return cls(np.repeat(np.arange(n_images, dtype=np.int64), cpi), n_images)

    @classmethod
    def from_arguments(cls, *, n_images: int, n_texts: int, txt_to_img: np.ndarray | None = None,
                       captions_per_image: int | None = None, source: str | None = None) -> Relevance:
        """Build from exactly one of ``txt_to_img`` / ``captions_per_image``, checked against shapes."""
        if (txt_to_img is None) == (captions_per_image is None):
            raise InvalidInputError(
                "ground truth: give exactly one of txt_to_img (a caption -> image map) "
                "or captions_per_image."
            )
        if captions_per_image is not None:
            cpi = check_int(captions_per_image, name="captions_per_image", low=1)
            if n_images * cpi != n_texts:
                raise InvalidInputError(
                    f"captions_per_image={cpi}: expected n_texts = n_images * {cpi} = {n_images * cpi}; "
                    f"got n_texts={n_texts} (use an explicit txt_to_img map for uneven groups)."
                )
            return cls.from_captions_per_image(n_images, cpi)
        t2i = check_item_map(txt_to_img, n_images=n_images, n_texts=n_texts, source=source)
        return cls(t2i, n_images)

    @property
    def n_texts(self) -> int:
        return int(self.txt_to_img.shape[0])

    @property
    def captions_per_image(self) -> np.ndarray:
        """Number of captions of each image, shape (n_images,)."""
        return np.diff(self.indptr)

    def captions_of(self, image: int) -> np.ndarray:
        """Caption indices of one image."""
        return self.indices[self.indptr[image]:self.indptr[image + 1]]

    def subset(self, images: np.ndarray) -> tuple[Relevance, np.ndarray]:
        """Restrict to ``images`` (in the given order); returns the new relevance and caption ids.

        The captions kept are those the map assigns to the selected images, in caption order.
        """
        images = np.asarray(images, dtype=np.int64)
        remap = np.full(self.n_images, -1, dtype=np.int64)
        remap[images] = np.arange(images.shape[0])
        captions = np.flatnonzero(remap[self.txt_to_img] >= 0)
        return Relevance(remap[self.txt_to_img[captions]], int(images.shape[0])), captions

    def same_as(self, other: Relevance) -> bool:
        return self.n_images == other.n_images and np.array_equal(self.txt_to_img, other.txt_to_img)


@dataclass(frozen=True, eq=False, repr=False)
class RetrievalSet:
    """One side (train, dev or test) of an image-text retrieval problem.

    At least one of ``scores`` or the pair of embeddings must be given. Intra-modal matrices are
    optional and only used by methods that need neighbour structure.

    Parameters
    ----------
    relevance : Relevance
        Caption -> image ground truth.
    scores : ndarray of shape (n_images, n_texts), optional
        Cross-modal similarities (higher is better). May be a read-only memory map.
    image_embeddings : ndarray of shape (n_images, d), optional
    text_embeddings : ndarray of shape (n_texts, d), optional
    image_image : ndarray of shape (n_images, n_images), optional
    text_text : ndarray of shape (n_texts, n_texts), optional
    t2i_scores : ndarray of shape (n_images, n_texts), optional
        Separate scores for the text -> image direction, still in image x text orientation
        (ranked per column). Set when a direction-specific method (e.g. a bank normaliser run on
        ``scores`` and on ``scores.T``) produced two matrices; ``None`` means ``scores`` serves
        both directions.
    name : str
        Label used in messages and reports.
    normalization : Normalization, optional
        A normaliser's element-wise form (:mod:`pillar_rerank.score_transform`) over the embedding
        product, when the set is given as embeddings only: :meth:`similarity` and
        :meth:`t2i_similarity` return the normalised matrices, and list building computes them
        block by block without storing them. Set by
        :func:`~pillar_rerank.baselines.compose.normalize_side`.
    """

    relevance: Relevance
    scores: np.ndarray | None = field(default=None, repr=False)
    image_embeddings: np.ndarray | None = field(default=None, repr=False)
    text_embeddings: np.ndarray | None = field(default=None, repr=False)
    image_image: np.ndarray | None = field(default=None, repr=False)
    text_text: np.ndarray | None = field(default=None, repr=False)
    t2i_scores: np.ndarray | None = field(default=None, repr=False)
    name: str = "data"
    normalization: Normalization | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        given = [f for f in ("scores", "t2i_scores", "image_embeddings", "text_embeddings",
                             "image_image", "text_text") if getattr(self, f) is not None]
        norm = "" if self.normalization is None else f", normalization={self.normalization.name!r}"
        return (f"RetrievalSet(name={self.name!r}, n_images={self.n_images}, n_texts={self.n_texts}, "
                f"inputs={given}{norm})")

    def __post_init__(self) -> None:
        n_img, n_txt = self.relevance.n_images, self.relevance.n_texts
        if self.scores is None and (self.image_embeddings is None or self.text_embeddings is None):
            raise InvalidInputError(
                f"{self.name}: give a similarity matrix, or both image and text embeddings."
            )
        if (self.image_embeddings is None) != (self.text_embeddings is None):
            raise InvalidInputError(f"{self.name}: give both image and text embeddings, or neither.")
        if self.scores is not None:
            check_float_matrix(self.scores, name=f"{self.name} scores", shape=(n_img, n_txt))
        if self.image_embeddings is not None:
            img = check_float_matrix(self.image_embeddings, name=f"{self.name} image embeddings",
                                     shape=(n_img, None))
            check_float_matrix(self.text_embeddings, name=f"{self.name} text embeddings",
                               shape=(n_txt, img.shape[1]))
        if self.t2i_scores is not None:
            if self.scores is None:
                raise InvalidInputError(f"{self.name}: t2i_scores needs scores for the i2t direction.")
            check_float_matrix(self.t2i_scores, name=f"{self.name} t2i scores", shape=(n_img, n_txt))
        if self.normalization is not None:
            if self.scores is not None or self.image_embeddings is None:
                raise InvalidInputError(
                    f"{self.name}: a normalization applies to the embedding product; give embeddings "
                    "and no score matrix.")
            self.normalization.check(n_img, n_txt, owner=self.name)
        if self.image_image is not None:
            check_float_matrix(self.image_image, name=f"{self.name} image-image", shape=(n_img, n_img))
        if self.text_text is not None:
            check_float_matrix(self.text_text, name=f"{self.name} text-text", shape=(n_txt, n_txt))

    @property
    def n_images(self) -> int:
        return self.relevance.n_images

    @property
    def n_texts(self) -> int:
        return self.relevance.n_texts

    @property
    def txt_to_img(self) -> np.ndarray:
        return self.relevance.txt_to_img

    @property
    def has_embeddings(self) -> bool:
        return self.image_embeddings is not None

    def t2i_similarity(self, *, dtype: type = np.float32) -> np.ndarray:
        """The matrix ranked for text -> image (per column): ``t2i_scores`` or ``similarity()``
        (with a :attr:`normalization`: its text -> image form)."""
        if self.t2i_scores is not None:
            return np.asarray(self.t2i_scores, dtype=dtype)
        if self.normalization is not None:
            return self._product(self.normalization.t2i, dtype=dtype)
        return self.similarity(dtype=dtype)

    def similarity(self, *, dtype: type = np.float32, budget_bytes: int = 256 * 2**20) -> np.ndarray:
        """The image x text score matrix: the given one, or image @ text.T built in row blocks
        (with a :attr:`normalization`: its image -> text form)."""
        if self.scores is not None:
            return np.asarray(self.scores, dtype=dtype)
        return self._product(None if self.normalization is None else self.normalization.i2t,
                             dtype=dtype, budget_bytes=budget_bytes)

    def _product(self, transform: GalleryTransform | None, *, dtype: type = np.float32,
                 budget_bytes: int = 256 * 2**20) -> np.ndarray:
        """image @ text.T in row blocks, each through ``transform`` when given."""
        img = self.image_embeddings
        with np.errstate(over="ignore"):
            txt = np.asarray(self.text_embeddings, dtype=np.float32)
        out = np.empty((self.n_images, self.n_texts), dtype=dtype)
        img_norm = 0.0
        # finite embeddings of huge magnitude can overflow in the product (or the float16 cast)
        with np.errstate(over="ignore", invalid="ignore"):
            for rows in iter_blocks(self.n_images, block_rows(self.n_texts, budget_bytes=budget_bytes)):
                block = np.asarray(img[rows], dtype=np.float32)
                img_norm = max(img_norm, max_row_norm(block))
                if out.dtype == np.float32:  # straight into the result: no temporary block
                    product = np.matmul(block, txt.T, out=out[rows])
                else:
                    product = block @ txt.T
                if transform is not None:
                    transform.apply_block(product, rows, slice(0, self.n_texts))
                if out.dtype != np.float32:
                    out[rows] = product
        # the embeddings are finite (checked when this set was built); the scan for an overflow
        # is needed only where the norms allow one
        if not product_is_finite(img_norm, max_row_norm(txt), txt.shape[1], out.dtype):
            check_finite(out, name=f"{self.name} image_embeddings @ text_embeddings.T (overflow; "
                         "rescale them)")
        return out

    def subset_images(self, images: np.ndarray, *, name: str | None = None) -> RetrievalSet:
        """The sub-problem over ``images`` and the captions the map assigns to them."""
        images = np.asarray(images, dtype=np.int64)
        if self.normalization is not None:
            raise InvalidInputError(
                f"{self.name}: a normalised set cannot be subset (its normalisation depends on the "
                "whole set); subset the raw set, then normalise it.")
        rel, caps = self.relevance.subset(images)

        def take(a, rows, cols=None):
            if a is None:
                return None
            sub = np.asarray(a[rows]) if cols is None else np.asarray(a[rows][:, cols])
            return sub

        return RetrievalSet(
            relevance=rel,
            scores=take(self.scores, images, caps),
            image_embeddings=take(self.image_embeddings, images),
            text_embeddings=take(self.text_embeddings, caps),
            image_image=take(self.image_image, images, images),
            text_text=take(self.text_text, caps, caps),
            t2i_scores=take(self.t2i_scores, images, caps),
            name=name or f"{self.name}[{images.shape[0]} images]",
        )

    def with_scores(self, scores: np.ndarray, *, t2i_scores: np.ndarray | None = None,
                    name: str | None = None) -> RetrievalSet:
        """A copy whose cross-modal scores are replaced (e.g. after re-ranking).

        ``t2i_scores`` (image x text orientation) is set only for direction-specific results.
        """
        return replace(self, scores=scores, t2i_scores=t2i_scores, name=name or self.name,
                       normalization=None)

    def with_results(self, scores: np.ndarray, *, t2i_scores: np.ndarray | None = None,
                     name: str | None = None) -> RetrievalSet:
        """:meth:`with_scores` for the output of a method run on this set's checked inputs.

        Checks the new matrices' dtype and shape, but does not scan their values for NaN/inf
        nor re-check the fields taken over unchanged (they were checked when this set was
        built): the method's result is not a new input.
        """
        shape = (self.n_images, self.n_texts)
        for field_name, value in (("scores", scores), ("t2i scores", t2i_scores)):
            if value is None:
                continue
            if not isinstance(value, np.ndarray) or value.dtype not in FLOAT_DTYPES or value.shape != shape:
                raise InvalidInputError(
                    f"{self.name} {field_name}: expected a float array of shape {shape}; got "
                    f"{type(value).__name__} of shape {getattr(value, 'shape', None)}."
                )
        out = copy.copy(self)
        object.__setattr__(out, "scores", scores)
        object.__setattr__(out, "t2i_scores", t2i_scores)
        object.__setattr__(out, "name", name or self.name)
        object.__setattr__(out, "normalization", None)
        return out


def load_retrieval_set(
    *,
    sims: PathLikeStr | None = None,
    image_embeddings: PathLikeStr | None = None,
    text_embeddings: PathLikeStr | None = None,
    txt_to_img: PathLikeStr | None = None,
    captions_per_image: int | None = None,
    image_image: PathLikeStr | None = None,
    text_text: PathLikeStr | None = None,
    mmap: bool = True,
    name: str = "data",
) -> RetrievalSet:
    """Load a retrieval set from ``.npy`` files (never unpickling), validating everything.

    Large matrices are memory-mapped read-only when ``mmap`` is true.
    """
    scores = load_array(sims, name="sims", mmap=mmap) if sims is not None else None
    img = load_array(image_embeddings, name="image embeddings", mmap=mmap) if image_embeddings else None
    txt = load_array(text_embeddings, name="text embeddings", mmap=mmap) if text_embeddings else None
    if scores is not None:
        check_float_matrix(scores, name="sims", source=str(sims))
        n_images, n_texts = scores.shape
    elif img is not None and txt is not None:
        check_float_matrix(img, name="image embeddings", source=str(image_embeddings))
        check_float_matrix(txt, name="text embeddings", source=str(text_embeddings))
        n_images, n_texts = img.shape[0], txt.shape[0]
    else:
        raise InvalidInputError(
            f"{name}: give a similarity matrix (sims), or both image and text embedding files."
        )
    t2i = load_array(txt_to_img, name="txt_to_img") if txt_to_img is not None else None
    rel = Relevance.from_arguments(n_images=n_images, n_texts=n_texts, txt_to_img=t2i,
                                   captions_per_image=captions_per_image,
                                   source=str(txt_to_img) if txt_to_img is not None else None)
    ii = load_array(image_image, name="image-image", mmap=mmap) if image_image else None
    tt = load_array(text_text, name="text-text", mmap=mmap) if text_text else None
    return RetrievalSet(relevance=rel, scores=scores, image_embeddings=img, text_embeddings=txt,
                        image_image=ii, text_text=tt, name=name or Path(str(sims)).stem)
