"""The gallery-bias family: ``s'(q, g) = s(q, g) - h(g)`` with pluggable estimators of ``h``.

Hubness corrections differ only in how they estimate the per-gallery correction ``h(g)`` from a
*bank*: scores of K bank queries (training-side queries of the query modality, never the test
queries) against the test gallery, shape (n_bank_queries, n_gallery).

==================  ==========================================================  ==============
class               h(g), bank column ``B[:, g]``                               defaults
==================  ==========================================================  ==============
InvertedSoftmax     (1/beta) logsumexp_b(beta B[b, g])                          beta=20
QBNorm              as IS, applied only to queries whose top-1 is in the        beta=20, k=1
                    activation set (union of the bank rows' top-k)
NNN                 alpha * mean of the k largest B[b, g]                       k=128, a=0.75
CSLS                NNN with alpha = 1/2                                        k=10
DN                  lam * mean_b B[b, g]                                        lam=0.5
SinkhornNorm        -tau log u_g, u the Sinkhorn scaling of exp(B.T / tau)      tau=0.01, 10 it
DualBankSinkhorn    as Sinkhorn, with bank-side gallery columns appended        tau=0.01, 10 it
==================  ==========================================================  ==============

Every estimator streams the bank in row blocks (``block_bytes``), in log-sum-exp arithmetic
(Sinkhorn: stabilised scaling domain, see :class:`SinkhornNorm`): memory is
O(block * n_gallery), and logit-scale scores (CLIP x 100) cannot overflow.
``rerank`` subtracts ``h`` from a copy, so results stay in the input's score units.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from pillar_rerank._validation import Interval, check_k
from pillar_rerank.baselines._common import (
    BLOCK_BYTES_RULE,
    TrainingFreeReranker,
    as_float32_copy,
    as_readonly_tensor,
)
from pillar_rerank.baselines._stream import (
    column_logsumexp,
    column_mean,
    column_topk_mean,
    row_argmax_mask,
    sinkhorn_potential,
)
from pillar_rerank.exceptions import ConvergenceWarning
from pillar_rerank.utils.blocks import DEFAULT_BLOCK_BYTES

_POSITIVE = Interval(float, 0.0, None, closed="neither")
_COMMON = {"block_bytes": [BLOCK_BYTES_RULE], "device": [None, str]}


class GalleryBias(TrainingFreeReranker):
    """The shared operator: fit estimates ``bias_`` (and an optional row gate), rerank subtracts it.

    Subclasses implement :meth:`_estimate`, returning ``h`` as a float64 tensor of shape
    (n_gallery,), and may set ``gated = True`` and implement :meth:`_activation` for
    QB-Norm-style gating.

    Attributes
    ----------
    bias_ : ndarray of shape (n_gallery,), float64
        The estimated correction h(g).
    active_ : ndarray of shape (n_gallery,), bool, or None
        Gallery items in the activation set (gated methods only).
    n_gallery_in_ : int
        Gallery size seen in ``fit``; ``rerank`` checks it.
    """

    needs_bank = True
    fit_inputs = ("bank",)
    gated: ClassVar[bool] = False

    def fit(self, bank: Any = None) -> GalleryBias:
        """Estimate the per-gallery correction from ``bank`` (n_bank_queries, n_gallery); returns self."""
        self._validate_params()
        bank = self._require(bank, "bank scores (n_bank_queries, n_gallery)")
        device = self._device()
        self.bias_ = self._estimate(bank, device).cpu().numpy()
        self.active_ = self._activation(bank, device).cpu().numpy() if self.gated else None
        self.n_gallery_in_ = int(bank.shape[1])
        return self

    def rerank(self, scores: np.ndarray) -> np.ndarray:
        """Return new float32 scores ``s - h(g)`` of shape (n_queries, n_gallery)."""
        return self._rerank_into(scores, None)

    def _rerank_into(self, scores: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        self._check_is_fitted()
        scores = self._check_rerank_scores(scores)
        bias = self.bias_.astype(np.float32)
        if self.active_ is None and scores.dtype == np.float32 and min(scores.strides) >= 0:
            # one pass on all threads (numpy's is single-threaded); a new array keeps the input's
            # layout, so the transposed view of the t2i direction is not copied
            if out is None or out.dtype != np.float32 or out.shape != scores.shape \
                    or out.strides != scores.strides or not out.flags.writeable:
                return torch.sub(as_readonly_tensor(scores), torch.from_numpy(bias)).numpy()
            torch.sub(as_readonly_tensor(scores), torch.from_numpy(bias), out=torch.from_numpy(out))
            return out
        if self.active_ is None:
            return np.subtract(scores, bias[None, :], dtype=np.float32)
        result = as_float32_copy(scores)
        rows = self.active_[np.argmax(result, axis=1)]
        result[rows] -= bias[None, :]
        return result

    def _estimate(self, bank: Any, device: torch.device) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _activation(self, bank: Any, device: torch.device) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class InvertedSoftmax(GalleryBias):
    """Inverted softmax (Smith et al., ICLR 2017) against a query bank, in log-sum-exp form.

    ``s'(q, g) = s(q, g) - (1/beta) logsumexp_b(beta B[b, g])``, which ranks exactly like
    ``exp(beta s) / sum_b exp(beta B[b, g])``.

    Parameters
    ----------
    beta : float, default=20.0
        Inverse temperature (QB-Norm's default; tune it to the score scale).
    block_bytes : int, default=256 MiB
        Memory budget of one bank block.
    device : str or None, default=None
        Torch device for the bank statistics (None: CUDA when available, else CPU).

    Notes
    -----
    The original uses the test queries as the bank (transductive); here the bank is always a
    separate input. Reference implementations exponentiate without max-subtraction and
    overflow on logit-scale scores; this one cannot.
    """

    summary = "inverted softmax, s - (1/beta) logsumexp_bank(beta s)"
    tuning_grid = {"beta": [5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0]}
    _parameter_constraints = {"beta": [_POSITIVE], **_COMMON}

    def __init__(self, *, beta: float = 20.0, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 device: str | None = None) -> None:
        self.beta = beta
        self.block_bytes = block_bytes
        self.device = device

    def _estimate(self, bank: Any, device: torch.device) -> torch.Tensor:
        lse = column_logsumexp(bank, scale=float(self.beta), device=device, budget_bytes=self._budget())
        return lse / float(self.beta)


class QBNorm(InvertedSoftmax):
    """QB-Norm / dynamic inverted softmax (Bogolin et al., CVPR 2022).

    Inverted softmax applied only to queries whose top-1 gallery item is in the *activation
    set*: the gallery items that are in the top-``k`` of at least one bank query. Other rows are
    returned unchanged.

    Parameters
    ----------
    beta : float, default=20.0
        Inverse temperature.
    k : int, default=1
        Depth of the bank rows' top-k that forms the activation set.
    block_bytes, device : see :class:`InvertedSoftmax`.

    Notes
    -----
    The reference aliases and modifies the caller's matrix, exponentiates without a max
    shift, and argsorts the whole bank where a top-k suffices; none of that is kept. Gated rows
    are ``s - h`` (the log of the reference's exp-ratio, divided by beta), so every row stays in
    score units and the gated/ungated rows are comparable.
    """

    summary = "QB-Norm (dynamic inverted softmax): IS gated by the bank's top-k activation set"
    gated = True
    _parameter_constraints = {"beta": [_POSITIVE], "k": [Interval(int, 1, None)], **_COMMON}

    def __init__(self, *, beta: float = 20.0, k: int = 1, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 device: str | None = None) -> None:
        self.beta = beta
        self.k = k
        self.block_bytes = block_bytes
        self.device = device

    def _activation(self, bank: Any, device: torch.device) -> torch.Tensor:
        k = check_k(self.k, n_gallery=bank.shape[1], owner=type(self).__name__)
        return row_argmax_mask(bank, k=k, device=device, budget_bytes=self._budget())


class NNN(GalleryBias):
    """Nearest Neighbor Normalization (Chowdhury et al., EMNLP 2024).

    ``s'(q, g) = s(q, g) - alpha * mean(top-k_b B[b, g])``.

    Parameters
    ----------
    k : int, default=128
        Bank neighbours per gallery item (README recommendation; the class default there is 256).
    alpha : float, default=0.75
        Weight of the bias (README recommendation; the class default there is 0.5).
    block_bytes, device : see :class:`InvertedSoftmax`.
    """

    summary = "nearest-neighbour normalisation, s - alpha * mean top-k bank scores"
    tuning_grid = {"k": [4, 8, 16, 32, 128], "alpha": [0.25, 0.5, 0.6, 0.75, 0.9, 1.0]}
    _parameter_constraints = {"k": [Interval(int, 1, None)], "alpha": [Interval(float, 0.0, None)],
                              **_COMMON}

    def __init__(self, *, k: int = 128, alpha: float = 0.75, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 device: str | None = None) -> None:
        self.k = k
        self.alpha = alpha
        self.block_bytes = block_bytes
        self.device = device

    def _estimate(self, bank: Any, device: torch.device) -> torch.Tensor:
        k = self._check_bank_k(self.k, bank.shape[0])
        return float(self.alpha) * column_topk_mean(bank, k=k, device=device, budget_bytes=self._budget())


class CSLS(GalleryBias):
    """Cross-domain similarity local scaling (Conneau et al., 2018): NNN with ``alpha = 1/2``.

    ``2 s - r_G(q) - r_Q(g)`` ranks like ``s - r_Q(g) / 2``, with ``r_Q(g)`` the mean of the ``k``
    largest bank scores of ``g`` (the query term is constant per row).

    Parameters
    ----------
    k : int, default=10
    block_bytes, device : see :class:`InvertedSoftmax`.
    """

    summary = "CSLS, s - mean top-k bank scores / 2 (NNN with alpha=1/2)"
    tuning_grid = {"k": [1, 5, 10, 20, 50, 100]}
    _parameter_constraints = {"k": [Interval(int, 1, None)], **_COMMON}

    def __init__(self, *, k: int = 10, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 device: str | None = None) -> None:
        self.k = k
        self.block_bytes = block_bytes
        self.device = device

    def _estimate(self, bank: Any, device: torch.device) -> torch.Tensor:
        k = self._check_bank_k(self.k, bank.shape[0])
        return 0.5 * column_topk_mean(bank, k=k, device=device, budget_bytes=self._budget())


class DN(GalleryBias):
    """Distribution normalisation (Zhou et al., NeurIPS 2023) on scores: ``s - lam * mean_b B[b, g]``.

    For dot-product scores DN's embedding mean shift reduces to this column-mean term (the query
    side is constant per row).

    Parameters
    ----------
    lam : float, default=0.5
    block_bytes, device : see :class:`InvertedSoftmax`.
    """

    summary = "distribution normalisation, s - lam * mean bank score"
    tuning_grid = {"lam": [0.25, 0.5, 0.75, 1.0, 1.5]}
    _parameter_constraints = {"lam": [Interval(float, 0.0, None)], **_COMMON}

    def __init__(self, *, lam: float = 0.5, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 device: str | None = None) -> None:
        self.lam = lam
        self.block_bytes = block_bytes
        self.device = device

    def _estimate(self, bank: Any, device: torch.device) -> torch.Tensor:
        return float(self.lam) * column_mean(bank, device=device, budget_bytes=self._budget())


class SinkhornNorm(GalleryBias):
    """Sinkhorn normalisation (Pan et al., ACM MM 2025): ``s - h(g)``, ``h(g) = -tau log u_g``.

    ``u`` is the gallery-side scaling of entropic optimal transport between the gallery and the
    bank queries with uniform marginals, cost ``1 - B.T`` and regularisation ``tau``, after at
    most ``n_iter`` Sinkhorn iterations (the reference's ``numItermax``). Inverted softmax with
    ``beta = 1 / tau`` is the first half-step (the ``u`` update with uniform bank weights ``v``);
    the iterations re-weight the bank queries so that each carries equal mass.

    Parameters
    ----------
    tau : float, default=0.01
    n_iter : int, default=10
        Iteration limit (the paper's setting, as in the reference).
    tol : float or None, default=None
        None runs exactly ``n_iter`` iterations: the paper's truncated iteration, what the
        reference returns, with no warning. A float asks for convergence: stop early once no
        ``h(g)`` moved by more than ``tol`` (score units) in one iteration, and emit a
        :class:`~pillar_rerank.exceptions.ConvergenceWarning` naming the last change when
        ``n_iter`` ends above it (raise ``n_iter`` or ``tau`` then). (The float32 exponent
        arithmetic puts a floor of about ``tau * |log u| * 6e-8`` on the change it can resolve,
        ~1e-7 at ``tau = 0.01``.)
    kernel_bytes : int, default=2 GiB
        Memory for keeping the float32 kernel (n_bank x (n_gallery [+ n_bank_gallery]) x 4
        bytes) between iterations: each iteration is then two matrix-vector products. A larger
        bank is streamed instead, one ``exp`` per entry per iteration, in ``O(block)`` memory.
        (The reference keeps a float64 kernel, twice this, whatever its size.)
    block_bytes, device : see :class:`InvertedSoftmax`.

    Attributes
    ----------
    n_iter_ : int
        Iterations run. ``converged_``: whether the last change was within ``tol``.
    last_change_ : float
        Largest change of ``h`` in the last iteration (score units).
    kernel_stored_ : bool
        Whether the kernel fitted ``kernel_bytes`` and was kept between iterations (else streamed).

    Notes
    -----
    The reference calls POT, which builds a dense float64 kernel (20 GB at 25K x 100K); run in
    float32 (scores stored as float32) its kernel ``exp(-(1 - s) / tau)`` underflows to zero for
    ``tau`` around 0.01 and below, POT keeps the previous (uniform) scaling after its
    "numerical errors" check, and the output is silently the input ranking. This version is
    correct there: it keeps the potentials as logarithms absorbed into the kernel (stabilised
    scaling domain with absorption: ``exp`` runs only when the scalings are absorbed, or once
    per entry per iteration for a streamed bank), recomputing exactly in log-sum-exp form any
    gallery item whose mass float32 could lose. Where
    the reference does not underflow, the two agree to ~1e-7 (float32 rounding).
    """

    summary = "Sinkhorn normalisation (stabilised, streamed), s + tau log u_g"
    tuning_grid = {"tau": [0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2]}
    _parameter_constraints = {"tau": [_POSITIVE], "n_iter": [Interval(int, 1, None)],
                              "tol": [None, Interval(float, 0.0, None)],
                              "kernel_bytes": [Interval(int, 0, None)], **_COMMON}

    def __init__(self, *, tau: float = 0.01, n_iter: int = 10, tol: float | None = None,
                 kernel_bytes: int = 2 * 2**30, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 device: str | None = None) -> None:
        self.tau = tau
        self.n_iter = n_iter
        self.tol = tol
        self.kernel_bytes = kernel_bytes
        self.block_bytes = block_bytes
        self.device = device

    def _estimate(self, bank: Any, device: torch.device, bank_gallery: Any = None) -> torch.Tensor:
        tol = 0.0 if self.tol is None else float(self.tol)
        res = sinkhorn_potential(bank, tau=float(self.tau), n_iter=int(self.n_iter), tol=tol,
                                 device=device, extra=bank_gallery, budget_bytes=self._budget(),
                                 kernel_bytes=int(self.kernel_bytes))
        self.n_iter_, self.last_change_, self.converged_ = res.n_iter, res.last_change, res.converged
        self.kernel_stored_ = res.kernel_stored
        if self.tol is not None and not res.converged:
            warnings.warn(
                f"{type(self).__name__}: stopped at n_iter={res.n_iter} with h still moving by "
                f"{res.last_change:.3g} (score units) in the last iteration, above tol={self.tol:g}; "
                "the result is the truncated iteration, not the converged scaling. Raise n_iter "
                "(or tau) to converge, or set tol to the change you accept.",
                ConvergenceWarning, stacklevel=3,
            )
        return -float(self.tau) * res.log_u


class DualBankSinkhorn(SinkhornNorm):
    """Dual-bank Sinkhorn normalisation (DBSN, Pan et al., ACM MM 2025).

    Sinkhorn normalisation whose gallery side also holds bank-side gallery items: the transport
    runs between the bank queries and [test gallery ; bank gallery], and only the test
    gallery's potentials are kept.

    ``fit(bank, bank_gallery=...)`` takes the bank queries' scores against the test gallery
    (n_bank_queries, n_gallery) and against the bank-side gallery (n_bank_queries,
    n_bank_gallery); for image -> text that is bank images x bank texts, i.e. the training-side
    score matrix itself.

    Parameters
    ----------
    tau, n_iter, tol : see :class:`SinkhornNorm` (same numerics, same convergence warning; where
        the reference underflows to the input ranking, this one is correct).
    block_bytes, device : see :class:`InvertedSoftmax`.
    """

    summary = "dual-bank Sinkhorn (DBSN): Sinkhorn with bank-side gallery items appended"
    fit_inputs = ("bank", "bank_gallery")

    def fit(self, bank: Any = None, *, bank_gallery: Any = None) -> DualBankSinkhorn:
        """Estimate the correction from both banks; returns self."""
        self._validate_params()
        bank = self._require(bank, "bank scores (n_bank_queries, n_gallery)")
        extra = self._require(bank_gallery, "bank-gallery scores (n_bank_queries, n_bank_gallery)",
                              n_rows=bank.shape[0])
        self.bias_ = self._estimate(bank, self._device(), bank_gallery=extra).cpu().numpy()
        self.active_ = None
        self.n_gallery_in_ = int(bank.shape[1])
        return self
