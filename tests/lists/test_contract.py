"""pillar_rerank/lists/contract.py: the QueryLists helpers and the ListSource protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.inputs import Relevance, RetrievalSet
from pillar_rerank.lists import LIST_FIELDS, ListSource, QueryLists, check_query_ids, concat_lists
from pillar_rerank.lists.build import build_cache
from pillar_rerank.lists.builder import ListBuilder
from pillar_rerank.lists.memory import MemoryLists

CFG = LeaPRRConfig(n_pillars=4, list_len_i2t=5, list_len_t2i=3, graph_neighbors=3)


@pytest.fixture(scope="module")
def data() -> RetrievalSet:
    rng = np.random.default_rng(0)
    t2i = np.repeat(np.arange(24), 2)
    img = rng.standard_normal((24, 8)).astype(np.float32)
    txt = img[t2i] + 0.5 * rng.standard_normal((48, 8)).astype(np.float32)
    return RetrievalSet(relevance=Relevance(t2i, 24), image_embeddings=img, text_embeddings=txt, name="toy")


def test_field_list_and_concat(data):
    builder = ListBuilder.from_data(data, CFG)
    assert LIST_FIELDS == ("features", "targets", "adjacency", "candidates", "query_ids")
    whole = builder.image_lists(torch.arange(10))
    parts = concat_lists([builder.image_lists(torch.arange(4)), builder.image_lists(torch.arange(4, 10))])
    for name in LIST_FIELDS:
        assert torch.equal(getattr(whole, name), getattr(parts, name))
    single = builder.text_lists(torch.arange(3))
    assert concat_lists([single]) is single
    assert isinstance(whole, QueryLists) and whole.n_queries == 10 and whole.n_nodes == 5


@pytest.mark.parametrize("ids, message", [
    (torch.tensor([0, 24]), r"1 ids outside \[0, 24\) \(first: 24\)"),
    (torch.tensor([-1]), "first: -1"),
    (torch.zeros(2, 2, dtype=torch.long), "expected a 1-D integer tensor"),
    (torch.tensor([0.5]), "expected a 1-D integer tensor"),
])
def test_check_query_ids(ids, message):
    with pytest.raises(InvalidInputError, match=message):
        check_query_ids(ids, 24, "image_ids")
    assert check_query_ids(torch.tensor([3, 1], dtype=torch.int32), 24, "x").dtype == torch.int64


def test_every_source_satisfies_the_protocol_and_serves_the_same_lists(data, tmp_path):
    builder = ListBuilder.from_data(data, CFG)
    cached = build_cache(data, CFG, tmp_path / "c")
    memory = MemoryLists(cached, CFG.lists)
    assert memory.cached
    ids = torch.tensor([5, 0, 5, 23])
    for source in (builder, cached, memory):
        assert isinstance(source, ListSource)
        got = source.image_lists(ids)
        for name in LIST_FIELDS:
            assert torch.equal(getattr(got, name), getattr(builder.image_lists(ids), name)), name
    assert not MemoryLists(builder, CFG.lists, budget_bytes=0).cached
