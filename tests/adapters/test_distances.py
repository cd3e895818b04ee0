"""Distances: late interaction (ties) and the SelfAlign score."""

from __future__ import annotations

import torch

from pillar_rerank.adapters.distances import LateInteractionSimilarity, selfalign_similarity


def late_interaction(img, txt, **masks):
    return LateInteractionSimilarity()(img, txt, **masks)


def test_selfalign_similarity_is_a_dot_product_of_concatenations():
    d = 4
    e_i, e_t = torch.randn(3, d), torch.randn(5, d)
    lm_i, c_i, lm_t, c_t = torch.randn(3, d), torch.randn(3, d), torch.randn(5, d), torch.randn(5, d)
    s = selfalign_similarity(e_i @ e_t.T, lm_i, c_i, lm_t, c_t, weight=0.5)
    left = torch.cat([e_i, 0.5 * lm_i, 0.5 * c_i], 1)
    right = torch.cat([e_t, c_t, lm_t], 1)
    assert torch.allclose(s, left @ right.T, atol=1e-5)


def test_late_interaction_tie_gives_gradient_to_first_image_token():
    """Spec 7a.6: at an exact tie of the max, the first tied image token gets the whole gradient."""
    img = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64, requires_grad=True)
    txt = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    late_interaction(img, txt).sum().backward()
    assert img.grad[0, 0].tolist() == [1.0, 0.0]
    assert img.grad[0, 1:].abs().sum() == 0
