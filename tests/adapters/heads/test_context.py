"""SelfAlign's heads: the prototype bank and the context head (mask, relu switch)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pillar_rerank.adapters.heads import ContextHead, PrototypeBank


def test_prototype_bank_normalise_and_freeze():
    bank = PrototypeBank(4, 6)
    bank.normalize_()
    assert torch.allclose(bank.weight.norm(dim=1), torch.ones(6))
    bank(torch.randn(2, 4)).sum().backward()
    assert bank.weight.grad is not None
    bank.freeze_grads()
    assert bank.weight.grad is None


def test_context_head_shapes_and_mask():
    head = ContextHead(6)
    tokens = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5, [1, 0, 0, 0, 0]], dtype=torch.bool)
    locals_, g, fused = head(tokens, mask)
    assert locals_.shape == (3, 5, 6) and g.shape == (3, 6) and fused.shape == (3, 6)
    assert torch.allclose(fused.norm(dim=1), torch.ones(3), atol=1e-5)
    assert locals_[0, 3:].abs().sum() == 0  # padded locals stay empty
    head.eval()
    changed = tokens.clone()
    changed[0, 3:] = 100.0
    out_a, out_b = head(tokens, mask), head(changed, mask)
    assert torch.allclose(out_a[2][0], out_b[2][0])  # padding cannot move the fused vector


@pytest.mark.parametrize("masked", [False, True])
def test_context_head_relu_switch_covers_locals(masked):
    """The reference's ``ctx_relu`` switch drops the ReLU of the locals too, not only the global."""
    torch.manual_seed(0)
    tokens = torch.randn(3, 5, 6)
    mask = torch.ones(3, 5, dtype=torch.bool) if masked else None
    on, off = ContextHead(6, relu=True), ContextHead(6, relu=False)
    off.load_state_dict(on.state_dict())
    locals_on, g_on, _ = on(tokens, mask)
    locals_off, g_off, _ = off(tokens, mask)
    assert (locals_on >= 0).all() and (g_on >= 0).all()
    want = F.normalize(off.local_norm(tokens.reshape(-1, 6)), dim=-1).reshape(3, 5, 6)
    assert torch.allclose(locals_off, want, atol=1e-6)  # no ReLU: negative entries survive
    assert (locals_off < 0).any() and (g_off < 0).any()
