"""SelfAlign losses: concept-level (LCA) and context-level (CRA) self-supervised alignment.

The heads they train (``ContextHead``, ``PrototypeBank``) are in
:mod:`pillar_rerank.adapters.heads.context`; the SelfAlign score is
:func:`pillar_rerank.adapters.distances.selfalign_similarity`.

Zhuang, Yu, Ding, Qu, Hu, "Boosting Image-Text Retrieval via Self-Supervised Alignment" (IEEE TMM
2023, arXiv 2308.14009); reference code Zjamie813/SelfAlign @ 26343b7 (``camera_SelfAlign``).
Formulas in ``../shared/spec/adapters.md`` section 4.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from pillar_rerank._validation import Interval
from pillar_rerank.adapters.losses.base import CheckedParams
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, eps: float = 0.05, iters: int = 3) -> Tensor:
    r"""Balanced soft assignment of N items to K prototypes (SwAV's Sinkhorn-Knopp), no gradient.

    Starts from :math:`\exp(Z/\varepsilon)` normalised to total 1, then alternately scales the
    prototypes' masses to 1/K and the items' to 1/N, ``iters`` times; returns the assignment
    scaled so that each item's row sums to 1. Computed in the log domain, so a small ``eps``
    cannot overflow.

    Shapes: scores (N, K) -> (N, K).
    """
    if scores.ndim != 2 or scores.numel() == 0:
        raise InvalidInputError(
            f"sinkhorn_knopp: expected a non-empty (N, K) tensor; got {tuple(scores.shape)}."
        )
    n, k = scores.shape
    log_q = scores / eps
    log_q = log_q - torch.logsumexp(log_q.reshape(-1), dim=0)
    for _ in range(int(iters)):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(k)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(n)
    return torch.exp(log_q + math.log(n))


def _check_lengths(lengths: Tensor, batch: int, max_len: int, name: str) -> Tensor:
    lengths = torch.as_tensor(lengths)
    if lengths.shape != (batch,):
        raise InvalidInputError(f"{name}: expected shape ({batch},); got {tuple(lengths.shape)}.")
    bad = torch.nonzero((lengths < 1) | (lengths > max_len)).flatten()
    if bad.numel():
        i = int(bad[0])
        raise InvalidInputError(
            f"{name}: {bad.numel()} entries outside [1, {max_len}] "
            f"(first: item {i} has length {int(lengths[i])})."
        )
    return lengths


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean ``[B, max_len]`` mask with the first ``lengths[b]`` positions set."""
    lengths = torch.as_tensor(lengths)
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class ConceptAlignmentLoss(CheckedParams, torch.nn.Module):
    r"""LCA: words predict the prototype assignment of their best-matching region.

    .. math::
        L = \frac1B \sum_b \frac1{len_b} \sum_{w < len_b}
            -\sum_k q_{b, r^*(b,w), k} \log \mathrm{softmax}_k(W t_{b,w} / \tau_s)

    with :math:`q` = Sinkhorn(:math:`W v`) over every valid region of the batch and
    :math:`r^*(b,w) = \arg\max_r \langle t_{b,w}, v_{b,r}\rangle` (stop-gradient on both).

    ``forward(region_feats, word_feats, word_lengths, prototypes, *, region_mask=None)``:

    * ``region_feats`` (B, R, D): unit-length concept-level region features (the teacher side);
    * ``word_feats`` (B, L, D): unit-length concept-level word features;
    * ``word_lengths`` (B,): valid words per caption, each in [1, L];
    * ``prototypes`` (K, D): normalised inside (the value is the unit rows; gradients reach the
      raw rows unchanged, as with the reference's in-place normalisation);
    * ``region_mask`` (B, R), optional: valid regions (``None``: all).

    Parameters
    ----------
    student_temp, eps, iters : float, float, int, default=0.1, 0.05, 2
        Student temperature; Sinkhorn's epsilon and iterations.

    Notes
    -----
    A zero-length caption is an error (the reference returns NaN). At tied region scores the
    first region wins.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "student_temp": Interval(float, 0.0, closed="neither"),
        "eps": Interval(float, 0.0, closed="neither"),
        "iters": Interval(int, 1),
    }

    def __init__(self, *, student_temp: float = 0.1, eps: float = 0.05, iters: int = 2) -> None:
        super().__init__()
        self.student_temp, self.eps, self.iters = student_temp, eps, iters
        self._check_params()

    def forward(
        self,
        region_feats: Tensor,
        word_feats: Tensor,
        word_lengths: Tensor,
        prototypes: Tensor,
        *,
        region_mask: Tensor | None = None,
    ) -> Tensor:
        eps, iters = self.eps, self.iters
        b, r, d = region_feats.shape
        if word_feats.ndim != 3 or word_feats.shape[0] != b or word_feats.shape[2] != d:
            raise InvalidInputError(
                f"ConceptAlignmentLoss: word_feats must be (B={b}, L, D={d}); got {tuple(word_feats.shape)}."
            )
        lengths = _check_lengths(word_lengths, b, word_feats.shape[1], "word_lengths").to(word_feats.device)
        unit = F.normalize(prototypes, dim=1)
        protos = prototypes + (unit - prototypes).detach()  # straight-through: value normalised
        with torch.no_grad():
            region_scores = region_feats @ unit.t()  # [B, R, K]
            if region_mask is None:
                q = sinkhorn_knopp(region_scores.reshape(b * r, -1), eps=eps, iters=iters).reshape(b, r, -1)
            else:
                region_mask = region_mask.to(region_feats.device, torch.bool)
                q = torch.zeros_like(region_scores)
                q[region_mask] = sinkhorn_knopp(region_scores[region_mask], eps=eps, iters=iters)
            match = torch.einsum("bld,brd->blr", word_feats, region_feats)
            if region_mask is not None:
                match = match.masked_fill(~region_mask[:, None, :], float("-inf"))
            best = match.argmax(dim=-1)  # [B, L]
            targets = torch.gather(q, 1, best[..., None].expand(-1, -1, q.shape[-1]))
        log_p = F.log_softmax((word_feats @ protos.t()) / self.student_temp, dim=-1)
        ce = -(targets * log_p).sum(dim=-1)  # [B, L]
        valid = lengths_to_mask(lengths, word_feats.shape[1]).to(ce.dtype)
        return ((ce * valid).sum(dim=1) / lengths.to(ce.dtype)).mean()

    def extra_repr(self) -> str:
        return f"student_temp={self.student_temp}, eps={self.eps}, iters={self.iters}"


class ContextAlignmentLoss(CheckedParams, torch.nn.Module):
    r"""CRA: a sample's global query must pick out its own context locals among the batch's.

    .. math::
        L = -\frac{1}{|\mathcal V|} \sum_{(b,i)} \log
            \frac{e^{p_{bi}}}{e^{p_{bi}} + \sum_{x \in \mathrm{top}_k(\mathcal N_b)} e^x},\quad
        p_{bi} = \langle g_b, \ell_{bi}\rangle / T

    where the pool :math:`\mathcal N_b` holds :math:`\langle g_b, \ell_{cj}\rangle / T` for every
    ``c, j``, with ``c = b`` entries replaced by ``self_logit`` (not removed, as in the reference).

    ``forward(locals_ (B, n, D), global_query (B, D), *, local_mask=None)``; ``local_mask``
    (B, n) marks valid locals, which makes padded locals neither positives nor negatives.
    ``None`` counts every position, padding included (the reference).

    Parameters
    ----------
    temperature : float, default=0.7
    num_negatives : int or None, default=512
        Top-k of the pool (``None``: the whole pool). Must be in [1, B * n] unless
        ``clip_negatives``.
    self_logit : float, default=-10.0
    clip_negatives : bool, default=False
        Cap ``num_negatives`` at each batch's non-self pool ``(B - 1) * n`` (a trainer whose
        batches are smaller than the reference's 128 sets it).

    Notes
    -----
    The reference treats ``neg_num=0`` as "all negatives" and crashes for ``k > B * n``; here 0
    and too-large values are errors. When ``k`` exceeds the non-self negatives the constant
    ``self_logit`` entries enter the top-k, as in the reference.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "temperature": Interval(float, 0.0, closed="neither"),
        "num_negatives": [None, Interval(int, 1)],
        "self_logit": Interval(float),
        "clip_negatives": bool,
    }

    def __init__(
        self,
        temperature: float = 0.7,
        *,
        num_negatives: int | None = 512,
        self_logit: float = -10.0,
        clip_negatives: bool = False,
    ) -> None:
        super().__init__()
        self.temperature, self.num_negatives = temperature, num_negatives
        self.self_logit, self.clip_negatives = self_logit, clip_negatives
        self._check_params()

    def forward(self, locals_: Tensor, global_query: Tensor, *, local_mask: Tensor | None = None) -> Tensor:
        b, n, d = locals_.shape
        if global_query.shape != (b, d):
            raise InvalidInputError(
                f"ContextAlignmentLoss: global_query must be (B={b}, D={d}); got {tuple(global_query.shape)}."
            )
        k = self.num_negatives
        if k is not None and self.clip_negatives:
            k = min(k, max(1, (b - 1) * n))
        if k is not None and not (1 <= int(k) <= b * n):
            raise InvalidParameterError(
                f"The 'num_negatives' parameter of ContextAlignmentLoss must be None or "
                f"an int in [1, B*n={b * n}]; got {k!r} instead."
            )
        logits = torch.einsum("bd,cjd->bcj", global_query, locals_) / self.temperature  # [B, B, n]
        own = torch.eye(b, dtype=torch.bool, device=logits.device)[:, :, None].expand(b, b, n)
        positives = logits.diagonal(dim1=0, dim2=1).transpose(0, 1)  # [B, n]
        pool = logits.masked_fill(own, self.self_logit)
        if local_mask is not None:
            local_mask = local_mask.to(logits.device, torch.bool)
            pool = pool.masked_fill(~local_mask[None, :, :] & ~own, float("-inf"))
        pool = pool.reshape(b, b * n)
        if k is not None:
            pool = pool.topk(int(k), dim=1).values
        neg_lse = torch.logsumexp(pool, dim=1, keepdim=True)  # [B, 1]
        per_local = F.softplus(neg_lse - positives)  # -log(e^p / (e^p + sum e^x))
        if local_mask is None:
            return per_local.mean()
        return per_local[local_mask].mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, num_negatives={self.num_negatives}"
