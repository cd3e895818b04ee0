"""Listwise ITR: RSC relevance and the Smooth-NDCG loss, combined with the pairwise triplet loss.

Li, Guo, Wang, Feng, Wang, "Integrating Listwise Ranking into Pairwise-based Image-Text
Retrieval", arXiv 2305.16566 (reference code: AAA-Zheng/Listwise_ITR @ 9c5d9fa). Formulas in
``../shared/spec/adapters.md`` section 3.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from pillar_rerank._validation import Interval, Options
from pillar_rerank.adapters.losses.base import BaseScoreLoss
from pillar_rerank.adapters.losses.vsepp import TripletLoss
from pillar_rerank.adapters.miners import HardestNegativeMiner
from pillar_rerank.exceptions import InvalidInputError

T2I_RELEVANCE = ("transpose", "reference")
#: Relevances closer than this are ties of the ideal ranking (reference: 0, a strict ">").
DEFAULT_TIE_TOLERANCE = 1e-6


def rsc_relevance(
    img_caps_emb: Tensor,
    cap_emb: Tensor,
    *,
    pos_mask: Tensor | None = None,
    caps_mask: Tensor | None = None,
    eps: float = 1e-12,
) -> Tensor:
    r"""RSC relevance of every (image, caption) pair of a batch.

    .. math:: c_{ij} = \max_k \cos(e(\mathrm{cap}_{i,k}), e(\mathrm{cap}_j)),\quad
              R_{ij} = (1 + c_{ij}) / 2,\quad R_{ii} = 1

    Parameters
    ----------
    img_caps_emb : Tensor of shape (B, K, E)
        Frozen embeddings of each batch image's ground-truth captions (any K; pad and mask).
    cap_emb : Tensor of shape (B, E)
        Frozen embedding of each batch caption.
    pos_mask : bool Tensor of shape (B, B), optional
        Pairs that are true matches besides the diagonal; their relevance is exactly 1.
    caps_mask : bool Tensor of shape (B, K), optional
        Valid entries of ``img_caps_emb`` (images with fewer captions are padded).

    Returns
    -------
    Tensor of shape (B, B)

    Notes
    -----
    The reference hard-codes 5 captions per image and normalises without an epsilon (a zero
    vector gives NaN); here any K works and zero vectors have cosine 0. At an exact tie of the
    max over captions the whole gradient goes to the first tied caption (the reference's
    ``max``), so gradients are reproducible.
    """
    if (
        img_caps_emb.ndim != 3
        or cap_emb.ndim != 2
        or img_caps_emb.shape[0] != cap_emb.shape[0]
        or img_caps_emb.shape[2] != cap_emb.shape[1]
    ):
        raise InvalidInputError(
            f"rsc_relevance: expected img_caps_emb (B, K, E) and cap_emb (B, E); got "
            f"{tuple(img_caps_emb.shape)} and {tuple(cap_emb.shape)}."
        )
    cos = torch.einsum(
        "ike,je->ijk", F.normalize(img_caps_emb, dim=-1, eps=eps), F.normalize(cap_emb, dim=-1, eps=eps)
    )
    if caps_mask is not None:
        if not bool(caps_mask.any(dim=1).all()):
            raise InvalidInputError("rsc_relevance: every image needs at least one caption in caps_mask.")
        cos = cos.masked_fill(~caps_mask.to(cos.device, torch.bool)[:, None, :], float("-inf"))
    # max(dim) gives the whole gradient to the first tied caption (spec 7a.6); amax would split it
    relevance = (1.0 + cos.max(dim=-1).values) / 2.0
    positives = torch.eye(relevance.shape[0], dtype=torch.bool, device=relevance.device)
    if pos_mask is not None:
        positives = positives | pos_mask.to(relevance.device, torch.bool)
    return relevance.masked_fill(positives, 1.0)


def smooth_rank(scores: Tensor, tau: float, *, exclude_self: bool = True) -> Tensor:
    r"""Sigmoid-smoothed rank of every candidate in every row.

    .. math:: \hat r_{qj} = 1 + \sum_{k \ne j} \sigma\big((S_{qk} - S_{qj}) / \tau\big)

    with the sigmoid's exponent clamped to [-50, 50] as in the reference.

    Shapes: scores (n_queries, L) -> (n_queries, L). Memory O(n_queries * L^2).
    """
    diff = scores[:, None, :] - scores[:, :, None]  # [q, j, k] = S_qk - S_qj
    # sigma(x) = 1 / (1 + exp(-x)) with -x clamped to [-50, 50], as the reference
    sig = torch.sigmoid(torch.clamp(diff / tau, -50.0, 50.0))
    total = sig.sum(dim=-1)
    if exclude_self:
        total = total - 0.5  # the k = j term is sigma(0) = 1/2 exactly (and carries no gradient)
    return 1.0 + total


def hard_rank(scores: Tensor) -> Tensor:
    """``1 + #{k : S_qk > S_qj}``, counted in the score dtype."""
    return 1.0 + (scores[:, None, :] > scores[:, :, None]).to(scores.dtype).sum(dim=-1)


def ideal_rank(relevance: Tensor, *, tie_tolerance: float = DEFAULT_TIE_TOLERANCE) -> Tensor:
    """``1 + #{k : R_qk > R_qj + tol}``: ties (within ``tie_tolerance``) share the best rank."""
    return 1.0 + (relevance[:, None, :] > relevance[:, :, None] + tie_tolerance).to(relevance.dtype).sum(-1)


def dcg(relevance: Tensor, ranks: Tensor) -> Tensor:
    r""":math:`\sum_j (2^{R_{qj}} - 1) / \log_2(1 + r_{qj})` per row."""
    return ((torch.pow(2.0, relevance) - 1.0) / torch.log2(1.0 + ranks)).sum(dim=-1)


def ideal_dcg(relevance: Tensor, *, tie_tolerance: float = DEFAULT_TIE_TOLERANCE) -> Tensor:
    """IDCG with tie-sharing ideal ranks (not computed by sorting, as in the reference)."""
    return dcg(relevance, ideal_rank(relevance, tie_tolerance=tie_tolerance))


def smooth_ndcg(
    scores: Tensor,
    relevance: Tensor,
    tau: float,
    *,
    idcg: Tensor | None = None,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
) -> Tensor:
    """Per-row Smooth-NDCG ``DCG(smooth ranks) / IDCG``; shapes (Q, L), (Q, L) -> (Q,)."""
    if idcg is None:
        idcg = ideal_dcg(relevance, tie_tolerance=tie_tolerance)
    return dcg(relevance, smooth_rank(scores, tau)) / idcg


def hard_ndcg(
    scores: Tensor,
    relevance: Tensor,
    *,
    idcg: Tensor | None = None,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
) -> Tensor:
    """Per-row NDCG with hard ranks (logged, not differentiable)."""
    if idcg is None:
        idcg = ideal_dcg(relevance, tie_tolerance=tie_tolerance)
    return dcg(relevance, hard_rank(scores)) / idcg


class SmoothNDCGLoss(BaseScoreLoss):
    r"""Listwise loss :math:`\tfrac12[\mathrm{mean}(1 - N^{i2t}) + \mathrm{mean}(1 - N^{t2i})]`.

    ``forward(sims, *, relevance)``: ``relevance[i, j]`` of image ``i`` for caption ``j`` (e.g.
    :func:`rsc_relevance`), of ``sims``'s shape. ``last_stats`` holds the mean per-row
    ``ndcg_i2t``, ``ndcg_t2i``, ``hard_ndcg_i2t`` and ``hard_ndcg_t2i``; ``last_rows`` the rows.

    Parameters
    ----------
    tau : float, default=0.01
    t2i_relevance : {"transpose", "reference"}, default="transpose"
        "transpose" ranks each text's row of ``sims.T`` against its row of ``relevance.T``.
        "reference" reproduces the released code, which pairs row ``j`` of ``sims.T`` with row
        ``j`` of ``relevance`` and reuses the i2t IDCG.
    tie_tolerance : float, default=1e-6
        Relevance ties of the ideal ranking; 0 is the reference's strict comparison.

    Notes
    -----
    The reference's t2i relevance is not transposed (R is not symmetric, so its t2i term scores
    the wrong targets), and its strict ``>`` makes the ideal rank of two captions of one image
    depend on float noise; the defaults fix both, the switches restore parity.
    """

    requires = ("relevance",)
    matrix_inputs = ("relevance",)
    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "tau": Interval(float, 0.0, closed="neither"),
        "t2i_relevance": Options(frozenset(T2I_RELEVANCE)),
        "tie_tolerance": Interval(float, 0.0),
    }

    def __init__(
        self,
        *,
        tau: float = 0.01,
        t2i_relevance: str = "transpose",
        tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    ) -> None:
        super().__init__()
        self.tau, self.t2i_relevance, self.tie_tolerance = tau, t2i_relevance, tie_tolerance
        self._check_params()
        self.tau, self.tie_tolerance = float(tau), float(tie_tolerance)
        self.last_rows: dict[str, Tensor] = {}

    def compute_loss(self, sims: Tensor, *, pos_mask: Tensor | None, relevance: Tensor, **batch) -> Tensor:
        tol = self.tie_tolerance
        idcg_i2t = ideal_dcg(relevance, tie_tolerance=tol)
        if self.t2i_relevance == "reference":
            rel_t2i, idcg_t2i = relevance, idcg_i2t
        else:
            rel_t2i = relevance.transpose(0, 1)
            idcg_t2i = ideal_dcg(rel_t2i, tie_tolerance=tol)
        sims_t2i = sims.transpose(0, 1)
        ndcg_i2t = smooth_ndcg(sims, relevance, self.tau, idcg=idcg_i2t)
        ndcg_t2i = smooth_ndcg(sims_t2i, rel_t2i, self.tau, idcg=idcg_t2i)
        with torch.no_grad():
            self.last_rows = {
                "ndcg_i2t": ndcg_i2t.detach(),
                "ndcg_t2i": ndcg_t2i.detach(),
                "hard_ndcg_i2t": hard_ndcg(sims, relevance, idcg=idcg_i2t),
                "hard_ndcg_t2i": hard_ndcg(sims_t2i, rel_t2i, idcg=idcg_t2i),
            }
        self.last_stats = {k: float(v.mean()) for k, v in self.last_rows.items()}
        return 0.5 * ((1.0 - ndcg_i2t).mean() + (1.0 - ndcg_t2i).mean())


class ListwiseLoss(BaseScoreLoss):
    """Listwise-ITR: ``(1 - weight) * triplet(hardest, mean) + weight * Smooth-NDCG loss``.

    ``forward(sims, *, relevance, pos_mask=None)``; the trainer computes ``relevance`` with
    :func:`rsc_relevance` from a frozen caption-embedding table. ``last_stats`` holds the two
    terms (``pair``, ``list``) and :class:`SmoothNDCGLoss`'s statistics.

    Parameters
    ----------
    weight : float
        Required: the reference reads an undefined option (``opt.sndcg_weight``), so its value is
        unknown; 0.1-0.5 is a range to tune.
    margin : float, default=0.2
    tau : float, default=0.01
    t2i_relevance : {"transpose", "reference"}, default="transpose"
    tie_tolerance : float, default=1e-6
        See :class:`SmoothNDCGLoss`.
    """

    requires = ("relevance",)
    matrix_inputs = ("relevance",)
    _parameter_constraints: ClassVar[dict[str, Any]] = {"weight": Interval(float, 0.0, 1.0)}

    def __init__(
        self,
        *,
        weight: float,
        margin: float = 0.2,
        tau: float = 0.01,
        t2i_relevance: str = "transpose",
        tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    ) -> None:
        super().__init__()
        self.weight = weight
        self._check_params()
        self.weight = float(weight)
        self.pairwise = TripletLoss(margin=margin, miner=HardestNegativeMiner(), reducer="mean")
        self.listwise = SmoothNDCGLoss(tau=tau, t2i_relevance=t2i_relevance, tie_tolerance=tie_tolerance)

    def compute_loss(self, sims: Tensor, *, pos_mask: Tensor | None, relevance: Tensor, **batch) -> Tensor:
        pair = self.pairwise(sims, pos_mask=pos_mask)
        listwise = self.listwise(sims, relevance=relevance)
        self.last_stats = {
            "pair": float(pair.detach()),
            "list": float(listwise.detach()),
            **self.listwise.last_stats,
        }
        return (1.0 - self.weight) * pair + self.weight * listwise

    def extra_repr(self) -> str:
        return f"weight={self.weight}"
