"""Distances, miners and reducers: conventions, empty cases, registry of losses."""

from __future__ import annotations

import pytest
import torch

from pillar_rerank.adapters import (
    LOSSES,
    AllNegativesMiner,
    CosineSimilarity,
    DotProductSimilarity,
    HardestNegativeMiner,
    LateInteractionSimilarity,
    MeanReducer,
    SumReducer,
    get_loss,
)
from pillar_rerank.exceptions import InvalidParameterError


def test_distances():
    q, r = torch.randn(3, 4), torch.randn(5, 4)
    assert torch.allclose(DotProductSimilarity()(q, r), q @ r.T)
    cos = CosineSimilarity()(q, r)
    assert cos.abs().max() <= 1 + 1e-6
    assert DotProductSimilarity().margin(torch.tensor(1.0), torch.tensor(1.5)) == 0.5
    li = LateInteractionSimilarity()(torch.randn(2, 3, 4), torch.randn(5, 2, 4))
    assert li.shape == (2, 5)


def test_miners_respect_positive_mask():
    scores = torch.tensor([[1.0, 0.9, 0.1], [0.2, 1.0, 0.3], [0.5, 0.4, 1.0]])
    pos = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    hard = HardestNegativeMiner()(scores, pos)
    assert hard.tolist() == [[False, False, True], [False, False, True], [True, False, False]]
    every = AllNegativesMiner()(scores, pos)
    assert every.sum().item() == 4 and not every.diagonal().any()


def test_reducers_empty_stays_in_graph():
    losses = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert MeanReducer()(losses).item() == 2.0 and SumReducer()(losses).item() == 6.0
    zero = MeanReducer()(losses, torch.zeros(3, dtype=torch.bool))
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert losses.grad is not None


def test_loss_registry():
    assert {"vsepp", "vse0", "infonce", "listwise", "lp_hinge", "triplet"} <= set(LOSSES)
    assert get_loss("vsepp").margin == 0.2
    with pytest.raises(InvalidParameterError, match="Unknown loss"):
        get_loss("arcface")
    with pytest.raises(InvalidParameterError, match="bad parameters"):
        get_loss("infonce", {"tau": 1})
