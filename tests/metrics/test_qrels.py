import numpy as np
import pytest

from pillar_rerank.exceptions import InputFileError, InvalidInputError
from pillar_rerank.inputs import Relevance
from pillar_rerank.metrics.qrels import Qrels, load_graded_pairs, save_graded_pairs


def test_rows_are_sorted_and_gains_follow():
    q = Qrels.from_lists([[3, 1], [], [2]], 4, gains=[[0.5, 2.0], [], [1.0]])
    assert q.indptr.tolist() == [0, 2, 2, 3]
    assert q.indices.tolist() == [1, 3, 2]
    assert q.gains.tolist() == [2.0, 0.5, 1.0]
    assert q.counts.tolist() == [2, 0, 1]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"indptr": [0, 2, 1], "indices": [0], "n_gallery": 3}, "non-decreasing"),
    ({"indptr": [0, 1], "indices": [5], "n_gallery": 3},
     "outside \\[0, n_gallery=3\\) \\(first: query 0 -> item 5\\)"),
    ({"indptr": [0, 2], "indices": [1, 1], "n_gallery": 3}, "duplicate items.*query 0 lists item 1"),
    ({"indptr": [0, 1], "indices": [0.5], "n_gallery": 3}, "integer array"),
    ({"indptr": [0, 1], "indices": [0], "n_gallery": 3, "gains": [np.nan]}, "finite"),
    ({"indptr": [0, 1], "indices": [0], "n_gallery": 3, "gains": [-1.0]}, "non-negative"),
    ({"indptr": [0, 1], "indices": [0], "n_gallery": 3, "gains": [1.0, 2.0]}, "one gain per index"),
    ({"indptr": [0], "indices": np.array([], dtype=np.int64), "n_gallery": 3}, "n_queries \\+ 1 >= 2"),
])
def test_invalid_qrels_are_named(kwargs, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        arrays = {k: np.asarray(v) for k, v in kwargs.items() if k != "n_gallery"}
        Qrels(**arrays, n_gallery=kwargs["n_gallery"])


def test_from_relevance_and_subset():
    rel = Relevance(np.array([1, 0, 1, 2, 0, 2]), 3)
    i2t = Qrels.from_relevance(rel, "i2t")
    assert i2t.indices.tolist() == [1, 4, 0, 2, 3, 5]
    t2i = Qrels.from_relevance(rel, "t2i")
    assert t2i.indices.tolist() == rel.txt_to_img.tolist()
    sub = i2t.subset(np.array([2, 0]), np.array([3, 4, 5, 1]))
    assert sub.indptr.tolist() == [0, 2, 4] and sub.indices.tolist() == [0, 2, 1, 3]
    assert sub.n_gallery == 4


def test_save_load_round_trip_and_refusals(tmp_path):
    q = Qrels.from_lists([[0, 2], [1]], 3, gains=[[1.0, 2.0], [3.0]])
    path = q.save(tmp_path / "q.npz")
    back = Qrels.load(path)
    assert np.array_equal(back.indices, q.indices) and np.array_equal(back.gains, q.gains)
    with pytest.raises(InputFileError, match="exists"):
        q.save(path)
    np.savez(tmp_path / "bad.npz", indptr=np.array([0, 1]))
    with pytest.raises(InvalidInputError, match="missing array"):
        Qrels.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", indptr=np.array([0, 1]), indices=np.array([object()]),
             n_gallery=np.int64(2))
    with pytest.raises(InvalidInputError, match="pickled"):
        Qrels.load(tmp_path / "obj.npz")
    with pytest.raises(InputFileError, match="not found"):
        Qrels.load(tmp_path / "missing.npz")


def test_graded_pairs_give_both_directions(tmp_path):
    save_graded_pairs(tmp_path / "g.npz", [0, 1, 1], [2, 0, 1], [5.0, 1.0, 2.5])
    g = load_graded_pairs(tmp_path / "g.npz", 2, 3)
    assert g["i2t"].indptr.tolist() == [0, 1, 3] and g["i2t"].gains.tolist() == [5.0, 1.0, 2.5]
    assert g["t2i"].indices.tolist() == [1, 1, 0] and g["t2i"].gains.tolist() == [1.0, 2.5, 5.0]
    with pytest.raises(InvalidInputError, match="text ids outside \\[0, 2\\)"):
        load_graded_pairs(tmp_path / "g.npz", 2, 2)
