"""DBNorm (Wang, Jian, Xue, "Balance Act", EMNLP 2023): inverted softmax over two banks."""

from __future__ import annotations

from typing import Any

import numpy as np

from pillar_rerank._validation import Interval, check_k
from pillar_rerank.baselines._common import BLOCK_BYTES_RULE, TrainingFreeReranker, as_float32_copy
from pillar_rerank.baselines._stream import column_logsumexp, row_argmax_mask
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES

_POSITIVE = Interval(float, 0.0, None, closed="neither")


class DBNorm(TrainingFreeReranker):
    """Dual-bank normalisation: a query-bank and a gallery-bank inverted softmax, multiplied.

    .. math::
        s'(q, g) \\propto
        \\frac{e^{\\beta_1 s(q, g)}}{\\sum_{b \\in Q} e^{\\beta_1 B_Q[b, g]}} \\cdot
        \\frac{e^{\\beta_2 s(q, g)}}{\\sum_{b' \\in G} e^{\\beta_2 B_G[b', g]}}

    returned in log form and score units, ``s - (lse_1(g) + lse_2(g)) / (beta1 + beta2)``, which
    ranks identically.

    ``fit(bank, gallery_bank=...)``: ``bank`` is bank queries x test gallery (cross-modal, e.g.
    training captions x test images for text -> image), ``gallery_bank`` is bank items *of the
    gallery modality* x test gallery (intra-modal, e.g. training images x test images).

    Parameters
    ----------
    beta1 : float, default=1/1.99
        Inverse temperature of the query-bank term (reference default).
    beta2 : float, default=3.0
        Inverse temperature of the gallery-bank term (reference default).
    dynamic : bool, default=False
        Gate each term with its bank's top-``k`` activation set, as QB-Norm does.
    k : int, default=1
        Activation-set depth when ``dynamic``.
    block_bytes, device : memory budget of one bank block; torch device (None: auto).

    Notes
    -----
    The official ``db_norm`` computes both terms on the gallery bank and never reads the test
    matrix (its output has the bank's shape); the correct formula above follows the paper and
    the DBSN re-implementation. Log-sum-exp throughout, streamed banks.
    """

    needs_bank = True
    needs_intra_modal = True
    fit_inputs = ("bank", "gallery_bank")
    summary = "DBNorm: inverted softmax over a query bank and an intra-modal gallery bank"
    tuning_grid = {"beta1": [0.5, 5.0, 10.0, 20.0, 50.0], "beta2": [1.0, 3.0, 10.0, 30.0]}
    _parameter_constraints = {"beta1": [_POSITIVE], "beta2": [_POSITIVE], "dynamic": [bool],
                              "k": [Interval(int, 1, None)], "block_bytes": [BLOCK_BYTES_RULE],
                              "device": [None, str]}

    def __init__(self, *, beta1: float = 1 / 1.99, beta2: float = 3.0, dynamic: bool = False, k: int = 1,
                 block_bytes: int = DEFAULT_BLOCK_BYTES, device: str | None = None) -> None:
        self.beta1 = beta1
        self.beta2 = beta2
        self.dynamic = dynamic
        self.k = k
        self.block_bytes = block_bytes
        self.device = device

    def fit(self, bank: Any = None, *, gallery_bank: Any = None) -> DBNorm:
        """Estimate both log-normalisers; returns self.

        Attributes set: ``lse_query_`` and ``lse_gallery_`` (n_gallery,), ``active_query_`` and
        ``active_gallery_`` (bool masks, or None unless ``dynamic``), ``n_gallery_in_``.
        """
        self._validate_params()
        bank = self._require(bank, "query-bank scores (n_bank_queries, n_gallery)")
        gbank = self._require(gallery_bank, "gallery-bank scores (n_bank_gallery, n_gallery)",
                              n_gallery=bank.shape[1])
        device, budget = self._device(), self._budget()
        self.lse_query_ = column_logsumexp(bank, scale=float(self.beta1), device=device,
                                           budget_bytes=budget).cpu().numpy()
        self.lse_gallery_ = column_logsumexp(gbank, scale=float(self.beta2), device=device,
                                             budget_bytes=budget).cpu().numpy()
        if self.dynamic:
            k = check_k(self.k, n_gallery=bank.shape[1], owner=type(self).__name__)
            masks = [row_argmax_mask(b, k=k, device=device, budget_bytes=budget).cpu().numpy()
                     for b in (bank, gbank)]
            self.active_query_, self.active_gallery_ = masks
        else:
            self.active_query_ = self.active_gallery_ = None
        self.n_gallery_in_ = int(bank.shape[1])
        return self

    def rerank(self, scores: np.ndarray) -> np.ndarray:
        """Return new float32 scores of shape (n_queries, n_gallery)."""
        self._check_is_fitted()
        out = as_float32_copy(self._check_rerank_scores(scores))
        norm = float(self.beta1) + float(self.beta2)
        lse_q = (self.lse_query_ / norm).astype(np.float32)
        lse_g = (self.lse_gallery_ / norm).astype(np.float32)
        if not self.dynamic:
            out -= (lse_q + lse_g)[None, :]
            return out
        top1 = np.argmax(out, axis=1)
        gate_q = self.active_query_[top1].astype(np.float32)[:, None]
        gate_g = self.active_gallery_[top1].astype(np.float32)[:, None]
        out -= gate_q * lse_q[None, :] + gate_g * lse_g[None, :]
        return out
