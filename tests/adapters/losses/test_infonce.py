"""Symmetric InfoNCE against a cross-entropy loop; several positives; stability; learnable scale."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pillar_rerank.adapters.losses import InfoNCELoss
from pillar_rerank.exceptions import InvalidParameterError


def infonce_loss(sims, *, temperature=0.05, pos_mask=None):
    return InfoNCELoss(temperature=temperature)(sims, pos_mask=pos_mask)

def oracle(sims, tau, pos_mask=None):
    b = sims.shape[0]
    total = []
    for mat, mask in ((sims, pos_mask), (sims.T, None if pos_mask is None else pos_mask.T)):
        for q in range(b):
            p = F.softmax(mat[q] / tau, dim=0)
            pos = [g for g in range(b) if g == q or (mask is not None and bool(mask[q, g]))]
            total.append(-math.log(sum(float(p[g]) for g in pos)))
    return sum(total) / len(total)


def test_equals_cross_entropy_without_mask():
    sims = torch.randn(6, 6, dtype=torch.float64)
    ce = 0.5 * (
        F.cross_entropy(sims / 0.05, torch.arange(6)) + F.cross_entropy(sims.T / 0.05, torch.arange(6))
    )
    assert infonce_loss(sims, temperature=0.05).item() == pytest.approx(ce.item(), rel=1e-12)
    assert infonce_loss(sims).item() == pytest.approx(oracle(sims, 0.05), rel=1e-9)


def test_several_positives_match_loop():
    sims = torch.randn(6, 6, dtype=torch.float64)
    images = torch.tensor([0, 0, 1, 2, 2, 2])
    mask = images[:, None] == images[None, :]
    got = InfoNCELoss(temperature=0.1)(sims, pos_mask=mask).item()
    assert got == pytest.approx(oracle(sims, 0.1, mask), rel=1e-9)


def test_stable_at_large_scale():
    sims = torch.tensor([[1.0, -1.0], [0.9, 1.0]], dtype=torch.float32) * 1e3
    loss = infonce_loss(sims, temperature=1e-3)
    assert torch.isfinite(loss)


def test_learnable_scale_clip_style():
    loss = InfoNCELoss(learnable=True)
    assert loss.scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        loss.log_scale.fill_(10.0)
    assert loss.scale().item() == 100.0
    sims = torch.randn(4, 4)
    loss(sims).backward()
    assert loss.log_scale.grad.item() == 0.0  # clamped at 100: no gradient pushes it further
    assert loss.last_stats["logit_scale"] == 100.0
    free = InfoNCELoss(learnable=True)
    free(sims).backward()
    assert free.log_scale.grad.item() != 0.0


def test_gradcheck_and_errors():
    sims = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.eye(4, dtype=torch.bool).roll(1, 0)
    assert torch.autograd.gradcheck(lambda s: infonce_loss(s, temperature=0.2, pos_mask=mask), (sims,))
    with pytest.raises(InvalidParameterError):
        InfoNCELoss(temperature=0.0)
