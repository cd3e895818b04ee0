"""Inflate & Shrink: inflating codes, late-interaction scoring, the Lp hinge and score distillation.

Liu, Yu, Li, "Inflate and Shrink: Enriching and Reducing Interactions for Fast Text-Image
Retrieval", EMNLP 2021. Reimplemented from ``../shared/spec/adapters.md`` section 5 (the reference
repository carries no licence; no code of it is used).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pillar_rerank.adapters.losses.base import BaseScoreLoss, check_pos_mask, check_sims, transpose_or_none
from pillar_rerank.adapters.reducers import get_reducer
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError

LOG_SOFTMAX_MODES = ("stable", "reference")


class InflateCodes(torch.nn.Module):
    """``num_codes`` learnable code vectors appended after a token sequence (one table per modality).

    Parameters
    ----------
    num_codes : int, default=32
    dim : int, default=768
    """

    def __init__(self, num_codes: int = 32, dim: int = 768) -> None:
        super().__init__()
        self.num_codes, self.dim = int(num_codes), int(dim)
        self.codes = torch.nn.Embedding(self.num_codes, self.dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.codes.reset_parameters()

    def append(
        self, tokens: Tensor, mask: Tensor | None = None, norm: torch.nn.Module | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(tokens [B, N, dim], mask [B, N]) -> ([B, N + k, dim], [B, N + k])``; codes always valid."""
        b, n, _ = tokens.shape
        codes = self.codes.weight.to(tokens.dtype)
        if norm is not None:
            codes = norm(codes)
        out = torch.cat([tokens, codes[None].expand(b, -1, -1)], dim=1)
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=tokens.device)
        code_mask = torch.ones(b, self.num_codes, dtype=torch.bool, device=tokens.device)
        return out, torch.cat([mask.to(torch.bool), code_mask], dim=1)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.append(tokens, mask)

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, dim={self.dim}"


def late_interaction(
    img_tokens: Tensor,
    txt_tokens: Tensor,
    *,
    txt_mask: Tensor | None = None,
    img_mask: Tensor | None = None,
    n_out: int | None = None,
) -> Tensor:
    r"""ColBERT MaxSim with the text as query.

    .. math:: s(I_a, T_b) = \sum_i \max_j \langle t_{b,i}, v_{a,j}\rangle

    Parameters
    ----------
    img_tokens : Tensor of shape (n_images, m, D)
    txt_tokens : Tensor of shape (n_texts, n, D)
    txt_mask, img_mask : bool Tensor of shape (n_texts, n) / (n_images, m), optional
        Valid positions; padded image tokens never win the max, padded text tokens add nothing.
        ``None`` counts every position (the reference, which does not mask padding).
    n_out : int, optional
        Keep only the first ``n_out`` positions on both sides (the reference's slice; a parity
        switch: it drops image regions beyond ``n_out``).

    Returns
    -------
    Tensor of shape (n_images, n_texts). Memory O(n_images * n_texts * m * n); score large
    galleries in blocks of images. At an exact tie of the max over image tokens the whole
    gradient goes to the first tied token (the reference's ``max``).
    """
    if img_tokens.ndim != 3 or txt_tokens.ndim != 3 or img_tokens.shape[2] != txt_tokens.shape[2]:
        raise InvalidInputError(
            f"late_interaction: expected (n_images, m, D) and (n_texts, n, D); got "
            f"{tuple(img_tokens.shape)} and {tuple(txt_tokens.shape)}."
        )
    if n_out is not None:
        img_tokens, txt_tokens = img_tokens[:, :n_out], txt_tokens[:, :n_out]
        img_mask = None if img_mask is None else img_mask[:, :n_out]
        txt_mask = None if txt_mask is None else txt_mask[:, :n_out]
    sims = torch.einsum("amd,bnd->abnm", img_tokens, txt_tokens)
    if img_mask is not None:
        sims = sims.masked_fill(~img_mask.to(sims.device, torch.bool)[:, None, None, :], float("-inf"))
    # max(dim): at tied image tokens the whole gradient goes to the first one (spec 7a.6)
    best = sims.max(dim=-1).values  # [a, b, n]
    if txt_mask is not None:
        best = best.masked_fill(~txt_mask.to(sims.device, torch.bool)[None, :, :], 0.0)
    return best.sum(dim=-1)


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


def lp_hinge_triplet_loss(
    sims: Tensor,
    margin: float = 0.2,
    *,
    p: float = 8.0,
    eps: float = 1e-5,
    mask_diagonal: bool = True,
    pos_mask: Tensor | None = None,
    reduction: str = "sum",
) -> Tensor:
    r"""Lp-norm "soft-hardest" hinge of Inflate & Shrink, summed over both directions.

    .. math:: L = \sum_a \big(\sum_b [m + S_{ab} - S_{aa}]_+^p + \varepsilon\big)^{1/p}
              + \sum_b \big(\sum_a [m + S_{ab} - S_{bb}]_+^p + \varepsilon\big)^{1/p}

    Parameters
    ----------
    sims : Tensor of shape (B, B)
    margin : float, default=0.2
        The reference trains base/inflate with 0.6 and fast with 0.2.
    p : float, default=8
    eps : float, default=1e-5
    mask_diagonal : bool, default=True
        Drop the positive pair (and ``pos_mask``) from the sum. ``False`` is the reference,
        whose unmasked diagonal adds ``margin**p`` to every sum.
    pos_mask : bool Tensor of shape (B, B), optional
    reduction : {"sum", "mean"}, default="sum"
    """
    sims = check_sims(sims)
    pos_mask = check_pos_mask(pos_mask, sims)
    kw = {"margin": margin, "p": p, "eps": eps, "mask_diagonal": mask_diagonal}
    per_query = torch.cat(
        [
            directional_lp_hinge(sims, pos_mask, **kw),
            directional_lp_hinge(sims.transpose(0, 1), transpose_or_none(pos_mask), **kw),
        ]
    )
    return get_reducer(reduction)(per_query)


class LpHingeLoss(BaseScoreLoss):
    """Module form of :func:`lp_hinge_triplet_loss` (default margin 0.6, the base/inflate setting)."""

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
        if not p >= 1:
            raise InvalidParameterError(f"The 'p' parameter of LpHingeLoss must be >= 1; got {p!r} instead.")
        self.margin, self.p, self.eps = float(margin), float(p), float(eps)
        self.mask_diagonal, self.reduction = bool(mask_diagonal), reduction
        get_reducer(reduction)

    def compute_loss(self, sims: Tensor, *, pos_mask: Tensor | None, **batch) -> Tensor:
        return lp_hinge_triplet_loss(
            sims,
            self.margin,
            p=self.p,
            eps=self.eps,
            mask_diagonal=self.mask_diagonal,
            pos_mask=pos_mask,
            reduction=self.reduction,
        )

    def _repr_params(self) -> dict:
        return {"margin": self.margin, "p": self.p, "mask_diagonal": self.mask_diagonal}


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


def score_distillation_loss(
    teacher_sims: Tensor,
    student_sims: Tensor,
    *,
    teacher_scale: float = 16.0,
    student_scale: float = 16.0,
    reduction: str = "sum",
    log_softmax: str = "stable",
) -> Tensor:
    r"""Shrink: row- and column-wise cross-entropy from the teacher's to the student's batch scores.

    .. math::
        L = -\tfrac12 \sum_{a,b} \sigma_b(\alpha_T S^T)_{ab} \log \sigma_b(\alpha_S S^S)_{ab}
            -\tfrac12 \sum_{a,b} \sigma_a(\alpha_T S^T)_{ab} \log \sigma_a(\alpha_S S^S)_{ab}

    where :math:`\sigma_b` is the softmax over ``b`` (rows) and :math:`\sigma_a` over ``a`` (columns).

    The teacher is detached inside; there is no ground-truth term.

    Parameters
    ----------
    teacher_sims, student_sims : Tensor of shape (n, m)
        Any 2-D pair of the same shape: the formula has no diagonal, so rectangular batches
        (e.g. more texts than images) work, as in the reference.
    teacher_scale, student_scale : float, default=16
        ``(16, 16)`` for inflate -> base, ``(2, 16)`` for base -> fast.
    reduction : {"sum", "mean"}, default="sum"
        "sum" is the reference (half the sum over rows and columns); "mean" averages per row.
    log_softmax : {"stable", "reference"}, default="stable"
        "reference" takes ``softmax(x).log()`` like the released code, which gives inf/NaN in
        float32 once a student score gap exceeds about 6.5 at scale 16.
    """
    teacher_sims = check_sims(teacher_sims, name="teacher_sims", square=False).detach()
    student_sims = check_sims(student_sims, name="student_sims", square=False)
    if teacher_sims.shape != student_sims.shape:
        raise InvalidInputError(
            f"score_distillation_loss: teacher_sims {tuple(teacher_sims.shape)} and "
            f"student_sims {tuple(student_sims.shape)} differ."
        )
    if log_softmax not in LOG_SOFTMAX_MODES:
        raise InvalidParameterError(
            f"The 'log_softmax' parameter must be one of {LOG_SOFTMAX_MODES!r}; got {log_softmax!r} instead."
        )
    teacher_sims = teacher_sims.to(student_sims.dtype)
    kw = {"teacher_scale": teacher_scale, "student_scale": student_scale, "log_softmax": log_softmax}
    per_row = torch.cat(
        [
            directional_distillation(teacher_sims, student_sims, **kw),
            directional_distillation(teacher_sims.transpose(0, 1), student_sims.transpose(0, 1), **kw),
        ]
    )
    if reduction == "sum":
        return 0.5 * per_row.sum()
    return get_reducer(reduction)(per_row)


class ScoreDistillationLoss(torch.nn.Module):
    """Module form of :func:`score_distillation_loss`: ``forward(teacher_sims, student_sims)``."""

    def __init__(
        self,
        *,
        teacher_scale: float = 16.0,
        student_scale: float = 16.0,
        reduction: str = "sum",
        log_softmax: str = "stable",
    ) -> None:
        super().__init__()
        if log_softmax not in LOG_SOFTMAX_MODES:
            raise InvalidParameterError(
                f"The 'log_softmax' parameter of ScoreDistillationLoss must be one of "
                f"{LOG_SOFTMAX_MODES!r}; got {log_softmax!r} instead."
            )
        get_reducer(reduction)
        self.teacher_scale, self.student_scale = float(teacher_scale), float(student_scale)
        self.reduction, self.log_softmax = reduction, log_softmax
        self.last_stats: dict[str, float] = {}

    def forward(self, teacher_sims: Tensor, student_sims: Tensor) -> Tensor:
        return score_distillation_loss(
            teacher_sims,
            student_sims,
            teacher_scale=self.teacher_scale,
            student_scale=self.student_scale,
            reduction=self.reduction,
            log_softmax=self.log_softmax,
        )

    def extra_repr(self) -> str:
        return f"teacher_scale={self.teacher_scale}, student_scale={self.student_scale}"
