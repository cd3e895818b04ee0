"""VSE++ / VSE0 triplet loss: golden value, loop oracle, positive mask, gradients, dtype/device."""

from __future__ import annotations

import pytest
import torch

from pillar_rerank.adapters.losses import TripletLoss, VSE0Loss, VSEPPLoss
from pillar_rerank.adapters.miners import AllNegativesMiner, HardestNegativeMiner
from pillar_rerank.exceptions import InvalidInputError


def triplet_loss(sims, margin=0.2, hardest=True, reduction="mean", pos_mask=None):
    """The triplet module composed as the tests need it (miner and reducer objects)."""
    miner = HardestNegativeMiner() if hardest else AllNegativesMiner()
    return TripletLoss(margin=margin, miner=miner, reducer=reduction)(sims, pos_mask=pos_mask)

def oracle(sims, margin, hardest, reduction, pos_mask=None):
    """Plain Python loop over queries and negatives, both directions."""
    b = sims.shape[0]
    terms = []
    for mat, mask in ((sims, pos_mask), (sims.T, None if pos_mask is None else pos_mask.T)):
        for q in range(b):
            hinges = [
                max(0.0, margin + float(mat[q, g]) - float(mat[q, q]))
                for g in range(b)
                if g != q and not (mask is not None and bool(mask[q, g]))
            ]
            terms.append((max(hinges) if hinges else 0.0) if hardest else sum(hinges))
    return sum(terms) if reduction == "sum" else sum(terms) / len(terms)


def test_golden_vsepp_hardest_sum(selfalign_case, golden):
    got = triplet_loss(selfalign_case["S4"], margin=0.2, hardest=True, reduction="sum")
    assert got.item() == pytest.approx(golden["selfalign_B4"]["vsepp_hardest_sum"], abs=1e-8)
    assert VSEPPLoss()(selfalign_case["S4"]).item() == pytest.approx(got.item(), abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("hardest", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_loop_oracle(dtype, hardest, reduction):
    gen = torch.Generator().manual_seed(1)
    sims = torch.randn(7, 7, generator=gen, dtype=torch.float64).to(dtype)
    images = torch.tensor([0, 1, 1, 2, 3, 3, 3])
    pos = images[:, None] == images[None, :]
    for mask in (None, pos):
        got = triplet_loss(sims, margin=0.3, hardest=hardest, reduction=reduction, pos_mask=mask)
        assert got.dtype == dtype
        want = oracle(sims.double(), 0.3, hardest, reduction, mask)
        assert got.double().item() == pytest.approx(
            want, rel=1e-2 if dtype == torch.float16 else 1e-6, abs=1e-3
        )


def test_positive_mask_removes_duplicate_negative():
    sims = torch.tensor([[0.5, 0.9], [0.9, 0.5]], dtype=torch.float64)
    assert triplet_loss(sims, reduction="sum").item() > 0
    same = torch.ones(2, 2, dtype=torch.bool)
    loss = triplet_loss(sims.clone().requires_grad_(), reduction="sum", pos_mask=same)
    assert loss.item() == 0.0 and loss.requires_grad  # empty mining: zero still in the graph


def test_modules_compose_miner_and_reducer():
    sims = torch.randn(5, 5, dtype=torch.float64)
    assert VSE0Loss()(sims).item() == pytest.approx(triplet_loss(sims, hardest=False, reduction="sum").item())
    assert TripletLoss()(sims).item() == pytest.approx(triplet_loss(sims, reduction="mean").item())
    assert TripletLoss(reducer="sum")(sims).item() == pytest.approx(
        triplet_loss(sims, reduction="sum").item()
    )


def test_tie_goes_to_first_negative():
    sims = torch.tensor(
        [[1.0, 0.8, 0.8], [0.0, 1.0, 0.9], [0.0, 0.9, 1.0]], dtype=torch.float64, requires_grad=True
    )
    triplet_loss(sims, margin=0.5, reduction="sum").backward()
    # row 0 ties between columns 1 and 2; the columns' own hardest negatives are rows 2 and 1
    assert sims.grad[0, 1] == 1.0 and sims.grad[0, 2] == 0.0


def test_gradcheck():
    sims = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: triplet_loss(s, margin=0.2, hardest=False, reduction="mean"), (sims,)
    )
    assert torch.autograd.gradcheck(
        lambda s: triplet_loss(s, margin=0.2, hardest=True, reduction="sum"), (sims,)
    )


def test_device_and_bad_input(device):
    sims = torch.randn(3, 3, device=device)
    assert triplet_loss(sims).device.type == device.type
    with pytest.raises(InvalidInputError, match="square"):
        triplet_loss(torch.randn(3, 4))
    with pytest.raises(InvalidInputError, match="pos_mask"):
        triplet_loss(torch.randn(3, 3), pos_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(TypeError):
        triplet_loss([[1.0]])
