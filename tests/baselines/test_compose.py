"""Composition of a training-free normaliser with LeaPRR: banks and per-direction parameters."""

import numpy as np
import pytest

from pillar_rerank.baselines import apply_both, get_baseline
from pillar_rerank.baselines.compose import normalize_side, normalizer_pair, on_cosine_scale
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.reranker import PillarReranker

TINY = LeaPRRConfig(n_pillars=4, list_len_i2t=6, list_len_t2i=4, graph_neighbors=3, embed_dim=16,
                    depth=1, num_heads=2, epochs=1, batch_size=32, eval_every=50, intra_rank=None,
                    normalize="nnn", normalize_params={"i2t": {"k": 3, "alpha": 0.5},
                                                       "t2i": {"k": 2, "alpha": 0.25}})


def _side(n_images: int, seed: int, name: str) -> RetrievalSet:
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n_images, 8)).astype(np.float32)
    t2i = np.repeat(np.arange(n_images), 2)
    txt = img[t2i] + 0.3 * rng.standard_normal((2 * n_images, 8)).astype(np.float32)
    return RetrievalSet(relevance=Relevance(t2i, n_images), image_embeddings=img,
                        text_embeddings=txt, name=name)


def test_per_direction_parameters_build_two_methods():
    i2t, t2i = normalizer_pair("nnn", TINY.normalize_params)
    assert (i2t.k, i2t.alpha, t2i.k, t2i.alpha) == (3, 0.5, 2, 0.25)
    shared, none = normalizer_pair("nnn", {"k": 3})
    assert shared.k == 3 and none is None


def test_each_side_is_normalised_with_a_bank_of_other_queries(monkeypatch):
    train, dev = _side(30, 0, "train"), _side(20, 1, "dev")
    seen = {}
    original = PillarReranker._normalized

    def spy(self, data, cfg, bank_source=None):
        bank = bank_source if bank_source is not None else self.bank_
        seen[data.name] = bank["images"].numpy().copy()
        return original(self, data, cfg, bank_source)

    monkeypatch.setattr(PillarReranker, "_normalized", spy)
    model = PillarReranker(TINY).fit(train, dev, verbose=False)
    # the training side never uses its own queries as its bank; dev and test use the training side
    np.testing.assert_array_equal(seen["train"], dev.image_embeddings)
    np.testing.assert_array_equal(seen["dev"], train.image_embeddings)
    test = _side(25, 2, "test")
    out = model.rerank(test)
    np.testing.assert_array_equal(seen["test"], train.image_embeddings)
    assert out.shape == (25, 50) and np.isfinite(out).all()


def test_scale_changing_normalisers_are_brought_to_the_cosine_scale():
    data = _side(20, 3, "d")
    dsl = get_baseline("dsl", temperature=0.05)
    raw = apply_both(dsl, data)
    assert np.abs(raw.scores).max() > 5  # DSL multiplies by n_queries * softmax
    scaled = on_cosine_scale(raw)
    largest = max(np.abs(scaled.scores).max(), np.abs(scaled.t2i_scores).max())
    assert np.isclose(largest, 1.0)
    for a, b in ((raw.scores, scaled.scores), (raw.t2i_scores, scaled.t2i_scores)):
        for axis in (0, 1):  # monotone: no order flips (float32 rounding may only create ties)
            order = np.argsort(-a, axis=axis)
            assert (np.diff(np.take_along_axis(b, order, axis=axis), axis=axis) <= 0).all()
    within = data.with_scores(np.clip(data.similarity(), -1, 1) * 0.5)
    assert on_cosine_scale(within) is within


def test_in_place_rescaling_never_touches_the_callers_arrays():
    data = _side(20, 3, "d")
    raw = apply_both(get_baseline("dsl", temperature=0.05), data)
    kept = raw.scores.copy()
    protected = on_cosine_scale(raw, in_place=True, protected=(raw.scores,))
    np.testing.assert_array_equal(raw.scores, kept)  # protected: copied, not divided in place
    assert np.abs(protected.scores).max() <= 1.0
    fresh = on_cosine_scale(raw, in_place=True)
    assert fresh.t2i_scores is raw.t2i_scores and np.abs(raw.t2i_scores).max() <= 1.0  # no second copy


def test_a_normaliser_that_cannot_fit_in_memory_is_refused_before_it_starts(monkeypatch):
    import pillar_rerank.utils.memory as memory

    data = _side(20, 3, "big side")
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 3 * 4 * data.n_images * data.n_texts - 1)
    with pytest.raises(InvalidInputError, match=r"normalize='dsl' on big side \(20 x 40\) needs about .* "
                                                r"this machine has .*train on fewer items"):
        normalize_side(data, "dsl", {"temperature": 0.05}, None)
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 3 * 4 * data.n_images * data.n_texts)
    assert normalize_side(data, "dsl", {"temperature": 0.05}, None).t2i_scores is not None


def test_composition_with_dsl_works_on_the_cosine_scale():
    train, dev, test = _side(40, 0, "train"), _side(20, 1, "dev"), _side(30, 2, "test")
    cfg = TINY.replace(normalize="dsl", normalize_params={"temperature": 0.05})
    model = PillarReranker(cfg).fit(train, dev, verbose=False)
    normalised = model._normalized(test, model.config_)
    assert max(np.abs(normalised.scores).max(), np.abs(normalised.t2i_scores).max()) <= 1.0
    out = model.rerank(test)
    assert out.shape == (30, 60) and np.abs(out).max() <= 1.0
