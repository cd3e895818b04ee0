"""A normaliser's effect as an element-wise function of the score: normalised scores never stored.

Most training-free normalisers change a score ``s(q, g)`` through one statistic of its gallery
item ``g`` only: the gallery-bias family subtracts a bank estimate ``h(g)`` (inverted softmax,
NNN, CSLS, DN, Sinkhorn, dual-bank Sinkhorn), and DSL multiplies by a softmax over the queries
whose denominator is a per-gallery log-sum-exp. A :class:`GalleryTransform` holds that statistic
and applies the function to any block of scores, so the normalised image x text matrices of a
large side (Flickr30K train: 28,000 x 112,000, 12.5 GB per direction in float32) are computed
block by block from the embeddings when the neighbour search and the pillar features read them,
and never held. :class:`Normalization` pairs the two directions of one normaliser; a
:class:`~pillar_rerank.inputs.RetrievalSet` carrying one serves its normalised scores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import torch

from pillar_rerank.exceptions import InvalidInputError

#: Kinds of element-wise normalisation: s - h(g), and s * n * exp(s / T - lse(g)).
KINDS = ("bias", "dual_softmax")
# Row chunks of a transformed block: DSL's exponent temporary stays small and in cache.
_CHUNK_BYTES = 16 * 2**20


@dataclass(frozen=True, eq=False)
class GalleryTransform:
    """``s -> f(s, stat[g]) / scale`` for scores oriented images x texts.

    Parameters
    ----------
    kind : {"bias", "dual_softmax"}
        "bias": ``f = s - stat[g]``. "dual_softmax": ``f = s * n_queries * exp(s / temperature
        - stat[g])``, ``stat[g]`` the log-sum-exp of ``s(., g) / temperature`` over the queries.
    axis : {0, 1}
        Which axis of the image x text matrix holds the gallery: 1 (texts) for image -> text,
        0 (images) for text -> image.
    stat : ndarray of shape (n_gallery,), float64
    temperature : float, default=1.0
        DSL's T (unused by "bias").
    n_queries : int, default=1
        DSL's query count (unused by "bias").
    scale : float, default=1.0
        Positive divisor applied last (the cosine-scale step of the composition).
    """

    kind: str
    axis: int
    stat: np.ndarray
    temperature: float = 1.0
    n_queries: int = 1
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(f"GalleryTransform: kind must be one of {KINDS}; got {self.kind!r}.")
        if self.axis not in (0, 1):
            raise InvalidInputError(f"GalleryTransform: axis must be 0 or 1; got {self.axis!r}.")
        stat = np.asarray(self.stat, dtype=np.float64)
        if stat.ndim != 1 or not np.isfinite(stat).all():
            raise InvalidInputError("GalleryTransform: stat must be a finite 1-D array.")
        if not (self.scale > 0 and np.isfinite(self.scale)) or not self.temperature > 0:
            raise InvalidInputError("GalleryTransform: scale and temperature must be positive.")
        stat.setflags(write=False)
        object.__setattr__(self, "stat", stat)
        object.__setattr__(self, "_stat32", torch.from_numpy(stat.astype(np.float32)))

    @property
    def n_gallery(self) -> int:
        return int(self.stat.shape[0])

    def rescaled(self, scale: float) -> GalleryTransform:
        """The same transform with ``scale`` as its final divisor."""
        return replace(self, scale=float(scale))

    def apply_(self, values: torch.Tensor, gallery_ids: torch.Tensor) -> torch.Tensor:
        """Transform float32 ``values`` (at least 1-D) in place; ``gallery_ids`` (int64) broadcasts
        against them and names each entry's gallery item. Returns ``values``.

        Worked in chunks along the first dimension, so a temporary (DSL's exponent) stays small.
        """
        stat = self._stat32.to(values.device)
        ids = gallery_ids.reshape((1,) * (values.dim() - gallery_ids.dim()) + tuple(gallery_ids.shape))
        inv_t, n = 1.0 / float(self.temperature), float(self.n_queries)
        step = max(1, _CHUNK_BYTES // (4 * max(1, values[0].numel())))
        for s in range(0, values.shape[0], step):
            x = values[s:s + step]
            g = stat[ids if ids.shape[0] == 1 else ids[s:s + step]]
            if self.kind == "bias":
                x.sub_(g)
            else:
                z = x * inv_t
                z.sub_(g).exp_()
                x.mul_(z).mul_(n)
            if self.scale != 1.0:
                x.div_(self.scale)
        return values

    def apply_block(self, block: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        """Transform rows ``rows`` x columns ``cols`` of the image x text matrix (float32, in place)."""
        span = cols if self.axis == 1 else rows
        ids = torch.arange(span.start, span.stop)
        self.apply_(torch.from_numpy(block), ids[None, :] if self.axis == 1 else ids[:, None])
        return block

    def digest(self) -> str:
        """SHA-256 over everything that determines the transformed values."""
        h = hashlib.sha256(f"{self.kind}|{self.axis}|{self.temperature!r}|{self.n_queries}|"
                           f"{self.scale!r}".encode())
        h.update(self.stat.tobytes())
        return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Normalization:
    """One normaliser's two directions over a set's embedding products.

    ``i2t`` ranks texts per image (gallery axis 1), ``t2i`` images per text (gallery axis 0);
    both see the raw product ``image_embeddings @ text_embeddings.T``.
    """

    name: str
    i2t: GalleryTransform
    t2i: GalleryTransform

    def __post_init__(self) -> None:
        if self.i2t.axis != 1 or self.t2i.axis != 0:
            raise InvalidInputError("Normalization: i2t needs gallery axis 1 (texts), t2i axis 0 (images).")

    def check(self, n_images: int, n_texts: int, *, owner: str) -> None:
        if self.i2t.n_gallery != n_texts or self.t2i.n_gallery != n_images:
            raise InvalidInputError(
                f"{owner}: normalization {self.name!r} was computed for {self.t2i.n_gallery} images x "
                f"{self.i2t.n_gallery} texts; the set has {n_images} x {n_texts}.")

    def digest(self) -> str:
        return hashlib.sha256(f"{self.name}|{self.i2t.digest()}|{self.t2i.digest()}".encode()).hexdigest()


__all__ = ["KINDS", "GalleryTransform", "Normalization"]
