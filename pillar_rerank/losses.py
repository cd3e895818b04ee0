"""LeaPRR's training losses: listwise contrastive, local triplet, hinge floor, structure alignment.

Every function takes list scores ``s`` of shape (n_queries, n_nodes) (column 0 = the query's
self score) and boolean ``targets`` of the same shape (column 0 always True), returns one scalar
averaged over the batch, and stays connected to the autograd graph even when a term is zero.
Direction is the caller's business: the same call serves i2t and t2i lists.
Formulas follow Qu et al., SIGIR 2023 (https://arxiv.org/abs/2304.12570), spec §7.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pillar_rerank.lists.contract import QueryLists


def _check_pair(scores: Tensor, targets: Tensor, name: str) -> None:
    if scores.ndim != 2 or targets.shape != scores.shape:
        raise ValueError(
            f"{name}: expected scores and targets of the same shape (n_queries, n_nodes); "
            f"got {tuple(scores.shape)} and {tuple(targets.shape)}."
        )


def listwise_contrastive_loss(scores: Tensor, targets: Tensor, *, temperature: float = 2.0) -> Tensor:
    r"""Listwise InfoNCE over a candidate list.

    .. math::
        \mathcal{L}_c = \frac{1}{B}\sum_b -\log
            \frac{\sum_k y_{bk}\, e^{s_{bk}/\tau}}{\sum_k e^{s_{bk}/\tau}}

    computed with log-sum-exp (never overflows).

    Shapes: scores, targets :math:`(B, n_{nodes})` -> scalar.
    """
    _check_pair(scores, targets, "listwise_contrastive_loss")
    logits = scores / temperature
    positive = logits.masked_fill(~targets.bool(), float("-inf"))
    return (torch.logsumexp(logits, dim=-1) - torch.logsumexp(positive, dim=-1)).mean()


def local_triplet_loss(scores: Tensor, targets: Tensor, *, margin: float = 0.2) -> Tensor:
    r"""Triplet loss against each list's hardest (lowest-scored) positive.

    .. math::
        m_b = \min_{k: y_{bk}=1} s_{bk}, \qquad
        \mathcal{L}_t = \frac{1}{B}\sum_b \sum_{k: y_{bk}=0} \max(0,\ \text{margin} + s_{bk} - m_b)

    Shapes: scores, targets :math:`(B, n_{nodes})` -> scalar.
    """
    _check_pair(scores, targets, "local_triplet_loss")
    pos = targets.bool()
    hardest = scores.masked_fill(~pos, float("inf")).min(dim=-1, keepdim=True).values
    cost = (margin + scores - hardest).clamp(min=0).masked_fill(pos, 0.0)
    return cost.sum(dim=-1).mean()


def hinge_floor_loss(scores: Tensor, original: Tensor) -> Tensor:
    r"""Keep new scores above the lowest original score in the list.

    .. math::
        f_b = \min_r X^{raw}_{b r 0}, \qquad
        \mathcal{L}_h = \frac{1}{B}\sum_b \sum_k \max(0,\ f_b - s_{bk})

    ``original`` is column 0 of the raw (pre-LayerNorm) features: the base scores of the list
    rows (spec §7.1). Shapes: scores, original :math:`(B, n_{nodes})` -> scalar.
    """
    if original.shape != scores.shape:
        raise ValueError(
            f"hinge_floor_loss: expected original scores of shape {tuple(scores.shape)}; "
            f"got {tuple(original.shape)}."
        )
    floor = original.min(dim=-1, keepdim=True).values.to(scores.dtype)
    return (floor - scores).clamp(min=0).sum(dim=-1).mean()


def structure_alignment_loss(scores: Tensor, mapped_scores: Tensor, *, temperature: float = 1.0) -> Tensor:
    r""":math:`\mathrm{KL}(p \,\|\, q)` between a list and its mapped counterpart (batchmean).

    .. math::
        p = \mathrm{softmax}(s/T), \quad q = \mathrm{softmax}(s^{map}/T), \quad
        \mathcal{L}_{kl} = \frac{1}{B}\sum_b \sum_k p_{bk}(\log p_{bk} - \log q_{bk})

    No stop-gradient on either side (as the reference). Computed from log-softmax.
    Shapes: scores, mapped_scores :math:`(B, n_{nodes})` -> scalar.
    """
    if mapped_scores.shape != scores.shape:
        raise ValueError(
            f"structure_alignment_loss: expected mapped scores of shape {tuple(scores.shape)}; "
            f"got {tuple(mapped_scores.shape)}."
        )
    log_p = F.log_softmax(scores / temperature, dim=-1)
    log_q = F.log_softmax(mapped_scores / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()


@dataclass(frozen=True)
class LeaPRRLoss:
    """The total training loss of spec §7.2, composed from the functions above.

    .. code-block:: text

        L = sum_d [ Lc(d) + w_h Lh(d) + w_t Lt(d) ]          normal lists, d in {i2t, t2i}
          + sum_d [ Lc(map_d) + w_h Lh(map_d) ]              mapped lists (no triplet)
          + w_kl [ KL(p_i2t || q_t2i_map) + KL(p_t2i || q_i2t_map) ]

    Mapped lists reuse the targets of the original lists (the mapping preserves matches).

    Parameters
    ----------
    temperature, margin, triplet_weight, hinge_weight, kl_weight, kl_temperature : float
        Defaults are the paper's (2.0, 0.2, 1, 1, 1, 1).
    """

    temperature: float = 2.0
    margin: float = 0.2
    triplet_weight: float = 1.0
    hinge_weight: float = 1.0
    kl_weight: float = 1.0
    kl_temperature: float = 1.0

    @classmethod
    def from_config(cls, loss) -> LeaPRRLoss:
        """From a :class:`~pillar_rerank.config.LossConfig` (``config.loss``; same field names)."""
        return cls(**dataclasses.asdict(loss))

    def ranking_terms(self, scores: Tensor, lists: QueryLists, *, triplet: bool = True) -> dict[str, Tensor]:
        """Contrastive, hinge (and triplet) terms of one list batch."""
        out = {
            "contrastive": listwise_contrastive_loss(scores, lists.targets, temperature=self.temperature),
            "hinge": hinge_floor_loss(scores, lists.features[:, :, 0]),
        }
        if triplet:
            out["triplet"] = local_triplet_loss(scores, lists.targets, margin=self.margin)
        return out

    def __call__(
        self,
        *,
        i2t: tuple[Tensor, QueryLists],
        t2i: tuple[Tensor, QueryLists],
        t2i_map: tuple[Tensor, QueryLists],
        i2t_map: tuple[Tensor, QueryLists],
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss and its detached parts.

        Each argument is ``(scores, lists)``: ``i2t`` image-query lists scored by the i2t
        network; ``t2i`` text-query lists; ``t2i_map`` the image-query lists seen from the
        caption (t2i network, i2t targets); ``i2t_map`` the text-query lists seen from the image
        (i2t network, t2i targets).
        """
        s_i2t, l_i2t = i2t
        s_t2i, l_t2i = t2i
        s_t2i_map, l_t2i_map = t2i_map
        s_i2t_map, l_i2t_map = i2t_map
        parts: dict[str, Tensor] = {}
        for name, (s, lists, trip) in {
            "i2t": (s_i2t, l_i2t, True),
            "t2i": (s_t2i, l_t2i, True),
            "t2i_map": (s_t2i_map, l_t2i_map, False),
            "i2t_map": (s_i2t_map, l_i2t_map, False),
        }.items():
            for term, value in self.ranking_terms(s, lists, triplet=trip).items():
                parts[f"{term}_{name}"] = value
        parts["kl_i2t"] = structure_alignment_loss(s_i2t, s_t2i_map, temperature=self.kl_temperature)
        parts["kl_t2i"] = structure_alignment_loss(s_t2i, s_i2t_map, temperature=self.kl_temperature)
        weights = {
            "contrastive": 1.0,
            "hinge": self.hinge_weight,
            "triplet": self.triplet_weight,
            "kl": self.kl_weight,
        }
        total = sum(weights[name.split("_")[0]] * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}
