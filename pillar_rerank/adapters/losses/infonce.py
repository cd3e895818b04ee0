"""Symmetric InfoNCE (CLIP-style contrastive loss) over a batch score matrix.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", 2021;
van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from pillar_rerank._validation import Interval
from pillar_rerank.adapters.losses.base import BaseScoreLoss, transpose_or_none

#: CLIP's initial logit scale (1 / 0.07) and its clamp.
CLIP_INIT_SCALE = 1.0 / 0.07
CLIP_MAX_SCALE = 100.0


def directional_infonce(logits: Tensor, pos_mask: Tensor | None) -> Tensor:
    r"""Per-query ``-log sum_{p in pos(q)} softmax(logits_q)_p`` with the diagonal always positive.

    Computed as ``logsumexp(all) - logsumexp(positives)``, stable at any logit scale.
    """
    positives = torch.eye(logits.shape[0], logits.shape[1], dtype=torch.bool, device=logits.device)
    if pos_mask is not None:
        positives = positives | pos_mask
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(
        logits.masked_fill(~positives, float("-inf")), dim=1
    )


class InfoNCELoss(BaseScoreLoss):
    r"""Symmetric InfoNCE: :math:`L = \tfrac12[\mathrm{CE}(S/\tau) + \mathrm{CE}(S^\top/\tau)]`.

    ``forward(sims, *, pos_mask=None)`` with positives on the diagonal; with ``pos_mask`` each
    row's term is ``-log`` of the softmax mass on all its positives.

    Parameters
    ----------
    temperature : float, default=0.05
        Fixed temperature (``learnable=False``).
    learnable : bool, default=False
        Learn the logit scale as CLIP does: a parameter ``log_scale`` initialised at
        ``log(1 / 0.07)``, the scale clamped at 100.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "temperature": Interval(float, 0.0, closed="neither"),
        "learnable": bool,
    }

    def __init__(self, *, temperature: float = 0.05, learnable: bool = False) -> None:
        super().__init__()
        self.temperature, self.learnable = temperature, learnable
        self._check_params()
        self.temperature = float(temperature)
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(CLIP_INIT_SCALE))) if learnable else None

    def scale(self) -> Tensor | None:
        if self.log_scale is None:
            return None
        return self.log_scale.exp().clamp(max=CLIP_MAX_SCALE)

    def compute_loss(self, sims: Tensor, *, pos_mask: Tensor | None, **batch) -> Tensor:
        scale = self.scale()
        if scale is None:
            logits = sims / self.temperature
        else:
            scale = scale.to(dtype=sims.dtype)
            self.last_stats = {"logit_scale": float(scale.detach())}
            logits = sims * scale
        per_query = torch.cat(
            [
                directional_infonce(logits, pos_mask),
                directional_infonce(logits.transpose(0, 1), transpose_or_none(pos_mask)),
            ]
        )
        return per_query.mean()
