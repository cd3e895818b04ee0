"""Symmetric InfoNCE (CLIP-style contrastive loss) over a batch score matrix.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", 2021;
van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pillar_rerank.adapters.losses.base import BaseScoreLoss, check_pos_mask, check_sims, transpose_or_none
from pillar_rerank.exceptions import InvalidParameterError

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


def infonce_loss(
    sims: Tensor,
    *,
    temperature: float | None = 0.05,
    logit_scale: Tensor | None = None,
    pos_mask: Tensor | None = None,
) -> Tensor:
    r"""Symmetric InfoNCE: :math:`L = \tfrac12[\mathrm{CE}(S/\tau) + \mathrm{CE}(S^\top/\tau)]`.

    Parameters
    ----------
    sims : Tensor of shape (B, B)
        Positives on the diagonal.
    temperature : float, default=0.05
        Fixed temperature; ignored when ``logit_scale`` is given.
    logit_scale : Tensor, optional
        A (learnable) scalar multiplying the scores instead of ``1 / temperature``.
    pos_mask : bool Tensor of shape (B, B), optional
        Further positives; each row's term is ``-log`` of the softmax mass on all its positives.
    """
    sims = check_sims(sims)
    pos_mask = check_pos_mask(pos_mask, sims)
    if logit_scale is None:
        if temperature is None or not temperature > 0:
            raise InvalidParameterError(f"infonce_loss: temperature must be > 0; got {temperature!r}.")
        logits = sims / temperature
    else:
        logits = sims * logit_scale
    per_query = torch.cat(
        [
            directional_infonce(logits, pos_mask),
            directional_infonce(logits.transpose(0, 1), transpose_or_none(pos_mask)),
        ]
    )
    return per_query.mean()


class InfoNCELoss(BaseScoreLoss):
    """Symmetric InfoNCE with a fixed or learnable temperature.

    Parameters
    ----------
    temperature : float, default=0.05
        Fixed temperature (``learnable=False``).
    learnable : bool, default=False
        Learn the logit scale as CLIP does: a parameter ``log_scale`` initialised at
        ``log(1 / 0.07)``, the scale clamped at 100.
    """

    def __init__(self, *, temperature: float = 0.05, learnable: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise InvalidParameterError(
                f"The 'temperature' parameter of InfoNCELoss must be a float > 0; "
                f"got {temperature!r} instead."
            )
        self.temperature = float(temperature)
        self.learnable = bool(learnable)
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(CLIP_INIT_SCALE))) if learnable else None

    def scale(self) -> Tensor | None:
        if self.log_scale is None:
            return None
        return self.log_scale.exp().clamp(max=CLIP_MAX_SCALE)

    def compute_loss(self, sims: Tensor, *, pos_mask: Tensor | None, **batch) -> Tensor:
        scale = self.scale()
        if scale is not None:
            scale = scale.to(dtype=sims.dtype)
            self.last_stats = {"logit_scale": float(scale.detach())}
        return infonce_loss(sims, temperature=self.temperature, logit_scale=scale, pos_mask=pos_mask)

    def _repr_params(self) -> dict:
        return {"temperature": self.temperature, "learnable": self.learnable}
