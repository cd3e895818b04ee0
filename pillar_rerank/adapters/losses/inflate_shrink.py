"""Inflate & Shrink losses: the Lp "soft-hardest" hinge and score distillation (shrinking).

Liu, Yu, Li, "Inflate and Shrink: Enriching and Reducing Interactions for Fast Text-Image
Retrieval", EMNLP 2021. Reimplemented from ``../shared/spec/adapters.md`` section 5 (the reference
repository carries no licence; no code of it is used). The inflating codes are
:class:`~pillar_rerank.adapters.heads.InflateCodes`; the late-interaction score is
:class:`~pillar_rerank.adapters.distances.LateInteractionSimilarity`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from pillar_rerank._validation import Interval, Options
from pillar_rerank.adapters.losses.base import BaseScoreLoss, transpose_or_none
from pillar_rerank.adapters.reducers import get_reducer

LOG_SOFTMAX_MODES = ("stable", "reference")


def directional_lp_hinge(
    scores: Tensor, pos_mask: Tensor | None, *, margin: float, p: float, eps: float, mask_diagonal: bool
) -> Tensor:
    """Per-query ``(sum_g [m + s_qg - s_qq]_+^p + eps)^(1/p)`` (one direction)."""
    hinge = (margin + scores - scores.diagonal()[:, None]).clamp(min=0).pow(p)
    if mask_diagonal:
        drop = torch.eye(scores.shape[0], scores.shape[1], dtype=torch.bool, device=scores.device)
        if pos_mask is not None:
            drop = drop | pos_mask
        hinge = hinge.masked_fill(drop, 0.0)
    return (hinge.sum(dim=1) + eps).pow(1.0 / p)


class LpHingeLoss(BaseScoreLoss):
    r"""Lp-norm "soft-hardest" hinge of Inflate & Shrink, over both directions.

    .. math:: L = \sum_a \big(\sum_b [m + S_{ab} - S_{aa}]_+^p + \varepsilon\big)^{1/p}
              + \sum_b \big(\sum_a [m + S_{ab} - S_{bb}]_+^p + \varepsilon\big)^{1/p}

    ``forward(sims, *, pos_mask=None)`` on a square batch matrix.

    Parameters
    ----------
    margin : float, default=0.6
        The reference trains base/inflate with 0.6 and fast with 0.2.
    p : float, default=8
    eps : float, default=1e-5
    mask_diagonal : bool, default=True
        Drop the positive pair (and ``pos_mask``) from the sum. ``False`` is the reference,
        whose unmasked diagonal adds ``margin**p`` to every sum.
    reduction : {"sum", "mean"}, default="sum"
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "margin": Interval(float, 0.0),
        "p": Interval(float, 1.0),
        "eps": Interval(float, 0.0),
        "mask_diagonal": bool,
        "reduction": Options(frozenset({"sum", "mean"})),
    }

    def __init__(
        self,
        *,
        margin: float = 0.6,
        p: float = 8.0,
        eps: float = 1e-5,
        mask_diagonal: bool = True,
        reduction: str = "sum",
    ) -> None:
        super().__init__()
        self.margin, self.p, self.eps = margin, p, eps
        self.mask_diagonal, self.reduction = mask_diagonal, reduction
        self._check_params()
        self.margin, self.p, self.eps = float(margin), float(p), float(eps)
        self.reducer = get_reducer(reduction)

    def compute_loss(self, sims: Tensor, *, pos_mask: Tensor | None, **batch) -> Tensor:
        kw = {"margin": self.margin, "p": self.p, "eps": self.eps, "mask_diagonal": self.mask_diagonal}
        per_query = torch.cat(
            [
                directional_lp_hinge(sims, pos_mask, **kw),
                directional_lp_hinge(sims.transpose(0, 1), transpose_or_none(pos_mask), **kw),
            ]
        )
        return self.reducer(per_query)


def directional_distillation(
    teacher: Tensor, student: Tensor, *, teacher_scale: float, student_scale: float, log_softmax: str
) -> Tensor:
    """Per-row cross-entropy between the teacher's and the student's score distributions."""
    target = F.softmax(teacher_scale * teacher, dim=1)
    if log_softmax == "reference":
        log_p = F.softmax(student_scale * student, dim=1).log()
    else:
        log_p = F.log_softmax(student_scale * student, dim=1)
    return -(target * log_p).sum(dim=1)


class ScoreDistillationLoss(BaseScoreLoss):
    r"""Shrink: row- and column-wise cross-entropy from the teacher's to the student's batch scores.

    .. math::
        L = -\tfrac12 \sum_{a,b} \sigma_b(\alpha_T S^T)_{ab} \log \sigma_b(\alpha_S S^S)_{ab}
            -\tfrac12 \sum_{a,b} \sigma_a(\alpha_T S^T)_{ab} \log \sigma_a(\alpha_S S^S)_{ab}

    where :math:`\sigma_b` is the softmax over ``b`` (rows) and :math:`\sigma_a` over ``a``
    (columns). ``forward(student_sims, *, teacher_sims)``: any 2-D pair of the same shape (the
    formula has no diagonal, so rectangular batches work, as in the reference). The teacher is
    detached inside; there is no ground-truth term.

    Parameters
    ----------
    teacher_scale, student_scale : float, default=16
        ``(16, 16)`` for inflate -> base, ``(2, 16)`` for base -> fast.
    reduction : {"sum", "mean"}, default="sum"
        "sum" is the reference (half the sum over rows and columns); "mean" averages per row.
    log_softmax : {"stable", "reference"}, default="stable"
        "reference" takes ``softmax(x).log()`` like the released code, which gives inf/NaN in
        float32 once a student score gap exceeds about 6.5 at scale 16.
    """

    requires = ("teacher_sims",)
    matrix_inputs = ("teacher_sims",)
    square = False
    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "teacher_scale": Interval(float, 0.0, closed="neither"),
        "student_scale": Interval(float, 0.0, closed="neither"),
        "reduction": Options(frozenset({"sum", "mean"})),
        "log_softmax": Options(frozenset(LOG_SOFTMAX_MODES)),
    }

    def __init__(
        self,
        *,
        teacher_scale: float = 16.0,
        student_scale: float = 16.0,
        reduction: str = "sum",
        log_softmax: str = "stable",
    ) -> None:
        super().__init__()
        self.teacher_scale, self.student_scale = teacher_scale, student_scale
        self.reduction, self.log_softmax = reduction, log_softmax
        self._check_params()
        self.teacher_scale, self.student_scale = float(teacher_scale), float(student_scale)

    def compute_loss(self, sims: Tensor, *, pos_mask: Tensor | None, teacher_sims: Tensor, **batch) -> Tensor:
        teacher = teacher_sims.detach()
        kw = {
            "teacher_scale": self.teacher_scale,
            "student_scale": self.student_scale,
            "log_softmax": self.log_softmax,
        }
        per_row = torch.cat(
            [
                directional_distillation(teacher, sims, **kw),
                directional_distillation(teacher.transpose(0, 1), sims.transpose(0, 1), **kw),
            ]
        )
        if self.reduction == "sum":
            return 0.5 * per_row.sum()
        return get_reducer(self.reduction)(per_row)
