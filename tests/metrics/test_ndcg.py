import numpy as np
import pytest

from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.metrics.ndcg import ndcg_at_k
from pillar_rerank.metrics.qrels import Qrels

pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec-eval-terrier (dev extra) not installed")


def _graded(rng, n_q, n_g):
    lists, gains = [], []
    for _ in range(n_q):
        items = rng.choice(n_g, rng.integers(1, 12), replace=False)
        lists.append(items.tolist())
        gains.append(rng.integers(0, 6, size=items.shape[0]).astype(float).tolist())
    return lists, gains


@pytest.mark.parametrize("k", [1, 5, 10])
def test_ndcg_matches_pytrec_eval(rng, k):
    scores = rng.random((30, 50))
    lists, gains = _graded(rng, 30, 50)
    got = ndcg_at_k(scores, Qrels.from_lists(lists, 50, gains=gains), k)
    qrel = {f"q{q}": {f"d{g}": int(v) for g, v in zip(items, gs)}
            for q, (items, gs) in enumerate(zip(lists, gains))}
    run = {f"q{q}": {f"d{g}": float(s) for g, s in enumerate(row)} for q, row in enumerate(scores)}
    res = pytrec_eval.RelevanceEvaluator(qrel, {f"ndcg_cut.{k}"}).evaluate(run)
    for q in range(30):
        if max(gains[q]) == 0:
            assert np.isnan(got[q])  # trec_eval scores these 0; we leave them out of the mean
        else:
            assert got[q] == pytest.approx(res[f"q{q}"][f"ndcg_cut_{k}"])


def test_ndcg_matches_the_loop_with_ties_and_real_valued_gains(rng, oracle):
    scores = np.round(rng.random((20, 15)), 1)
    lists, gains = _graded(rng, 20, 15)
    gains = [[g + 0.37 for g in gs] for gs in gains]
    got = ndcg_at_k(scores, Qrels.from_lists(lists, 15, gains=gains), 5, budget_bytes=300)
    for q in range(20):
        assert got[q] == pytest.approx(oracle.ndcg(scores[q], dict(zip(lists[q], gains[q])), 5))


def test_exponential_gain_and_perfect_ranking():
    scores = np.array([[0.9, 0.8, 0.1, 0.0]])
    qrels = Qrels.from_lists([[0, 1, 3]], 4, gains=[[3.0, 1.0, 2.0]])
    lin = ndcg_at_k(scores, qrels, 3)[0]
    exp = ndcg_at_k(scores, qrels, 3, gain="exponential")[0]
    want_lin = (3 + 1 / np.log2(3)) / (3 + 2 / np.log2(3) + 1 / np.log2(4))
    want_exp = (7 + 1 / np.log2(3)) / (7 + 3 / np.log2(3) + 1 / np.log2(4))
    assert lin == pytest.approx(want_lin) and exp == pytest.approx(want_exp)
    assert ndcg_at_k(np.array([[3.0, 1.0, 0.0, 2.0]]), qrels, 4)[0] == pytest.approx(1.0)


def test_bad_k_and_gain_are_rejected(rng):
    qrels = Qrels.from_lists([[0]], 4)
    with pytest.raises(InvalidParameterError, match="'k'.*n_gallery=4"):
        ndcg_at_k(rng.random((1, 4)), qrels, 5)
    with pytest.raises(InvalidParameterError, match="'gain'"):
        ndcg_at_k(rng.random((1, 4)), qrels, 2, gain="log")
