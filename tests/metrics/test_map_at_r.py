import numpy as np
import pytest

from pillar_rerank.metrics.map_at_r import map_at_r, map_at_r_and_r_precision, r_precision
from pillar_rerank.metrics.qrels import Qrels

pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec-eval-terrier (dev extra) not installed")


def _random_positive_sets(rng, n_q, n_g, max_pos=6, empty_every=5):
    out = []
    for q in range(n_q):
        empty = empty_every and q % empty_every == 0
        size = rng.integers(1, max_pos + 1)
        out.append([] if empty else sorted(rng.choice(n_g, size, replace=False).tolist()))
    return out


def test_map_at_r_and_r_precision_match_the_loop_with_ties(rng, oracle):
    scores = np.round(rng.random((30, 40)), 1)
    lists = _random_positive_sets(rng, 30, 40)
    qrels = Qrels.from_lists(lists, 40)
    got_map, got_rp = map_at_r_and_r_precision(scores, qrels, budget_bytes=1000)
    for q, pos in enumerate(lists):
        if not pos:
            assert np.isnan(got_map[q]) and np.isnan(got_rp[q])
            continue
        assert got_map[q] == pytest.approx(oracle.ap_at_r(scores[q], pos))
        assert got_rp[q] == pytest.approx(oracle.r_prec(scores[q], pos))
    assert np.array_equal(map_at_r(scores, qrels), got_map, equal_nan=True)
    assert np.array_equal(r_precision(scores, qrels), got_rp, equal_nan=True)


def test_map_at_r_and_r_precision_match_pytrec_eval(rng):
    scores = rng.random((25, 60))
    lists = _random_positive_sets(rng, 25, 60, max_pos=8, empty_every=None)
    qrels = Qrels.from_lists(lists, 60)
    got_map, got_rp = map_at_r_and_r_precision(scores, qrels)
    qrel = {f"q{q}": {f"d{g}": 1 for g in pos} for q, pos in enumerate(lists)}
    full = {f"q{q}": {f"d{g}": float(s) for g, s in enumerate(row)} for q, row in enumerate(scores)}
    # AP of the ranking cut at R (trec_eval's map on a run truncated to R items) is mAP@R
    cut = {q: dict(sorted(run.items(), key=lambda kv: -kv[1])[:len(qrel[q])]) for q, run in full.items()}
    rprec = pytrec_eval.RelevanceEvaluator(qrel, {"Rprec"}).evaluate(full)
    ap = pytrec_eval.RelevanceEvaluator(qrel, {"map"}).evaluate(cut)
    for q in range(25):
        assert got_rp[q] == pytest.approx(rprec[f"q{q}"]["Rprec"])
        assert got_map[q] == pytest.approx(ap[f"q{q}"]["map"])


def test_graded_qrels_use_the_positive_gains_only(rng, oracle):
    scores = rng.random((4, 10))
    qrels = Qrels.from_lists([[1, 2, 3], [0], [4, 5], [6]], 10,
                             gains=[[1.0, 0.0, 2.0], [3.0], [0.0, 0.0], [1.0]])
    got = map_at_r(scores, qrels)
    assert got[0] == pytest.approx(oracle.ap_at_r(scores[0], [1, 3]))
    assert np.isnan(got[2])


def test_shape_mismatch_names_both_shapes(rng):
    qrels = Qrels.from_lists([[0], [1]], 5)
    with pytest.raises(ValueError, match="expects 3 queries x 5 gallery items; got judgements for 2"):
        map_at_r(rng.random((3, 5)), qrels)
