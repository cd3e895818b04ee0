"""Synthetic image/caption embeddings with a controllable modality gap and hubs.

Image ``i`` is a random unit vector; each of its captions is that vector plus Gaussian noise and
a shared offset whose size varies per caption (heavy-tailed), which makes a few captions hubs,
as in real cross-modal sets. Everything is generated in row blocks from a seed, so the same
arguments always give the same arrays and the largest shapes never need a temporary copy.
"""

from __future__ import annotations

import numpy as np

from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.utils.blocks import block_rows, iter_blocks


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    return x


def embeddings(
    n_images: int,
    n_texts: int,
    dim: int,
    *,
    seed: int = 0,
    noise: float = 1.0,
    hub_strength: float = 0.6,
    budget_bytes: int = 64 * 2**20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image embeddings, text embeddings (both L2-normalised float32) and the caption -> image map.

    Captions are assigned to images in contiguous, as-even-as-possible groups
    (``n_texts // n_images`` or one more each).
    """
    rng = np.random.default_rng(seed)
    img = _normalise_rows(rng.standard_normal((n_images, dim), dtype=np.float32))
    txt_to_img = (np.arange(n_texts, dtype=np.int64) * n_images) // n_texts
    common = _normalise_rows(rng.standard_normal((1, dim), dtype=np.float32))[0]
    txt = np.empty((n_texts, dim), dtype=np.float32)
    scale = noise / np.sqrt(dim)
    for rows in iter_blocks(n_texts, block_rows(dim, budget_bytes=budget_bytes)):
        block_rng = np.random.default_rng([seed, rows.start])
        n = rows.stop - rows.start
        block = block_rng.standard_normal((n, dim), dtype=np.float32) * np.float32(scale)
        block += img[txt_to_img[rows]]
        hub = block_rng.exponential(hub_strength, size=(n, 1)).astype(np.float32)
        block += hub * common
        txt[rows] = _normalise_rows(block)
    return img, txt, txt_to_img


def retrieval_set(
    n_images: int, captions_per_image: int, dim: int, *, seed: int = 0, name: str = "synthetic", **kwargs
) -> RetrievalSet:
    """A :class:`RetrievalSet` with embeddings and their cosine scores."""
    img, txt, t2i = embeddings(n_images, n_images * captions_per_image, dim, seed=seed, **kwargs)
    return RetrievalSet(
        relevance=Relevance(t2i, n_images),
        scores=img @ txt.T,
        image_embeddings=img,
        text_embeddings=txt,
        name=name,
    )
