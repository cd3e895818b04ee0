import numpy as np
import pytest

from pillar_rerank.metrics.recall import recall_metrics, rsum

pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec-eval-terrier (dev extra) not installed")


def _trec_success(scores, positives_per_query):
    qrel = {f"q{q}": {f"d{g}": 1 for g in pos} for q, pos in enumerate(positives_per_query)}
    run = {f"q{q}": {f"d{g}": float(s) for g, s in enumerate(row)} for q, row in enumerate(scores)}
    res = pytrec_eval.RelevanceEvaluator(qrel, {"success.1,5,10"}).evaluate(run)
    return {k: 100 * np.mean([res[q][f"success_{k}"] for q in res]) for k in (1, 5, 10)}


def test_recall_matches_pytrec_eval_with_varying_captions(set_factory):
    data = set_factory(40, min_caps=1, max_caps=6, dtype=np.float64)  # continuous scores: no ties
    rel = data.relevance
    got = recall_metrics(data.scores, rel)
    i2t = _trec_success(data.scores, [rel.captions_of(i) for i in range(rel.n_images)])
    t2i = _trec_success(data.scores.T, [[i] for i in rel.txt_to_img])
    for k in (1, 5, 10):
        assert got[f"i2t_R@{k}"] == pytest.approx(i2t[k])
        assert got[f"t2i_R@{k}"] == pytest.approx(t2i[k])
    assert got["RSUM"] == pytest.approx(sum(i2t.values()) + sum(t2i.values()))
    assert rsum(data.scores, rel) == pytest.approx(got["RSUM"])


def test_recall_and_ranks_match_the_loop(set_factory, oracle):
    data = set_factory(25, min_caps=2, max_caps=5)
    rel = data.relevance
    scores = np.round(data.scores, 0)  # coarse: ties everywhere
    got = recall_metrics(scores, rel, ks=(1, 3))
    ranks = np.array([oracle.best_rank(scores[i], rel.captions_of(i)) for i in range(rel.n_images)])
    assert got["i2t_R@3"] == pytest.approx(100 * np.mean(ranks < 3))
    assert got["i2t_medr"] == np.floor(np.median(ranks)) + 1
    assert got["i2t_meanr"] == pytest.approx(ranks.mean() + 1)


def test_t2i_scores_are_used_for_the_text_direction(set_factory):
    data = set_factory(10)
    flipped = -data.scores
    out = recall_metrics(data.scores, data.relevance, t2i_scores=flipped)
    base = recall_metrics(data.scores, data.relevance)
    assert out["i2t_R@1"] == base["i2t_R@1"]
    assert out["t2i_R@1"] == recall_metrics(flipped, data.relevance)["t2i_R@1"]
