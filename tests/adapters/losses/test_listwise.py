"""Listwise ITR: golden values, the t2i relevance switch, tie handling, any caption count, gradients."""

from __future__ import annotations

import pytest
import torch

from pillar_rerank.adapters.losses import (
    ListwiseLoss,
    SmoothNDCGLoss,
    hard_ndcg,
    rsc_relevance,
    smooth_ndcg,
    smooth_rank,
)
from pillar_rerank.adapters.losses.listwise import ideal_rank
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError


def smooth_ndcg_loss(sims, relevance, tau=0.01, **params):
    """``(loss, per-row stats)`` of :class:`SmoothNDCGLoss`."""
    loss_fn = SmoothNDCGLoss(tau=tau, **params)
    loss = loss_fn(sims, relevance=relevance)
    return loss, loss_fn.last_rows


def pairwise_listwise_loss(sims, relevance, *, pos_mask=None, **params):
    """``(loss, pairwise term, listwise term)`` of :class:`ListwiseLoss`."""
    loss_fn = ListwiseLoss(**params)
    loss = loss_fn(sims, relevance=relevance, pos_mask=pos_mask)
    return loss, torch.tensor(loss_fn.last_stats["pair"]), torch.tensor(loss_fn.last_stats["list"])

def test_golden_reference_parity(listwise_case, golden):
    g = golden["listwise_B6"]
    rel = rsc_relevance(listwise_case["caps"], listwise_case["cap"])
    loss, pair, listwise = pairwise_listwise_loss(
        listwise_case["sims"],
        rel,
        weight=0.5,
        margin=0.2,
        tau=0.01,
        t2i_relevance="reference",
        tie_tolerance=0.0,
    )
    assert loss.item() == pytest.approx(g["loss"], abs=1e-8)
    assert pair.item() == pytest.approx(g["pairwise"], abs=1e-8)
    assert listwise.item() == pytest.approx(g["listwise"], abs=1e-8)
    _, stats = smooth_ndcg_loss(listwise_case["sims"], rel, 0.01, t2i_relevance="reference")
    for key, name in (
        ("smooth_ndcg_i2t", "ndcg_i2t"),
        ("ndcg_i2t", "hard_ndcg_i2t"),
        ("smooth_ndcg_t2i", "ndcg_t2i"),
        ("ndcg_t2i", "hard_ndcg_t2i"),
    ):
        assert stats[name].mean().item() == pytest.approx(g[key], abs=1e-8)


def test_golden_transpose_default(listwise_case, golden):
    rel = rsc_relevance(listwise_case["caps"], listwise_case["cap"])
    loss, _ = smooth_ndcg_loss(listwise_case["sims"], rel)
    assert loss.item() == pytest.approx(golden["listwise_B6"]["listwise_transpose"], abs=1e-8)
    module = ListwiseLoss(weight=0.5)
    assert module(listwise_case["sims"], relevance=rel).item() == pytest.approx(
        0.5 * golden["listwise_B6"]["pairwise"] + 0.5 * golden["listwise_B6"]["listwise_transpose"], abs=1e-8
    )


def test_golden_float32(listwise_case, golden):
    rel = rsc_relevance(listwise_case["caps"].float(), listwise_case["cap"].float())
    loss, _, _ = pairwise_listwise_loss(
        listwise_case["sims"].float(), rel, weight=0.5, t2i_relevance="reference", tie_tolerance=0.0
    )
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(golden["listwise_B6"]["loss"], abs=1e-5)


def test_smooth_rank_approaches_hard_rank():
    scores = torch.tensor([[0.3, 0.9, 0.1, 0.5]], dtype=torch.float64)
    hard = 1 + (scores[:, None, :] > scores[:, :, None]).sum(-1)
    assert torch.allclose(smooth_rank(scores, 1e-4), hard.double())
    rel = torch.tensor([[1.0, 0.2, 0.5, 0.7]], dtype=torch.float64)
    assert smooth_ndcg(scores, rel, 1e-4).item() == pytest.approx(hard_ndcg(scores, rel).item(), abs=1e-9)


def test_duplicate_image_ties_are_stable():
    """Two captions of one image: relevance exactly 1 (pos_mask) and tolerant ideal-rank ties."""
    rel = torch.tensor([[1.0, 1.0 - 2e-16, 0.3]], dtype=torch.float64)
    assert ideal_rank(rel).tolist() == [[1.0, 1.0, 3.0]]
    assert ideal_rank(rel, tie_tolerance=0.0).tolist() == [[1.0, 2.0, 3.0]]
    caps = torch.randn(3, 4, 5, dtype=torch.float64)
    cap = torch.stack([caps[0, 1], caps[0, 2], caps[1, 0]])
    images = torch.tensor([0, 0, 1])
    r = rsc_relevance(caps, cap, pos_mask=images[:, None] == images[None, :])
    assert r[0, 1] == 1.0 and r[1, 0] == 1.0
    sims = torch.randn(3, 3, dtype=torch.float64)
    l64, _ = smooth_ndcg_loss(sims, r)
    l32, _ = smooth_ndcg_loss(sims.float(), r.float())
    assert l32.item() == pytest.approx(l64.item(), abs=1e-5)


def test_any_caption_count_and_zero_vectors():
    caps = torch.randn(3, 7, 4, dtype=torch.float64)
    caps[2, 3] = 0.0
    mask = torch.tensor([[True] * 7, [True, True] + [False] * 5, [True] * 4 + [False] * 3])
    rel = rsc_relevance(caps, torch.randn(3, 4, dtype=torch.float64), caps_mask=mask)
    assert torch.isfinite(rel).all() and rel.diagonal().eq(1).all()
    caps_short = caps[1:2, :2]
    rel_short = rsc_relevance(caps_short, torch.randn(1, 4, dtype=torch.float64))
    assert rel_short.shape == (1, 1)
    with pytest.raises(InvalidInputError):
        rsc_relevance(caps, torch.randn(3, 5, dtype=torch.float64))


def test_weight_is_required_and_checked(listwise_case):
    with pytest.raises(TypeError):
        ListwiseLoss()
    with pytest.raises(InvalidParameterError):
        ListwiseLoss(weight=1.5)
    with pytest.raises(InvalidParameterError):
        ListwiseLoss(weight=0.5, t2i_relevance="transposed")
    with pytest.raises(InvalidInputError, match="relevance"):
        ListwiseLoss(weight=0.5)(listwise_case["sims"])


@pytest.mark.parametrize("mode", ["transpose", "reference"])
def test_gradcheck(mode):
    gen = torch.Generator().manual_seed(3)
    sims = torch.randn(4, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    rel = torch.rand(4, 4, dtype=torch.float64, generator=gen).fill_diagonal_(1.0)
    assert torch.autograd.gradcheck(
        lambda s: pairwise_listwise_loss(s, rel, weight=0.4, tau=0.5, t2i_relevance=mode)[0], (sims,)
    )


def test_device_preserved(device, listwise_case):
    sims = listwise_case["sims"].to(device)
    rel = rsc_relevance(listwise_case["caps"].to(device), listwise_case["cap"].to(device))
    loss, _ = smooth_ndcg_loss(sims, rel)
    assert loss.device.type == device.type and loss.dtype == torch.float64


def test_rsc_relevance_tie_gives_gradient_to_first_caption():
    """Spec 7a.6: two identical captions of image 0 tie in the max; the first gets the whole gradient."""
    caps = torch.tensor(
        [[[1.0, 0.0], [1.0, 0.0], [0.0, -1.0]], [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]],
        dtype=torch.float64,
        requires_grad=True,
    )
    cap = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    rel = rsc_relevance(caps, cap)
    assert rel[0, 1].item() == pytest.approx((1 + 0.6) / 2)
    rel[0, 1].backward()
    grad = caps.grad[0]
    assert grad[0].abs().sum() > 0
    assert grad[1].abs().sum() == 0 and grad[2].abs().sum() == 0
