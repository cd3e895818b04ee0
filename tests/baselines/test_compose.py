"""Composition of a training-free normaliser with LeaPRR: banks and per-direction parameters."""

import numpy as np
import pytest
import torch

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

    embedded = _side(20, 3, "big side")
    data = embedded.with_scores(embedded.similarity())  # a score matrix: the dense route
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 3 * 4 * data.n_images * data.n_texts - 1)
    with pytest.raises(InvalidInputError, match=r"normalize='dsl' on big side \(20 x 40\) needs about .* "
                                                r"this machine has .*train on fewer items"):
        normalize_side(data, "dsl", {"temperature": 0.05}, None)
    # given as embeddings, the side is normalised streamed: nothing of that size is allocated
    streamed = normalize_side(embedded, "dsl", {"temperature": 0.05}, None)
    assert streamed.normalization is not None and streamed.scores is None
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 3 * 4 * data.n_images * data.n_texts)
    assert normalize_side(data, "dsl", {"temperature": 0.05}, None).t2i_scores is not None


def test_composition_with_dsl_works_on_the_cosine_scale():
    train, dev, test = _side(40, 0, "train"), _side(20, 1, "dev"), _side(30, 2, "test")
    cfg = TINY.replace(normalize="dsl", normalize_params={"temperature": 0.05})
    model = PillarReranker(cfg).fit(train, dev, verbose=False)
    normalised = model._normalized(test, model.config_)
    assert max(np.abs(normalised.similarity()).max(), np.abs(normalised.t2i_similarity()).max()) <= 1.0
    out = model.rerank(test)
    assert out.shape == (30, 60) and np.abs(out).max() <= 1.0


STREAMED = {"nnn": {"k": 3, "alpha": 0.75}, "inverted_softmax": {"beta": 10.0}, "csls": {"k": 3},
            "dn": {}, "sinkhorn": {"tau": 0.05}, "dbsn": {"tau": 0.05}, "dsl": {"temperature": 0.05},
            "dbnorm": {"beta1": 5.0, "beta2": 3.0}}


@pytest.mark.parametrize("name", sorted(STREAMED))
def test_embedding_sides_are_normalised_streamed_as_the_dense_route_does(name):
    """Same normalised values (float32 rounding), same neighbour lists, same pillar features.

    DSL's exponent ``s / T - lse`` loses a few ulps of ``s / T`` (here up to 200) on either route:
    its values agree to 1e-4 relative."""
    from pillar_rerank.baselines.compose import bank_source
    from pillar_rerank.lists.builder import ListBuilder

    data, bank = _side(40, 3, "side"), bank_source(_side(30, 4, "bank"))
    streamed = normalize_side(data, name, STREAMED[name], bank)
    assert streamed.normalization is not None and streamed.scores is None
    dense = normalize_side(data.with_scores(data.similarity()), name, STREAMED[name], bank)
    assert dense.normalization is None
    rtol = 1e-4 if name == "dsl" else 1e-5
    for got, want in ((streamed.similarity(), dense.scores), (streamed.t2i_similarity(), dense.t2i_scores)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6)
    builders = [ListBuilder.from_data(s, TINY) for s in (streamed, dense)]
    for d in ("i2t", "t2i"):
        a, b = (getattr(lb.neighbors, d) for lb in builders)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.values, b.values, rtol=rtol, atol=1e-6)
    ids = torch.arange(20)
    for lists in ("image_lists", "text_lists"):
        a, b = (getattr(lb, lists)(ids) for lb in builders)
        np.testing.assert_array_equal(a.candidates.numpy(), b.candidates.numpy())
        np.testing.assert_allclose(a.features.numpy(), b.features.numpy(), rtol=rtol, atol=1e-6)


def test_normalisers_without_an_elementwise_form_take_the_dense_route():
    from pillar_rerank.baselines.compose import bank_source

    data = _side(20, 3, "side")
    for name, params in (("qb_norm", {"k": 1}), ("dbnorm", {"dynamic": True})):
        out = normalize_side(data, name, params, bank_source(_side(15, 4, "bank")))
        assert out.normalization is None and out.scores is not None and out.t2i_scores is not None


def test_cached_lists_of_a_streamed_side_are_keyed_by_its_normalisation():
    from pillar_rerank.lists.fingerprint import data_digest

    data = _side(20, 3, "side")
    a = normalize_side(data, "dsl", {"temperature": 0.05}, None)
    b = normalize_side(data, "dsl", {"temperature": 0.1}, None)
    assert len({data_digest(data), data_digest(a), data_digest(b)}) == 3
    assert data_digest(a) == data_digest(normalize_side(data, "dsl", {"temperature": 0.05}, None))


def test_a_model_trained_on_streamed_sides_matches_one_trained_on_dense_ones():
    """DSL -> LeaPRR: embedding sides (streamed) and the same sides with their score matrix given
    (dense route) train to the same model, up to float32 rounding of the inputs."""
    train, dev, test = _side(40, 0, "train"), _side(20, 1, "dev"), _side(30, 2, "test")
    cfg = TINY.replace(normalize="dsl", normalize_params={"temperature": 0.05})
    dense_side = [s.with_scores(s.similarity()) for s in (train, dev, test)]
    models = [PillarReranker(cfg).fit(tr, dv, verbose=False) for tr, dv in ((train, dev), dense_side[:2])]
    outs = [m.rerank(t) for m, t in zip(models, (test, dense_side[2]))]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-3)
    assert models[0].history_["best_rsum"] == pytest.approx(models[1].history_["best_rsum"], abs=0.5)
