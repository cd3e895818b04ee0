import numpy as np
import pytest

from pillar_rerank._validation import (
    Interval,
    Options,
    check_finite,
    check_float_matrix,
    check_int,
    check_item_map,
    check_k,
    validate_params,
)
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError


@pytest.mark.parametrize("value, fragment", [
    (np.zeros((2, 2), dtype=np.int32), "got dtype int32 \\(cast integer"),
    (np.zeros((2, 2), dtype=bool), "got dtype bool"),
    (np.array([[object()]]), "got dtype object"),
    (np.array([["a"]]), "got dtype <U1"),
    (np.zeros((2, 2), dtype=np.complex64), "got dtype complex64"),
    (np.zeros(4, dtype=np.float32), "expected a 2-D array; got shape \\(4,\\)"),
    (np.zeros((0, 3), dtype=np.float32), "non-empty array; got shape \\(0, 3\\)"),
])
def test_float_matrix_rejections(value, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        check_float_matrix(value, name="scores", source="s.npy")


def test_float_matrix_names_source_shape_and_first_nan():
    m = np.zeros((3, 4), dtype=np.float16)
    assert check_float_matrix(m, name="scores") is m  # no copy
    with pytest.raises(InvalidInputError, match="^scores \\(s.npy\\): expected shape \\(3, 5\\)"):
        check_float_matrix(m, name="scores", source="s.npy", shape=(3, 5))
    m[2, 1] = np.nan
    m[2, 3] = np.inf
    with pytest.raises(InvalidInputError, match="found 2 NaN/inf \\(first at \\(2, 1\\)\\)"):
        check_float_matrix(m, name="scores")


def test_finite_check_scans_blocks_of_a_memory_map(tmp_path):
    big = np.zeros((5000, 8), dtype=np.float32)
    big[4321, 7] = np.nan
    np.save(tmp_path / "b.npy", big)
    with pytest.raises(InvalidInputError, match="first at \\(4321, 7\\)"):
        check_finite(np.load(tmp_path / "b.npy", mmap_mode="r"), name="b")


@pytest.mark.parametrize("value, kwargs, fragment", [
    (np.array([0.0, 1.0]), {}, "integer array; got dtype float64 \\(store the map as int\\)"),
    (np.array([[0, 1]]), {}, "1-D array of shape \\(n_texts,\\); got shape \\(1, 2\\)"),
    (np.array([], dtype=int), {}, "empty map"),
    (np.array([0, -1, 1]), {}, "1 captions have a negative image index \\(first: caption 1 -> image -1\\)"),
    (np.array([0, 1, 3, 5]), {"n_images": 3},
     "2 captions point past n_images=3 \\(first: caption 2 -> image 3\\)"),
    (np.array([0, 0, 2]), {"n_images": 3}, "1 of n_images=3 images have no caption \\(first: image 1\\)"),
    (np.array([0, 1]), {"n_texts": 3}, "one entry per caption \\(n_texts=3\\); got 2"),
    (np.array(["a"]), {}, "integer array"),
])
def test_item_map_rejections(value, kwargs, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        check_item_map(value, **kwargs)


def test_item_map_accepts_varying_groups_and_returns_int64():
    out = check_item_map(np.array([2, 0, 1, 1], dtype=np.int16), n_images=3)
    assert out.dtype == np.int64
    assert check_item_map(np.array([0, 2]), n_images=3, require_all_images=False).tolist() == [0, 2]


def test_int_and_k():
    assert check_int(3, name="k") == 3
    with pytest.raises(InvalidParameterError, match="'k' parameter of X must be an int; got True"):
        check_int(True, name="k", owner="X")
    with pytest.raises(InvalidParameterError, match="must be an int in \\[1, n_gallery=10\\]; got 11"):
        check_k(11, n_gallery=10)
    with pytest.raises(InvalidParameterError, match="got 2.0"):
        check_int(2.0, name="k")


def test_validate_params_table():
    constraints = {"k": [Interval(int, 1, None)], "mode": [Options(frozenset({"a", "b"})), None],
                   "t": [Interval(float, 0, 1, closed="right")]}
    validate_params({"k": 2, "mode": None, "t": 1.0}, constraints, owner="M")
    with pytest.raises(InvalidParameterError, match="The 'k' parameter of M must be an int in the range "
                                                     "\\[1, inf\\]; got 0 instead"):
        validate_params({"k": 0}, constraints, owner="M")
    with pytest.raises(InvalidParameterError, match="'mode'.*one of 'a', 'b' or None; got 'c'"):
        validate_params({"mode": "c"}, constraints, owner="M")
    with pytest.raises(InvalidParameterError, match="'t'.*\\(0, 1\\]; got 0.0"):
        validate_params({"t": 0.0}, constraints, owner="M")
    with pytest.raises(InvalidParameterError, match="'t'"):
        validate_params({"t": float("nan")}, constraints, owner="M")


def test_big_endian_matrix_from_a_file_passes_the_same_checks_as_a_map(tmp_path):
    """Issue 15 item 18: a big-endian map was accepted while a big-endian float matrix was not."""
    from pillar_rerank.inputs import load_retrieval_set

    np.save(tmp_path / "s.npy", np.eye(3, 6).astype(">f4"))
    np.save(tmp_path / "m.npy", np.repeat(np.arange(3), 2).astype(">i8"))
    data = load_retrieval_set(sims=tmp_path / "s.npy", txt_to_img=tmp_path / "m.npy")
    assert data.scores.dtype == np.float32 and np.array_equal(data.scores, np.eye(3, 6))
    assert np.array_equal(data.txt_to_img, np.repeat(np.arange(3), 2))


def test_in_memory_non_native_floats_get_a_message_naming_the_fix():
    from pillar_rerank._validation import check_float_matrix

    with pytest.raises(InvalidInputError, match="byte order.*astype"):
        check_float_matrix(np.eye(3).astype(">f4"), name="sims")


def test_messages_use_the_callers_spelling_and_name_the_fix():
    """Issue 15 item 28: "n_pillars ... got 64" without "lower --n-pillars"; "txt_to_img" for --txt2img."""
    from pillar_rerank._validation import reset_spellings, use_spellings

    with pytest.raises(InvalidParameterError, match=r"'n_pillars'.*got 64; lower n_pillars to at most 54\."):
        check_k(64, n_gallery=54, name="n_pillars", owner="PillarReranker")
    token = use_spellings({"n_pillars": "--n-pillars", "txt_to_img": "--txt2img"})
    try:
        with pytest.raises(InvalidParameterError, match=r"'--n-pillars'.*lower --n-pillars to at most 54"):
            check_k(64, n_gallery=54, name="n_pillars", owner="PillarReranker")
        with pytest.raises(InvalidInputError, match=r"^--txt2img \(m.npy\): 1 captions have a negative"):
            check_item_map(np.array([0, -1]), source="m.npy")
    finally:
        reset_spellings(token)
    with pytest.raises(InvalidInputError, match=r"^txt_to_img:"):
        check_item_map(np.array([0, -1]))
