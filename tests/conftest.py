"""Shared fixtures: a seeded generator, small synthetic retrieval sets, the shared-data path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pillar_rerank.inputs import Relevance, RetrievalSet

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path | None:
    """The caption_xenc folder, or None: $PILLAR_RERANK_SHARED_DATA, ../shared/data beside the repo or cwd."""
    env = os.environ.get("PILLAR_RERANK_SHARED_DATA")
    rel = Path("..") / "shared" / "data" / "caption_xenc"
    for c in ([Path(env)] if env else []) + [REPO_ROOT / rel, Path.cwd() / rel]:
        if (c / "proxy_coco5k_test_img.npy").is_file():
            return c.resolve()
    return None


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_relevance(rng: np.random.Generator, n_images: int, *, min_caps: int = 1, max_caps: int = 4,
                   shuffle: bool = True) -> Relevance:
    """Random caption -> image map with a varying number of captions per image (shuffled order)."""
    counts = rng.integers(min_caps, max_caps + 1, size=n_images)
    t2i = np.repeat(np.arange(n_images), counts)
    if shuffle:
        t2i = rng.permutation(t2i)
    return Relevance(t2i, n_images)


def make_set(rng: np.random.Generator, n_images: int = 12, *, min_caps: int = 1, max_caps: int = 4,
             d: int = 8, with_scores: bool = True, shuffle: bool = True, dtype=np.float32) -> RetrievalSet:
    """Synthetic retrieval set: embeddings with some signal, scores = their product."""
    rel = make_relevance(rng, n_images, min_caps=min_caps, max_caps=max_caps, shuffle=shuffle)
    img = rng.standard_normal((n_images, d)).astype(dtype)
    txt = (img[rel.txt_to_img] + 1.5 * rng.standard_normal((rel.n_texts, d))).astype(dtype)
    scores = (img.astype(np.float32) @ txt.astype(np.float32).T).astype(dtype) if with_scores else None
    return RetrievalSet(relevance=rel, scores=scores, image_embeddings=img, text_embeddings=txt,
                        name="synthetic")


@pytest.fixture
def set_factory(rng):
    """Build synthetic retrieval sets: ``set_factory(n_images, min_caps=, max_caps=, ...)``."""
    return lambda n_images=12, **kw: make_set(rng, n_images, **kw)


@pytest.fixture
def relevance_factory(rng):
    return lambda n_images=12, **kw: make_relevance(rng, n_images, **kw)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data/caption_xenc; skips the test with the reason when it is absent."""
    path = find_shared_data()
    if path is None:
        pytest.skip("shared data ../shared/data/caption_xenc not found (set PILLAR_RERANK_SHARED_DATA)")
    return path
