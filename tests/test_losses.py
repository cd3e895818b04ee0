import math

import pytest
import torch

from pillar_rerank.lists.contract import QueryLists
from pillar_rerank.losses import (
    LeaPRRLoss,
    hinge_floor_loss,
    listwise_contrastive_loss,
    local_triplet_loss,
    structure_alignment_loss,
)

S = torch.tensor([[1.0, 0.5, 0.2, -0.1], [1.0, 0.9, 0.8, 0.3]])
Y = torch.tensor([[True, False, True, False], [True, True, False, False]])


def test_contrastive_hand_computed():
    e = lambda v: math.exp(v / 2.0)  # noqa: E731
    row0 = -math.log((e(1.0) + e(0.2)) / (e(1.0) + e(0.5) + e(0.2) + e(-0.1)))
    row1 = -math.log((e(1.0) + e(0.9)) / (e(1.0) + e(0.9) + e(0.8) + e(0.3)))
    assert listwise_contrastive_loss(S, Y).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_contrastive_does_not_overflow():
    big = torch.tensor([[2000.0, 1999.0, -5.0]])
    value = listwise_contrastive_loss(big, torch.tensor([[True, False, False]]), temperature=0.01)
    assert torch.isfinite(value)


def test_triplet_hand_computed():
    # row 0: hardest positive 0.2; negatives 0.5, -0.1 -> 0.5 + 0.1 = 0.6 (second term 0.1 + ... = 0.1)
    row0 = max(0, 0.2 + 0.5 - 0.2) + max(0, 0.2 - 0.1 - 0.2)
    # row 1: hardest positive 0.9; negatives 0.8, 0.3 -> 0.1 + 0
    row1 = max(0, 0.2 + 0.8 - 0.9) + max(0, 0.2 + 0.3 - 0.9)
    assert local_triplet_loss(S, Y, margin=0.2).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_triplet_matches_loop_oracle_of_the_reference():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(6, 5, generator=g)
    y = torch.rand(6, 5, generator=g) > 0.5
    y[:, 0] = True
    total = 0.0
    for i in range(6):
        m = s[i][y[i]].min()
        cost = (0.2 + s[i] - m).clamp(min=0).masked_fill(y[i], 0)
        total += cost.sum()
    assert local_triplet_loss(s, y).item() == pytest.approx(float(total / 6), rel=1e-6)


def test_hinge_floor_hand_computed():
    original = torch.tensor([[0.9, 0.6, 0.4, 0.3], [0.8, 0.7, 0.7, 0.75]])
    # floors 0.3 and 0.7; row 0: (0.3 - 0.2) + (0.3 + 0.1) = 0.5; row 1: 0.7 - 0.3 = 0.4
    assert hinge_floor_loss(S, original).item() == pytest.approx(0.45, rel=1e-6)


def test_kl_hand_computed_and_zero_for_equal_lists():
    p = torch.softmax(S[0], -1)
    q = torch.softmax(S[1], -1)
    want = float((p * (p.log() - q.log())).sum())
    got = structure_alignment_loss(S[:1], S[1:])
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert structure_alignment_loss(S, S).item() == pytest.approx(0.0, abs=1e-7)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    s = torch.rand(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    m = torch.rand(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(3, 5, generator=g) > 0.4
    y[:, 0] = True
    raw = torch.rand(3, 5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: listwise_contrastive_loss(a, y), (s,))
    assert torch.autograd.gradcheck(lambda a: local_triplet_loss(a, y), (s,))
    assert torch.autograd.gradcheck(lambda a: hinge_floor_loss(a, raw), (s,))
    assert torch.autograd.gradcheck(structure_alignment_loss, (s, m))  # both sides get gradients


def test_contrastive_gradient_direction():
    s = S.clone().requires_grad_(True)
    listwise_contrastive_loss(s, Y).backward()
    assert (s.grad[Y] <= 0).all() and (s.grad[~Y] >= 0).all()


def test_zero_terms_stay_connected_to_the_graph():
    s = torch.tensor([[1.0, -1.0, -1.0]], requires_grad=True)
    y = torch.tensor([[True, False, False]])
    loss = local_triplet_loss(s, y) + hinge_floor_loss(s, torch.tensor([[-2.0, -2.0, -2.0]]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        listwise_contrastive_loss(S, Y[:, :3])
    with pytest.raises(ValueError, match="mapped scores"):
        structure_alignment_loss(S, S[:, :3])


def _lists(scores, targets):
    q, n = scores.shape
    feats = torch.zeros(q, n, 4)
    feats[:, :, 0] = torch.linspace(0.9, 0.1, n)
    return QueryLists(
        feats, targets, torch.eye(n).expand(q, n, n), torch.zeros(q, n - 1, dtype=torch.long), torch.arange(q)
    )


def test_total_loss_is_the_weighted_sum_of_its_parts():
    loss = LeaPRRLoss(triplet_weight=0.5, hinge_weight=2.0, kl_weight=3.0)
    li, lt = _lists(S, Y), _lists(S[:, :3], Y[:, :3])
    total, parts = loss(
        i2t=(S, li), t2i=(S[:, :3], lt), t2i_map=(S.flip(0), li), i2t_map=(S[:, :3] * 0.5, lt)
    )
    assert set(parts) == {
        "contrastive_i2t",
        "hinge_i2t",
        "triplet_i2t",
        "contrastive_t2i",
        "hinge_t2i",
        "triplet_t2i",
        "contrastive_t2i_map",
        "hinge_t2i_map",
        "contrastive_i2t_map",
        "hinge_i2t_map",
        "kl_i2t",
        "kl_t2i",
    }
    w = {"contrastive": 1.0, "hinge": 2.0, "triplet": 0.5, "kl": 3.0}
    want = sum(w[k.split("_")[0]] * v for k, v in parts.items())
    assert total.item() == pytest.approx(want, rel=1e-6)
    assert parts["kl_i2t"] > 0
