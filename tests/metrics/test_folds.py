import numpy as np
import pytest

from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.inputs import Relevance
from pillar_rerank.metrics import evaluate, fold_image_blocks, recall_metrics


def test_blocks_are_contiguous_disjoint_and_checked():
    blocks = fold_image_blocks(10, n_folds=5)
    assert [b.tolist() for b in blocks[:2]] == [[0, 1], [2, 3]]
    assert [len(b) for b in fold_image_blocks(10, fold_size=5)] == [5, 5]
    with pytest.raises(InvalidParameterError, match="n_images=10 is not 3 folds x 3 images"):
        fold_image_blocks(10, n_folds=3)
    with pytest.raises(InvalidParameterError, match="not 2 folds x 4"):
        fold_image_blocks(10, n_folds=2, fold_size=4)
    with pytest.raises(InvalidParameterError, match="'n_folds'.*\\[1, n_images=10\\]"):
        fold_image_blocks(10, n_folds=11)


def test_folds_average_disjoint_sub_problems_selected_through_the_map(rng, set_factory):
    # shuffled captions, 1-5 per image: fold captions cannot be found by index arithmetic
    data = set_factory(48, min_caps=1, max_caps=5, shuffle=True)
    per_fold = []
    for f in range(4):
        images = np.arange(12 * f, 12 * f + 12)
        caps = np.flatnonzero(np.isin(data.txt_to_img, images))
        rel = Relevance(data.txt_to_img[caps] - 12 * f, 12)
        per_fold.append(recall_metrics(data.scores[np.ix_(images, caps)], rel))
    got = evaluate(data, folds=4)
    assert len({round(r["RSUM"], 6) for r in per_fold}) > 1  # the folds really differ
    for name in got:
        assert got[name] == pytest.approx(np.mean([r[name] for r in per_fold]))
    assert got["RSUM"] != pytest.approx(evaluate(data)["RSUM"])  # not the full matrix re-evaluated
    assert evaluate(data, fold_size=12) == got
    with pytest.raises(InvalidParameterError, match="n_gallery=12\\] \\(the t2i gallery of one fold\\)"):
        evaluate(data, metrics=["t2i_R@13"], folds=4)


def test_folds_per_query_concatenate_and_subset_positive_sets(set_factory):
    data = set_factory(12, min_caps=2, max_caps=3)
    per_query = evaluate(data, metrics=["i2t_R@1", "t2i_mAP@R"], per_query=True, folds=3)
    assert per_query["i2t_R@1"].shape == (12,)
    r1 = evaluate(data, metrics=["t2i_R@1"], per_query=True, folds=3)["t2i_R@1"]
    assert np.array_equal(per_query["t2i_mAP@R"], r1)  # one positive per caption: AP@R = hit@1
    assert per_query["t2i_mAP@R"].shape == (data.n_texts,)
