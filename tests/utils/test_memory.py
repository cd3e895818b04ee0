"""pillar_rerank/utils/memory.py: one max_memory split into every stage's block sizes."""

from __future__ import annotations

import pytest

from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.utils.memory import (
    MIN_WORKING_BYTES,
    list_query_bytes,
    list_working_bytes,
    plan_input_memory,
)

FLICKR_TRAIN = {"n_images": 29_000, "n_texts": 145_000, "dim": 1024}
DEPTHS = {"i2t": 64, "t2i": 64, "i2i": 64, "t2t": 64}
LISTS = {"n_pillars": 64, "list_len_i2t": 32, "list_len_t2i": 8, "graph_neighbors": 10}


def test_plan_counts_fixed_parts_and_stays_within_budget():
    plan = plan_input_memory("4GB", intra_source="embeddings", depths=DEPTHS, **FLICKR_TRAIN, **LISTS)
    n = 29_000 + 145_000
    assert plan.breakdown["normalised embeddings"] == n * 1024 * 4
    assert plan.breakdown["neighbour lists"] == 2 * n * 64 * 12 + 145_000 * 64 * 12
    assert plan.fixed_bytes == sum(plan.breakdown.values())
    assert 0 < plan.block_bytes <= plan.max_memory - plan.fixed_bytes
    for kind, nodes in (("image", 32), ("text", 8)):
        working = plan.list_batch[kind] * list_working_bytes(nodes, 64, 10)
        shard = plan.shard_queries[kind] * list_query_bytes(nodes, 64)
        assert working + shard <= plan.max_memory - plan.fixed_bytes
    assert plan.to_dict()["max_memory"] == 4 * 2**30


def test_bigger_budget_gives_bigger_blocks():
    small = plan_input_memory("2GB", intra_source="embeddings", depths=DEPTHS, **FLICKR_TRAIN, **LISTS)
    large = plan_input_memory("8GB", intra_source="embeddings", depths=DEPTHS, **FLICKR_TRAIN, **LISTS)
    assert large.block_bytes > small.block_bytes
    assert large.list_batch["text"] > small.list_batch["text"]


def test_too_small_budget_says_how_much_is_needed():
    want = r"max_memory=1\.0 GiB is too small .*679\.7 MiB.* at least 1\.1 GiB"
    with pytest.raises(InvalidParameterError, match=want):
        plan_input_memory("1GB", intra_source="embeddings", depths=DEPTHS, **FLICKR_TRAIN, **LISTS)


def test_second_order_without_scores_counts_the_dense_matrix():
    plan = plan_input_memory("64GB", n_images=1000, n_texts=5000, dim=64, intra_source="second_order",
                             depths=DEPTHS, has_scores=False, **LISTS)
    assert plan.breakdown["similarity matrix (no scores given)"] == 1000 * 5000 * 4
    with_scores = plan_input_memory("64GB", n_images=1000, n_texts=5000, dim=None,
                                    intra_source="second_order", depths=DEPTHS, has_scores=True, **LISTS)
    assert "similarity matrix (no scores given)" not in with_scores.breakdown


def test_ann_index_and_float_copies_are_counted():
    kw = {"n_images": 1000, "n_texts": 5000, "dim": 64, "intra_source": "embeddings", "depths": DEPTHS,
          **LISTS}
    flat = plan_input_memory("1GB", **kw)
    hnsw = plan_input_memory("1GB", index="hnsw", index_params={"M": 16}, **kw)
    half = plan_input_memory("1GB", embeddings_float32=False, **kw)
    assert hnsw.breakdown["hnsw index"] == 5000 * (64 * 4 + 8 + 2 * 16 * 4 * 2)
    assert half.breakdown["float32 embedding copies"] == 6000 * 64 * 4
    assert flat.fixed_bytes < hnsw.fixed_bytes


def test_minimum_working_memory_constant():
    tiny = plan_input_memory(MIN_WORKING_BYTES * 2, n_images=10, n_texts=50, dim=8, intra_source="embeddings",
                             depths={"i2t": 5, "t2i": 5, "i2i": 5, "t2t": 5}, **LISTS)
    assert tiny.list_batch == {"image": 10, "text": 50}  # capped at the number of queries
