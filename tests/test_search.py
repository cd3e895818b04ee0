"""RerankingSearcher: equality with the batch path, new-query semantics, save/load, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pillar_rerank.baselines import NNN, apply_both, bank_from_embeddings
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InputFileError, InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.neighbors import topk_search
from pillar_rerank.reranker import PillarReranker
from pillar_rerank.search import RerankingSearcher

K = 10


def _side(n_images: int, cpi: int, seed: int, d: int = 16) -> RetrievalSet:
    r = np.random.default_rng(seed)
    img = r.normal(size=(n_images, d)).astype(np.float32)
    txt = (np.repeat(img, cpi, 0) + 0.9 * r.normal(size=(n_images * cpi, d))).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return RetrievalSet(relevance=Relevance.from_captions_per_image(n_images, cpi), image_embeddings=img,
                        text_embeddings=txt, name=f"side{seed}")


def _config(normalize: str | None) -> LeaPRRConfig:
    return LeaPRRConfig(n_pillars=6, list_len_i2t=6, list_len_t2i=4, graph_neighbors=3, embed_dim=24, depth=1,
                        num_heads=2, epochs=1, batch_size=32, seed=0, device="cpu", precision="fp32",
                        normalize=normalize, normalize_params={"k": 5} if normalize else {})


@pytest.fixture(scope="module")
def data():
    return {"train": _side(60, 3, 1), "test": _side(40, 3, 2)}


@pytest.fixture(scope="module", params=[None, "nnn"])
def fitted(request, data):
    model = PillarReranker(_config(request.param)).fit(data["train"], verbose=False)
    return model, model.rerank(data["test"])


def _sides(test: RetrievalSet, direction: str, full: np.ndarray):
    """(gallery, reference, final score rows of the reference queries) of one direction."""
    if direction == "t2i":
        return test.image_embeddings, test.text_embeddings, full.T
    return test.text_embeddings, test.image_embeddings, full


def assert_same_topk(scores, ids, rows, k=K):
    """The searcher's top-k has the batch path's scores, and its items carry those scores.

    Ids are compared through scores so that two items within float32 rounding of each other (a tie
    up to one ulp) may come in either order.
    """
    want = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    np.testing.assert_allclose(scores, np.take_along_axis(rows, want, 1), atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(rows, ids, 1), scores, atol=1e-5)
    assert (ids == want).mean() > 0.99


# ---------------------------------------------------------------- equality with the batch path
@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_reference_queries_match_the_batch_rerank(fitted, data, direction):
    model, full = fitted
    gallery, reference, rows = _sides(data["test"], direction, full)
    s = RerankingSearcher(model, direction=direction, reference_lists=True).fit(gallery, reference)
    scores, ids = s.search(reference, K, reference_ids=np.arange(reference.shape[0]))
    assert_same_topk(scores, ids, rows)
    # beyond the candidate lists the ranking continues with the base scores, as in the matrix
    scores, ids = s.search(reference, 30, reference_ids=np.arange(reference.shape[0]))
    assert_same_topk(scores, ids, rows, k=30)


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_a_query_is_not_its_own_neighbour_only_with_reference_ids(fitted, data, direction):
    """Without reference_ids the same embeddings are *new* queries: their duplicate in the
    reference set becomes a pillar and no gallery list holds them, so results differ."""
    model, full = fitted
    gallery, reference, rows = _sides(data["test"], direction, full)
    s = RerankingSearcher(model, direction=direction, reference_lists=True).fit(gallery, reference)
    new_scores, _ = s.search(reference, K)
    want = np.sort(rows, axis=1)[:, ::-1][:, :K]
    assert not np.allclose(new_scores, want, atol=1e-5)


def test_new_queries_do_not_depend_on_the_batch(fitted, data):
    model, _ = fitted
    test = data["test"]
    s = RerankingSearcher(model, direction="t2i").fit(test.image_embeddings, data["train"].text_embeddings)
    queries = test.text_embeddings[:17]
    scores, ids = s.search(queries, K)
    for i in (0, 5, 16):
        one_s, one_i = s.search(queries[i:i + 1], K)
        np.testing.assert_array_equal(one_i[0], ids[i])
        np.testing.assert_allclose(one_s[0], scores[i], atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_normaliser_alone_matches_apply_both(data, direction):
    train, test = data["train"], data["test"]
    method = NNN(k=5, alpha=0.75)
    out = apply_both(method, test, bank_from_embeddings(train, test))
    if direction == "t2i":
        gallery, reference, queries, rows = (test.image_embeddings, train.text_embeddings,
                                             test.text_embeddings, out.t2i_scores.T)
    else:
        gallery, reference, queries, rows = (test.text_embeddings, train.image_embeddings,
                                             test.image_embeddings, out.scores)
    s = RerankingSearcher(normalizer=method, direction=direction).fit(gallery, reference)
    scores, ids = s.search(queries, K)
    assert_same_topk(scores, ids, rows)


def test_base_search_is_the_plain_inner_product_search(data):
    test = data["test"]
    s = RerankingSearcher(direction="t2i").fit(test.image_embeddings, test.text_embeddings)
    scores, ids = s.search(test.text_embeddings, 7)
    top = topk_search(test.text_embeddings, test.image_embeddings, 7)
    np.testing.assert_array_equal(ids, top.ids)
    np.testing.assert_allclose(scores, top.values, atol=1e-6)


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_indexes_run_and_mostly_agree(data, index):
    test = data["test"]
    model = PillarReranker(_config(None)).fit(data["train"], verbose=False)
    exact = RerankingSearcher(model).fit(test.image_embeddings, test.text_embeddings)
    params = {"nlist": 1, "nprobe": 1} if index == "ivf" else {}
    approx = RerankingSearcher(model, index=index, index_params=params).fit(
        test.image_embeddings, test.text_embeddings)
    _, a = exact.search(test.text_embeddings[:20], 5)
    _, b = approx.search(test.text_embeddings[:20], 5)
    assert (a == b).mean() > 0.9


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("kind", ["model", "normalizer"])
def test_save_load_round_trip(fitted, data, tmp_path, kind):
    model, _ = fitted
    test = data["test"]
    if kind == "model":
        s = RerankingSearcher(model, direction="i2t", reference_lists=True)
    else:
        s = RerankingSearcher(normalizer="csls", direction="i2t")
    s.fit(test.text_embeddings, test.image_embeddings)
    s.save(tmp_path / "searcher")
    loaded = RerankingSearcher.load(tmp_path / "searcher")
    ref_ids = np.arange(10)
    for kw in ({}, {"reference_ids": ref_ids}):
        a = s.search(test.image_embeddings[:10], K, **kw)
        b = loaded.search(test.image_embeddings[:10], K, **kw)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    with pytest.raises(InputFileError, match="already exists"):
        s.save(tmp_path / "searcher")  # never over an existing directory without overwrite


def test_load_rejects_a_model_dir_and_a_damaged_file(fitted, data, tmp_path):
    model, _ = fitted
    model.save(tmp_path / "model")
    with pytest.raises(CheckpointError, match="RerankingSearcher"):
        RerankingSearcher.load(tmp_path / "model")
    test = data["test"]
    RerankingSearcher(model).fit(test.image_embeddings, test.text_embeddings).save(tmp_path / "s")
    (tmp_path / "s" / "searcher.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        RerankingSearcher.load(tmp_path / "s")


# ---------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def searcher(fitted, data):
    test = data["test"]
    return RerankingSearcher(fitted[0]).fit(test.image_embeddings, test.text_embeddings)


@pytest.mark.parametrize(("queries", "k", "match"), [
    (np.zeros((2, 5), np.float32), 3, "16"),                   # wrong dimension
    (np.zeros((0, 16), np.float32), 3, "empty"),               # empty batch
    (np.full((2, 16), np.nan, np.float32), 3, "NaN|finite"),   # NaN
    (np.zeros((2, 16), np.int64), 3, "float"),                 # wrong dtype
    (np.zeros(16, np.float32), 3, "2-D"),                      # a vector, not a batch
    (np.ones((2, 16), np.float32), 41, "k"),                   # k > gallery
    (np.ones((2, 16), np.float32), 0, "k"),
])
def test_bad_queries_are_refused(searcher, queries, k, match):
    with pytest.raises(InvalidInputError, match=match):
        searcher.search(queries, k)


def test_bad_gallery_and_reference_are_refused(fitted, data):
    model, _ = fitted
    test = data["test"]
    with pytest.raises(InvalidInputError, match="dimension"):
        RerankingSearcher(model).fit(test.image_embeddings, test.text_embeddings[:, :8])
    with pytest.raises(InvalidInputError, match="n_pillars|list length|graph_neighbors"):
        RerankingSearcher(model).fit(test.image_embeddings[:3], test.text_embeddings)
    with pytest.raises(InvalidInputError, match="empty"):
        RerankingSearcher(model).fit(test.image_embeddings[:0], test.text_embeddings)


def test_a_gallery_from_another_backbone_does_not_match_a_normalising_model(data):
    model = PillarReranker(_config("nnn")).fit(data["train"], verbose=False)
    other = np.random.default_rng(5).normal(size=(40, 8)).astype(np.float32)
    with pytest.raises(InvalidInputError, match="does not match the model"):
        RerankingSearcher(model).fit(other, other)


def test_bad_parameters_are_refused(fitted, data):
    model, _ = fitted
    test = data["test"]
    g, r = test.image_embeddings, test.text_embeddings
    with pytest.raises(InvalidParameterError, match="direction"):
        RerankingSearcher(model, direction="x2y").fit(g, r)
    with pytest.raises(InvalidParameterError, match="not fitted"):
        RerankingSearcher(PillarReranker()).fit(g, r)
    with pytest.raises(InvalidParameterError, match="cannot serve live queries"):
        RerankingSearcher(normalizer="sinkhorn").fit(g, r)
    with pytest.raises(InvalidParameterError, match="LeaPRRConfig.normalize"):
        RerankingSearcher(model, normalizer="nnn").fit(g, r)
    with pytest.raises(InvalidParameterError, match="not built"):
        RerankingSearcher(model).search(r, 3)
    s = RerankingSearcher(model).fit(g, r)
    with pytest.raises(InvalidParameterError, match="reference_lists"):
        s.search(r[:2], 3, reference_ids=np.array([0, 1]))
    s = RerankingSearcher(model, reference_lists=True).fit(g, r)
    with pytest.raises(InvalidInputError, match="differs"):
        s.search(r[:2], 3, reference_ids=np.array([1, 0]))
    with pytest.raises(InvalidInputError, match="reference_ids"):
        s.search(r[:2], 3, reference_ids=np.array([0, 999]))


def test_a_normaliser_that_leaves_the_cosine_scale_is_rescaled_as_in_the_batch_path(data):
    """Inverted softmax with a small beta gives |scores| >> 1: the batch path divides both matrices by
    their largest magnitude (``_on_cosine_scale``); the searcher divides by the same constant."""
    cfg = _config(None).replace(normalize="inverted_softmax", normalize_params={"beta": 0.5})
    model = PillarReranker(cfg).fit(data["train"], verbose=False)
    test = data["test"]
    s = RerankingSearcher(model, reference_lists=True).fit(test.image_embeddings, test.text_embeddings)
    assert s.scale_ > 1.0
    scores, ids = s.search(test.text_embeddings, K, reference_ids=np.arange(test.n_texts))
    assert_same_topk(scores, ids, model.rerank(test).T)
