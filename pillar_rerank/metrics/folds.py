"""The k-fold protocol (e.g. COCO 1K: five disjoint 1000-image folds of the 5K test set).

A fold is a contiguous block of images; its captions are the ones the caption -> image map
assigns to those images (never computed by index arithmetic such as ``5 * i``), so any and
varying numbers of captions per image work. Each fold is evaluated on its own sub-matrix and
every metric is averaged over the folds.

Notes
-----
The LeaPRR reference (``evalrank_single(fold5=True)``) re-evaluates the full matrix five times
instead of five disjoint sub-matrices; we evaluate the disjoint folds, as the COCO 1K protocol
intends.
"""

from __future__ import annotations

import numpy as np

from pillar_rerank._validation import check_int
from pillar_rerank.exceptions import InvalidParameterError


def fold_image_blocks(n_images: int, *, n_folds: int | None = None, fold_size: int | None = None
                      ) -> list[np.ndarray]:
    """Contiguous, disjoint image blocks covering ``range(n_images)``.

    Give ``n_folds`` or ``fold_size`` (or both, consistent); ``n_images`` must divide evenly.
    """
    n_images = check_int(n_images, name="n_images", low=1)
    if n_folds is None and fold_size is None:
        raise InvalidParameterError("folds: give the number of folds or the fold size.")
    if n_folds is not None:
        n_folds = check_int(n_folds, name="n_folds", owner="the fold protocol", low=1,
                            high=n_images, high_name="n_images")
    if fold_size is not None:
        fold_size = check_int(fold_size, name="fold_size", owner="the fold protocol", low=1,
                              high=n_images, high_name="n_images")
    if n_folds is None:
        n_folds = n_images // fold_size
    if fold_size is None:
        fold_size = n_images // n_folds
    if n_folds * fold_size != n_images:
        raise InvalidParameterError(
            f"folds: n_images={n_images} is not {n_folds} folds x {fold_size} images; "
            "choose a fold count or size that divides the image count."
        )
    return [np.arange(f * fold_size, (f + 1) * fold_size, dtype=np.int64) for f in range(n_folds)]


def average_over_folds(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over folds (every fold must report the same metrics)."""
    names = list(per_fold[0])
    return {name: float(np.mean([fold[name] for fold in per_fold])) for name in names}
