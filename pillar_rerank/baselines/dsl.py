"""Dual softmax (DSL; CAMoE, Cheng et al. 2021): a transductive prior over the test queries."""

from __future__ import annotations

import numpy as np
import torch

from pillar_rerank._validation import Interval
from pillar_rerank.baselines._common import BLOCK_BYTES_RULE, TrainingFreeReranker, as_readonly_tensor
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES, iter_blocks

_CACHE_BYTES = 16 * 2**20  # a block and its temporary fit in a large L2/L3


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
    The softmax is computed with its column maximum subtracted (one ``exp`` per entry) over
    blocks of whole gallery columns, so it cannot overflow at any score scale (the reference
    exponentiates directly), and the matrix is read once (each cache-sized block goes through
    its steps in numpy on the CPU, torch on other devices). The result has the input's memory
    layout (C or Fortran order).
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
        n_queries = float(scores.shape[0])
        # Work on whole gallery columns (every query of a gallery item at once), in the input's
        # memory layout: a transposed input (text -> image from an image x text matrix) is read
        # along its rows. One pass over the matrix; each block stays in cache for its 4 steps.
        by_rows = scores.flags.f_contiguous and not scores.flags.c_contiguous
        view = scores.T if by_rows else scores          # by_rows: (n_gallery, n_queries), C order
        out = np.empty(view.shape, dtype=np.float32)
        axis = 1 if by_rows else 0                      # the query axis of `view`
        n_queries_int = scores.shape[0]
        step = max(1, min(self._budget(), _CACHE_BYTES) // (12 * n_queries_int))
        for cols in iter_blocks(scores.shape[1], step):
            part = view[cols] if by_rows else view[:, cols]
            x = np.ascontiguousarray(part, dtype=np.float32)      # only read; a view when it can be
            if device.type == "cpu":   # numpy: no thread hand-off per step on small cached blocks
                z = x * np.float32(inv_t)
                z -= z.max(axis=axis, keepdims=True)
                np.exp(z, out=z)                                   # the one exp per entry
                # float64 column sums: a float32 running sum over 5,000 queries is off by ~3e-6
                scale = (n_queries / z.sum(axis=axis, keepdims=True, dtype=np.float64)).astype(np.float32)
                z *= x
                z *= scale
            else:
                xt = as_readonly_tensor(x).to(device)
                zt = xt * inv_t
                zt.sub_(zt.amax(dim=axis, keepdim=True)).exp_()
                scale_t = (n_queries / zt.sum(dim=axis, keepdim=True, dtype=torch.float64)).float()
                z = zt.mul_(xt).mul_(scale_t).cpu().numpy()
            if by_rows:
                out[cols] = z
            else:
                out[:, cols] = z
        return out.T if by_rows else out

