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


@pytest.mark.parametrize("budget", [2**26, 4 * 2 * 256 * 400, 4 * 2 * 64 * 400])
def test_joint_search_equals_two_searches(tied, budget):
    from pillar_rerank.neighbors._joint import joint_topk_search

    a, b = tied[0], tied[1][:400]
    a, b = a[:250], b  # 250 x 400: the 250 side is the column side
    got = joint_topk_search(a, b, 30, 64, budget_bytes=budget)
    if budget == 4 * 2 * 64 * 400:  # tiles of fewer rows than k: the caller searches apart
        assert got is None
        return
    s = a @ b.T
    for top, scores, k in ((got[0], s, 30), (got[1], s.T, 64)):
        want_v, want_i = rule_topk(scores, k)
        np.testing.assert_array_equal(top.ids, want_i)
        np.testing.assert_array_equal(top.values, want_v)
    swapped = joint_topk_search(b, a, 64, 30, budget_bytes=budget)
    np.testing.assert_array_equal(swapped[0].ids, got[1].ids)
    np.testing.assert_array_equal(swapped[1].ids, got[0].ids)


def test_joint_search_dense_fallback_when_scores_rise_with_the_row(monkeypatch):
    from pillar_rerank.neighbors import _joint

    # every later row beats every earlier one: all entries of each tile are candidates
    a = np.arange(1, 601, dtype=np.float32)[:, None] * np.ones((1, 4), dtype=np.float32)
    b = np.random.default_rng(1).random((50, 4), dtype=np.float32) + 1
    calls = []
    real = _joint._dense_column_topk
    monkeypatch.setattr(_joint, "_dense_column_topk", lambda *x: calls.append(1) or real(*x))
    got = _joint.joint_topk_search(a, b, 5, 7, budget_bytes=4 * 2 * 300 * 50)
    assert len(calls) == 2  # first tile + the overflowing second tile
    s = a @ b.T
    np.testing.assert_array_equal(got[0].ids, rule_topk(s, 5)[1])
    np.testing.assert_array_equal(got[1].ids, rule_topk(s.T, 7)[1])


def test_neighbor_lists_from_embeddings_use_one_product(monkeypatch, tied):
    from pillar_rerank.neighbors import _joint

    calls = []
    real = _joint.joint_topk_search
    monkeypatch.setattr("pillar_rerank.neighbors._lists.joint_topk_search",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    img, txt = tied[0][:100], tied[1][:300]
    data = RetrievalSet(relevance=Relevance(np.repeat(np.arange(100), 3), 100),
                        image_embeddings=img, text_embeddings=txt)
    lists = build_neighbor_lists(data, 16, device="cpu")
    assert calls == [1]
    s = img @ txt.T
    np.testing.assert_array_equal(lists.i2t.ids, rule_topk(s, 16)[1])
    np.testing.assert_array_equal(lists.t2i.ids, rule_topk(s.T, 16)[1])


@pytest.mark.parametrize("budget", [2**26, 4 * 256 * 90 * 2])  # whole rows / gallery blocks merged
@pytest.mark.parametrize("transposed", [False, True])
def test_a_transformed_search_ranks_the_transformed_scores(tied, budget, transposed):
    """PairScores with a gallery transform: the search sees every tile through it (ties by rule)."""
    from pillar_rerank.exceptions import InvalidParameterError
    from pillar_rerank.neighbors import PairScores
    from pillar_rerank.score_transform import GalleryTransform

    left, right = tied
    stat = np.arange(right.shape[0]) % 3 / 2.0  # gallery on axis 1: right items (exact in float32)
    transform = GalleryTransform("bias", 1, stat)
    pairs = PairScores(left=left, right=right, transform=transform)
    pairs = pairs.T if transposed else pairs
    dense = left @ right.T - stat[None, :].astype(np.float32)
    want_v, want_i = rule_topk(dense.T if transposed else dense, 9)
    got = pairs.topk(9, budget_bytes=budget)
    np.testing.assert_array_equal(got.ids, want_i)
    np.testing.assert_array_equal(got.values, want_v)
    rows, cols = torch.tensor([[0, 5]]), torch.tensor([[3, 1, 2]])
    want = (dense.T if transposed else dense)[rows.numpy()[:, :, None], cols.numpy()[:, None, :]]
    np.testing.assert_array_equal(pairs.block(rows, cols).numpy(), want)
    exact = pairs.topk(9, index="ivf")  # like a normalised matrix's top-k: always exact
    np.testing.assert_array_equal(exact.ids, want_i)
    with pytest.raises(InvalidParameterError, match="needs the exact torch search"):
        topk_search(left, right, 9, backend="faiss", tile_transform=lambda *a: None)


@pytest.mark.parametrize("budget", [2**26, 4 * 256 * 700 * 2, 4 * 40 * 700 * 2])  # 1, 3 and 18 row blocks
@pytest.mark.parametrize("k", [1, 9, 40])
def test_symmetric_search_scores_half_the_product_and_follows_the_rule(tied, budget, k):
    from pillar_rerank.neighbors._joint import symmetric_topk_search

    x = tied[1]
    want_v, want_i = rule_topk(x @ x.T, k)
    got = symmetric_topk_search(x, k, budget_bytes=budget)
    np.testing.assert_array_equal(got.ids, want_i)
    np.testing.assert_array_equal(got.values, want_v)


def test_symmetric_search_dense_merge_and_refusal(tied, monkeypatch):
    import pillar_rerank.neighbors._joint as joint

    x = tied[1]
    want_v, want_i = rule_topk(x @ x.T, 9)
    monkeypatch.setattr(joint, "_CANDIDATE_BYTES", 2**40)  # every later block merges densely
    got = joint.symmetric_topk_search(x, 9, budget_bytes=4 * 40 * 700 * 2)
    np.testing.assert_array_equal(got.ids, want_i)
    assert joint.symmetric_topk_search(x, 9, budget_bytes=4 * 8 * 700 * 2) is None  # < k rows per tile


def test_intra_modal_searches_use_the_symmetric_product(tied, monkeypatch):
    import pillar_rerank.neighbors._pairs as pairs_module
    from pillar_rerank.neighbors import PairScores

    calls = []
    real = pairs_module.symmetric_topk_search
    monkeypatch.setattr(pairs_module, "symmetric_topk_search",
                        lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    x = tied[0]
    top = PairScores(left=x, right=x).topk(7)
    assert calls == [x.shape]
    np.testing.assert_array_equal(top.ids, rule_topk(x @ x.T, 7)[1])
    PairScores(left=x, right=x.copy()).topk(7)  # two tables: the plain search
    assert calls == [x.shape]


@pytest.mark.parametrize("search", ["symmetric", "joint"])
def test_buffered_column_merge_takes_every_path_and_keeps_the_rule(monkeypatch, search):
    """Candidates wait in k-slot buffers; overflowing buffers and crowded columns merge at once."""
    import pillar_rerank.neighbors._joint as joint

    x = np.random.default_rng(5).integers(-3, 4, (2000, 8)).astype(np.float32)  # exact, some ties
    if search == "symmetric":  # later rows score higher: some columns get more than k from a tile
        x = x[np.argsort(x.sum(1), kind="stable")]
    calls = {"buffer merges": 0, "direct merges": 0}
    real_merge, real_direct = joint._ColumnCandidates.merge, joint._merge_candidates

    def spy_merge(self, start, stop, **kw):
        calls["buffer merges"] += int(self.fill[start:stop].any())
        return real_merge(self, start, stop, **kw)

    monkeypatch.setattr(joint._ColumnCandidates, "merge", spy_merge)

    def spy_direct(*args):
        calls["direct merges"] += 1
        return real_direct(*args)

    monkeypatch.setattr(joint, "_merge_candidates", spy_direct)
    monkeypatch.setattr(joint, "_CANDIDATE_BYTES", 1)  # no dense fallback in these small tiles
    k, budget = 9, 4 * 40 * 2000 * 2  # 40-row blocks
    if search == "symmetric":
        got = joint.symmetric_topk_search(x, k, budget_bytes=budget)
        want_v, want_i = rule_topk(x @ x.T, k)
    else:
        got = joint.joint_topk_search(x, x[-100:], 5, k, budget_bytes=4 * 2 * 256 * 100)[1]  # 8 tiles
        want_v, want_i = rule_topk(x[-100:] @ x.T, k)
    np.testing.assert_array_equal(got.ids, want_i)
    np.testing.assert_array_equal(got.values, want_v)
    assert calls["buffer merges"] > 0 and calls["direct merges"] > 0, calls
