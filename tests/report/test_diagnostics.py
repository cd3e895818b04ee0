import numpy as np
import pytest

from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import Relevance
from pillar_rerank.report.diagnostics import (
    CHANGE_LABELS,
    diagnose,
    diagnostics_payload,
    hubness,
    k_occurrence,
    rank_change,
    skewness,
)


def _naive_k_occurrence(scores, k):
    counts = np.zeros(scores.shape[1], dtype=np.int64)
    for row in scores:
        for g in np.argsort(-row, kind="stable")[:k]:
            counts[g] += 1
    return counts


def test_k_occurrence_matches_a_loop_in_both_orientations(rng):
    scores = rng.standard_normal((37, 53)).astype(np.float32)
    got = k_occurrence(scores, 5, budget_bytes=1024)  # tiny budget: many blocks
    np.testing.assert_array_equal(got, _naive_k_occurrence(scores, 5))
    assert got.sum() == 37 * 5
    np.testing.assert_array_equal(k_occurrence(scores, 4, by_columns=True), _naive_k_occurrence(scores.T, 4))


def test_k_occurrence_rejects_k_beyond_gallery(rng):
    with pytest.raises(InvalidInputError, match="hub_k"):
        k_occurrence(rng.standard_normal((3, 4)), 5)


def test_rank_change_bins_and_counts():
    before = np.array([0, 5, 5, 200, 3, 0, 40])
    after = np.array([0, 0, 9, 10, 3, 2, 0])
    rc = rank_change(before, after)
    # deltas: 0, +5, -4, +190, 0, -2, +40
    expected = dict.fromkeys(CHANGE_LABELS, 0)
    expected.update(
        {"unchanged": 2, "up 4-10": 1, "down 4-10": 1, "up >100": 1, "down 1-3": 1, "up 31-100": 1}
    )
    assert rc["counts"] == list(expected.values())
    assert (rc["improved"], rc["unchanged"], rc["worsened"]) == (3, 2, 2)
    assert (rc["into_top1"], rc["out_of_top1"]) == (2, 1)


def test_skewness_and_hubness_summary():
    assert skewness(np.ones(5)) == 0.0
    x = np.array([0, 0, 0, 0, 10])
    m, s = x.mean(), x.std()
    assert skewness(x) == pytest.approx(np.mean((x - m) ** 3) / s**3)
    h = hubness(np.array([0, 0, 1, 9]), k=2)
    assert h["antihub_fraction"] == 0.5 and h["max"] == 9
    assert h["histogram"][0] == 2 and sum(h["histogram"]) == 4


def test_diagnose_and_payload(rng):
    rel = Relevance(np.repeat(np.arange(6), 3), 6)
    base = rng.standard_normal((6, 18)).astype(np.float32)
    perfect = np.where(np.arange(6)[:, None] == rel.txt_to_img[None, :], 5.0, 0.0).astype(np.float32)
    perfect += 0.01 * base
    results = [
        diagnose(base, rel, name="base", group="base", hub_k=3),
        diagnose(perfect, rel, name="oracle", group="method", hub_k=3),
    ]
    payload = diagnostics_payload(results, dataset="toy")
    oracle = payload["methods"][1]["directions"]
    assert oracle["i2t"]["recall_curve"]["recall"][0] == 100.0
    assert oracle["t2i"]["recall_curve"]["k"] == [1, 2, 3, 5]  # capped at n_gallery = 6 images
    assert "rank_change" not in payload["methods"][0]["directions"]["i2t"]
    assert oracle["i2t"]["rank_change"]["worsened"] == 0
    assert sum(oracle["t2i"]["rank_change"]["counts"]) == 18


def test_payload_errors():
    with pytest.raises(InvalidInputError, match="at least one"):
        diagnostics_payload([], dataset="x")
    rel = Relevance(np.arange(3), 3)
    d = diagnose(np.eye(3, dtype=np.float32), rel, name="a", hub_k=1)
    with pytest.raises(InvalidInputError, match="base method 'base'"):
        diagnostics_payload([d], dataset="x")
    with pytest.raises(InvalidInputError, match="shape"):
        diagnose(np.eye(4, dtype=np.float32), rel, name="bad")
