"""Memory-bounded streaming in pillar_rerank/neighbors: block sizes follow the budget."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.lists.builder import ListBuilder
from pillar_rerank.neighbors import _pairs, _topk, build_neighbor_lists, topk_rows, topk_search


def oracle(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, 1).astype(np.float32), ids


def test_streamed_column_topk_of_a_memmap_matches_oracle_with_ties(rng, tmp_path):
    scores = np.round(rng.standard_normal((203, 57)), 1).astype(np.float16)  # many ties
    path = tmp_path / "s.npy"
    np.save(path, scores)
    mm = np.load(path, mmap_mode="r", allow_pickle=False)
    assert isinstance(mm, np.memmap)
    got = topk_rows(mm, 11, axis=0, budget_bytes=57 * 12 * 9)  # 9-row blocks: 23 merges
    want_v, want_i = oracle(scores.T.astype(np.float32), 11)
    np.testing.assert_array_equal(got.ids, want_i)
    np.testing.assert_array_equal(got.values, want_v)


def test_streamed_column_topk_reports_nan_position(rng, tmp_path):
    scores = rng.standard_normal((30, 8)).astype(np.float32)
    scores[17, 5] = np.nan
    np.save(tmp_path / "s.npy", scores)
    mm = np.load(tmp_path / "s.npy", mmap_mode="r")
    with pytest.raises(ValueError, match=r"first at \(17, 5\)"):
        topk_rows(mm, 3, axis=0, budget_bytes=8 * 12 * 4)


@pytest.mark.parametrize("axis", [0, 1])
def test_topk_rows_memory_is_bounded_by_the_budget(rng, tmp_path, axis):
    n_rows, n_cols, k = 2000, 1500, 16   # 12 MB as float32 on disk
    path = tmp_path / "big.npy"
    np.save(path, rng.standard_normal((n_rows, n_cols), dtype=np.float32))
    mm = np.load(path, mmap_mode="r")
    budget = 2**20
    tracemalloc.start()
    top = topk_rows(mm, k, axis=axis, budget_bytes=budget)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    outputs = top.values.nbytes + top.ids.nbytes
    # numpy's allocations (blocks, outputs) stay near budget + outputs, far below the 12 MB matrix
    assert peak < budget + 3 * outputs + 2**20, peak


def test_topk_search_tiles_follow_the_budget(monkeypatch, rng):
    seen = []
    real = _topk._faiss_knn

    def spy(xq, xb, k, gpu_res, dev):
        seen.append((xq.shape[0], xb.shape[0]))
        return real(xq, xb, k, gpu_res, dev)

    monkeypatch.setattr(_topk, "_faiss_knn", spy)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    budget = 64 * 1024
    topk_search(x, x, 10, device="cpu", budget_bytes=budget, backend="faiss")
    assert len(seen) > 4
    for n_q, n_g in seen:
        assert n_g * 32 * 4 <= budget          # gallery block
        assert n_q * n_g * 4 <= budget         # score tile


@pytest.mark.parametrize(("n_gallery", "split"), [(60, False), (500, True)])
def test_torch_search_tiles_follow_the_budget(monkeypatch, rng, n_gallery, split):
    seen = []
    real = _topk._stable_topk

    def spy(block, k):
        seen.append(tuple(block.shape))
        return real(block, k)

    monkeypatch.setattr(_topk, "_stable_topk", spy)
    x = rng.standard_normal((n_gallery, 8)).astype(np.float32)
    q = rng.standard_normal((900, 8)).astype(np.float32)
    budget = 256 * 100 * 4 * 2  # whole rows of a 100-wide gallery for 256 queries
    top = topk_search(q, x, 10, device="cpu", budget_bytes=budget)
    scores = q @ x.T
    np.testing.assert_array_equal(top.ids, np.argsort(-scores, axis=1, kind="stable")[:, :10])
    assert len(seen) > 1
    for n_q, n_g in seen:
        assert n_q * n_g * 4 <= budget // 2      # the tile: half the budget
        assert (n_g < n_gallery) == split        # whole gallery rows when 256 of them fit


def make_set(rng, n_images=60, caps=3, d=24) -> RetrievalSet:
    img = rng.standard_normal((n_images, d)).astype(np.float32)
    txt = np.repeat(img, caps, axis=0) + 0.3 * rng.standard_normal((n_images * caps, d)).astype(np.float32)
    return RetrievalSet(relevance=Relevance(np.repeat(np.arange(n_images), caps), n_images),
                        image_embeddings=img, text_embeddings=txt)


def test_max_memory_sets_blocks_without_changing_results(monkeypatch, rng):
    data = make_set(rng)
    want = build_neighbor_lists(data, 12)
    budgets = []

    def spy(real):
        def searched(*args, **kwargs):
            budgets.append(kwargs["budget_bytes"])
            return real(*args, **kwargs)
        return searched

    # cross-modal (when not joint) and intra-modal searches (symmetric products) alike
    for name in ("topk_search", "symmetric_topk_search"):
        monkeypatch.setattr(f"pillar_rerank.neighbors._pairs.{name}", spy(getattr(_pairs, name)))
    got = build_neighbor_lists(data, 12, max_memory="80MB")
    assert budgets and all(b < 80 * 2**20 for b in budgets) and len(set(budgets)) == 1
    for d in ("i2t", "t2i", "i2i", "t2t"):
        np.testing.assert_array_equal(getattr(got, d).ids, getattr(want, d).ids)
    with pytest.raises(InvalidParameterError, match="too small"):
        build_neighbor_lists(data, 12, max_memory="1MB")


def test_list_builder_max_memory_sets_list_batches(rng):
    data = make_set(rng)
    cfg = LeaPRRConfig(n_pillars=8, list_len_i2t=6, list_len_t2i=4, graph_neighbors=4)
    plain = ListBuilder.from_data(data, cfg)
    bounded = ListBuilder.from_data(data, cfg, max_memory="66MB")
    assert plain.list_batch == {"image": 4096, "text": 4096}
    assert 1 <= bounded.list_batch["image"] <= data.n_images
    img_a, txt_a = plain.build_all()
    img_b, txt_b = bounded.build_all(batch_size=7)
    assert torch.equal(img_a.features, img_b.features) and torch.equal(txt_a.adjacency, txt_b.adjacency)
