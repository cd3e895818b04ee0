import numpy as np
import pytest

from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError
from pillar_rerank.metrics import (
    DEFAULT_METRICS,
    Qrels,
    evaluate,
    map_at_r,
    ndcg_at_k,
    parse_metric,
    recall_metrics,
    supported_metrics,
)


@pytest.mark.parametrize("name, key", [
    ("i2t_R@5", "i2t_R@5"), ("T2I_r@10", "t2i_R@10"), ("t2i_mAP@R", "t2i_mAP@R"),
    ("i2t_map@r", "i2t_mAP@R"), ("i2t_RP", "i2t_R-P"), ("i2t_NDCG@10", "i2t_NDCG@10"),
    ("rsum", "RSUM"), ("t2i_medr", "t2i_medr"),
])
def test_names_are_parsed_in_one_place(name, key):
    assert parse_metric(name).key == key


@pytest.mark.parametrize("name", ["i2t_P@5", "R@5", "i2t_RSUM", "i2t_R@0", "x2y_R@1", 5])
def test_unknown_names_list_the_supported_ones(name):
    with pytest.raises(InvalidParameterError, match="supported: i2t_R@K, t2i_R@K.*RSUM"):
        parse_metric(name)
    assert "t2i_NDCG@K" in supported_metrics()


def test_defaults_equal_recall_metrics_for_matrix_and_retrieval_set(set_factory):
    data = set_factory(15, min_caps=1, max_caps=4)
    want = recall_metrics(data.scores, data.relevance)
    assert evaluate(data.scores, data.relevance) == pytest.approx(want)
    assert evaluate(data.scores, data.txt_to_img) == pytest.approx(want)
    assert list(evaluate(data)) == list(DEFAULT_METRICS)
    from_embeddings = type(data)(relevance=data.relevance, image_embeddings=data.image_embeddings,
                                 text_embeddings=data.text_embeddings)
    assert evaluate(from_embeddings) == pytest.approx(want)


def test_t2i_scores_rank_the_text_direction(set_factory):
    data = set_factory(10)
    two = data.with_scores(data.scores, t2i_scores=-data.scores)
    got = evaluate(two, metrics=["i2t_R@1", "t2i_R@1"])
    assert got["i2t_R@1"] == evaluate(data)["i2t_R@1"]
    assert got["t2i_R@1"] == evaluate(-data.scores, data.relevance)["t2i_R@1"]


def test_extended_metrics_use_given_sets_else_the_map(rng, set_factory):
    data = set_factory(10, min_caps=2, max_caps=2)
    pos_i2t = Qrels.from_lists([rng.choice(data.n_texts, 3, replace=False) for _ in range(10)], data.n_texts)
    graded_t2i = Qrels.from_lists([[j % 10, (j + 1) % 10] for j in range(data.n_texts)], 10,
                                  gains=[[2.0, 1.0]] * data.n_texts)
    got = evaluate(data, positives={"i2t": pos_i2t}, graded={"t2i": graded_t2i})
    assert got["i2t_mAP@R"] == pytest.approx(100 * np.nanmean(map_at_r(data.scores, pos_i2t)))
    default_t2i = Qrels.from_relevance(data.relevance, "t2i")
    assert got["t2i_mAP@R"] == pytest.approx(100 * np.nanmean(map_at_r(data.scores.T, default_t2i)))
    assert got["t2i_mAP@R"] == pytest.approx(got["t2i_R@1"])  # one positive: mAP@R = R@1
    assert got["t2i_NDCG@10"] == pytest.approx(100 * np.mean(ndcg_at_k(data.scores.T, graded_t2i, 10)))
    assert "i2t_NDCG@10" in got and "RSUM" in got


def test_per_query_values(set_factory):
    data = set_factory(12)
    pq = evaluate(data, metrics=["i2t_R@1", "t2i_meanr"], per_query=True)
    assert pq["i2t_R@1"].shape == (12,) and set(np.unique(pq["i2t_R@1"])) <= {0.0, 100.0}
    assert pq["t2i_meanr"].mean() == pytest.approx(evaluate(data)["t2i_meanr"])
    with pytest.raises(InvalidParameterError, match="RSUM has no per-query value"):
        evaluate(data, metrics=["RSUM"], per_query=True)
    assert "RSUM" not in evaluate(data, per_query=True)


def test_input_errors(rng, set_factory):
    data = set_factory(6)
    assert "t2i_R@1" in evaluate(data, metrics=["t2i_R@1"])
    with pytest.raises(InvalidInputError, match="needs its ground truth"):
        evaluate(data.scores)
    with pytest.raises(InvalidInputError, match="expected shape"):
        evaluate(data.scores[:, :-1], data.relevance, metrics=["t2i_R@1"])
    bad = data.scores.copy()
    bad[1, 2] = np.nan
    with pytest.raises(InvalidInputError, match="NaN/inf \\(first at \\(1, 2\\)\\)"):
        evaluate(bad, data.relevance, metrics=["t2i_R@1"])
    with pytest.raises(InvalidParameterError, match="K must be in \\[1, n_gallery=6\\]"):
        evaluate(data, metrics=["t2i_R@7"])
    with pytest.raises(InvalidInputError, match="expects 6 queries"):
        evaluate(data, metrics=["i2t_mAP@R"], positives={"i2t": Qrels.from_lists([[0]] * 5, data.n_texts)})
    with pytest.raises(InvalidParameterError, match="unknown direction"):
        evaluate(data, positives={"both": None})
    with pytest.raises(InvalidParameterError, match="at least one metric"):
        evaluate(data, metrics=[])
