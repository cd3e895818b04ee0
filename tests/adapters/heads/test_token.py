"""Token heads: Inflate & Shrink's codes."""

from __future__ import annotations

import torch

from pillar_rerank.adapters.heads import InflateCodes


def test_inflate_codes_append():
    codes = InflateCodes(3, 4)
    tokens, mask = codes.append(
        torch.randn(2, 5, 4), torch.tensor([[1, 1, 0, 0, 0], [1] * 5], dtype=torch.bool)
    )
    assert tokens.shape == (2, 8, 4) and mask[:, 5:].all() and not mask[0, 2]
    assert torch.equal(tokens[0, 5:], codes.codes.weight)
