"""Approximate indexes of pillar_rerank/neighbors/_ann.py and recall_against_exact (_recall.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.neighbors import build_neighbor_lists, ivf_nlist, recall_against_exact, topk_search

faiss = pytest.importorskip("faiss")


def clustered(rng: np.random.Generator, n: int, d: int = 32, n_clusters: int = 40) -> np.ndarray:
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, n_clusters, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    return clustered(np.random.default_rng(0), 3000)


@pytest.mark.parametrize(("index", "params"), [("ivf", {"nprobe": 8}), ("hnsw", {"M": 32, "ef_search": 128})])
def test_approximate_recall_on_clustered_data(gallery, index, params):
    queries = clustered(np.random.default_rng(1), 300)
    result = recall_against_exact(queries, gallery, 10, index=index, index_params=params)
    assert result.n_queries == 300 and result.per_query.shape == (300,)
    assert result.recall >= 0.9
    assert result.exact_seconds > 0 and result.approx_seconds > 0


def test_flat_recall_is_one_and_sampling(gallery):
    result = recall_against_exact(gallery, gallery, 5, index="flat", n_queries=50, seed=3)
    assert result.recall == 1.0 and result.n_queries == 50


def test_recall_counts_misses():
    # an "index" that searches a shuffled gallery must be scored below 1 by the id comparison
    rng = np.random.default_rng(0)
    g = clustered(rng, 500)
    approx = topk_search(g[:20], g, 10, index="ivf", index_params={"nlist": 12, "nprobe": 1})
    exact = topk_search(g[:20], g, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx.ids, exact.ids)])
    got = recall_against_exact(g[:20], g, 10, index="ivf", index_params={"nlist": 12, "nprobe": 1})
    assert got.recall == pytest.approx(overlap)


def test_ivf_rows_are_full_and_sorted(gallery):
    # nprobe=1 over many small lists leaves some queries short of k: they are searched exactly
    top = topk_search(gallery[:200], gallery, 60, index="ivf", index_params={"nlist": 150, "nprobe": 1})
    assert (top.ids >= 0).all() and np.isfinite(top.values).all()
    assert (np.diff(top.values, axis=1) <= 0).all()
    assert all(len(set(row)) == 60 for row in top.ids)


def test_ivf_is_deterministic_with_a_seed(gallery):
    kw = {"index": "ivf", "index_params": {"nprobe": 4, "seed": 7}}
    a = topk_search(gallery[:100], gallery, 8, **kw)
    b = topk_search(gallery[:100], gallery, 8, **kw)
    np.testing.assert_array_equal(a.ids, b.ids)


def test_index_parameters_are_checked(gallery):
    with pytest.raises(InvalidParameterError, match="'index' parameter of topk_search"):
        topk_search(gallery[:5], gallery, 3, index="lsh")
    with pytest.raises(InvalidParameterError, match=r"unknown key\(s\) 'nprobe' for index='hnsw'"):
        topk_search(gallery[:5], gallery, 3, index="hnsw", index_params={"nprobe": 3})
    with pytest.raises(InvalidParameterError, match="nprobe"):
        topk_search(gallery[:5], gallery, 3, index="ivf", index_params={"nprobe": 0})
    with pytest.raises(InvalidParameterError, match="backend='torch'"):
        topk_search(gallery[:5], gallery, 3, index="ivf", backend="torch")


def test_ivf_nlist_default_and_bounds():
    assert ivf_nlist(145_000) == round(4 * np.sqrt(145_000))
    assert ivf_nlist(1000) == 1000 // 39          # >= 39 training points per list
    assert ivf_nlist(10) == 1
    assert ivf_nlist(100_000, 50) == 50


def test_build_neighbor_lists_with_an_index_matches_exact_mostly():
    rng = np.random.default_rng(2)
    img = clustered(rng, 400)
    txt = np.repeat(img, 3, axis=0) + 0.05 * rng.standard_normal((1200, 32)).astype(np.float32)
    data = RetrievalSet(relevance=Relevance(np.repeat(np.arange(400), 3), 400),
                        image_embeddings=img, text_embeddings=txt)
    exact = build_neighbor_lists(data, 10)
    approx = build_neighbor_lists(data, 10, index="hnsw", index_params={"ef_search": 64})
    for d in ("i2t", "t2i", "i2i", "t2t"):
        e, a = getattr(exact, d).ids, getattr(approx, d).ids
        recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(e, a)])
        assert recall >= 0.9, d
    # the query itself stays at rank 0 of intra-modal lists
    np.testing.assert_array_equal(approx.i2i.ids[:, 0], np.arange(400))
    np.testing.assert_array_equal(approx.t2t.ids[:, 0], np.arange(1200))
