"""Element-wise normalisations (``pillar_rerank.score_transform``) and the sets that carry them."""

import numpy as np
import pytest
import torch

from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.score_transform import GalleryTransform, Normalization


def _set(n_images=6, cpi=2, d=4, seed=0) -> RetrievalSet:
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n_images, d)).astype(np.float32)
    txt = rng.standard_normal((n_images * cpi, d)).astype(np.float32)
    return RetrievalSet(Relevance.from_captions_per_image(n_images, cpi), image_embeddings=img,
                        text_embeddings=txt, name="s")


def _dsl(stat, axis, scale=1.0):
    return GalleryTransform("dual_softmax", axis, stat, temperature=0.5, n_queries=7, scale=scale)


def test_the_two_kinds_follow_their_formulas():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((5, 8)).astype(np.float32)
    stat = rng.standard_normal(8)
    ids = torch.arange(8)[None, :]
    bias = GalleryTransform("bias", 1, stat, scale=2.0).apply_(torch.from_numpy(s.copy()), ids)
    np.testing.assert_allclose(bias.numpy(), (s - stat) / 2.0, rtol=1e-6, atol=1e-6)
    dsl = _dsl(stat, 1).apply_(torch.from_numpy(s.copy()), ids)
    np.testing.assert_allclose(dsl.numpy(), s * 7 * np.exp(s / 0.5 - stat), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["bias", "dual_softmax"])
def test_blocks_pairs_and_tiles_agree(kind, monkeypatch):
    """The same entries through a 3-D block, flat pairs and a 2-D tile (chunked) give one value."""
    import pillar_rerank.score_transform as st

    monkeypatch.setattr(st, "_CHUNK_BYTES", 64)  # several chunks per call
    rng = np.random.default_rng(2)
    s = rng.standard_normal((6, 10)).astype(np.float32)
    stat = rng.standard_normal(6)                 # gallery on axis 0 (images, text -> image)
    t = GalleryTransform(kind, 0, stat, temperature=0.5, n_queries=10)
    tile = t.apply_block(s.copy(), slice(0, 6), slice(0, 10))
    rows = torch.tensor([[0, 3], [5, 1]])
    block = t.apply_(torch.from_numpy(s[rows.numpy()].copy()), rows[:, :, None])
    np.testing.assert_array_equal(block.numpy(), tile[rows.numpy()])
    r, c = np.array([4, 0, 2]), np.array([9, 1, 5])
    pairs = t.apply_(torch.from_numpy(s[r, c].copy()), torch.from_numpy(r))
    np.testing.assert_array_equal(pairs.numpy(), tile[r, c])


def test_bad_transforms_are_refused():
    with pytest.raises(InvalidInputError, match="kind must be one of"):
        GalleryTransform("softmax", 1, np.zeros(3))
    with pytest.raises(InvalidInputError, match="axis must be 0 or 1"):
        GalleryTransform("bias", 2, np.zeros(3))
    with pytest.raises(InvalidInputError, match="finite 1-D"):
        GalleryTransform("bias", 1, np.array([0.0, np.nan]))
    with pytest.raises(InvalidInputError, match="positive"):
        GalleryTransform("bias", 1, np.zeros(3), scale=0.0)
    with pytest.raises(InvalidInputError, match="i2t needs gallery axis 1"):
        Normalization("x", GalleryTransform("bias", 0, np.zeros(3)), GalleryTransform("bias", 0, np.zeros(3)))


def test_a_set_serves_its_normalised_matrices_and_guards_them():
    data = _set()
    raw = data.similarity()
    i2t = GalleryTransform("bias", 1, np.linspace(0, 1, data.n_texts), scale=3.0)
    t2i = _dsl(np.full(data.n_images, 2.0), 0)
    norm = Normalization("test", i2t, t2i)
    normed = RetrievalSet(data.relevance, image_embeddings=data.image_embeddings,
                          text_embeddings=data.text_embeddings, normalization=norm, name="n")
    np.testing.assert_allclose(normed.similarity(), (raw - i2t.stat[None, :]) / 3.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(normed.t2i_similarity(), raw * 7 * np.exp(raw / 0.5 - 2.0), rtol=1e-5)
    assert "normalization='test'" in repr(normed)
    # replaced scores are the new truth: the normalisation is dropped with them
    assert normed.with_scores(raw).normalization is None
    assert normed.with_results(raw).normalization is None
    with pytest.raises(InvalidInputError, match="cannot be subset"):
        normed.subset_images(np.arange(2))
    with pytest.raises(InvalidInputError, match="applies to the embedding product"):
        RetrievalSet(data.relevance, scores=raw, normalization=norm)
    small = Normalization("small", GalleryTransform("bias", 1, np.zeros(3)),
                          GalleryTransform("bias", 0, np.zeros(2)))
    with pytest.raises(InvalidInputError, match="computed for 2 images x 3 texts; the set has 6 x 12"):
        RetrievalSet(data.relevance, image_embeddings=data.image_embeddings,
                     text_embeddings=data.text_embeddings, normalization=small)


def test_digests_tell_transforms_apart():
    a = GalleryTransform("bias", 1, np.zeros(3))
    assert a.digest() == GalleryTransform("bias", 1, np.zeros(3)).digest()
    assert a.digest() != a.rescaled(2.0).digest()
    assert a.digest() != GalleryTransform("bias", 1, np.ones(3)).digest()
