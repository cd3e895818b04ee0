"""Dual softmax (DSL; CAMoE, Cheng et al. 2021): a transductive prior over the test queries."""

from __future__ import annotations

import numpy as np
import torch

from pillar_rerank._validation import Interval
from pillar_rerank.baselines._common import BLOCK_BYTES_RULE, TrainingFreeReranker
from pillar_rerank.baselines._stream import column_logsumexp, iter_torch_blocks
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES


class DualSoftmax(TrainingFreeReranker):
    """Dual softmax: re-weight each score by a softmax over the *test queries* of its gallery item.

    .. math::
        s'(q, g) = s(q, g) \\cdot n_{queries} \\cdot
        \\frac{\\exp(s(q, g) / T)}{\\sum_{q'} \\exp(s(q', g) / T)}

    **Transductive**: the prior is computed across all test queries given to ``rerank`` at
    once, so a result depends on the other queries (report it apart from fair methods).

    Parameters
    ----------
    temperature : float, default=1.0
        T. The maintainer's inference value (CAMoE issue #4; 1000 is the training value). It
        assumes logit-scale scores (CLIP x 100); cosine scores need about 0.01 (tune it).
    block_bytes : int, default=256 MiB
    device : str or None, default=None

    Notes
    -----
    The softmax is computed as ``exp(s / T - logsumexp_q(s / T))`` in two streamed passes, so it
    cannot overflow at any score scale (the reference exponentiates directly).
    """

    requires_fit = False
    transductive = True
    summary = "dual softmax (DSL): s * softmax over the test queries, TRANSDUCTIVE"
    tuning_grid = {"temperature": [0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 1.0]}
    _parameter_constraints = {"temperature": [Interval(float, 0.0, None, closed="neither")],
                              "block_bytes": [BLOCK_BYTES_RULE], "device": [None, str]}

    def __init__(self, *, temperature: float = 1.0, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 device: str | None = None) -> None:
        self.temperature = temperature
        self.block_bytes = block_bytes
        self.device = device

    def fit(self, bank: None = None) -> DualSoftmax:
        """Nothing to learn (the prior comes from the test queries); checks parameters, returns self."""
        self._validate_params()
        return self

    def rerank(self, scores: np.ndarray) -> np.ndarray:
        """Return new float32 scores of shape (n_queries, n_gallery)."""
        self._validate_params()
        scores = self._check_rerank_scores(scores)
        device = self._device()
        inv_t = 1.0 / float(self.temperature)
        lse = column_logsumexp(scores, scale=inv_t, device=device, budget_bytes=self._budget()).float()
        n_queries = float(scores.shape[0])
        out = np.empty(scores.shape, dtype=np.float32)
        for rows, block in iter_torch_blocks(scores, device=device, budget_bytes=self._budget()):
            prior = torch.exp(block * inv_t - lse[None, :])
            out[rows] = (block * prior * n_queries).cpu().numpy()
        return out
