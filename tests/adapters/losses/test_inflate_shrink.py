"""Inflate & Shrink: golden late interaction / Lp hinge / KD, masks, parity switches, gradients."""

from __future__ import annotations

import pytest
import torch

from pillar_rerank.adapters.distances import LateInteractionSimilarity
from pillar_rerank.adapters.losses import LpHingeLoss, ScoreDistillationLoss
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError


def late_interaction(img, txt, *, img_mask=None, txt_mask=None, n_out=None):
    return LateInteractionSimilarity(n_out=n_out)(img, txt, query_mask=img_mask, ref_mask=txt_mask)


def lp_hinge_triplet_loss(sims, margin=0.2, *, pos_mask=None, **params):
    return LpHingeLoss(margin=margin, **params)(sims, pos_mask=pos_mask)


def score_distillation_loss(teacher_sims, student_sims, **params):
    return ScoreDistillationLoss(**params)(student_sims, teacher_sims=teacher_sims)


def test_golden_late_interaction_and_hinge(inflate_case, golden):
    g = golden["inflate_shrink"]
    sims = late_interaction(inflate_case["vt"], inflate_case["tt"])
    assert sims.shape == (4, 4)
    assert torch.allclose(sims[0], torch.tensor(g["late_interaction_row0"], dtype=torch.float64), atol=1e-8)
    assert lp_hinge_triplet_loss(sims, 0.6, mask_diagonal=False).item() == pytest.approx(
        g["lp_hinge_m06"], abs=1e-8
    )
    assert lp_hinge_triplet_loss(sims, 0.2, mask_diagonal=False).item() == pytest.approx(
        g["lp_hinge_m02"], abs=1e-8
    )


def test_masked_diagonal_is_the_default_and_differs():
    sims = torch.eye(3, dtype=torch.float64) * 5  # no violation at all
    assert lp_hinge_triplet_loss(sims, 0.6).item() == pytest.approx(6 * 1e-5 ** (1 / 8), rel=1e-9)
    ref = lp_hinge_triplet_loss(sims, 0.6, mask_diagonal=False).item()
    assert ref == pytest.approx(6 * (0.6**8 + 1e-5) ** (1 / 8), rel=1e-9)  # the reference's m^8 term
    assert LpHingeLoss()(sims).item() == pytest.approx(lp_hinge_triplet_loss(sims, 0.6).item())


def test_golden_distillation(inflate_case, golden):
    g = golden["inflate_shrink"]
    st, ss = inflate_case["ST"], inflate_case["SS"]
    assert score_distillation_loss(st, ss).item() == pytest.approx(g["kd_16_16"], abs=1e-8)
    assert score_distillation_loss(st, ss, teacher_scale=2.0).item() == pytest.approx(g["kd_2_16"], abs=1e-8)
    assert score_distillation_loss(st, ss, log_softmax="reference").item() == pytest.approx(
        g["kd_16_16"], abs=1e-8
    )
    module = ScoreDistillationLoss(teacher_scale=2.0)
    assert module(ss, teacher_sims=st).item() == pytest.approx(g["kd_2_16"], abs=1e-8)


def test_reference_log_softmax_overflows_in_float32():
    teacher = torch.eye(3)
    student = torch.tensor([[20.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 20.0]]) * -1 + 20 * torch.eye(3)
    student[0, 1] = -30.0
    assert not torch.isfinite(score_distillation_loss(teacher, student, log_softmax="reference"))
    assert torch.isfinite(score_distillation_loss(teacher, student))


def test_teacher_gets_no_gradient(inflate_case):
    st = inflate_case["ST"].clone().requires_grad_()
    ss = inflate_case["SS"].clone().requires_grad_()
    score_distillation_loss(st, ss).backward()
    assert st.grad is None and ss.grad is not None


def test_late_interaction_masks_match_loop():
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(2, 4, 3, generator=gen), torch.randn(3, 5, 3, generator=gen)
    img_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    txt_mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5, [1, 0, 0, 0, 0]], dtype=torch.bool)
    got = late_interaction(img, txt, img_mask=img_mask, txt_mask=txt_mask)
    for a in range(2):
        for b in range(3):
            want = sum(
                max(float(txt[b, i] @ img[a, j]) for j in range(4) if img_mask[a, j])
                for i in range(5)
                if txt_mask[b, i]
            )
            assert got[a, b].item() == pytest.approx(want, abs=1e-5)
    sliced = late_interaction(img, txt, n_out=2)
    assert torch.allclose(sliced, late_interaction(img[:, :2], txt[:, :2]))


def test_gradcheck():
    gen = torch.Generator().manual_seed(2)
    img = torch.randn(3, 2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    txt = torch.randn(3, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: lp_hinge_triplet_loss(late_interaction(a, b) / 3, 0.6), (img, txt), fast_mode=True
    )
    st = torch.randn(4, 4, dtype=torch.float64)
    ss = torch.randn(4, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: score_distillation_loss(st, s, teacher_scale=2.0, student_scale=2.0), (ss,)
    )


def test_errors(device):
    with pytest.raises(InvalidInputError):
        late_interaction(torch.randn(2, 3, 4), torch.randn(2, 3, 5))
    with pytest.raises(InvalidInputError):
        score_distillation_loss(torch.randn(3, 3), torch.randn(4, 4))
    with pytest.raises(InvalidParameterError):
        ScoreDistillationLoss(log_softmax="naive")
    sims = torch.randn(3, 3, device=device)
    assert lp_hinge_triplet_loss(sims).device.type == device.type


def test_score_distillation_accepts_rectangular_pairs():
    """The formula has no diagonal; the reference takes any 2-D pair (here 3 images x 5 texts)."""
    gen = torch.Generator().manual_seed(4)
    teacher = torch.randn(3, 5, dtype=torch.float64, generator=gen)
    student = torch.randn(3, 5, dtype=torch.float64, generator=gen)
    got = score_distillation_loss(teacher, student, teacher_scale=2.0, student_scale=3.0)
    want = 0.0
    for t, s, dim in ((teacher, student, 1), (teacher, student, 0)):
        p = torch.softmax(2.0 * t, dim=dim)
        want += -0.5 * float((p * torch.log_softmax(3.0 * s, dim=dim)).sum())
    assert got.item() == pytest.approx(want, rel=1e-12)
    with pytest.raises(InvalidInputError):
        score_distillation_loss(teacher, student[:, :4])
