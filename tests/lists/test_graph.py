"""Tests of pillar_rerank/lists/graph.py: overlap adjacency vs a loop oracle, edge-index export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.lists.graph import overlap_adjacency, overlap_counts, to_edge_index
from pillar_rerank.typing import WITH_PYG


def adjacency_oracle(sets_a, sets_b, threshold):
    """The spec's pseudocode (leaprr.md §6.2), one list at a time with Python sets."""
    n, c = len(sets_a), len(sets_a[0])
    a = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a[i, j] = 2 * c if i == j else (len(set(sets_a[i]) & set(sets_a[j]))
                                            + len(set(sets_b[i]) & set(sets_b[j])))
    a = a / a.sum(1, keepdims=True)
    a = a * (a > threshold)
    return a / a.sum(1, keepdims=True)


def test_hand_checked_three_node_graph():
    sets_a = torch.tensor([[[1, 2], [2, 3], [4, 5]]])   # texts
    sets_b = torch.tensor([[[0, 1], [1, 0], [1, 7]]])   # images (order within a set is irrelevant)
    counts = overlap_counts(sets_a) + overlap_counts(sets_b)
    assert counts[0].tolist() == [[4, 3, 1], [3, 4, 1], [1, 1, 4]]  # diagonal C + C, overlaps 1+2, 0+1, 0+1
    adj = overlap_adjacency(sets_a, sets_b)                        # threshold 0.8 / 3
    want = [[4 / 7, 3 / 7, 0], [3 / 7, 4 / 7, 0], [0, 0, 1]]
    np.testing.assert_allclose(adj[0].numpy(), want, rtol=1e-6)
    loose = overlap_adjacency(sets_a, sets_b, threshold=0.1)       # nothing dropped
    np.testing.assert_allclose(loose[0].numpy(), [[.5, .375, .125], [.375, .5, .125], [1 / 6, 1 / 6, 2 / 3]],
                               rtol=1e-6)


@pytest.mark.parametrize(("n_nodes", "c", "threshold"), [(8, 3, None), (32, 10, None), (8, 10, 0.8 / 8),
                                                         (12, 4, 0.8 / 32)])
def test_matches_loop_oracle(rng, n_nodes, c, threshold):
    q = 5
    vocab = 3 * c  # small id range: plenty of overlaps
    sets_a = torch.from_numpy(np.stack([[rng.choice(vocab, c, replace=False) for _ in range(n_nodes)]
                                        for _ in range(q)]))
    sets_b = torch.from_numpy(np.stack([[rng.choice(vocab, c, replace=False) + 1000 for _ in range(n_nodes)]
                                        for _ in range(q)]))
    got = overlap_adjacency(sets_a, sets_b, coef=0.8, threshold=threshold)
    thr = 0.8 / n_nodes if threshold is None else threshold
    for i in range(q):
        want = adjacency_oracle(sets_a[i].tolist(), sets_b[i].tolist(), thr)
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(-1).numpy(), 1.0, rtol=1e-5)
    assert bool((torch.diagonal(got, dim1=1, dim2=2) > 0).all())


def test_shape_mismatch_is_an_error():
    with pytest.raises(InvalidInputError, match="same shape|must both have shape"):
        overlap_adjacency(torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 3, 5, dtype=torch.long))


def test_to_edge_index_disjoint_union(rng):
    adj = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]],
                        [[1.0, 0.0, 0.0], [0.4, 0.6, 0.0], [0.0, 0.0, 1.0]]])
    edge_index, weight, batch = to_edge_index(adj)
    assert batch.tolist() == [0, 0, 0, 1, 1, 1]
    x = torch.from_numpy(rng.standard_normal((6, 4)).astype(np.float32))
    # sum_b A[a, b] x_b via the edge list == the dense batched product
    out = torch.zeros_like(x).index_add_(0, edge_index[1], weight[:, None] * x[edge_index[0]])
    np.testing.assert_allclose(out.numpy(), torch.bmm(adj, x.view(2, 3, 4)).reshape(6, 4).numpy(), rtol=1e-6)
    assert edge_index.shape[1] == int((adj != 0).sum())


@pytest.mark.skipif(not WITH_PYG, reason="torch-geometric not installed")
def test_to_edge_index_feeds_torch_geometric(rng):
    from torch_geometric.nn import SimpleConv
    from torch_geometric.utils import to_dense_adj

    sets = torch.from_numpy(rng.integers(0, 12, size=(3, 6, 4)))
    adj = overlap_adjacency(sets, sets + 100, threshold=0.05)
    edge_index, weight, batch = to_edge_index(adj)
    dense = to_dense_adj(edge_index, batch, weight)          # dense[q, src, dst]
    np.testing.assert_allclose(dense.numpy(), adj.transpose(1, 2).numpy(), rtol=1e-6)
    x = torch.from_numpy(rng.standard_normal((18, 5)).astype(np.float32))
    out = SimpleConv(aggr="sum")(x, edge_index, weight)
    np.testing.assert_allclose(out.numpy(), torch.bmm(adj, x.view(3, 6, 5)).reshape(18, 5).numpy(),
                               rtol=1e-5, atol=1e-6)
