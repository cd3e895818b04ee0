import numpy as np
import pytest

from pillar_rerank.inputs import Relevance
from pillar_rerank.metrics.ranks import best_positive_ranks, i2t_ranks, item_ranks, t2i_ranks


def test_tie_rule_lower_gallery_index_first():
    # query 0: positive 2 ties with items 0 and 4 -> only item 0 (lower index) ranks before it
    # query 1: positive 0 ties with item 3 -> it wins (lower index)
    scores = np.array([[0.5, 0.1, 0.5, 0.9, 0.5],
                       [0.7, 0.2, 0.1, 0.7, 0.8]], dtype=np.float32)
    indptr = np.array([0, 1, 2])
    ranks = best_positive_ranks(scores, indptr, np.array([2, 0]))
    assert ranks.tolist() == [2, 1]
    optimistic = [1, 1]  # the match wins every tie
    pessimistic = [3, 2]  # the match loses every tie
    assert all(o <= r <= p for o, r, p in zip(optimistic, ranks, pessimistic))


def test_tie_between_two_positives_uses_the_lower_index():
    scores = np.array([[0.3, 0.9, 0.9, 0.9]])
    assert best_positive_ranks(scores, np.array([0, 2]), np.array([2, 3])).tolist() == [1]
    assert item_ranks(scores, np.array([0, 2]), np.array([2, 3])).tolist() == [1, 2]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_best_positive_ranks_match_the_loop(rng, oracle, relevance_factory, dtype):
    rel = relevance_factory(15, max_caps=5)
    scores = np.round(rng.random((15, rel.n_texts)), 1).astype(dtype)  # many ties
    got_i2t = i2t_ranks(scores, rel, budget_bytes=2000)  # tiny budget: many blocks
    want_i2t = [oracle.best_rank(scores[i], rel.captions_of(i)) for i in range(15)]
    assert got_i2t.tolist() == want_i2t
    got_t2i = t2i_ranks(scores, rel, budget_bytes=2000)
    want_t2i = [oracle.best_rank(scores[:, j], [rel.txt_to_img[j]]) for j in range(rel.n_texts)]
    assert got_t2i.tolist() == want_t2i


def test_item_ranks_match_the_loop_with_empty_rows_and_small_budget(rng, oracle):
    scores = np.round(rng.random((9, 30)), 1)
    lists = [[], [0, 5, 7], [29], [], list(range(30)), [3, 4], [], [1], [2, 28]]
    indptr = np.concatenate(([0], np.cumsum([len(x) for x in lists])))
    indices = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
    got = item_ranks(scores, indptr, indices, budget_bytes=500)
    want = [list(oracle.ranking(scores[q])).index(g) for q, items in enumerate(lists) for g in items]
    assert got.tolist() == want


def test_ranks_read_memory_maps_without_changing_them(tmp_path, rng):
    scores = rng.random((6, 20)).astype(np.float16)
    np.save(tmp_path / "s.npy", scores)
    mm = np.load(tmp_path / "s.npy", mmap_mode="r")
    rel = Relevance(np.repeat(np.arange(6), [3, 3, 4, 4, 3, 3]), 6)
    assert np.array_equal(i2t_ranks(mm, rel), i2t_ranks(scores, rel))
    assert np.array_equal(t2i_ranks(mm, rel), t2i_ranks(scores, rel))


@pytest.mark.parametrize("cutoff", [1, 3, 30, "per-query"])
def test_item_ranks_with_a_cutoff_are_capped_exact_ranks(rng, cutoff):
    scores = np.round(rng.random((12, 30)), 1)  # ties around the thresholds
    lists = [sorted(rng.choice(30, rng.integers(0, 8), replace=False).tolist()) for _ in range(12)]
    indptr = np.concatenate(([0], np.cumsum([len(x) for x in lists])))
    indices = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
    exact = item_ranks(scores, indptr, indices)
    cut = np.diff(indptr) if cutoff == "per-query" else cutoff
    got = item_ranks(scores, indptr, indices, cutoff=cut, budget_bytes=700)
    per_item = np.repeat(np.broadcast_to(cut, (12,)), np.diff(indptr))
    assert np.array_equal(got, np.minimum(exact, np.maximum(per_item, 1)))
