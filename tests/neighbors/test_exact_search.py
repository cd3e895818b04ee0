"""The torch exact search (default on CPU) keeps the documented order: value desc, lower id first."""

import numpy as np
import pytest
import torch

from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.neighbors import build_neighbor_lists, topk_search
from pillar_rerank.neighbors._topk import _order_rows, _stable_topk


def rule_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The documented rule, spelled out: stable argsort of the negated scores."""
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, 1), ids


@pytest.fixture
def tied():
    """Small-integer embeddings: exact products (no rounding), ties in most rows."""
    rng = np.random.default_rng(3)
    return (rng.integers(-1, 2, (400, 6)).astype(np.float32),
            rng.integers(-1, 2, (700, 6)).astype(np.float32))


@pytest.mark.parametrize("budget", [2**26, 4 * 256 * 90 * 2])  # whole rows / gallery blocks merged
@pytest.mark.parametrize("k", [1, 5, 64, 700])
def test_torch_search_follows_the_tie_rule_exactly(tied, budget, k):
    q, g = tied
    want_v, want_i = rule_topk(q @ g.T, k)
    got = topk_search(q, g, k, device="cpu", budget_bytes=budget)
    np.testing.assert_array_equal(got.ids, want_i)
    np.testing.assert_array_equal(got.values, want_v)


def test_torch_search_matches_the_previous_faiss_path_on_floats():
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((300, 32), dtype=np.float32), rng.standard_normal((2000, 32), dtype=np.float32)
    new = topk_search(q, g, 20, device="cpu")
    old = topk_search(q, g, 20, device="cpu", backend="faiss")
    np.testing.assert_array_equal(new.ids, old.ids)
    np.testing.assert_allclose(new.values, old.values, rtol=1e-5, atol=1e-5)


def test_stable_topk_orders_equal_values_inside_the_list():
    # all rows hold duplicates inside the top-k (not only at the k-th place)
    block = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0, 4.0, 5.0]])
    vals, pos = _stable_topk(block, 4)
    assert pos.tolist() == [[1, 2, 4, 3], [0, 1, 2, 3]]
    assert vals.tolist() == [[3.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]]
    v, p = _order_rows(torch.tensor([[1.0, 2.0, 2.0]]), torch.tensor([[9, 7, 3]]))
    assert p.tolist() == [[3, 7, 9]] and v.tolist() == [[2.0, 2.0, 1.0]]


def test_neighbor_lists_with_ties_follow_the_rule(tied):
    img, txt = tied[0][:100], tied[1][:300]
    data = RetrievalSet(relevance=Relevance(np.repeat(np.arange(100), 3), 100),
                        image_embeddings=img, text_embeddings=txt)
    lists = build_neighbor_lists(data, 16, budget_bytes=4 * 256 * 50)
    s = img @ txt.T
    np.testing.assert_array_equal(lists.i2t.ids, rule_topk(s, 16)[1])
    np.testing.assert_array_equal(lists.t2i.ids, rule_topk(s.T, 16)[1])
