"""SelfAlign: concept-level (LCA) and context-level (CRA) self-supervised alignment.

Zhuang, Yu, Ding, Qu, Hu, "Boosting Image-Text Retrieval via Self-Supervised Alignment" (IEEE TMM
2023, arXiv 2308.14009); reference code Zjamie813/SelfAlign @ 26343b7 (``camera_SelfAlign``).
Formulas in ``../shared/spec/adapters.md`` section 4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

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


class PrototypeBank(torch.nn.Module):
    """K learnable concept prototypes (an ``nn.Linear(dim, K, bias=False)``'s weight).

    Parameters
    ----------
    dim : int
    num_prototypes : int, default=1024
        The reference's ``--local_clu_num``.

    Notes
    -----
    :meth:`normalize_` re-normalises the rows in place (the reference does so at the start of
    every forward); :meth:`freeze_grads` drops the gradients (the epoch-0 freeze of the CAMERA
    tree, SwAV style).
    """

    def __init__(self, dim: int, num_prototypes: int = 1024) -> None:
        super().__init__()
        self.dim, self.num_prototypes = int(dim), int(num_prototypes)
        self.weight = torch.nn.Parameter(torch.empty(self.num_prototypes, self.dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @torch.no_grad()
    def normalize_(self) -> PrototypeBank:
        self.weight.copy_(F.normalize(self.weight, dim=1))
        return self

    def freeze_grads(self) -> None:
        self.weight.grad = None

    def forward(self, features: Tensor) -> Tensor:
        return features @ self.weight.t()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_prototypes={self.num_prototypes}"


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


def concept_alignment_loss(
    region_feats: Tensor,
    word_feats: Tensor,
    word_lengths: Tensor,
    prototypes: Tensor,
    *,
    student_temp: float = 0.1,
    eps: float = 0.05,
    iters: int = 2,
    region_mask: Tensor | None = None,
) -> Tensor:
    r"""LCA: words predict the prototype assignment of their best-matching region.

    .. math::
        L = \frac1B \sum_b \frac1{len_b} \sum_{w < len_b}
            -\sum_k q_{b, r^*(b,w), k} \log \mathrm{softmax}_k(W t_{b,w} / \tau_s)

    with :math:`q` = Sinkhorn(:math:`W v`) over every valid region of the batch and
    :math:`r^*(b,w) = \arg\max_r \langle t_{b,w}, v_{b,r}\rangle` (stop-gradient on both).

    Parameters
    ----------
    region_feats : Tensor of shape (B, R, D)
        Unit-length concept-level region features (the teacher side).
    word_feats : Tensor of shape (B, L, D)
        Unit-length concept-level word features.
    word_lengths : int Tensor of shape (B,)
        Valid words per caption, each in [1, L].
    prototypes : Tensor of shape (K, D)
        Normalised inside (the value is the unit rows; gradients reach the raw rows unchanged,
        as with the reference's in-place normalisation).
    student_temp, eps, iters : float, float, int, default=0.1, 0.05, 2
    region_mask : bool Tensor of shape (B, R), optional
        Valid regions (``None``: all).

    Notes
    -----
    A zero-length caption is an error (the reference returns NaN). At tied region scores the
    first region wins.
    """
    b, r, d = region_feats.shape
    if word_feats.ndim != 3 or word_feats.shape[0] != b or word_feats.shape[2] != d:
        raise InvalidInputError(
            f"concept_alignment_loss: word_feats must be (B={b}, L, D={d}); got {tuple(word_feats.shape)}."
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
    log_p = F.log_softmax((word_feats @ protos.t()) / student_temp, dim=-1)
    ce = -(targets * log_p).sum(dim=-1)  # [B, L]
    valid = lengths_to_mask(lengths, word_feats.shape[1]).to(ce.dtype)
    return ((ce * valid).sum(dim=1) / lengths.to(ce.dtype)).mean()


def context_alignment_loss(
    locals_: Tensor,
    global_query: Tensor,
    temperature: float = 0.7,
    *,
    num_negatives: int | None = 512,
    self_logit: float = -10.0,
    local_mask: Tensor | None = None,
) -> Tensor:
    r"""CRA: a sample's global query must pick out its own context locals among the batch's.

    .. math::
        L = -\frac{1}{|\mathcal V|} \sum_{(b,i)} \log
            \frac{e^{p_{bi}}}{e^{p_{bi}} + \sum_{x \in \mathrm{top}_k(\mathcal N_b)} e^x},\quad
        p_{bi} = \langle g_b, \ell_{bi}\rangle / T

    where the pool :math:`\mathcal N_b` holds :math:`\langle g_b, \ell_{cj}\rangle / T` for every
    ``c, j``, with ``c = b`` entries replaced by ``self_logit`` (not removed, as in the reference).

    Parameters
    ----------
    locals_ : Tensor of shape (B, n, D)
    global_query : Tensor of shape (B, D)
    temperature : float, default=0.7
    num_negatives : int or None, default=512
        Top-k of the pool (``None``: the whole pool). Must be in [1, B * n].
    self_logit : float, default=-10.0
    local_mask : bool Tensor of shape (B, n), optional
        Valid locals. Padded locals are then neither positives nor negatives. ``None`` counts
        every position, padding included (the reference).

    Notes
    -----
    The reference treats ``neg_num=0`` as "all negatives" and crashes for ``k > B * n``; here 0
    and too-large values are errors. When ``k`` exceeds the non-self negatives the constant
    ``self_logit`` entries enter the top-k, as in the reference.
    """
    b, n, d = locals_.shape
    if global_query.shape != (b, d):
        raise InvalidInputError(
            f"context_alignment_loss: global_query must be (B={b}, D={d}); got {tuple(global_query.shape)}."
        )
    if num_negatives is not None and not (1 <= int(num_negatives) <= b * n):
        raise InvalidParameterError(
            f"The 'num_negatives' parameter of context_alignment_loss must be None or "
            f"an int in [1, B*n={b * n}]; got {num_negatives!r} instead."
        )
    logits = torch.einsum("bd,cjd->bcj", global_query, locals_) / temperature  # [B, B, n]
    own = torch.eye(b, dtype=torch.bool, device=logits.device)[:, :, None].expand(b, b, n)
    positives = logits.diagonal(dim1=0, dim2=1).transpose(0, 1)  # [B, n]
    pool = logits.masked_fill(own, self_logit)
    if local_mask is not None:
        local_mask = local_mask.to(logits.device, torch.bool)
        pool = pool.masked_fill(~local_mask[None, :, :] & ~own, float("-inf"))
    pool = pool.reshape(b, b * n)
    if num_negatives is not None:
        pool = pool.topk(int(num_negatives), dim=1).values
    neg_lse = torch.logsumexp(pool, dim=1, keepdim=True)  # [B, 1]
    per_local = F.softplus(neg_lse - positives)  # -log(e^p / (e^p + sum e^x))
    if local_mask is None:
        return per_local.mean()
    return per_local[local_mask].mean()


class ContextHead(torch.nn.Module):
    r"""SelfAlign's context head: context locals, a global query and a gated fused context vector.

    .. math::
        \ell_n = \mathrm{norm}(\mathrm{ReLU}(\mathrm{BN}(x_n))),\;
        \bar g = \mathrm{mean}_n x_n,\;
        \hat g = \mathrm{ReLU}(\mathrm{BN}(W\bar g)),\;
        g = \mathrm{norm}(\hat g),\;
        \alpha = \sigma(\mathrm{MLP}([\bar g; \hat g])),\;
        c = \mathrm{norm}(\alpha\bar g + (1-\alpha)\hat g)

    Parameters
    ----------
    dim : int
    relu : bool, default=True
        ReLU after the batch norm of both the context locals and the global projection (the
        reference's ``ctx_fc_relu``/``ctx_relu`` switch, which covers both; ``False`` drops both).

    Shapes
    ------
    tokens (B, N, D), mask (B, N) optional -> locals (B, N, D), global_query (B, D), fused (B, D).
    With a mask, batch norm and the mean use valid tokens only (the reference includes padding).
    """

    def __init__(self, dim: int, relu: bool = True) -> None:
        super().__init__()
        self.dim, self.relu = int(dim), bool(relu)
        self.local_norm = torch.nn.BatchNorm1d(self.dim)
        self.global_fc = torch.nn.Linear(self.dim, self.dim)
        self.global_norm = torch.nn.BatchNorm1d(self.dim)
        self.gate = torch.nn.Sequential(
            torch.nn.Linear(2 * self.dim, self.dim), torch.nn.ReLU(), torch.nn.Linear(self.dim, 1)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.local_norm.reset_parameters()
        self.global_fc.reset_parameters()
        self.global_norm.reset_parameters()
        for layer in self.gate:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        act = F.relu if self.relu else (lambda x: x)
        if mask is None:
            flat = self.local_norm(tokens.reshape(-1, self.dim))
            locals_ = F.normalize(act(flat), dim=-1).reshape(tokens.shape)
            mean = tokens.mean(dim=1)
        else:
            mask = mask.to(tokens.device, torch.bool)
            locals_ = tokens.new_zeros(tokens.shape)
            locals_[mask] = F.normalize(act(self.local_norm(tokens[mask])), dim=-1)
            weights = mask.to(tokens.dtype)
            mean = (tokens * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)
        projected = act(self.global_norm(self.global_fc(mean)))
        gate = torch.sigmoid(self.gate(torch.cat([mean, projected], dim=-1)))
        fused = F.normalize(gate * mean + (1.0 - gate) * projected, dim=-1)
        return locals_, F.normalize(projected, dim=-1), fused

    def extra_repr(self) -> str:
        return f"dim={self.dim}, relu={self.relu}"


def masked_mean(tokens: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over the token axis (valid tokens only when ``mask`` is given); (B, N, D) -> (B, D)."""
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.device, tokens.dtype)
    return (tokens * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)


def selfalign_similarity(
    base_sims: Tensor,
    img_locals_mean: Tensor,
    img_fused: Tensor,
    txt_locals_mean: Tensor,
    txt_fused: Tensor,
    weight: float = 0.5,
) -> Tensor:
    r"""SelfAlign retrieval score
    :math:`s(I,T) + w\langle \bar\ell^v, c^t\rangle + w\langle c^v, \bar\ell^t\rangle`.

    Shapes: base_sims (n_images, n_texts); image terms (n_images, D); text terms (n_texts, D).
    The means of the unit locals are not re-normalised (as in the reference).
    """
    return base_sims + weight * (img_locals_mean @ txt_fused.t()) + weight * (img_fused @ txt_locals_mean.t())
