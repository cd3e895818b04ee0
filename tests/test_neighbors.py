"""Tests of pillar_rerank/neighbors.py: block top-k, FAISS search, intra-modal sources, lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.neighbors import (
    IntraModalScores,
    PairScores,
    TopK,
    build_neighbor_lists,
    force_self_first,
    intra_modal_source,
    merge_topk,
    second_order_embeddings,
    topk_rows,
    topk_search,
)
from pillar_rerank.typing import faiss_num_gpus


def stable_topk_oracle(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Descending, ties by lower index: a stable argsort of the negated scores."""
    ids = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, 1).astype(np.float32), ids


def test_topk_rows_matches_stable_argsort_with_ties(rng):
    scores = np.round(rng.standard_normal((37, 53)), 1).astype(np.float32)  # many ties
    scores[4] = 0.25                                                       # a row of equal values
    want_v, want_i = stable_topk_oracle(scores, 9)
    got = topk_rows(scores, 9, budget_bytes=53 * 12 * 5)                   # 5-row blocks
    assert isinstance(got, TopK)
    assert got.values.dtype == np.float32 and got.ids.dtype == np.int64
    np.testing.assert_array_equal(got.ids, want_i)
    np.testing.assert_array_equal(got.values, want_v)


def test_topk_rows_columns_and_memmap_equal_dense(rng, tmp_path):
    scores = np.round(rng.standard_normal((40, 25)), 1).astype(np.float16)
    path = tmp_path / "s.npy"
    np.save(path, scores)
    mm = np.load(path, mmap_mode="r", allow_pickle=False)
    dense = topk_rows(scores, 7, axis=0)
    blocked = topk_rows(mm, 7, axis=0, budget_bytes=40 * 12 * 3)
    want_v, want_i = stable_topk_oracle(scores.T.astype(np.float32), 7)
    np.testing.assert_array_equal(dense.ids, want_i)
    np.testing.assert_array_equal(blocked.ids, dense.ids)
    np.testing.assert_array_equal(blocked.values, want_v)


def test_topk_rows_k_equal_to_gallery_and_too_large(rng):
    scores = rng.standard_normal((3, 5)).astype(np.float32)
    full = topk_rows(scores, 5)
    np.testing.assert_array_equal(full.ids, np.argsort(-scores, axis=1, kind="stable"))
    with pytest.raises(InvalidParameterError, match=r"'k'.*n_gallery=5.*6"):
        topk_rows(scores, 6)
    with pytest.raises(InvalidParameterError, match="n_gallery=3"):
        topk_rows(scores, 4, axis=0)
    with pytest.raises(InvalidParameterError):
        topk_rows(scores, 0)
    scores[2, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"finite.*\(2, 1\)"):
        topk_rows(scores, 2, axis=0)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_topk_search_equals_numpy_brute_force(rng, backend):
    q = rng.standard_normal((33, 12)).astype(np.float32)
    g = rng.standard_normal((211, 12)).astype(np.float64)  # converted once at entry
    want_v, want_i = stable_topk_oracle(q @ g.T.astype(np.float32), 15)
    got = topk_search(q, g, 15, device="cpu", backend=backend, budget_bytes=12 * 4 * 40)  # 40-row blocks
    np.testing.assert_array_equal(got.ids, want_i)
    np.testing.assert_allclose(got.values, want_v, rtol=1e-5, atol=1e-5)


def test_topk_search_checks_inputs(rng):
    q = rng.standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(InvalidParameterError, match="n_gallery=5"):
        topk_search(q, rng.standard_normal((5, 3)), 6)
    with pytest.raises(InvalidInputError, match="same dimension"):
        topk_search(q, rng.standard_normal((5, 4)), 2)
    with pytest.raises(InvalidInputError, match="finite"):
        topk_search(q, np.full((5, 3), np.nan), 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_explicit_cuda_without_gpu_is_an_error(rng):
    q = rng.standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(InvalidParameterError, match="no CUDA"):
        topk_search(q, q, 2, device="cuda")


@pytest.mark.skipif(faiss_num_gpus() == 0 or not torch.cuda.is_available(), reason="needs faiss-gpu and CUDA")
def test_topk_search_gpu_agrees_with_cpu(rng):
    q = rng.standard_normal((50, 16)).astype(np.float32)
    g = rng.standard_normal((300, 16)).astype(np.float32)
    cpu = topk_search(q, g, 10, device="cpu")
    gpu = topk_search(q, g, 10, device="cuda")
    np.testing.assert_array_equal(cpu.ids, gpu.ids)
    np.testing.assert_allclose(cpu.values, gpu.values, atol=1e-4)


def test_merge_topk_breaks_ties_by_lower_id():
    va, ia = torch.tensor([[3.0, 1.0]]), torch.tensor([[7, 2]])
    vb, ib = torch.tensor([[3.0, 1.0]]), torch.tensor([[4, 9]])
    v, i = merge_topk(va, ia, vb, ib, 3)
    assert i.tolist() == [[4, 7, 2]] and v.tolist() == [[3.0, 3.0, 1.0]]


def test_force_self_first_moves_or_inserts_the_query():
    top = TopK(np.array([[5.0, 4.0, 3.0], [9.0, 8.0, 7.0], [1.0, 0.5, 0.2]], dtype=np.float32),
               np.array([[2, 0, 1], [0, 2, 1], [1, 0, 2]]))
    out = force_self_first(top, np.array([4.0, 6.0, 0.2]))
    # row 0: self (0) moves up; row 1: self missing -> inserted, last dropped; row 2: self at the end
    assert out.ids.tolist() == [[0, 2, 1], [1, 0, 2], [2, 1, 0]]
    np.testing.assert_allclose(out.values, [[4.0, 5.0, 3.0], [6.0, 9.0, 8.0], [0.2, 1.0, 0.5]])


def test_pair_scores_matrix_and_embeddings_agree(rng):
    a = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal((9, 4)).astype(np.float32)
    dense, emb = PairScores(matrix=a @ b.T), PairScores(left=a, right=b)
    rows = torch.tensor([[0, 5, 2], [1, 1, 3]])
    cols = torch.tensor([[8, 0], [4, 2]])
    want = np.stack([(a @ b.T)[np.ix_(r, c)] for r, c in zip(rows.numpy(), cols.numpy())])
    np.testing.assert_allclose(dense.block(rows, cols).numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(emb.block(rows, cols).numpy(), want, rtol=1e-5, atol=1e-6)
    # transposed views: (9 x 6)
    np.testing.assert_allclose(dense.T.block(cols, rows).numpy(), want.transpose(0, 2, 1), rtol=1e-6)
    np.testing.assert_allclose(emb.T.block(cols, rows).numpy(), want.transpose(0, 2, 1), rtol=1e-5, atol=1e-6)
    assert dense.T.shape == (9, 6)
    np.testing.assert_allclose(emb.pairs(torch.tensor([0, 3]), torch.tensor([8, 1])).numpy(),
                               [(a @ b.T)[0, 8], (a @ b.T)[3, 1]], rtol=1e-5)
    np.testing.assert_array_equal(dense.T.topk(3).ids, stable_topk_oracle((a @ b.T).T, 3)[1])


def _profiles(scores):
    rows = scores / np.linalg.norm(scores, axis=1, keepdims=True)
    cols = scores / np.linalg.norm(scores, axis=0, keepdims=True)
    return rows @ rows.T, cols.T @ cols


def test_second_order_exact_when_rank_covers_the_span(rng):
    scores = rng.standard_normal((9, 21)).astype(np.float32)
    pi_ii, pi_tt = _profiles(scores.astype(np.float64))
    for rank in (None, 9, 50):
        img, txt = second_order_embeddings(scores, rank=rank, budget_bytes=21 * 8 * 4)  # 4-row blocks
        np.testing.assert_allclose(img @ img.T, pi_ii, atol=2e-5)
        np.testing.assert_allclose(txt @ txt.T, pi_tt, atol=2e-5)


def test_second_order_low_rank_recovers_a_low_rank_structure(rng):
    # Scores of rank 3: the normalised profiles span 3 dimensions, so rank 3 is exact.
    scores = (rng.standard_normal((30, 3)) @ rng.standard_normal((3, 80))).astype(np.float32)
    pi_ii, pi_tt = _profiles(scores.astype(np.float64))
    img, txt = second_order_embeddings(scores, rank=3, power_iterations=1, seed=1)
    np.testing.assert_allclose(img @ img.T, pi_ii, atol=1e-4)
    np.testing.assert_allclose(txt @ txt.T, pi_tt, atol=1e-4)
    again = second_order_embeddings(scores, rank=3, power_iterations=1, seed=1)
    np.testing.assert_array_equal(again[0], img)  # deterministic for a seed


def _small_set(rng, **kw):
    t2i = np.array([0, 0, 1, 1, 1, 2, 0])  # 3 images with 3 / 3 / 1 captions, not contiguous
    img = rng.standard_normal((3, 5)).astype(np.float32)
    txt = (img[t2i] + 0.3 * rng.standard_normal((7, 5))).astype(np.float32)
    data = RetrievalSet(relevance=Relevance(t2i, 3), image_embeddings=img, text_embeddings=txt, **kw)
    return data, img, txt


def test_intra_modal_source_resolution(rng):
    data, img, txt = _small_set(rng)
    assert intra_modal_source(data) == "embeddings"
    scores_only = RetrievalSet(relevance=data.relevance, scores=img @ txt.T)
    assert intra_modal_source(scores_only) == "second_order"
    given = RetrievalSet(relevance=data.relevance, scores=img @ txt.T, image_image=img @ img.T,
                         text_text=txt @ txt.T)
    assert intra_modal_source(given) == "given"
    assert intra_modal_source(given, "second_order") == "second_order"
    with pytest.raises(InvalidInputError, match="embeddings"):
        intra_modal_source(scores_only, "embeddings")
    with pytest.raises(InvalidInputError, match="image_image"):
        intra_modal_source(scores_only, "given")
    with pytest.raises(InvalidParameterError, match="intra_source"):
        intra_modal_source(data, "cosine")


def test_build_neighbor_lists_from_embeddings(rng):
    data, img, txt = _small_set(rng)
    lists = build_neighbor_lists(data, {"i2t": 7, "t2i": 3, "i2i": 3, "t2t": 7})
    assert lists.source == "embeddings"
    s = img @ txt.T
    np.testing.assert_array_equal(lists.i2t.ids, stable_topk_oracle(s, 7)[1])
    np.testing.assert_array_equal(lists.t2i.ids, stable_topk_oracle(s.T, 3)[1])
    np.testing.assert_allclose(lists.i2t.values, stable_topk_oracle(s, 7)[0], rtol=1e-5, atol=1e-6)
    nt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    want_v, want_i = stable_topk_oracle(nt @ nt.T, 7)
    np.testing.assert_array_equal(lists.t2t.ids[:, 0], np.arange(7))
    np.testing.assert_array_equal(lists.t2t.ids, want_i)
    np.testing.assert_allclose(lists.t2t.values, want_v, atol=1e-5)
    with pytest.raises(InvalidParameterError, match="n_gallery=3"):
        build_neighbor_lists(data, 4)


def test_build_neighbor_lists_given_matrices_and_duplicates(rng):
    data, img, txt = _small_set(rng)
    img[2] = img[1]  # duplicate images: the query must still be at rank 0 of its own list
    ii = (img @ img.T).astype(np.float32)
    s = img @ txt.T
    t2i_scores = s - 0.5 * s.mean(0, keepdims=True)  # a per-direction normaliser's output
    given = RetrievalSet(relevance=data.relevance, scores=s, t2i_scores=t2i_scores, image_image=ii,
                         text_text=(txt @ txt.T).astype(np.float32))
    lists = build_neighbor_lists(given, 3)
    assert lists.source == "given"
    np.testing.assert_array_equal(lists.i2i.ids[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(lists.i2i.values[:, 0], np.diag(ii))
    np.testing.assert_array_equal(lists.t2i.ids, stable_topk_oracle(t2i_scores.T, 3)[1])
    np.testing.assert_array_equal(lists.i2t.ids, stable_topk_oracle(s, 3)[1])


def test_second_order_lists_from_scores_only(rng):
    data, img, txt = _small_set(rng)
    s = (img @ txt.T).astype(np.float32)
    lists = build_neighbor_lists(RetrievalSet(relevance=data.relevance, scores=s), 3, second_order_rank=None)
    assert lists.source == "second_order"
    pi_ii, pi_tt = _profiles(s.astype(np.float64))
    np.testing.assert_array_equal(lists.i2i.ids, stable_topk_oracle(pi_ii, 3)[1])
    np.testing.assert_array_equal(lists.t2t.ids[:, 0], np.arange(7))
    np.testing.assert_allclose(lists.t2t.values[:, 0], 1.0, atol=1e-5)
    intra = IntraModalScores.from_data(RetrievalSet(relevance=data.relevance, scores=s), rank=None)
    np.testing.assert_allclose(intra.text.pairs(torch.tensor([0, 4]), torch.tensor([6, 2])).numpy(),
                               [pi_tt[0, 6], pi_tt[4, 2]], atol=1e-5)
